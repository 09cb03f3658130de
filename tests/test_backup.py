"""``backup create|list|verify|restore`` on real files, with the daemon as a real process."""

from __future__ import annotations

import signal
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import DaemonFactory, add_job, query, shell_job, wait_until

EVERY_SECOND = "* * * * * *"
YEARLY = "0 3 1 1 *"


def _home_env(tmp_path: Path) -> dict[str, str]:
    return {"SCHEDULER_HOME": str(tmp_path / "home")}


def _count(path: Path, table: str) -> int:
    return int(query(path, f"SELECT count(*) AS n FROM {table}")[0]["n"])


def _backup(cli: Callable[..., Any], dest: Path) -> dict[str, Any]:
    code, out, stdout, stderr = cli("backup", "create", str(dest))
    assert code == 0, stdout + stderr
    assert out["ok"] is True
    return dict(out)


def _damage(path: Path) -> None:
    """Overwrite the middle of the file (table pages, not the header) with garbage."""
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(size // 2)
        handle.write(b"\xa5" * 8192)


def _copy_jobs(path: Path, copies: int) -> None:
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)") if row[1] != "id"]
        names = ", ".join(columns)
        for _ in range(copies):
            conn.execute(f"INSERT INTO jobs (id, {names}) SELECT lower(hex(randomblob(16))), "
                         f"{names} FROM jobs LIMIT 1")


def test_backups_taken_while_the_daemon_writes_are_consistent_and_restore(
        cli: Callable[..., Any], daemon: DaemonFactory, db_path: Path, tmp_path: Path) -> None:
    job = add_job(cli, shell_job(name="busy", schedule_cron=EVERY_SECOND, payload_message="echo hi"))
    proc = daemon()
    wait_until(lambda: _count(db_path, "runs") >= 2, timeout=30)
    copies = [tmp_path / f"copy-{i}.db" for i in range(3)]
    taken = [_backup(cli, dest) for dest in copies]  # the daemon goes on writing meanwhile
    wait_until(lambda: _count(db_path, "runs") > taken[-1]["runs"], timeout=30)
    assert proc.stop() == 0
    for dest, found in zip(copies, taken, strict=True):
        assert stat.S_IMODE(dest.stat().st_mode) == 0o600
        assert not dest.with_name(dest.name + "-wal").exists()  # one self-contained file
        code, out, _, _ = cli("backup", "verify", str(dest))
        assert code == 0 and out["ok"] is True and out["problems"] == []
        assert found["jobs"] == 1 and found["runs"] >= 2
    code, out, stdout, stderr = cli("backup", "restore", str(copies[0]), env=_home_env(tmp_path))
    assert code == 0, stdout + stderr
    assert _count(db_path, "runs") == taken[0]["runs"]
    kept = Path(out["pre_restore"])
    assert kept.parent == tmp_path / "home" / "backups" / "pre-restore"
    assert _count(kept, "runs") > taken[-1]["runs"]  # the database as it was before the restore
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    code, out, _, _ = cli("jobs", "get", job["id"])
    assert code == 0 and out["name"] == "busy"
    daemon().stop()  # the restored database serves a daemon again


def test_restore_is_refused_while_a_daemon_serves_the_database(
        cli: Callable[..., Any], daemon: DaemonFactory, db_path: Path, tmp_path: Path) -> None:
    cli("status")
    empty = tmp_path / "empty.db"
    _backup(cli, empty)
    add_job(cli, shell_job(name="kept", schedule_cron=YEARLY))
    proc = daemon()
    code, out, _, _ = cli("backup", "restore", str(empty), env=_home_env(tmp_path))
    assert code != 0
    assert f"pid {proc.pid}" in out["error"] and "--force" in out["error"]
    assert _count(db_path, "jobs") == 1
    assert not (tmp_path / "home" / "backups" / "pre-restore").exists()
    code, _, _, stderr = cli("backup", "restore", str(empty), json_mode=False)
    assert code != 0 and stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1
    assert proc.proc.poll() is None  # untouched


