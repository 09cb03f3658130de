"""What a command handler gets: the output, its arguments, and the database opened on first use.

Every CLI call imports this, so it stays light: a plain class rather than a dataclass (whose
import pulls in ``inspect`` and ``ast``), and the store only when a command opens the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from scheduler.cli.output import Output
from scheduler.errors import UsageError

__all__ = ["Context", "Handler", "UsageError"]

if TYPE_CHECKING:
    from scheduler.store.api import Store


class Context:
    __slots__ = ("_store", "args", "out")

    def __init__(self, out: Output, args: list[str]) -> None:
        self.out = out
        self.args = args
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        """The store of ``SCHEDULER_DB``, opened (created, migrated) on first use."""
        if self._store is None:
            from scheduler import paths
            from scheduler.store import open_store

            self._store = open_store(paths.db_target())
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def positional(self, index: int, usage: str) -> str:
        plain = [a for a in self.args if not a.startswith("--")]
        if index >= len(plain):
            raise UsageError(f"usage: openclaw-scheduler {usage}")
        return plain[index]

    def option(self, name: str) -> str | None:
        """The value after ``--name`` (or ``--name=value``), removed from the positional args."""
        for i, arg in enumerate(self.args):
            if arg == name:
                if i + 1 >= len(self.args):
                    raise UsageError(f"{name} needs a value")
                value = self.args[i + 1]
                del self.args[i : i + 2]
                return value
            if arg.startswith(name + "="):
                del self.args[i]
                return arg.split("=", 1)[1]
        return None

    def flag(self, name: str) -> bool:
        if name in self.args:
            self.args.remove(name)
            return True
        return False

    def no_extra(self, expected: int, usage: str) -> None:
        unknown = [a for a in self.args if a.startswith("--")]
        if unknown:
            raise UsageError(f"unknown option {unknown[0]}; usage: openclaw-scheduler {usage}")
        if len(self.args) > expected:
            raise UsageError(
                f"unexpected argument {self.args[expected]!r}; usage: openclaw-scheduler {usage}"
            )


Handler = Callable[[Context], int]
