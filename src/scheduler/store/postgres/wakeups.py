"""LISTEN/NOTIFY: how a daemon learns at once that another process wrote work for it.

Triggers on the tables the CLI changes (schema.WAKING_TABLES) notify one channel in the writing
transaction; PostgreSQL delivers the notification when it commits. Each daemon listens on a
connection of its own, on a thread of its own, and counts notifications from other sessions
(its own writes are not news to it). ``token()`` returns that count: the daemon's loop compares
it as it compares SQLite's ``data_version``. While the listening connection is down, the token
changes on every call, so the daemon falls back to polling until it is back.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from typing import Any

from scheduler.store import scrub_db_url
from scheduler.store.postgres.db import CONNECT_TIMEOUT_S, WAKE_CHANNEL

RECONNECT_S = 1.0


class Listener:
    def __init__(self, url: str, own_pids: set[int]) -> None:
        self.url = url
        self.own_pids = own_pids
        self.count = 0
        self.connected = False
        self.last_error: str | None = None  # why the listening connection last dropped
        self._stopping = threading.Event()
        self._polls = itertools.count(1)
        self._conn: Any = None
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)
        self._thread.start()

    def token(self) -> int:
        if not self.connected:
            return -next(self._polls)  # never equal twice: the caller looks again each time
        return self.count

    def stop(self) -> None:
        self._stopping.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):  # it is being closed anyway
                conn.cancel_safe(timeout=1)
        self._thread.join(timeout=3)

    def _run(self) -> None:
        import psycopg

        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                    self._conn = conn
                    conn.execute(f"LISTEN {WAKE_CHANNEL}")
                    self.count += 1  # something may have been written while not listening
                    self.connected = True
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=1.0):
                            if note.pid not in self.own_pids:
                                self.count += 1
            except Exception as exc:
                self.last_error = scrub_db_url(str(exc).strip() or type(exc).__name__, self.url)
            finally:
                self.connected = False
                self._conn = None
            self._stopping.wait(RECONNECT_S)


def start(url: str, own_pids: set[int]) -> Listener:
    """A listener, once connected (or after the connect timeout: it then polls until it is)."""
    listener = Listener(url, own_pids)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while not listener.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    return listener
