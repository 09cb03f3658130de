"""The daemon's process entry: read the settings, set up logging, run until stopped.

``python -m scheduler`` (no arguments) and ``openclaw-scheduler start`` both come here. A problem
a user can fix is one line on stderr and its exit code; a bug keeps its traceback and exits 70,
so the service manager restarts the daemon.
"""

from __future__ import annotations

import sys


def daemon_main() -> int:
    from scheduler.errors import SchedulerError

    try:
        from scheduler import logs
        from scheduler.config import load_settings

        settings = load_settings()
        token = settings.gateway_token.get_secret_value() if settings.gateway_token else ""
        logs.configure(debug=settings.debug, secrets=[token])
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
