# SPDX-License-Identifier: GPL-3.0-or-later
"""What the world outside HTTP asks of a user's stored events, and what became of it.

Inbound mail, the RSVP page, the mail sender's status write-back and an outbox POST all change stored
events through ``Storage.schedule(user, change)``: one of the small changes below in, one
:class:`Outcome` out. Each backend takes its lock (or opens its transaction) once, there, and the
Scheduler carries the change out; callers match on ``Outcome.kind``.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import icalendar

from invito.plugins.itip import ITipMessage


@dataclass(frozen=True)
class Notification:
    """An email telling a user what arrived for them (a guest's answer), spooled with the change itself."""
    message: ITipMessage
    to: str
    notes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RecordStatus:
    """Record SCHEDULE-STATUS (RFC 6638 §3.2.9) for guests of the organizer's event ``uid``: a bounce, or
    the relay's verdict. Guests no longer invited are skipped; a status already there is not written again."""
    uid: str
    statuses: tuple[tuple[str, str], ...]  # (the guest's calendar address, the status)


@dataclass(frozen=True)
class Receive:
    """An iTIP message from outside the server (a guest's REPLY, an external organizer's REQUEST or
    CANCEL) applied to the user's copy, where the user is ``recipient``; ``notification`` is spooled with it."""
    message: ITipMessage
    recipient: str
    notification: Notification | None = None


@dataclass(frozen=True)
class ToInbox:
    """A message for the user's attention only (a COUNTER, news of an uninvited guest); the event is not
    changed."""
    calendar: icalendar.Calendar
    notification: Notification | None = None


@dataclass(frozen=True)
class Send:
    """A message the user sends about an event they organize (a DECLINECOUNTER POSTed to their outbox)."""
    message: ITipMessage


@dataclass(frozen=True)
class Refresh:
    """A guest's REFRESH (RFC 5546 §3.2.6): queue the current invitation to ``uid`` for ``guest`` again."""
    uid: str
    guest: str


@dataclass(frozen=True)
class Forward:
    """A guest's plain email reply about ``uid`` (no calendar), composed for the organizer and queued."""
    uid: str
    guest: str
    organizer: str
    mail: bytes


Change = RecordStatus | Receive | ToInbox | Send | Refresh | Forward


class Kind(enum.Enum):
    APPLIED = "applied"      # stored, delivered or queued
    UNCHANGED = "unchanged"  # nothing anyone needs to hear of: the same message again, a status already there
    REFUSED = "refused"      # must not be applied (``Outcome.reason`` says why)
    NO_EVENT = "no event"    # the user has no such event


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    reason: str = ""  # REFUSED: why
    uninvited: bool = False  # REFUSED: the answer is from someone the event does not invite
    statuses: tuple[tuple[str, str], ...] = ()  # Send: each recipient and its request status, in order


APPLIED = Outcome(Kind.APPLIED)
UNCHANGED = Outcome(Kind.UNCHANGED)
NO_EVENT = Outcome(Kind.NO_EVENT)


def refused(reason: str, uninvited: bool = False) -> Outcome:
    return Outcome(Kind.REFUSED, reason, uninvited)


def meeting(change: Change) -> str:
    """The UID of the event ``change`` is about: writers of one meeting wait for each other."""
    match change:
        case Receive() | Send():
            return change.message.uid
        case ToInbox():
            return next((str(c["UID"]) for c in change.calendar.walk() if "UID" in c), "")
        case _:
            return change.uid
