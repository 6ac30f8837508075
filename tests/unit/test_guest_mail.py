# SPDX-License-Identifier: GPL-3.0-or-later
"""What guests' mail programs need from Invito's mail, and what reaches the organizer of a guest's mail:
Reply-To the reply address, DTEND for DURATION, a plain reply forwarded (auto-replies and loops not), a
party crasher flagged, the organizer's notice described by the stored event."""
from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from invito.plugins.imip import forward
from invito.plugins.imip.mime import COMMENT_LIMIT
from invito.plugins.imip.triage import Action
from invito.storage.scheduling import for_organizer
from tests.unit.test_imip_mime import calendar_sent, event, html_body, ics, mail, text_body
from tests.unit.test_imip_triage import ALICE, GUEST as TOKEN_GUEST, OTHER, TOKEN_ADDRESS, itip, run

TOKEN = "mailto:invito+abcdefghijklmnopqrstuvwxyz234567@cal.example.com"


# -- the invitation ----------------------------------------------------------------------------------------

def test_reply_to_is_the_guests_reply_address_and_the_body_names_the_organizer() -> None:
    msg = mail(ics(event()), organizer_address="mailto:alice@example.com", reply_address=TOKEN)
    assert str(msg["Reply-To"]) == "Alice Rossi <invito+abcdefghijklmnopqrstuvwxyz234567@cal.example.com>"
    assert "Organizer: Alice Rossi <alice@example.com>" in text_body(msg)


def test_a_notification_to_the_organizer_still_replies_to_the_guest() -> None:
    reply = ics(event().replace("NEEDS-ACTION;RSVP=TRUE;SCHEDULE-STATUS=1.0", "ACCEPTED"), method="REPLY")
    msg = mail(reply, "mailto:alice@example.com", reply_address=TOKEN)
    assert [a.addr_spec for a in msg["Reply-To"].addresses] == ["alice@example.com"]


@pytest.mark.parametrize("start,duration,end", [
    ("DTSTART;TZID=Europe/Rome:20301010T090000", "PT1H30M", b"DTEND;TZID=Europe/Rome:20301010T103000"),
    # Across the spring-forward night: one elapsed hour from 01:30 CET is 03:30 CEST.
    ("DTSTART;TZID=Europe/Rome:20300331T013000", "PT1H", b"DTEND;TZID=Europe/Rome:20300331T033000"),
    # A day is a calendar day: the same wall-clock time, 23 elapsed hours later.
    ("DTSTART;TZID=Europe/Rome:20300330T090000", "P1D", b"DTEND;TZID=Europe/Rome:20300331T090000"),
    ("DTSTART:20301010T070000Z", "PT45M", b"DTEND:20301010T074500Z"),
    ("DTSTART;VALUE=DATE:20301010", "P2D", b"DTEND;VALUE=DATE:20301012"),
])
def test_an_event_with_duration_is_sent_with_the_dtend_it_means(start: str, duration: str, end: bytes) -> None:
    cal = ics(event(f"DURATION:{duration}", start=start, end=""))
    sent = calendar_sent(mail(cal))
    vevent = sent.walk("VEVENT")[0]
    assert "DURATION" not in vevent
    assert end in sent.to_ical()
    assert cal.walk("VEVENT")[0]["DURATION"].to_ical() == duration.encode()  # the caller's calendar unchanged


def test_a_reply_shows_no_link_but_web_and_mail_ones_and_a_capped_comment() -> None:
    reply = ics(event("URL:javascript:alert(1)", "ATTACH:file:///etc/passwd", "ATTACH:https://ok.example/a.pdf",
                      "COMMENT:" + "x" * 100_000).replace("NEEDS-ACTION;RSVP=TRUE;SCHEDULE-STATUS=1.0", "ACCEPTED"),
                method="REPLY")
    msg = mail(reply, "mailto:alice@example.com")
    for body in (text_body(msg), html_body(msg)):
        assert "javascript" not in body and "file:" not in body and "https://ok.example/a.pdf" in body
        assert "x" * COMMENT_LIMIT not in body and "x" * (COMMENT_LIMIT - 1) in body


# -- the organizer's notice ------------------------------------------------------------------------------------

