"""openclaw-scheduler for Python: a durable asyncio scheduler for agent and shell jobs.

The Python API is ``scheduler.api`` (docs/api.md); ``scheduler.Scheduler`` and
``scheduler.open_scheduler`` name it too, imported only when first used: ``python -m scheduler``
imports this package before anything else and must stay fast, and import nothing (not even
``typing``) that a file in the working directory could shadow (see ``__main__``).
"""

__version__ = "0.1.0"
__all__ = ["Scheduler", "__version__", "open_scheduler"]

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from scheduler.api import Scheduler, open_scheduler

_LAZY = frozenset({"Scheduler", "open_scheduler"})


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from scheduler import api

        return getattr(api, name)
    raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
