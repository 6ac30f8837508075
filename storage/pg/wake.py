# SPDX-License-Identifier: GPL-3.0-or-later
"""Waking a queue's worker when any node commits work for it: ``LISTEN`` on a connection of its own.

A transaction that queues work runs ``NOTIFY <channel>``, which PostgreSQL delivers to every listener only
when (and if) that transaction commits, on every node including this one. Notifications are not durable: one
sent while the listening connection was down is lost. So the worker's event is also set every
``poll_seconds`` and after each reconnection, and a lost notification costs at most one poll's delay.
"""
from __future__ import annotations

import logging
import threading
import time

import psycopg

logger = logging.getLogger("invito.storage")

POLL_SECONDS = 30.0   # a worker looks at its queue at least this often, notified or not
RECONNECT_SECONDS = 5.0


def notify(conn: psycopg.Connection, channel: str) -> None:
    """Wake ``channel``'s listeners when ``conn``'s transaction commits (several in one: one wake-up)."""
    conn.execute(f"NOTIFY {channel}")


class Waker:
    """Sets ``event`` on each notification on ``channel``, and at least every ``poll_seconds``."""

    def __init__(self, url: str, channel: str, event: threading.Event, *,
                 poll_seconds: float = POLL_SECONDS) -> None:
        self.url = url
        self.channel = channel
        self.event = event
        self.poll_seconds = poll_seconds
        self.listening = threading.Event()  # set while LISTEN is in force: notifications from now on wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"listen-{channel}", daemon=True)

    def start(self) -> "Waker":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self.listening.set()
                    self.event.set()  # anything committed while we were not listening
                    poll_at = time.monotonic() + self.poll_seconds
                    while not self._stop.is_set():
                        # Short waits keep stop() prompt; the poll is counted across them.
                        wait = max(0.0, min(1.0, poll_at - time.monotonic()))
                        notified = any(True for _ in conn.notifies(timeout=wait, stop_after=1))
                        if notified or time.monotonic() >= poll_at:
                            self.event.set()
                            poll_at = time.monotonic() + self.poll_seconds
            except psycopg.Error as e:
                self.listening.clear()
                logger.warning("database: listening on %s failed (%s); again in %g s", self.channel, e,
                               RECONNECT_SECONDS)
                self._stop.wait(RECONNECT_SECONDS)


class Wakeup:
    """A queue's wake-up event, listening from its first use (a node that never sends never listens)."""

    def __init__(self, url: str, channel: str, poll_seconds: float) -> None:
        self._url, self._channel, self._poll = url, channel, poll_seconds
        self._event = threading.Event()
        self._waker: Waker | None = None
        self._lock = threading.Lock()

    @property
    def event(self) -> threading.Event:
        with self._lock:
            if self._waker is None:
                self._waker = Waker(self._url, self._channel, self._event, poll_seconds=self._poll).start()
        return self._event

    def listening(self, timeout: float) -> bool:
        """Whether LISTEN is in place within ``timeout`` seconds (starting it if needed): from then on no
        commit's notification can be missed."""
        self.event  # noqa: B018  (starts the listener)
        assert self._waker is not None
        return self._waker.listening.wait(timeout)

    def close(self) -> None:
        with self._lock:
            if self._waker is not None:
                self._waker.stop()
                self._waker = None
