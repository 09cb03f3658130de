"""Turn a :class:`ShellProcessResult` into the run columns the reference persists (§4.5).

Behaviour follows the reference's ``normalizeShellResult``: UTF-8 text, outputs above the offload
threshold kept in ``<artifacts>/runs/<run_id>/stdout.txt|stderr.txt``, stored columns trimmed
and truncated at a character boundary with the ``\\n...[truncated]`` suffix, a preview made of
``stdout:``/``stderr:`` blocks, and the same error messages. Additions:

* the artifact file is normally written while the command runs (:mod:`shell_capture`); for a
  result without one (no :class:`ArtifactSpec` was given) it is written here from memory;
* a run whose output was not kept in full (beyond the artifact cap, or beyond the in-memory head
  when no file could hold the rest) says so in the stored text, the preview and the artifact
  file, and counts as truncated;
* ``*_bytes`` are the number of bytes the command wrote (not only what was kept);
* artifact directories are created 0700 and files 0600;
* a failed artifact write never raises: the output stays in the (store-limit) columns and the OS
  error is appended to ``error_message``;
* a cancelled run gets status ``cancelled`` and ``Cancelled: daemon shutdown``.

Image markers (``[IMAGE:/path]`` lines of stdout, §4.5) are taken out of the stored stdout, the
excerpt and the preview, as in the reference, and returned as ``attachments`` for the delivery
(:mod:`scheduler.media`). Only the part of stdout held in memory (the store limit, 64 KiB by
default) is searched; the artifact file keeps the output as written.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from scheduler.media import extract_markers
from scheduler.strategies.shell import ShellProcessResult
from scheduler.strategies.shell_capture import (
    StoredArtifact,
    capture_note,
    ensure_private_dir,
    open_private_file,
    safe_run_id,
)

ShellRunStatus = Literal["ok", "error", "timeout", "cancelled"]

TRUNCATION_SUFFIX = "\n...[truncated]"
CANCELLED_MESSAGE = "Cancelled: daemon shutdown"
NO_OUTPUT = "(no output)"

DEFAULT_STORE_LIMIT = 65536
DEFAULT_EXCERPT_LIMIT = 2000
DEFAULT_SUMMARY_LIMIT = 5000
DEFAULT_OFFLOAD_THRESHOLD = 65536


def _limit_value(raw: Any, default: int) -> int:
    """A job's byte limit: a non-negative integer (or integer text); anything else → default."""
    if raw is None or isinstance(raw, bool):
        return default
    if isinstance(raw, int):
        return raw if raw >= 0 else default
    if isinstance(raw, float) and raw.is_integer():
        return int(raw) if raw >= 0 else default
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    return default


@dataclass(frozen=True)
class OutputLimits:
    """Byte budgets for one shell run's output (defaults are those ``createJob`` gives new jobs)."""

    store: int = DEFAULT_STORE_LIMIT
    excerpt: int = DEFAULT_EXCERPT_LIMIT
    summary: int = DEFAULT_SUMMARY_LIMIT
    offload_threshold: int = DEFAULT_OFFLOAD_THRESHOLD

    @classmethod
    def from_job(cls, job: Mapping[str, Any]) -> OutputLimits:
        """Read ``output_{store,excerpt,summary}_limit_bytes`` and ``output_offload_threshold_bytes``;
        a missing, ``None`` or unusable value means the default."""
        return cls(
            store=_limit_value(job.get("output_store_limit_bytes"), DEFAULT_STORE_LIMIT),
            excerpt=_limit_value(job.get("output_excerpt_limit_bytes"), DEFAULT_EXCERPT_LIMIT),
            summary=_limit_value(job.get("output_summary_limit_bytes"), DEFAULT_SUMMARY_LIMIT),
            offload_threshold=_limit_value(
                job.get("output_offload_threshold_bytes"), DEFAULT_OFFLOAD_THRESHOLD
            ),
        )


@dataclass(frozen=True)
class ShellRunFields:
    """A finished shell run, as the reference stores it (plus status and delivery text)."""

    status: ShellRunStatus
    summary: str
    error_message: str | None
    shell_exit_code: int | None
    shell_signal: str | None
    shell_timed_out: int
    shell_stdout: str
    shell_stderr: str
    shell_stdout_path: str | None
    shell_stderr_path: str | None
    shell_stdout_bytes: int
    shell_stderr_bytes: int
    context_summary: str
    delivery_text: str
    attachments: tuple[str, ...] = ()  # paths of stdout's [IMAGE:/path] lines

    def as_run_columns(self) -> dict[str, Any]:
        """The ``runs`` columns to write (all but ``status``, ``delivery_text``, ``attachments``)."""
        return {
            f.name: getattr(self, f.name) for f in fields(self)
            if f.name not in ("status", "delivery_text", "attachments")
        }