def test_force_restores_under_a_running_daemon_and_says_it_was_not_stopped(
        cli: Callable[..., Any], daemon: DaemonFactory, db_path: Path, tmp_path: Path) -> None:
    cli("status")
    empty = tmp_path / "empty.db"
    _backup(cli, empty)
    add_job(cli, shell_job(name="replaced", schedule_cron=YEARLY))
    proc = daemon()
    code, out, stdout, stderr = cli("backup", "restore", str(empty), "--force",
                                    env=_home_env(tmp_path))
    assert code == 0, stdout + stderr
    assert f"pid {proc.pid}" in out["warning"] and "not stopped" in out["warning"]
    assert _count(db_path, "jobs") == 0
    assert _count(Path(out["pre_restore"]), "jobs") == 1
    proc.wait_for_event("db.gone", timeout=30)  # it sees the swap and stops rather than write on
    assert proc.stop() != 0


def test_a_damaged_backup_is_refused_by_verify_and_by_restore(
        cli: Callable[..., Any], db_path: Path, tmp_path: Path) -> None:
    add_job(cli, shell_job(name="job", schedule_cron=YEARLY, payload_message="echo " + "x" * 500))
    _copy_jobs(db_path, 199)  # enough pages that damage in the middle hits table pages
    damaged = tmp_path / "damaged.db"
    _backup(cli, damaged)
    _damage(damaged)
    code, out, _, _ = cli("backup", "verify", str(damaged))
    assert code != 0 and out["ok"] is False and out["problems"]
    code, _, stdout, _ = cli("backup", "verify", str(damaged), json_mode=False)
    assert code != 0 and stdout.startswith("FAIL")
    code, out, _, _ = cli("backup", "restore", str(damaged), env=_home_env(tmp_path))
    assert code != 0 and "not a sound scheduler backup" in out["error"]
    assert _count(db_path, "jobs") == 200
    assert not (tmp_path / "home" / "backups" / "pre-restore").exists()


