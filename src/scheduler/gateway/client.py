"""An async client for the OpenClaw gateway (features.md §13, openclaw-gateway.md §5–§7).

One :class:`GatewayClient` per daemon holds one pooled ``httpx.AsyncClient``. It never follows
redirects and never reads proxy settings from the environment. Each call has a hard deadline:
the whole request, connect to last byte, is wrapped in ``asyncio.timeout``; a health check's is
:data:`HEALTH_TIMEOUT_S`. Reply bodies are read as they arrive and never beyond
:data:`MAX_REPLY_BYTES`: a longer reply fails the call, so a runaway or hostile server cannot
fill the daemon's memory.

Failures come back as four exception classes, so the engine can choose what to do:

* :class:`GatewayUnavailable`: the gateway cannot be reached (refused, reset, DNS, connect
  timeout, connection dropped). The job is deferred, not failed.
* :class:`GatewayBusy`: HTTP 429/503/529, or a drain message (``gateway is draining``,
  ``new tasks are not accepted``) in any failed response or error. Carries ``retry_after_s``.
* :class:`GatewayRejected`: any other non-2xx status, a 2xx reply that is not JSON or is longer
  than :data:`MAX_REPLY_BYTES`, or a tool reply with ``"ok": false``. Carries ``status`` and the
  gateway's own message.
* :class:`GatewayTimeout`: the call went past its hard timeout.

The token never appears in a message, a ``repr`` or a log field. Any copy of it that the gateway
echoes back is replaced with ``[redacted]`` before it goes into an exception. A ``user:password@``
in the gateway URL is sent as HTTP basic auth when there is no token (a token takes the
``Authorization`` header) and is never part of a URL this client shows or logs.

This client follows the real gateway 2026.9.6 where it differs from the reference's contract:
``model`` is always the agent target ``openclaw:<agent>``, a provider model goes in the
``x-openclaw-model`` header, and session keys are agent-scoped (:func:`canonical_session_key`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import json
import math
import re
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import httpx

from scheduler import __version__, logs
from scheduler.errors import ConfigError, SchedulerError, ValidationError
from scheduler.jstext import js_regex

SESSION_KEY_HEADER = "x-openclaw-session-key"
AGENT_ID_HEADER = "x-openclaw-agent-id"
AUTH_PROFILE_HEADER = "x-openclaw-auth-profile"
MODEL_HEADER = "x-openclaw-model"
SCOPES_HEADER = "x-openclaw-scopes"
WRITE_SCOPE = "operator.write"

#: Statuses that mean "try again later" rather than "this request is wrong".
BUSY_STATUSES = frozenset({429, 503, 529})
#: The reference's ``isDrainError`` patterns (features.md §4.8), as JavaScript regex sources: the
#: one definition, also used by the reply verdicts (``strategies/reply.py``).
DRAIN_SOURCES = (r"gateway\s+is\s+draining", r"new\s+tasks\s+are\s+not\s+accepted")
DRAIN_PATTERN = js_regex("|".join(DRAIN_SOURCES))
#: Session namespaces the gateway keeps for itself; a chat-completions key using one gets a 400.
RESERVED_SESSION_NAMESPACES = ("subagent", "cron", "acp")

#: The most bytes read of one successful reply (a chat completion, a tool result): 16 MiB. A longer
#: reply fails the call with GatewayRejected and the rest is never read.
MAX_REPLY_BYTES = 16 * 1024 * 1024
#: How long a health check may take, connect to last byte. The gateway answers /health in
#: milliseconds; one that accepts connections but never answers costs no more than this.
HEALTH_TIMEOUT_S = 3.0

_CONNECT_TIMEOUT_S = 10.0
# Of an error reply only the start is read: enough for the gateway's message and a drain check.
_ERROR_BODY_BYTES = 64 * 1024
_EXCERPT_CHARS = 500
_REDACTED = "[redacted]"
# Printable ASCII and no whitespace: what can safely go into an HTTP header as a token.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
# Printable ASCII with inner spaces: other header values (agent ids, keys, profiles, models).
_HEADER_CHARS = re.compile(r"[\x20-\x7e]*")
_SESSION_PATHS: tuple[tuple[str, ...], ...] = (
    ("result", "result", "details", "sessions"),
    ("result", "details", "sessions"),
    ("result", "result", "sessions"),
    ("result", "sessions"),
    ("details", "sessions"),
    ("sessions",),
)

_log = logs.get("scheduler.gateway")


class GatewayError(SchedulerError):
    """Base class of every failed gateway call."""


class GatewayUnavailable(GatewayError):
    """The gateway cannot be reached (down, restarting, wrong URL). Defer the job; don't fail it.

    ``may_have_started`` is true when the connection dropped after the request was sent: the
    gateway may have begun the work, so running it again could do it twice."""

    def __init__(self, message: str, *, may_have_started: bool = False) -> None:
        super().__init__(message)
        self.may_have_started = may_have_started


class GatewayBusy(GatewayError):
    """The gateway is up but turned the work away for now (429/503/529 or draining)."""

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class GatewayRejected(GatewayError):
    """The gateway answered with an error that retrying the same request will not fix."""

    def __init__(self, message: str, *, status: int, gateway_message: str) -> None:
        super().__init__(message)
        self.status = status
        self.gateway_message = gateway_message


class GatewayTimeout(GatewayError):
    """The call ran past its hard timeout and was abandoned (the gateway cancels the turn)."""

    def __init__(self, message: str, *, timeout_s: float | None = None) -> None:
        super().__init__(message)
        self.timeout_s = timeout_s


@dataclass(frozen=True)
class _Answer:
    """A reply as read: its status, headers and body (bounded, see ``GatewayClient._read_body``)."""

    status: int
    headers: httpx.Headers
    body: bytearray  # as read, not copied: a reply near the limit is held once
    charset: str | None

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.text_of(self.body)

    def excerpt(self, size: int) -> str:
        """The text of the body's first ``size`` bytes (a 16 MiB body is not decoded for 200 characters)."""
        return self.text_of(self.body[:size])

    def text_of(self, data: bytearray) -> str:
        try:
            return data.decode(self.charset or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            return data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class ChatReply:
    """What an agent turn returned."""

    content: str
    usage: dict[str, Any] | None
    session_key: str
    model: str | None


def resolve_token(env_token: str | None, token_path: Path) -> str | None:
    """The gateway token: ``env_token`` if set, else the trimmed content of ``token_path``.

    A missing or empty file means no token (requests go out without ``Authorization``). A file
    that exists but cannot be read raises :class:`ConfigError` naming the path, never the content.
    """
    if env_token is not None and env_token.strip():
        return env_token.strip()
    path = token_path.expanduser()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"cannot read the gateway token file {path}: {reason} "
            "(fix its permissions or set OPENCLAW_GATEWAY_TOKEN_PATH)"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"the gateway token file {path} is not UTF-8 text") from None
    return text.strip() or None


