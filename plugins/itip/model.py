# SPDX-License-Identifier: GPL-3.0-or-later
"""What the iTIP core hands to the storage layer: the owner's role, what to send, what to store."""
from __future__ import annotations

import enum
from dataclasses import dataclass

import icalendar


class Role(enum.Enum):
    """The calendar owner's part in a scheduling object (RFC 6638 §3.1)."""

    ORGANIZER = "organizer"
    ATTENDEE = "attendee"
    NONE = "none"  # not a scheduling object: nothing to send


class SchedulingError(ValueError):
    """A client wrote something RFC 6638 forbids; mapped to HTTP 403 with a CALDAV: precondition."""

    def __init__(self, precondition: str, reason: str) -> None:
        super().__init__(reason)
        self.precondition = precondition
        self.reason = reason


@dataclass(frozen=True)
class ITipMessage:
    """One iTIP message (RFC 5546) and everyone who receives exactly this calendar."""

    method: str
    uid: str
    sender: str
    recipients: tuple[str, ...]
    calendar: icalendar.Calendar
    significant: bool = True  # False: sent only because the organizer forced it (SCHEDULE-FORCE-SEND)


@dataclass(frozen=True)
class Plan:
    """What one client write means: the copy to store and the messages to deliver."""

    role: Role
    stored: icalendar.Calendar | None
    changed: bool  # the server rewrote what the client sent (so no strong ETag)
    messages: tuple[ITipMessage, ...]


@dataclass(frozen=True)
class Applied:
    """A message merged into the recipient's copy; ``calendar`` None means there is nothing to store.

    ``news`` False: only bookkeeping changed (a newer reply repeating the answer already recorded), so
    the copy is stored but nobody needs to hear of it again.
    """

    calendar: icalendar.Calendar | None
    news: bool = True


@dataclass(frozen=True)
class Refused:
    """A message that must not change the recipient's copy (stale, out of order, from a stranger)."""

    reason: str
    uninvited: bool = False  # a reply from someone the event does not invite (a party crasher)
