"""Finding a crashed run's processes by the run id in their environment (a fake /proc)."""

from __future__ import annotations

from pathlib import Path

from scheduler.engine.orphans import processes_of_runs


def _process(proc: Path, pid: int, environ: bytes | None, *, ppid: int = 1, state: str = "S") -> None:
    entry = proc / str(pid)
    entry.mkdir()
    # A comm with a space and a parenthesis, as /proc allows.
    (entry / "stat").write_text(f"{pid} (odd (name) {state} {ppid} {pid} {pid} 0 -1 4194560 0\n")
    if environ is not None:
        (entry / "environ").write_bytes(environ)


def test_matches_exact_run_ids_only(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    _process(proc, 101, b"PATH=/bin\0SCHEDULER_RUN_ID=run-a\0HOME=/root\0")
    _process(proc, 102, b"SCHEDULER_RUN_ID=run-a-longer\0")  # a different id with the same prefix
    _process(proc, 103, b"SCHEDULER_RUN_ID=run-b\0")
    _process(proc, 104, b"OTHER=SCHEDULER_RUN_ID=run-a\0")  # the text inside another variable
    _process(proc, 105, None)  # no readable environ (gone, or another user's)
    (proc / "self").mkdir()  # non-numeric entries are ignored
    assert processes_of_runs({"run-a"}, proc) == {101: "run-a"}
    assert processes_of_runs({"run-a", "run-b"}, proc) == {101: "run-a", 103: "run-b"}
    assert processes_of_runs(set(), proc) == {}


def test_descendants_count_even_without_the_run_id(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    _process(proc, 200, b"SCHEDULER_RUN_ID=run-a\0")
    _process(proc, 201, b"", ppid=200)  # cleared its environment (env -i)
    _process(proc, 202, b"", ppid=201)
    _process(proc, 203, b"", ppid=201, state="Z")  # a zombie: nothing left to kill
    _process(proc, 300, b"", ppid=1)  # unrelated
    assert processes_of_runs({"run-a"}, proc) == {200: "run-a", 201: "run-a", 202: "run-a"}


def test_no_proc_means_nothing_found(tmp_path: Path) -> None:
    assert processes_of_runs({"run-a"}, tmp_path / "missing") == {}
