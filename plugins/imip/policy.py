# SPDX-License-Identifier: GPL-3.0-or-later
"""Whether an iTIP message for an external address becomes an email, and what the organizer sees if not.

Pure: the storage layer passes who is writing and whether the event is over. An address mail cannot reach
(``mailto:nobody``, ``foo:bar``) is refused at once (RFC 5546 request status 3.7, "Invalid calendar user")
rather than queued to fail later; rooms and resources are booked by people, not by mail; a meeting that is
over needs no invitation; and an admin can restrict who may invite guests from outside (3.8, "No authority").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from invito.plugins.imip.mime import is_mailbox
from invito.plugins.itip import ITipMessage
from invito.plugins.itip.address import normalize
from invito.plugins.itip.components import find_attendee, param, scheduled

QUEUED = "1.0"       # pending: waiting in the outbound spool for a relay to be configured
SPOOLED = "1.1"      # sent: in Invito's durable queue with a relay to take it (sabre/dav stamps iMIP so)
INVALID_USER = "3.7"
NO_AUTHORITY = "3.8"


@dataclass(frozen=True)
class MailDecision:
    send: bool
    status: str | None  # SCHEDULE-STATUS for the organizer's copy; None: leave it as it is
    reason: str


def may_invite_externals(user: str, groups: Iterable[str], allowed: Iterable[str]) -> bool:
    """``[scheduling] external_invites``: ``*``, user names and ``@group`` entries."""
    allowed = set(allowed)
    return "*" in allowed or user in allowed or any("@" + group in allowed for group in groups)


def queued(relay_configured: bool) -> str:
    """What the organizer's copy says of a message just queued: all Invito knows at the PUT. Later
    progress is recorded in the spool's outcome log, not in the client's object."""
    return SPOOLED if relay_configured else QUEUED


def mailable(recipient: str) -> bool:
    """A ``mailto:`` calendar user address with a mailbox mail can be sent to."""
    address = normalize(recipient)
    return address.startswith("mailto:") and is_mailbox(address)


def decide(message: ITipMessage, recipient: str, *, may_invite: bool, event_over: bool,
           relay_configured: bool = False) -> MailDecision:
    if not mailable(recipient):
        return MailDecision(False, INVALID_USER, "not a calendar user address mail can reach")
    if event_over:
        return MailDecision(False, None, "the event is entirely in the past")
    if message.method == "REPLY":  # an internal attendee answering an external organizer
        return MailDecision(True, None, "reply to the organizer")
    cutypes = {param(prop, "CUTYPE").upper() for comp in scheduled(message.calendar)
               if (prop := find_attendee(comp, recipient)) is not None}
    if cutypes & {"ROOM", "RESOURCE"}:
        return MailDecision(False, None, "rooms and resources are not invited by mail")
    if not may_invite:
        return MailDecision(False, NO_AUTHORITY, "the organizer may not invite external guests")
    return MailDecision(True, queued(relay_configured), "queued for mail")
