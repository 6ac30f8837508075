# SPDX-License-Identifier: GPL-3.0-or-later
"""A request budget per client address for the RSVP pages: a token bucket, refilled steadily.

Link tokens cannot be guessed (160 bits), so the budget is there to keep one client from tying up the
server; a person answering an invitation never comes near it. Memory stays bounded: when more than
``max_clients`` addresses are tracked, those whose bucket has refilled are forgotten.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 10000, period: float = 60.0) -> None:
        """``per_minute`` requests per ``period`` seconds (a minute unless told; the forwarding of guests'
        plain replies counts per hour)."""
        self.capacity = float(per_minute)
        self._rate = per_minute / period  # tokens per second
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client → (tokens left, when counted)
        self._lock = threading.Lock()

    def allow(self, client: str) -> float:
        """Take one request from ``client``'s budget: 0.0 when allowed, else the seconds to wait."""
        if self.capacity <= 0:
            return 0.0  # no limit configured
        with self._lock:
            now = self._clock()
            tokens, then = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self._rate)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                return (1 - tokens) / self._rate
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > self._max_clients:
                self._forget_idle(now)
            return 0.0

    def _forget_idle(self, now: float) -> None:
        full = [c for c, (tokens, then) in self._buckets.items()
                if tokens + (now - then) * self._rate >= self.capacity]
        for client in full:
            del self._buckets[client]
        if len(self._buckets) > self._max_clients:  # all busy: a flood of addresses; start over
            self._buckets.clear()
