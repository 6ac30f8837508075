# SPDX-License-Identifier: GPL-3.0-or-later
"""What one HTTP write tells the storage layer, and what the storage layer tells back.

Radicale's PUT/DELETE handlers call ``Collection.upload``/``delete`` inside the write lock with no room for
scheduling headers, so the HTTP layer puts them here (a context variable: one per request thread) and
reads the outcome (Schedule-Tag, whether the stored copy differs from what was sent) afterwards.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Iterator


@dataclass
class WriteRequest:
    user: str
    user_groups: frozenset[str] = frozenset()
    if_schedule_tag_match: str | None = None
    # A PUT's body as Radicale decoded it: the text to store (see ``verbatim``); taken by the one upload.
    client_text: str | None = None
    # Filled in by the storage layer:
    schedule_tag: str | None = None
    rewritten: bool = False

    def take_client_text(self) -> str | None:
        """The PUT body, once: Radicale uploads one item per single-object PUT, and nothing else done
        under this request (deliveries to other copies) may take it."""
        text, self.client_text = self.client_text, None
        return text


_current: contextvars.ContextVar[WriteRequest | None] = contextvars.ContextVar("invito_write", default=None)


def current() -> WriteRequest | None:
    return _current.get()


@contextlib.contextmanager
def write_request(request: WriteRequest) -> Iterator[WriteRequest]:
    token = _current.set(request)
    try:
        yield request
    finally:
        _current.reset(token)


class SchedulingRefused(Exception):
    """A write refused by scheduling rules; carries the HTTP answer.

    Deliberately not a ValueError: Radicale turns ValueErrors from ``upload`` into a bare 400, and these
    must reach the client as 403/412 with the RFC 6638 precondition element.
    """

    def __init__(self, status: int, precondition: str | None, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.precondition = precondition
        self.reason = reason