def canonical_session_key(agent_id: str, requested: str | None, job_id: str) -> str:
    """The agent-scoped gateway session key for a job (features.md §4.2 step 2).

    ``requested`` is the job's ``preferred_session_key``; without one the key is the stable
    per-job ``scheduler:<job_id>``. Keys already starting with ``agent:`` are kept; others become
    ``agent:<agent_id or main>:<key>``, because the real gateway needs agent-scoped keys once
    several agents are configured (openclaw-gateway.md §7.6). Keys in a reserved namespace
    (``subagent:``, ``cron:``, ``acp:``), which the gateway answers with 400, raise
    :class:`ValidationError`.
    """
    key = (requested or "").strip() or f"scheduler:{job_id}"
    if not key.startswith("agent:"):
        key = f"agent:{agent_id or 'main'}:{key}"
    lowered = key.lower()
    for namespace in RESERVED_SESSION_NAMESPACES:
        if lowered.startswith(f"{namespace}:") or f":{namespace}:" in lowered:
            raise ValidationError(
                f"session key {key!r} uses the gateway's reserved namespace '{namespace}:'; "
                "choose a preferred_session_key without 'subagent:', 'cron:' or 'acp:'"
            )
    if not _HEADER_CHARS.fullmatch(key):
        raise ValidationError(
            f"session key {key!r} must be printable ASCII to be sent in the {SESSION_KEY_HEADER} header"
        )
    return key


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay seconds or HTTP-date); None if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def gateway_error_message(body: str) -> str:
    """The gateway's own error text: ``error.message`` of a JSON body, else the body's start.

    Always one line (whitespace collapsed), at most 500 characters.
    """
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"].strip():
            return _one_line(error["message"])
        if isinstance(error, str) and error.strip():
            return _one_line(error)
    return _one_line(body[:_EXCERPT_CHARS])


