"""sd_notify: the daemon, a real subprocess, talks to a real AF_UNIX datagram socket as systemd's
NOTIFY_SOCKET: READY once it serves, WATCHDOG pings from the scheduling loop, STOPPING on SIGTERM;
a loop blocked on purpose stops the pings."""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import DaemonFactory

# 1 s watchdog: the loop owes a ping every 0.5 s. The tick is a minute, so pings that keep coming
# prove the loop wakes for the watchdog rather than for its safety-net tick.
WATCHDOG_ENV = {"WATCHDOG_USEC": "1000000", "SCHEDULER_TICK_MS": "60000"}


class NotifyListener:
    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    def next(self, timeout: float = 15) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines() if "=" in line)

    def next_with(self, key: str, timeout: float = 15) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.1, deadline - time.monotonic()))
            if key in message:
                return message

    def drain(self) -> list[dict[str, str]]:
        messages = []
        self.sock.settimeout(0.0)
        try:
            while True:
                data = self.sock.recv(4096).decode()
                messages.append(dict(line.split("=", 1) for line in data.splitlines() if "=" in line))
        except BlockingIOError:
            return messages


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """AF_UNIX paths are limited to ~107 bytes: pytest's tmp_path may be longer."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="sdn-") as name:
        yield Path(name)


def test_ready_then_watchdog_pings_then_stopping_on_an_abstract_socket(daemon: DaemonFactory) -> None:
    name = f"openclaw-scheduler-test-{uuid.uuid4().hex}"
    listener = NotifyListener("\0" + name)
    proc = daemon(env={"NOTIFY_SOCKET": "@" + name, **WATCHDOG_ENV})
    first = listener.next()
    assert first.get("READY") == "1", first
    assert first.get("STATUS", "").startswith("serving"), first
    for _ in range(4):
        assert listener.next_with("WATCHDOG", timeout=10).get("WATCHDOG") == "1"
    proc.proc.send_signal(15)
    stopping = listener.next_with("STOPPING", timeout=10)
    assert stopping["STOPPING"] == "1"
    assert stopping.get("STATUS", "").startswith("stopping")
    assert proc.stop() == 0


def test_a_blocked_loop_stops_the_pings_and_they_resume_after(daemon: DaemonFactory,
                                                               short_dir: Path) -> None:
    address = str(short_dir / "notify.sock")
    freeze = short_dir / "freeze"
    listener = NotifyListener(address)
    proc = daemon(env={"NOTIFY_SOCKET": address, "SCHEDULER_TEST_FREEZE_LOOP_FILE": str(freeze),
                       **WATCHDOG_ENV})
    assert listener.next().get("READY") == "1"
    listener.next_with("WATCHDOG", timeout=10)
    freeze.touch()
    time.sleep(1.5)  # a round under way when the file appeared may still ping once
    listener.drain()
    # Six watchdog intervals with the scheduling loop stuck (the daemon's other tasks run on, so
    # a ping from anywhere but the loop itself would still arrive): not one ping.
    with pytest.raises(TimeoutError):
        listener.next(timeout=3)
    freeze.unlink()
    assert listener.next_with("WATCHDOG", timeout=10)["WATCHDOG"] == "1"
    assert proc.stop() == 0


def test_without_a_watchdog_the_daemon_sends_ready_and_stopping_only(daemon: DaemonFactory,
                                                                     short_dir: Path) -> None:
    address = str(short_dir / "notify.sock")
    listener = NotifyListener(address)
    proc = daemon(env={"NOTIFY_SOCKET": address, "SCHEDULER_TICK_MS": "1000"})
    assert listener.next().get("READY") == "1"
    time.sleep(2.5)  # two and a half ticks of the loop
    assert not [m for m in listener.drain() if "WATCHDOG" in m]
    assert proc.stop() == 0
    assert listener.next_with("STOPPING", timeout=5)["STOPPING"] == "1"


def test_the_notify_variables_leave_the_environment_jobs_inherit() -> None:
    from scheduler.engine.notify import Notifier

    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid()),
           "PATH": "/bin"}
    notifier = Notifier.from_environment(env)
    assert env == {"PATH": "/bin"}
    assert notifier.address == "\0x"
    assert notifier.watchdog_interval_s == 2.0


def test_a_watchdog_meant_for_another_process_is_ignored() -> None:
    from scheduler.engine.notify import Notifier

    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}
    assert Notifier.from_environment(env).watchdog_interval_s is None
