"""The daemon's process entry: read the settings, set up logging, harden the process, run.

``python -m scheduler`` (no arguments) and ``openclaw-scheduler start`` both come here. A problem
a user can fix is one line on stderr and its exit code; a bug keeps its traceback and exits 70,
so the service manager restarts the daemon.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.config import Settings


def daemon_main() -> int:
    from scheduler.errors import SchedulerError

    try:
        from scheduler import logs
        from scheduler.config import load_settings

        settings = load_settings()
        logs.configure(debug=settings.debug, secrets=_secrets_to_redact(settings))
        _harden(settings)
        from scheduler.engine.daemon import run_daemon

        return run_daemon(settings)
    except SchedulerError as exc:
        sys.stderr.write(f"openclaw-scheduler: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception:
        # A bug, not an input problem: keep the traceback for the report, exit non-zero so the
        # service manager restarts the daemon (runs it left `running` become `crashed`).
        import traceback

        sys.stderr.write("openclaw-scheduler: internal error, daemon stopped\n")
        traceback.print_exc()
        return 70


def _secrets_to_redact(settings: Settings) -> list[str]:
    """Every credential the daemon holds: the token (variable or file), the URL's password, the
    S3 secrets and the dispatch webhook's whole URL."""
    from urllib.parse import urlsplit

    from scheduler.gateway.client import resolve_token

    env_token = settings.gateway_token.get_secret_value() if settings.gateway_token else None
    secrets = [resolve_token(env_token, settings.gateway_token_path) or ""]
    with contextlib.suppress(ValueError):  # unparsable: the gateway client refuses it in one line
        secrets.append(urlsplit(settings.gateway_url).password or "")
    for aws in (settings.aws_secret_access_key, settings.aws_session_token):
        secrets.append(aws.get_secret_value() if aws else "")
    # A webhook URL often carries its secret in the path (chat webhooks do), not as a password.
    if settings.dispatch_webhook_url is not None:
        secrets.append(settings.dispatch_webhook_url.get_secret_value())
    return [secret for secret in secrets if secret]


def _harden(settings: Settings) -> None:
    from scheduler import logs
    from scheduler.engine.hardening import harden_process

    done = harden_process(settings.shell_env_allow)
    # Debug only: a daemon that stops at start (lock held, bad database) says one line, not two.
    logs.get("scheduler.daemon").debug(
        "daemon.hardened", cleared_variables=list(done.cleared),
        environ_block_wiped=done.environ_block_wiped, dumpable=done.dumpable,
    )
