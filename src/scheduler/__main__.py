"""``python -m scheduler``: the daemon in the foreground; with arguments, the CLI."""

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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        return daemon_main()
    from scheduler.cli.main import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
