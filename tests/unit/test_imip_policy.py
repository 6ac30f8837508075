# SPDX-License-Identifier: GPL-3.0-or-later
"""Which iTIP messages for external addresses become email."""
from __future__ import annotations

import icalendar
import pytest

from invito.plugins.imip.policy import decide, may_invite_externals
from invito.plugins.itip import ITipMessage


def message(method: str, attendee_line: str) -> ITipMessage:
    cal = icalendar.Calendar.from_ical(
        f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nMETHOD:{method}\r\nBEGIN:VEVENT\r\nUID:u\r\n"
        "DTSTAMP:20300101T000000Z\r\nDTSTART:20300101T090000Z\r\nORGANIZER:mailto:alice@example.com\r\n"
        f"{attendee_line}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    return ITipMessage(method, "u", "mailto:alice@example.com", ("mailto:x@partner.org",), cal)


@pytest.mark.parametrize("attendee,method,may,over,expected", [
    ("ATTENDEE:mailto:x@partner.org", "REQUEST", True, False, (True, "1.0")),
    ("ATTENDEE:MAILTO:X@Partner.org", "CANCEL", True, False, (True, "1.0")),
    ("ATTENDEE:mailto:x@partner.org", "REQUEST", False, False, (False, "3.8")),
    ("ATTENDEE:mailto:x@partner.org", "REQUEST", True, True, (False, None)),
    ("ATTENDEE;CUTYPE=ROOM:mailto:x@partner.org", "REQUEST", True, False, (False, None)),
    ("ATTENDEE;CUTYPE=resource:mailto:x@partner.org", "REQUEST", True, False, (False, None)),
    ("ATTENDEE:mailto:bob@example.com", "REPLY", False, False, (True, None)),  # answers always go out
])
def test_decide(attendee: str, method: str, may: bool, over: bool, expected: tuple) -> None:
    decision = decide(message(method, attendee), "mailto:x@partner.org", may_invite=may, event_over=over)
    assert (decision.send, decision.status) == expected
    assert decision.reason


def test_who_may_invite_externals() -> None:
    assert may_invite_externals("alice", set(), ["*"])
    assert may_invite_externals("alice", set(), ["bob", "alice"])
    assert may_invite_externals("alice", {"sales"}, ["@sales"])
    assert not may_invite_externals("alice", {"staff"}, ["@sales", "bob"])
    assert not may_invite_externals("alice", set(), [])


@pytest.mark.parametrize("recipient", ["mailto:not an address", "mailto:nobody", "foo:bar", "mailto:a@b",
                                       "urn:uuid:8f1e6d0c-5c1b-4b5e-9a38-2f6c1e1f0d3a", "mailto:"])
def test_addresses_mail_cannot_reach_are_invalid_users_at_once(recipient: str) -> None:
    decision = decide(message("REQUEST", f"ATTENDEE:{recipient}"), recipient, may_invite=True, event_over=False)
    assert (decision.send, decision.status) == (False, "3.7")
