"""bench/fleet.py end to end, at its --quick size: it runs every set-up (1 daemon on SQLite,
1 and 3 daemons on PostgreSQL) and writes figures for each. No timing thresholds: the figures
only have to be there and positive; the machine is shared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "fleet.py"


@pytest.mark.slow
def test_fleet_bench_quick_measures_every_setup(pg_cluster: Any, tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--pg-url", str(pg_cluster.url()), "--json", str(out)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    setups = figures["setups"]
    assert set(setups) == {"sqlite-1", "postgres-1", "postgres-3"}
    for key, setup in setups.items():
        throughput, lateness = setup["throughput"], setup["lateness"]
        assert throughput["runs_per_s"] > 0, key
        assert throughput["statuses"] == {"ok": throughput["n"]}, key
        assert sum(throughput["runs_per_daemon"].values()) == throughput["n"], key
        assert lateness["statuses"] == {"ok": lateness["n"]}, key
        for name in ("p50_ms", "p99_ms", "max_ms"):
            assert lateness[name] > 0, (key, name)
    # each daemon of the 3-daemon set-up is its own owner; the spread names them apart
    assert 1 <= len(setups["postgres-3"]["throughput"]["runs_per_daemon"]) <= 3
    assert figures["meta"]["postgresql"]
    assert "throughput (runs/s)" in done.stdout  # the side-by-side table
    # the databases it made on the given server are dropped again
    import psycopg

    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'fleetbench_%'").fetchall()
    assert left == []
