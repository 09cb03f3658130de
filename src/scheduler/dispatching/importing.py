"""``dispatch import``: a reference ``labels.json``, read once into the ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from scheduler.errors import ValidationError
from scheduler.models.dispatch import DispatchLabel
from scheduler.store.api import Store
from scheduler.timeutil import to_sqlite

MAX_LEDGER_BYTES: Final = 64 * 1024 * 1024


def read_ledger_file(path: str) -> Any:
    """The JSON of a labels.json: a regular file only (a FIFO or device is refused unread),
    at most MAX_LEDGER_BYTES."""
    import json
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValidationError(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as stream:
        raw = stream.read(MAX_LEDGER_BYTES + 1)
    if len(raw) > MAX_LEDGER_BYTES:
        raise ValidationError(f"{path} is larger than {MAX_LEDGER_BYTES // (1024 * 1024)} MiB")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValidationError(f"{path} is not a JSON ledger: {str(exc)[:200]}") from None


def import_labels(store: Store, path: str, now: datetime) -> dict[str, Any]:
    """Insert the ledger's labels not present yet; a bad entry is reported, the rest imported."""
    from scheduler.models.dispatch import LedgerImportError, from_labels_json

    ledger = read_ledger_file(path)
    if not isinstance(ledger, dict):
        raise ValidationError(f"{path} is not a labels.json ledger (a JSON object of labels)")
    now_text = to_sqlite(now)
    records: list[DispatchLabel] = []
    rejected: list[dict[str, str]] = []
    for label, item in ledger.items():
        try:
            if not isinstance(item, dict):
                raise LedgerImportError(f"label {label!r} is not a JSON object")
            records.append(from_labels_json(str(label), item, now_text))
        except LedgerImportError as exc:
            rejected.append({"label": str(label)[:200], "error": str(exc)[:300]})
    imported = store.import_dispatches(records, now_text)
    return {"ok": True, "file": path, "entries": len(ledger), "imported": len(imported),
            "alreadyPresent": len(records) - len(imported), "rejected": rejected,
            "labels": imported}
