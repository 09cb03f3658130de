"""What a chained shell run receives from the run that triggered it: environment variables
describing the parent's run, and the parent's output on stdin.

The parent's output is a shell parent's stdout (the offloaded file when there is one, else the
stored text) or an agent parent's reply (the run's summary). Both channels are bounded: the
environment holds a short head (it shares the kernel's limit on a process's arguments), stdin
up to ``PARENT_STDIN_LIMIT`` bytes, held in memory until the child reads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from scheduler.strategies.prompt import extract_shell_result
from scheduler.strategies.shell_output import TRUNCATION_SUFFIX

# Part of the note a stored stream carries when the capture limit dropped output (shell_capture).
CAPTURE_LIMIT_NOTE: Final = "capture limit reached"

PARENT_RUN_ID: Final = "SCHEDULER_PARENT_RUN_ID"
PARENT_JOB_ID: Final = "SCHEDULER_PARENT_JOB_ID"
PARENT_JOB_NAME: Final = "SCHEDULER_PARENT_JOB_NAME"
PARENT_STATUS: Final = "SCHEDULER_PARENT_STATUS"
PARENT_EXIT_CODE: Final = "SCHEDULER_PARENT_EXIT_CODE"
PARENT_ERROR: Final = "SCHEDULER_PARENT_ERROR"
PARENT_OUTPUT: Final = "SCHEDULER_PARENT_OUTPUT"
PARENT_OUTPUT_TRUNCATED: Final = "SCHEDULER_PARENT_OUTPUT_TRUNCATED"
PARENT_STDOUT_PATH: Final = "SCHEDULER_PARENT_STDOUT_PATH"

PARENT_OUTPUT_ENV_LIMIT: Final = 16 * 1024  # bytes of output in SCHEDULER_PARENT_OUTPUT
PARENT_ERROR_ENV_LIMIT: Final = 4 * 1024  # bytes of the error message in SCHEDULER_PARENT_ERROR
PARENT_STDIN_LIMIT: Final = 8 * 1024 * 1024  # bytes of output written to stdin


@dataclass(frozen=True)
class ParentInput:
    env: dict[str, str]
    stdin: bytes | None  # None: the child's stdin stays /dev/null


def _head(data: bytes, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of ``data``, never ending inside a UTF-8 character; and whether
    anything was cut."""
    if len(data) <= limit:
        return data, False
    cut = data[:limit]
    # Back off over continuation bytes (10xxxxxx) and the lead byte they belong to.
    end = len(cut)
    while end > 0 and (cut[end - 1] & 0xC0) == 0x80:
        end -= 1
    if end > 0 and cut[end - 1] >= 0xC0:
        end -= 1
    return cut[:end], True


def _env_text(data: bytes) -> str:
    # An environment string cannot hold NUL; trailing line breaks would only get in the way of
    # a comparison (command substitution strips them too); everything else passes as it is.
    return data.decode("utf-8", "replace").replace("\x00", "").rstrip("\n")


def _read_head(path: str, limit: int) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit + 1)
    except OSError:
        return None  # gone or unreadable: the stored text stands in


def _stored_output(parent_run: Mapping[str, Any], is_shell: bool) -> tuple[bytes, bool]:
    """The output as the run row holds it (trimmed when stored), ending with a newline so that
    line-reading tools see its last line; and whether it was cut when it was stored."""
    text = parent_run.get("shell_stdout") if is_shell else parent_run.get("summary")
    if not isinstance(text, str) or not text:
        return b"", False
    cut = is_shell and (text.endswith(TRUNCATION_SUFFIX) or CAPTURE_LIMIT_NOTE in text)
    data = text.encode("utf-8", "replace")
    return (data if data.endswith(b"\n") else data + b"\n"), cut


async def parent_output(
    parent_run: Mapping[str, Any], parent_job: Mapping[str, Any] | None
) -> tuple[bytes, bool]:
    """The parent's output, up to PARENT_STDIN_LIMIT bytes (read from its offloaded stdout file
    in a thread, so the loop never waits on the disk), and whether it was cut."""
    is_shell = extract_shell_result(parent_run, parent_job) is not None
    path = parent_run.get("shell_stdout_path") if is_shell else None
    data, stored_cut = None, False
    if isinstance(path, str) and path:
        data = await asyncio.to_thread(_read_head, path, PARENT_STDIN_LIMIT)
    if data is None:
        data, stored_cut = _stored_output(parent_run, is_shell)
    head, cut = _head(data, PARENT_STDIN_LIMIT)
    return head, cut or stored_cut


def _describe(parent_run: Mapping[str, Any], parent_job: Mapping[str, Any] | None) -> dict[str, str]:
    env = {PARENT_JOB_ID: str(parent_run.get("job_id") or ""),
           PARENT_STATUS: str(parent_run.get("status") or "")}
    if parent_job is not None and parent_job.get("name"):
        env[PARENT_JOB_NAME] = _env_text(str(parent_job["name"]).encode("utf-8", "replace"))
    exit_code = parent_run.get("shell_exit_code")
    if isinstance(exit_code, int) and not isinstance(exit_code, bool):
        env[PARENT_EXIT_CODE] = str(exit_code)
    error = parent_run.get("error_message")
    if isinstance(error, str) and error:
        env[PARENT_ERROR] = _env_text(_head(error.encode("utf-8", "replace"), PARENT_ERROR_ENV_LIMIT)[0])
    path = parent_run.get("shell_stdout_path")
    if isinstance(path, str) and path:
        env[PARENT_STDOUT_PATH] = path
    return env


async def parent_input(run_id: str, parent_run: Mapping[str, Any] | None,
                       parent_job: Mapping[str, Any] | None) -> ParentInput:
    """What the child of ``run_id`` gets; the run may be gone (its job was deleted): then only
    its id."""
    if parent_run is None:
        return ParentInput({PARENT_RUN_ID: run_id}, None)
    output, cut = await parent_output(parent_run, parent_job)
    in_env, env_cut = _head(output, PARENT_OUTPUT_ENV_LIMIT)
    env = {PARENT_RUN_ID: run_id, **_describe(parent_run, parent_job),
           PARENT_OUTPUT: _env_text(in_env), PARENT_OUTPUT_TRUNCATED: "1" if cut or env_cut else "0"}
    return ParentInput(env, output)