def normalise_sessions(data: Any) -> list[dict[str, Any]]:
    """The session list out of any ``sessions_list`` reply shape seen so far (§17 #18).

    Shapes: ``result.result.details.sessions``, ``result.details.sessions`` (the real gateway),
    ``result.result.sessions``, ``result.sessions``, ``details.sessions``, ``sessions``, or a
    bare list; failing those, a tool result's text content (``result.content[].text``, as the
    gateway also writes it) holding any of these as JSON. Non-object entries are dropped; an
    entry with only ``sessionKey`` gets ``key``.
    """
    found = _session_list(data)
    if found is None:
        found = next((listed for text in _content_texts(data)
                      if (listed := _session_list(_loads_or_none(text))) is not None), None)
    if found is None:
        return []
    sessions: list[dict[str, Any]] = []
    for item in found:
        if not isinstance(item, dict):
            continue
        session = dict(item)
        if "key" not in session and isinstance(session.get("sessionKey"), str):
            session["key"] = session["sessionKey"]
        sessions.append(session)
    return sessions


def _session_list(data: Any) -> list[Any] | None:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for path in _SESSION_PATHS:
            node: Any = data
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, list):
                return node
    return None


def _content_texts(data: Any) -> list[str]:
    """The ``text`` of each text item of a tool result's ``content``, wherever it is wrapped."""
    texts: list[str] = []
    for path in (("result", "result", "content"), ("result", "content"), ("content",)):
        node: Any = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, list):
            texts.extend(item["text"] for item in node
                         if isinstance(item, dict) and isinstance(item.get("text"), str))
    return texts


