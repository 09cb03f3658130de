"""``python -m scheduler``: the daemon in the foreground; with arguments, the CLI.

Thin on purpose: nothing imports this module.

Plain ``python -m`` puts the working directory first on ``sys.path``: a ``json.py``, ``uuid.py``
or ``secrets.py`` lying there would be imported into the daemon, within reach of the gateway
token. So the first thing done here, before any other module is imported, is to drop that entry
(``python -P`` and the ``openclaw-scheduler`` console script never add it). No ``from __future__``
import either: ``__future__`` would itself be looked up in the working directory.

Dropping the entry is enough; re-executing with ``-P`` would add nothing: what ``-m`` imports
before this file runs (``types``, ``functools``, ``contextlib``, ``warnings``, ``importlib`` …,
and ``scheduler`` itself) has already been imported, from the working directory if something
there shadowed it. That cannot be closed from inside; docs/operating.md tells operators to start
the daemon with ``openclaw-scheduler start`` or ``python -P -m scheduler``.
"""

import os
import sys


def drop_working_directory_from_path() -> None:
    """Remove the working directory ``python -m`` put first on ``sys.path`` (unless ``-P``)."""
    if sys.flags.safe_path or not sys.path:
        return
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was deleted: nothing can be imported from it
        cwd = None
    if sys.path[0] in ("", os.curdir, cwd):
        del sys.path[0]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        from scheduler.engine.entry import daemon_main

        return daemon_main()
    from scheduler.cli.main import run

    return run(args)


if __name__ == "__main__":
    drop_working_directory_from_path()
    sys.exit(main())
