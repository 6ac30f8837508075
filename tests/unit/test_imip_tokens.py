# SPDX-License-Identifier: GPL-3.0-or-later
"""Reply tokens: stable per (organizer, event, guest), durable, unguessable, case-insensitive."""
from __future__ import annotations

import icalendar

from invito.plugins.imip.tokens import ReplyTokens, reply_address, set_organizer_address

ORG, GUEST = "mailto:alice@example.com", "mailto:guest@partner.org"


def test_same_guest_same_event_same_token_across_restarts(tmp_path) -> None:
    first = ReplyTokens(str(tmp_path)).issue(ORG, "uid-1", GUEST)
    again = ReplyTokens(str(tmp_path)).issue(ORG, "uid-1", GUEST)
    assert first == again
    assert len(first.token) == 32 and first.token.islower()  # 160 bits of base32
    assert ReplyTokens(str(tmp_path)).lookup(first.token.upper()) == first


def test_tokens_differ_per_event_guest_and_site(tmp_path) -> None:
    tokens = ReplyTokens(str(tmp_path / "a"))
    other_site = ReplyTokens(str(tmp_path / "b"))
    seen = {tokens.issue(ORG, "uid-1", GUEST).token, tokens.issue(ORG, "uid-2", GUEST).token,
            tokens.issue(ORG, "uid-1", "mailto:other@partner.org").token,
            other_site.issue(ORG, "uid-1", GUEST).token}
    assert len(seen) == 4


def test_unknown_or_malformed_tokens_map_to_nothing(tmp_path) -> None:
    tokens = ReplyTokens(str(tmp_path))
    tokens.issue(ORG, "uid-1", GUEST)
    assert tokens.lookup("a" * 32) is None
    assert tokens.lookup("../secret") is None
    assert tokens.lookup("") is None


def test_organizer_rewritten_with_name_kept() -> None:
    cal = icalendar.Calendar.from_ical(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:u\r\n"
        "DTSTAMP:20300101T000000Z\r\nDTSTART:20300101T090000Z\r\nORGANIZER;CN=Alice Rossi:mailto:alice@example.com\r\n"
        "ATTENDEE:mailto:guest@partner.org\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    address = reply_address("invito+{token}@cal.example.com", "abc")
    set_organizer_address(cal, address)
    organizer = next(iter(cal.walk("VEVENT")))["ORGANIZER"]
    assert str(organizer) == "mailto:invito+abc@cal.example.com"
    assert organizer.params["CN"] == "Alice Rossi"