def _loads_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _one_line(text: str, limit: int = _EXCERPT_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _reply_content(data: Mapping[str, Any]) -> str:
    choices = data.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "".join(texts)
    return ""


def _size_text(size: int) -> str:
    """``16 MiB``, ``64 KiB`` or ``900 bytes``: a byte count a person reads at a glance."""
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"


def _declared_length(response: httpx.Response) -> int | None:
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


async def _read_at_most(response: httpx.Response, limit: int) -> bytearray:
    """The body's first ``limit`` bytes, read chunk by chunk; the rest is left unread."""
    buffer = bytearray()
    # aiter_bytes is an async generator; closing it at once releases the stream when we stop early.
    pieces = cast("AsyncGenerator[bytes, None]", response.aiter_bytes())
    async with contextlib.aclosing(pieces) as chunks:
        async for chunk in chunks:
            buffer += chunk[: limit - len(buffer)]
            if len(buffer) >= limit:
                break
    return buffer


def _parse_gateway_url(base_url: str) -> httpx.URL:
    """The gateway URL, or a ConfigError that never echoes a ``user:password`` part."""
    has_userinfo = "@" in base_url
    try:
        url = httpx.URL(base_url.strip())
    except (httpx.InvalidURL, TypeError) as exc:
        if has_userinfo:  # the parser's message may quote part of the password
            raise ConfigError(
                "OPENCLAW_GATEWAY_URL is not a valid URL (not shown: it has a user:password part); "
                "percent-encode any '@', '/', '?' or '#' in the user name or password"
            ) from None
        raise ConfigError(f"OPENCLAW_GATEWAY_URL {base_url!r} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            f"OPENCLAW_GATEWAY_URL {logs.redact_url(base_url)!r} must be an http:// or https:// URL "
            "with a host"
        )
    return url


def _basic_auth(url: httpx.URL, token: str | None, shown_url: str) -> httpx.BasicAuth | None:
    """Credentials in the URL as HTTP basic auth, unless a bearer token takes that header."""
    if not (url.username or url.password):
        return None
    if token:
        _log.warning("gateway.url_credentials_unused", url=shown_url,
                     reason="a gateway token is set and takes the Authorization header")
        return None
    return httpx.BasicAuth(url.username, url.password)


def _check_header(name: str, value: str) -> str:
    if not _HEADER_CHARS.fullmatch(value):
        raise ValidationError(f"{name} value {value!r} must be printable ASCII")
    return value


class GatewayClient:
    """The scheduler's connection to one OpenClaw gateway. Close it with :meth:`aclose`."""

    def __init__(self, base_url: str, token: str | None, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 max_reply_bytes: int = MAX_REPLY_BYTES) -> None:
        url = _parse_gateway_url(base_url)
        if token is not None and token and not _TOKEN_CHARS.fullmatch(token):
            raise ConfigError(
                "the gateway token contains spaces or non-ASCII characters and cannot be sent in a "
                "header; check OPENCLAW_GATEWAY_TOKEN or the token file"
            )
        self._token = token or None
        self._max_reply_bytes = max_reply_bytes
        # The URL without any user:password part: the one requests, messages and logs carry
        # (httpx would log the full URL); the credentials travel as an auth header instead.
        bare_url = url.copy_with(username=None, password=None)
        self._display_url = str(bare_url).rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=bare_url,
            auth=_basic_auth(url, self._token, self._display_url),
            transport=transport,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(30.0),
            # identity: a compressed reply could expand far beyond what was read off the wire.
            headers={"user-agent": f"openclaw-scheduler-python/{__version__}",
                     "accept-encoding": "identity"},
        )

    def __repr__(self) -> str:
        return f"GatewayClient({self._display_url!r}, token={'set' if self._token else 'none'})"

    @property
    def base_url(self) -> str:
        return self._display_url

    @property
    def has_token(self) -> bool:
        return self._token is not None

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- endpoints ---------------------------------------------------------------------------

    async def health(self, timeout_s: float = HEALTH_TIMEOUT_S) -> bool:
        """``GET /health``: True on a 2xx answer within ``timeout_s``, else False.

        Never raises (only cancellation passes through); the body is not read.
        """
        try:
            answer = await self._send("GET", "/health", what="the health check",
                                      headers=self._auth_headers(), timeout_s=timeout_s,
                                      read_body=False)
        except Exception:
            return False
        return answer.is_success

    async def wait_until_reachable(self, timeout_s: float = 30, interval_s: float = 2) -> bool:
        """Poll ``/health`` until any HTTP answer arrives (the reference's ``waitForGateway``).

        A non-2xx answer counts as reachable, as in the reference. False after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await self._send("GET", "/health", what="the health check",
                                 headers=self._auth_headers(),
                                 timeout_s=min(interval_s, 5.0, remaining), read_body=False)
            except GatewayError:
                pass
            else:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(interval_s, remaining))

    async def chat(self, *, message: str, agent_id: str, session_key: str,
                   model_override: str | None = None, auth_profile: str | None = None,
                   timeout_s: float) -> ChatReply:
        """One agent turn: ``POST /v1/chat/completions`` (non-streaming)."""
        agent = agent_id or "main"
        headers = {**self._auth_headers(scopes=True), AGENT_ID_HEADER: _check_header(AGENT_ID_HEADER, agent)}
        if session_key:
            headers[SESSION_KEY_HEADER] = _check_header(SESSION_KEY_HEADER, session_key)
        if auth_profile:
            headers[AUTH_PROFILE_HEADER] = _check_header(AUTH_PROFILE_HEADER, auth_profile)
        if model_override:
            headers[MODEL_HEADER] = _check_header(MODEL_HEADER, model_override)
        body = {
            "model": f"openclaw:{agent}",
            "messages": [{"role": "user", "content": message}],
            "stream": False,
        }
        what = "the agent turn"
        answer = await self._send("POST", "/v1/chat/completions", what=what, headers=headers,
                                  json_body=body, timeout_s=timeout_s)
        self._raise_for_status(answer, what)
        data = self._json(answer, what)
        if not isinstance(data, dict):
            raise GatewayRejected(
                f"gateway answered {what} with JSON that is not a chat completion",
                status=answer.status, gateway_message="",
            )
        usage = data.get("usage")
        model = data.get("model")
        return ChatReply(
            content=_reply_content(data),
            usage=usage if isinstance(usage, dict) else None,
            session_key=answer.headers.get(SESSION_KEY_HEADER) or session_key,
            model=model if isinstance(model, str) else None,
        )

    async def invoke(self, tool: str, args: dict[str, Any], *, session_key: str = "main",
                     timeout_s: float = 30) -> Any:
        """Run a gateway tool: ``POST /tools/invoke``; returns the parsed JSON reply."""
        what = f"the {tool} tool call"
        answer = await self._send(
            "POST", "/tools/invoke", what=what, headers=self._auth_headers(),
            json_body={"tool": tool, "args": args, "sessionKey": session_key}, timeout_s=timeout_s,
        )
        self._raise_for_status(answer, what)
        data = self._json(answer, what)
        if isinstance(data, dict) and data.get("ok") is False:
            detail = self._scrub(gateway_error_message(json.dumps(data))) or "(no error message)"
            raise GatewayRejected(f"gateway rejected {what} ({answer.status}): {detail}",
                                  status=answer.status, gateway_message=detail)
        return data

    async def sessions_list(self, *, timeout_s: float = 30, **args: Any) -> list[dict[str, Any]]:
        """The ``sessions_list`` tool (``activeMinutes``, ``limit``, ``kinds``…), as a flat list.

        ``messageLimit: 0`` is sent unless given; arguments that are None are left out.
        """
        tool_args: dict[str, Any] = {"messageLimit": 0}
        tool_args.update({name: value for name, value in args.items() if value is not None})
        return normalise_sessions(await self.invoke("sessions_list", tool_args, timeout_s=timeout_s))

    async def send_message(self, *, text: str, channel: str | None, target: str | None,
                           timeout_s: float = 30) -> dict[str, Any]:
        """Deliver one message through the ``message`` tool (one chunk; no splitting here)."""
        args: dict[str, Any] = {"action": "send", "message": text}
        if channel:
            args["channel"] = channel
        if target:
            args["target"] = target
        data = await self.invoke("message", args, timeout_s=timeout_s)
        return data if isinstance(data, dict) else {"result": data}

    async def send_media(self, *, data: bytes, filename: str, mime_type: str, channel: str | None,
                         target: str | None, timeout_s: float = 60) -> dict[str, Any]:
        """Deliver one file through the ``message`` tool, as ``buffer`` (base64), with no text.

        The file travels in the request rather than as a path: the gateway may run elsewhere, and
        it only reads local paths under its own media directories."""
        args: dict[str, Any] = {"action": "send", "buffer": base64.b64encode(data).decode("ascii"),
                                "filename": filename, "mimeType": mime_type}
        if channel:
            args["channel"] = channel
        if target:
            args["target"] = target
        result = await self.invoke("message", args, timeout_s=timeout_s)
        return result if isinstance(result, dict) else {"result": result}

    # -- plumbing ----------------------------------------------------------------------------

    def _auth_headers(self, *, scopes: bool = False) -> dict[str, str]:
        if self._token is None:
            return {}
        headers = {"Authorization": f"Bearer {self._token}"}
        if scopes:
            headers[SCOPES_HEADER] = WRITE_SCOPE
        return headers

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, _REDACTED) if self._token else text

    async def _send(self, method: str, path: str, *, what: str, headers: dict[str, str],
                    timeout_s: float, json_body: Any = None, read_body: bool = True) -> _Answer:
        """The request and its (bounded) reply within a hard deadline; failures mapped to
        gateway errors. With ``read_body`` false only the status and headers are taken."""
        timeout = httpx.Timeout(timeout_s, connect=min(_CONNECT_TIMEOUT_S, timeout_s / 2))
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                async with self._http.stream(method, path, headers=headers, json=json_body,
                                             timeout=timeout) as response:
                    body = await self._read_body(response, what) if read_body else bytearray()
        except (TimeoutError, httpx.ReadTimeout, httpx.WriteTimeout):
            _log.debug("gateway.request_timeout", method=method, path=path, timeout_s=timeout_s)
            raise GatewayTimeout(f"gateway did not finish {what} within {timeout_s:g}s (hard timeout)",
                                 timeout_s=timeout_s) from None
        except httpx.PoolTimeout:
            raise GatewayBusy(
                f"too many requests already in flight to the gateway; {what} waited {timeout_s:g}s "
                "for a connection"
            ) from None
        except httpx.TransportError as exc:
            reason = self._scrub(_one_line(str(exc), 200)) or type(exc).__name__
            _log.debug("gateway.request_failed", method=method, path=path, error=type(exc).__name__)
            if DRAIN_PATTERN.search(reason):
                raise GatewayBusy(f"gateway is draining and did not take {what}: {reason}") from None
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                raise GatewayUnavailable(
                    f"cannot reach the gateway at {self._display_url} for {what}: {reason} "
                    "(is the OpenClaw gateway running?)"
                ) from None
            if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError | httpx.ProxyError):
                raise GatewayUnavailable(
                    f"the gateway at {self._display_url} dropped the connection during {what}: {reason}",
                    may_have_started=True,
                ) from None
            raise GatewayError(f"could not send {what} to the gateway at {self._display_url}: {reason}") \
                from None
        _log.debug("gateway.request", method=method, path=path, status=response.status_code,
                   bytes=len(body), elapsed_ms=round((time.monotonic() - started) * 1000))
        return _Answer(response.status_code, response.headers, body, response.charset_encoding)

    async def _read_body(self, response: httpx.Response, what: str) -> bytearray:
        """A success's body up to the reply limit (past it the call fails); an error's start."""
        if not response.is_success:
            return await _read_at_most(response, _ERROR_BODY_BYTES)
        limit = self._max_reply_bytes
        declared = _declared_length(response)
        if declared is not None and declared > limit:
            raise self._too_large(response.status_code, what)
        body = await _read_at_most(response, limit + 1)  # one byte more tells "longer than"
        if len(body) > limit:
            raise self._too_large(response.status_code, what)
        return body

    def _too_large(self, status: int, what: str) -> GatewayRejected:
        limit = self._max_reply_bytes
        _log.warning("gateway.reply_too_large", what=what, status=status, limit_bytes=limit)
        return GatewayRejected(
            f"gateway reply to {what} exceeded {limit} bytes ({_size_text(limit)}), the most the "
            "scheduler reads of one reply; the rest was not read",
            status=status, gateway_message="",
        )

    def _raise_for_status(self, answer: _Answer, what: str) -> None:
        status = answer.status
        if 200 <= status < 300:
            return
        body = self._scrub(answer.text)
        detail = gateway_error_message(body) or "(empty response body)"
        if status in BUSY_STATUSES or DRAIN_PATTERN.search(body):
            retry_after = parse_retry_after(answer.headers.get("retry-after"))
            state = "draining" if DRAIN_PATTERN.search(body) else "busy"
            suffix = f"; retry after {retry_after:g}s" if retry_after is not None else ""
            raise GatewayBusy(f"gateway is {state} ({status}) and did not take {what}: {detail}{suffix}",
                              status=status, retry_after_s=retry_after)
        hint = ""
        if status in (401, 403):
            hint = " (check OPENCLAW_GATEWAY_TOKEN or the token file at OPENCLAW_GATEWAY_TOKEN_PATH)"
        raise GatewayRejected(f"gateway rejected {what} ({status}): {detail}{hint}", status=status,
                              gateway_message=detail)

    def _json(self, answer: _Answer, what: str) -> Any:
        try:
            return json.loads(answer.body)
        except (ValueError, RecursionError):
            # Scrubbed before it is cut, so no part of a token survives at the cut.
            excerpt = _one_line(self._scrub(answer.excerpt(1024)), 200) or "(empty body)"
            raise GatewayRejected(
                f"gateway answered {what} ({answer.status}) with a body that is not JSON: {excerpt}",
                status=answer.status, gateway_message=excerpt,
            ) from None
