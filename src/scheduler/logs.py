"""structlog set-up for the daemon: JSON lines to stderr for services, key=value on a terminal.

Events carry fields, never formatted data. A redaction processor masks any field whose name
looks like a secret, any occurrence of the configured secrets' values, and the ``user:password@``
part of any URL, so a credential cannot reach a log line even by accident (an error message that
quotes a header or the gateway URL, say).

Libraries that log through the standard ``logging`` module (asyncio, our shell runner, Python
warnings) are rendered by the same processors, so every line on stderr is one event in one
format. httpx and httpcore are held at WARNING: their per-request INFO lines would put a line on
stderr for every health check; ``SCHEDULER_DEBUG`` shows our own ``gateway.request`` event instead.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_FIELD_PARTS = ("token", "secret", "password", "authorization", "api_key")
REDACTED = "[redacted]"
# "scheme://" then the authority up to its last "@": the userinfo of a URL, whatever it holds.
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#]*@")
# Loggers whose INFO lines are per-request noise; their warnings and errors still show.
_QUIET_LIBRARIES = ("httpx", "httpcore")


def redact_url(text: str) -> str:
    """``text`` with the ``user:password`` part of every URL in it replaced by ``[redacted]``."""
    if "://" not in text:
        return text
    return _URL_USERINFO.sub(rf"\1{REDACTED}@", text)


class _Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return redact_url(value)
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event):
            if any(part in key.lower() for part in _SECRET_FIELD_PARTS):
                event[key] = REDACTED
            else:
                event[key] = self._scrub(event[key])
        return event


def configure(*, debug: bool = False, secrets: Iterable[str] = (), json_lines: bool | None = None,
              stream: TextIO | None = None) -> None:
    """Log to ``stream`` (stderr): JSON lines, or key=value when it is a terminal (or as told)."""
    out = sys.stderr if stream is None else stream
    if json_lines is None:
        json_lines = not out.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    redactor = _Redactor(secrets)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if debug else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    _route_stdlib_logging(out, debug, redactor, renderer)


def _route_stdlib_logging(out: TextIO, debug: bool, redactor: _Redactor, renderer: Any) -> None:
    """Render records of the ``logging`` module as our events, on the same stream."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redactor, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    # warnings.warn() output would otherwise be printed raw; as records it is one event.
    logging.captureWarnings(True)


def get(name: str = "scheduler") -> Any:
    return structlog.get_logger(name)
