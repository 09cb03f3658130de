"""bench/fleet.py end to end, at its --quick size, on the throwaway PostgreSQL cluster it starts
itself: it runs every set-up (1 daemon on SQLite, 1 and 3 daemons on PostgreSQL) and writes
figures for each. No timing thresholds: the figures only have to be there and positive; the
machine is shared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pgcluster

BENCH = Path(__file__).resolve().parents[1] / "bench" / "fleet.py"


def _require_postgres() -> None:
    """Skip without the server binaries or psycopg, unless CI says they must be there."""
    required = os.environ.get("SCHEDULER_TEST_REQUIRE_POSTGRES") == "1"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if required:
            pytest.fail("psycopg is not installed (pip install '.[postgres]')")
        pytest.skip("psycopg is not installed: the fleet bench is skipped")
    if pgcluster.server_binaries() is None:
        if required:
            pytest.fail("SCHEDULER_TEST_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries were found")
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): the fleet bench is skipped")


@pytest.mark.slow
def test_fleet_bench_quick_measures_every_setup(tmp_path: Path) -> None:
    _require_postgres()
    out = tmp_path / "fleet.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    setups = figures["setups"]
    assert set(setups) == {"sqlite-1", "postgres-1", "postgres-3"}
    for key, setup in setups.items():
        throughput, lateness = setup["throughput"], setup["lateness"]
        assert throughput["runs_per_s"] > 0, key
        assert throughput["daemons_cpu_s"] > 0, key
        assert throughput["statuses"] == {"ok": throughput["n"]}, key
        assert sum(throughput["runs_per_daemon"].values()) == throughput["n"], key
        assert lateness["statuses"] == {"ok": lateness["n"]}, key
        for name in ("p50_ms", "p99_ms", "max_ms"):
            assert lateness[name] > 0, (key, name)
        if setup["backend"] == "postgresql":  # the bench's own cluster: its CPU is measured
            assert throughput["postgresql_server_cpu_s"] > 0, key
    assert setups["postgres-3"]["daemons"] == 3
    assert 1 <= len(setups["postgres-3"]["throughput"]["runs_per_daemon"]) <= 3
    assert figures["meta"]["postgresql"]
    assert "throughput (runs/s)" in done.stdout  # the side-by-side table
