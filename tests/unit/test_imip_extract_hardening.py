# SPDX-License-Identifier: GPL-3.0-or-later
"""Mail no guest's program sends is refused with the reason, never guessed at: two authors, a mail loop,
and calendar parts that are damaged or carry no real answer."""
from __future__ import annotations

import base64

import pytest

from invito.plugins.imip.extract import Kind, extract
from tests.unit.test_imip_extract import GUEST, ics, multipart, part, single

REPLY_TYPE = "text/calendar; charset=utf-8; method=REPLY"


def refused(raw: bytes) -> str:
    mail = extract(raw)
    assert mail.kind is Kind.REJECTED and mail.calendar is None
    return mail.reason


def test_a_well_formed_reply_is_read() -> None:  # the baseline the cases below break one way each
    mail = extract(single(base64.encodebytes(ics()), REPLY_TYPE, "base64"))
    assert (mail.kind, mail.method) == (Kind.ITIP, "REPLY")


def test_two_from_headers_are_refused() -> None:
    raw = b"From: attacker@evil.example\r\n" + single(ics(), REPLY_TYPE)
    assert "2 From headers" in refused(raw) and "RFC 7489" in refused(raw)


def test_a_mail_loop_is_refused_and_a_long_route_is_not() -> None:
    hop = "Received: from mx{0}.example.net by mx{1}.example.net; Thu, 3 Dec 2026 10:00:00 +0000\r\n"
    many = "".join(hop.format(i, i + 1) for i in range(60))
    assert "60 mail servers" in refused(single(ics(), REPLY_TYPE, extra=many))
    fifty = "".join(hop.format(i, i + 1) for i in range(50))
    assert extract(single(ics(), REPLY_TYPE, extra=fifty)).kind is Kind.ITIP


def test_broken_base64_is_refused() -> None:
    encoded = base64.encodebytes(ics())
    broken = encoded[:40] + b"!*~" + encoded[40:]
    assert refused(single(broken, REPLY_TYPE, "base64")) == "the calendar part's base64 is broken"
    truncated = encoded.replace(b"\n", b"")[:-3] + b"\r\n"  # the padding is gone
    assert refused(single(truncated, REPLY_TYPE, "base64")) == "the calendar part's base64 is broken"


def test_an_unknown_transfer_encoding_is_refused() -> None:
    reason = refused(multipart(part(b"Accepted.\r\n", "text/plain"), part(ics(), REPLY_TYPE, "x-uuencode")))
    assert reason == "the calendar part's Content-Transfer-Encoding 'x-uuencode' is unknown"


@pytest.mark.parametrize("data, what", [
    (b"\xef\xbb\xbf" + ics(), "byte order mark"),
    (ics().replace(b"UID:", b"UID:\xef\xbb\xbf"), "byte order mark"),
    (ics().replace(b"DTSTAMP:", b"DTSTAMP:\x00"), "NUL"),
    (ics("COMMENT:see you\x00 there"), "NUL"),
])
def test_a_bom_or_nul_in_the_calendar_is_refused(data: bytes, what: str) -> None:
    assert what in refused(single(data, REPLY_TYPE))
    assert what in refused(single(base64.encodebytes(data), REPLY_TYPE, "base64"))


@pytest.mark.parametrize("partstat", ["", "X-FOO", "MAYBE", "COMPLETED", "ACCEPTED,DECLINED"])
def test_a_partstat_that_is_no_answer_is_refused(partstat: str) -> None:
    data = ics(attendee=f"ATTENDEE;PARTSTAT={partstat}:mailto:{GUEST}")
    assert "PARTSTAT=" in refused(single(data, REPLY_TYPE))


@pytest.mark.parametrize("partstat", ["ACCEPTED", "declined", "TENTATIVE", "DELEGATED", "NEEDS-ACTION"])
def test_every_answer_rfc_5545_defines_for_an_event_is_read(partstat: str) -> None:
    data = ics(attendee=f"ATTENDEE;PARTSTAT={partstat}:mailto:{GUEST}")
    assert extract(single(data, REPLY_TYPE)).kind is Kind.ITIP


def test_a_to_do_may_be_completed() -> None:
    data = ics(attendee=f"ATTENDEE;PARTSTAT=COMPLETED:mailto:{GUEST}").replace(b"VEVENT", b"VTODO")
    assert extract(single(data, REPLY_TYPE)).kind is Kind.ITIP
