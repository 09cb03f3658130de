"""``python -m scheduler``: the daemon in the foreground; with arguments, the CLI.

Thin on purpose: nothing imports this module.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        from scheduler.engine.entry import daemon_main

        return daemon_main()
    from scheduler.cli.main import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