def test_verify_refuses_files_that_are_not_scheduler_databases(
        cli: Callable[..., Any], tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("not a database\n")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE things (id INTEGER)")
    for path, expected in ((text, "not a SQLite database"), (other, "not a scheduler database")):
        code, out, _, _ = cli("backup", "verify", str(path))
        assert code != 0 and expected in out["problems"][0]
    code, out, _, _ = cli("backup", "verify", str(tmp_path / "missing.db"))
    assert code != 0 and "no backup file" in out["error"]


def test_restore_discards_the_old_wal_so_it_is_not_replayed_into_the_backup(
        cli: Callable[..., Any], daemon: DaemonFactory, db_path: Path, tmp_path: Path) -> None:
    cli("status")
    empty = tmp_path / "empty.db"
    _backup(cli, empty)
    proc = daemon()
    for i in range(5):
        add_job(cli, shell_job(name=f"in the wal {i}", schedule_cron=YEARLY))
    proc.stop(signal.SIGKILL)  # no checkpoint: the jobs live in the -wal file
    wal = db_path.with_name(db_path.name + "-wal")
    assert wal.exists() and wal.stat().st_size > 0
    code, out, stdout, stderr = cli("backup", "restore", str(empty), env=_home_env(tmp_path))
    assert code == 0, stdout + stderr
    assert _count(db_path, "jobs") == 0
    assert _count(Path(out["pre_restore"]), "jobs") == 5  # the WAL's content was kept first
    code, out, _, _ = cli("jobs", "list")
    assert code == 0 and out == []


def test_restore_is_refused_while_another_process_has_the_database_open(
        cli: Callable[..., Any], db_path: Path, tmp_path: Path) -> None:
    cli("status")
    empty = tmp_path / "empty.db"
    _backup(cli, empty)
    add_job(cli, shell_job(name="open elsewhere", schedule_cron=YEARLY))
    holder = sqlite3.connect(db_path)
    try:
        holder.execute("SELECT count(*) FROM jobs").fetchall()
        code, out, _, _ = cli("backup", "restore", str(empty), env=_home_env(tmp_path))
    finally:
        holder.close()
    assert code != 0 and "another process" in out["error"]
    assert _count(db_path, "jobs") == 1


def test_create_defaults_to_the_backup_directory_and_list_shows_it(
        cli: Callable[..., Any], tmp_path: Path) -> None:
    cli("status")
    env = _home_env(tmp_path)
    code, out, stdout, stderr = cli("backup", "create", env=env)
    assert code == 0, stdout + stderr
    made = Path(out["path"])
    assert made.parent == tmp_path / "home" / "backups" and made.name.startswith("scheduler-")
    code, rows, _, _ = cli("backup", "list", env=env)
    assert code == 0 and [r["path"] for r in rows] == [str(made)] and rows[0]["kind"] == "manual"
    code, out, _, _ = cli("backup", "create", str(made), env=env)
    assert code != 0 and "already exists" in out["error"]
    code, out, _, _ = cli("backup", "create", "a", "b", env=env)
    assert code != 0 and "usage" in out["error"]


# -- periodic backups by the daemon (SCHEDULER_BACKUP=1) -----------------------------------------

def _plant(path: Path, source: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source.read_bytes())
    return path


def test_the_daemon_snapshots_rolls_up_and_prunes_by_the_reference_retention(
        cli: Callable[..., Any], daemon: DaemonFactory, db_path: Path, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    add_job(cli, shell_job(name="backed up", schedule_cron=YEARLY))
    sample = tmp_path / "sample.db"
    _backup(cli, sample)
    backups = tmp_path / "home" / "backups"
    now = datetime.now(UTC)

    def dated(kind: str, age: timedelta, name_format: str) -> Path:
        when = now - age
        return _plant(backups / kind / when.strftime("%Y-%m-%d") / when.strftime(name_format), sample)

    old_snapshot = dated("snapshots", timedelta(hours=30), "%H-%M.db")
    recent_snapshot = dated("snapshots", timedelta(hours=2), "%H-%M.db")
    old_rollup = dated("rollups", timedelta(days=8), "%H.db")
    recent_rollup = dated("rollups", timedelta(days=3), "%H.db")
    by_hand = _plant(backups / "scheduler-20200101T000000Z.db", sample)
    proc = daemon(env={"SCHEDULER_BACKUP": "1", **_home_env(tmp_path)})
    snapshot = Path(proc.wait_for_event("backup.snapshot", timeout=30)["path"])
    rollup = Path(proc.wait_for_event("backup.rollup", timeout=30)["path"])
    pruned = proc.wait_for_event("backup.pruned", timeout=30)
    assert proc.stop() == 0
    assert snapshot.parent.parent == backups / "snapshots"
    assert rollup.parent.parent == backups / "rollups"
    for made in (snapshot, rollup):
        assert stat.S_IMODE(made.stat().st_mode) == 0o600
        code, out, _, _ = cli("backup", "verify", str(made))
        assert code == 0 and out["jobs"] == 1
    assert pruned["count"] == 2
    assert not old_snapshot.exists() and not old_rollup.exists()
    assert not old_snapshot.parent.exists()  # the emptied day folder goes too
    assert recent_snapshot.exists() and recent_rollup.exists() and by_hand.exists()
    code, rows, _, _ = cli("backup", "list", env=_home_env(tmp_path))
    assert {r["kind"] for r in rows} == {"snapshots", "rollups", "manual"}


def test_no_periodic_backups_unless_enabled_and_a_short_interval_is_refused(
        cli: Callable[..., Any], daemon: DaemonFactory, tmp_path: Path) -> None:
    cli("status")
    proc = daemon(env={"SCHEDULER_BACKUP": "yes", **_home_env(tmp_path)})  # only 1/true enable
    assert proc.stop() == 0
    assert proc.events("backup.snapshot") == []
    assert not (tmp_path / "home" / "backups").exists()
    proc = daemon(env={"SCHEDULER_BACKUP": "1", "SCHEDULER_BACKUP_MS": "1000"}, wait=False)
    assert proc.proc.wait(30) != 0
    wait_until(lambda: any("SCHEDULER_BACKUP_MS" in line for line in proc.lines), timeout=10)


def test_unwritable_places_are_one_line_errors_and_change_nothing(
        cli: Callable[..., Any], db_path: Path, tmp_path: Path) -> None:
    add_job(cli, shell_job(name="stays", schedule_cron=YEARLY))
    good = tmp_path / "good.db"
    _backup(cli, good)
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("x")
    code, out, _, _ = cli("backup", "create", str(not_a_dir / "x.db"))
    assert code == 1 and "cannot write in" in out["error"]
    code, out, _, _ = cli("backup", "restore", str(good),
                          env={"SCHEDULER_BACKUP_DIR": str(not_a_dir / "backups")})
    assert code == 1 and "nothing was restored" in out["error"]
    assert _count(db_path, "jobs") == 1