@dataclass(frozen=True)
class _Truncated:
    text: str
    truncated: bool


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "replace"))


def truncate_utf8(text: str, limit_bytes: int, *, suffix: str = TRUNCATION_SUFFIX) -> tuple[str, bool]:
    """Trim ``text`` and cut it to at most ``limit_bytes`` UTF-8 bytes, suffix included.

    Never splits a character. Returns ``(text, truncated)``. As in the reference, a limit smaller
    than the suffix yields just the suffix.
    """
    result = _truncate(text, limit_bytes, suffix)
    return result.text, result.truncated


def _truncate(
    text: str, limit_bytes: int, suffix: str = TRUNCATION_SUFFIX, *, more: bool = False
) -> _Truncated:
    """``more``: ``text`` is only the head of the output, so it is cut (and says so) even if short."""
    stripped = text.strip()
    if not stripped:
        return _Truncated("", False)
    encoded = stripped.encode("utf-8", "replace")
    if len(encoded) <= limit_bytes and not more:
        return _Truncated(stripped, False)
    target = max(0, limit_bytes - utf8_len(suffix))
    # Decoding a byte prefix of valid UTF-8 with "ignore" drops only a character cut in half.
    head = encoded[:target].decode("utf-8", "ignore")
    return _Truncated(head + suffix, True)


def _stored(text: str, limit_bytes: int, note_text: str | None, *, more: bool) -> _Truncated:
    """The stored column: truncated to the limit; ends with the capture note when output was lost."""
    if note_text is None:
        return _truncate(text, limit_bytes, more=more)
    note = "\n" + note_text
    head = _truncate(text, max(0, limit_bytes - utf8_len(note)))
    return _Truncated(head.text + note if head.text else note_text, True)


