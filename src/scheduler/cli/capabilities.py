"""``openclaw-scheduler capabilities``: which v0.2 features this build honours, in the reference's
shape (``scheduler_version``, ``schema_version``, ``handoff_version``, ``features``).

``schema_version`` is the reference's: the highest version in ``schema_migrations`` (23), read
from the database, which is opened and brought up to date first as every command does. Always
JSON, with or without ``--json``, as the reference prints it.
"""

from __future__ import annotations

from scheduler.cli.context import Context, Handler


def capabilities(ctx: Context) -> int:
    from scheduler import __version__
    from scheduler.models.capabilities import HANDOFF_VERSION, features
    from scheduler.strategies.network_isolation import probe

    ctx.no_extra(0, "capabilities")
    schema_version = ctx.store.schema_version()
    available, _detail = probe()
    ctx.out.emit({
        "scheduler_version": __version__,
        "schema_version": schema_version,
        "handoff_version": HANDOFF_VERSION,
        "features": features("namespace" if available else "refused"),
    })
    return 0


COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("capabilities", None): capabilities,
}