def test_the_notice_is_described_by_the_stored_event() -> None:
    stored = ics(event("URL:https://intranet.example.com/q", summary="Quarterly review"))
    reply = ics(event("URL:javascript:alert(1)", "COMMENT:" + "y" * 5000, summary="Accepted: Quarterly review"),
                method="REPLY")
    for_organizer(reply, stored)
    vevent = reply.walk("VEVENT")[0]
    assert str(vevent["SUMMARY"]) == "Quarterly review"
    assert str(vevent["URL"]) == "https://intranet.example.com/q"
    assert len(str(vevent["COMMENT"])) == COMMENT_LIMIT


# -- a party crasher -------------------------------------------------------------------------------------------

def test_someone_else_answering_by_a_guests_reply_address_is_a_stranger_not_an_answer() -> None:
    decision = run(itip("REPLY", attendees=(OTHER,)))
    assert decision.action is Action.STRANGER
    assert decision.guest == OTHER and decision.user == "alice" and decision.organizer == ALICE
    assert f"the REPLY is from {OTHER}, but this address was given to {TOKEN_GUEST}" == decision.reason
    assert decision.calendar is not None
    assert {str(e["ORGANIZER"]) for e in decision.calendar.walk("VEVENT")} == {ALICE}  # never TOKEN_ADDRESS
    assert TOKEN_ADDRESS not in decision.calendar.to_ical().decode()


# -- a plain reply ---------------------------------------------------------------------------------------------

def plain(**headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Grace <grace@client.example.net>"
    msg["To"] = "invito+abc@cal.example.com"
    msg["Subject"] = "Re: Invitation: Quarterly review"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("Thanks, I'll be there")
    msg.add_attachment(b"%PDF-1.4 slides", maintype="application", subtype="pdf", filename="slides.pdf")
    return msg.as_bytes()


def test_a_plain_reply_is_forwarded_with_its_text_and_attachment() -> None:
    raw = forward.forward(plain(), guest="mailto:grace@client.example.net", guest_name="Grace Hopper",
                          organizer="mailto:alice@example.com", title="Quarterly review",
                          sender="invito@cal.example.com", language="en", tag="0123abcd")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(msg["From"]) == "Grace Hopper via Invito <invito@cal.example.com>"
    assert str(msg["Reply-To"]) == "Grace Hopper <grace@client.example.net>"
    assert str(msg["To"]) == "alice@example.com"
    assert msg["Subject"] == "Re: Invitation: Quarterly review"
    assert msg.get_body(("plain",)).get_content().strip() == "Thanks, I'll be there"
    [pdf] = list(msg.iter_attachments())
    assert pdf.get_filename() == "slides.pdf" and pdf.get_content() == b"%PDF-1.4 slides"
    assert forward.refusal(raw, "invito@cal.example.com") is not None  # our own forward never goes round again


@pytest.mark.parametrize("headers,sender,reason", [
    ({}, "", "empty envelope sender"),
    ({"Auto_Submitted": "auto-replied"}, "g@x", "Auto-Submitted: auto-replied"),
    ({"Auto_Submitted": "auto-generated"}, "g@x", "Auto-Submitted: auto-generated"),
    ({"Precedence": "bulk"}, "g@x", "Precedence: bulk"),
    ({"Precedence": "list"}, "g@x", "Precedence: list"),
    ({"X_Autoreply": "yes"}, "g@x", "X-Autoreply"),
    ({forward.FORWARDED.replace("-", "_"): "0123abcd"}, "g@x", "loop"),
])
def test_what_no_person_wrote_is_not_forwarded(headers: dict[str, str], sender: str, reason: str) -> None:
    found = forward.refusal(plain(**headers), sender)
    assert found is not None and reason in found


def test_a_person_is_forwarded() -> None:
    assert forward.refusal(plain(Auto_Submitted="no"), "grace@client.example.net") is None


def test_a_plain_reply_without_subject_is_titled_from_the_stored_event() -> None:
    message = email.message_from_bytes(plain(), policy=email.policy.default)
    del message["Subject"]
    raw = forward.forward(message.as_bytes(), guest="mailto:grace@client.example.net", guest_name="",
                          organizer="mailto:alice@example.com", title="Quarterly review",
                          sender="invito@cal.example.com", language="it", tag="0123abcd")
    forwarded = email.message_from_bytes(raw, policy=email.policy.default)
    assert forwarded["Subject"] == "Re: Quarterly review"
    [sender] = forwarded["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("grace@client.example.net tramite Invito",
                                                       "invito@cal.example.com")