def _write_artifact(path: Path, data: bytes) -> None:
    fd = open_private_file(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError:
        # A partial artifact (disk full) would mislead ``runs output``; drop it.
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def _offload(
    label: str, text: str, note: str | None, run_id: str, artifacts_dir: Path
) -> tuple[str | None, str | None]:
    """Write ``text`` to the run's artifact file. Returns ``(path, error)``; one of them is None
    (both are None when there is nothing but whitespace to write, as in the reference)."""
    if not text.strip():
        return None, None
    if not safe_run_id(run_id):
        return None, f"{label} offload failed: run id {run_id!r} cannot name a directory"
    run_dir = Path(os.path.abspath(artifacts_dir)) / "runs" / run_id
    path = run_dir / f"{label}.txt"
    content = text if note is None else f"{text.rstrip(chr(10))}\n{note}\n"
    try:
        ensure_private_dir(run_dir)
        _write_artifact(path, content.encode("utf-8", "replace"))
    except OSError as exc:
        return None, f"{label} offload failed: {exc}"
    return str(path), None


def _decode_head(raw: bytes) -> str:
    """Decode the head of a longer stream: a character cut in half at its end is dropped."""
    return codecs.getincrementaldecoder("utf-8")("replace").decode(raw, final=False)


def _offload_from_memory(
    label: str, text: str, kept: int, total: int, limits: OutputLimits, run_id: str, artifacts_dir: Path
) -> tuple[str | None, str | None, str | None]:
    """``(path, capture note, offload error)`` for a stream held in memory only: written to its
    artifact file now if it is above the threshold."""
    note = capture_note(label, kept, total) if total > kept else None
    if total <= limits.offload_threshold:
        return None, note, None
    path, error = _offload(label, text, note, run_id, artifacts_dir)
    return path, note, error


def _streamed(
    label: str, artifact: StoredArtifact, kept_in_memory: int, total: int
) -> tuple[str | None, str | None, str | None]:
    """``(path, capture note, offload error)`` for a stream written to its file as it arrived. Output
    is lost (and noted) beyond the file's cap, or beyond the head when the file failed."""
    if artifact.path is not None:
        kept = artifact.kept_bytes
        return artifact.path, capture_note(label, kept, total) if total > kept else None, None
    if artifact.error is not None and total > kept_in_memory:
        return None, capture_note(label, kept_in_memory, total), artifact.error
    return None, None, artifact.error


def _output_block(
    label: str, excerpt: _Truncated, path: str | None, total_bytes: int, note: str | None
) -> str:
    lines: list[str] = []
    if excerpt.text:
        lines.append(f"{label}:")
        lines.append(excerpt.text)
    if note is not None:
        lines.append(note)
    if path is not None:
        lines.append(f"[{label} offloaded: {path} ({total_bytes} bytes)]")
    return "\n".join(lines)


def _classify(result: ShellProcessResult, timeout_ms: int) -> tuple[ShellRunStatus, str | None]:
    if result.cancelled:
        return "cancelled", CANCELLED_MESSAGE
    if result.timed_out:
        return "timeout", f"Shell command timed out after {timeout_ms}ms"
    if result.spawn_error is not None:
        return "error", result.spawn_error or "Shell command failed"
    if result.exit_code == 0 and result.signal is None:
        return "ok", None
    if result.exit_code is not None:
        return "error", f"Shell exited with code {result.exit_code}"
    if result.signal is not None:
        return "error", f"Shell terminated by signal {result.signal}"
    return "error", "Shell command failed"


def normalize_shell_result(
    result: ShellProcessResult,
    *,
    limits: OutputLimits,
    run_id: str,
    artifacts_dir: Path,
    timeout_ms: int,
) -> ShellRunFields:
    """Build the stored fields of a finished shell run. Writes offload files; never raises OSError."""
    status, base_error = _classify(result, timeout_ms)

    streams = (
        ("stdout", result.stdout, result.stdout_total_bytes),
        ("stderr", result.stderr, result.stderr_total_bytes),
    )
    stored: dict[str, _Truncated] = {}
    excerpts: dict[str, _Truncated] = {}
    paths: dict[str, str | None] = {}
    totals: dict[str, int] = {}
    blocks: list[str] = []
    offload_errors: list[str] = []
    attachments: tuple[str, ...] = ()
    for label, raw, reported_total in streams:
        total = max(reported_total, len(raw))
        more = total > len(raw)  # raw is only the head of what the command wrote
        text = _decode_head(raw) if more else raw.decode("utf-8", "replace")
        if label == "stdout":
            extracted = extract_markers(text)
            text, attachments = extracted.text, extracted.paths
        artifact = result.artifact(label)
        if artifact is None:
            path, note, offload_error = _offload_from_memory(label, text, len(raw), total, limits,
                                                             run_id, artifacts_dir)
        else:
            path, note, offload_error = _streamed(label, artifact, len(raw), total)
        if offload_error is not None:
            offload_errors.append(offload_error)
        store_limit = min(limits.store, limits.excerpt) if path is not None else limits.store
        stored[label] = _stored(text, store_limit, note, more=more)
        excerpts[label] = _truncate(text, limits.excerpt, more=more)
        paths[label] = path
        totals[label] = total
        block = _output_block(label, excerpts[label], path, total, note)
        if block:
            blocks.append(block)

    error_parts = [part for part in (base_error, *offload_errors) if part]
    error_message = "; ".join(error_parts) if error_parts else None

    if not blocks and error_message:
        blocks.append(error_message)
    preview = "\n\n".join(blocks).strip() or NO_OUTPUT

    exit_code = None if status == "ok" else result.exit_code
    signal_name = None if status == "ok" else result.signal
    context = {
        "shell_result": {
            "exit_code": exit_code,
            "signal": signal_name,
            "timed_out": result.timed_out,
            "error_message": error_message,
            "stdout_excerpt": excerpts["stdout"].text,
            "stderr_excerpt": excerpts["stderr"].text,
            "stdout_truncated": stored["stdout"].truncated or excerpts["stdout"].truncated,
            "stderr_truncated": stored["stderr"].truncated or excerpts["stderr"].truncated,
            "stdout_path": paths["stdout"],
            "stderr_path": paths["stderr"],
            "stdout_bytes": totals["stdout"],
            "stderr_bytes": totals["stderr"],
        }
    }
    return ShellRunFields(
        status=status,
        summary=_truncate(preview, limits.summary).text,
        error_message=error_message,
        shell_exit_code=exit_code,
        shell_signal=signal_name,
        shell_timed_out=1 if result.timed_out else 0,
        shell_stdout=stored["stdout"].text,
        shell_stderr=stored["stderr"].text,
        shell_stdout_path=paths["stdout"],
        shell_stderr_path=paths["stderr"],
        shell_stdout_bytes=totals["stdout"],
        shell_stderr_bytes=totals["stderr"],
        context_summary=json.dumps(context, ensure_ascii=False),
        delivery_text=preview,
        attachments=attachments,
    )


__all__ = [
    "CANCELLED_MESSAGE",
    "DEFAULT_EXCERPT_LIMIT",
    "DEFAULT_OFFLOAD_THRESHOLD",
    "DEFAULT_STORE_LIMIT",
    "DEFAULT_SUMMARY_LIMIT",
    "TRUNCATION_SUFFIX",
    "OutputLimits",
    "ShellRunFields",
    "ShellRunStatus",
    "normalize_shell_result",
    "truncate_utf8",
    "utf8_len",
]
