# SPDX-License-Identifier: GPL-3.0-or-later
"""External guests get real iMIP email: caldav client PUTs, a real SMTP relay on 127.0.0.1 receives."""
from __future__ import annotations

import base64
import re
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Iterator

import icalendar
import pytest

from tests.e2e.conftest import Server, free_port, queues, start, stop
from tests.e2e.mailsink import MailSink, start_sink
from tests.e2e.test_scheduling import attendee, calendar, copy_of, event, set_partstat

ROME = "\r\n".join([
    "BEGIN:VTIMEZONE", "TZID:Europe/Rome", "BEGIN:DAYLIGHT", "TZOFFSETFROM:+0100", "TZOFFSETTO:+0200",
    "TZNAME:CEST", "DTSTART:19700329T020000", "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU", "END:DAYLIGHT",
    "BEGIN:STANDARD", "TZOFFSETFROM:+0200", "TZOFFSETTO:+0100", "TZNAME:CET", "DTSTART:19701025T030000",
    "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU", "END:STANDARD", "END:VTIMEZONE"])
AGENDA = b"%PDF-1.4 agenda for the review\n"
GUESTS = ("ATTENDEE;CN=Gino Rossi;LANGUAGE=it;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:gino@partner.example.org",
          "ATTENDEE;CN=Grace Hopper;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:grace@client.example.net")
TOKEN_ADDRESS = re.compile(r"mailto:invito\+[a-z2-7]{32}@cal\.example\.com")


def mail_settings(relay_port: int) -> dict[str, dict[str, str]]:
    return {"smtp": {"host": "127.0.0.1", "port": str(relay_port), "security": "none",
                     "sender": "invito@cal.example.com", "retry_seconds": "1"},
            "imip": {"reply_address": "invito+{token}@cal.example.com"}}


@pytest.fixture
def mailing(tmp_path: Path, relay: tuple[int, MailSink]) -> Iterator[tuple[Server, MailSink]]:
    proc, srv = start(tmp_path, mail_settings(relay[0]))
    try:
        yield srv, relay[1]
    finally:
        stop(proc)


def review(uid: str, start: str = "20301010T090000", extra: tuple[str, ...] = ()) -> str:
    attach = "ATTACH;FMTTYPE=application/pdf;ENCODING=BASE64;VALUE=BINARY;X-FILENAME=agenda.pdf:" + \
        base64.b64encode(AGENDA).decode()
    return event(uid, summary="Quarterly review", start=f"TZID=Europe/Rome:{start}",
                 end=f"TZID=Europe/Rome:{start[:9]}1{start[10:]}", attendees=("bob",),
                 extra="\r\n".join((*GUESTS, "LOCATION:Sala Verde", "DESCRIPTION:Numbers and plans", attach,
                                    *extra)),
                 components=ROME).replace("DTSTART:TZID=", "DTSTART;TZID=").replace("DTEND:TZID=", "DTEND;TZID=")


def calendar_part(message: EmailMessage) -> tuple[str, icalendar.Calendar]:
    for part in message.walk():
        if part.get_content_type() == "text/calendar":
            return part.get_param("method"), icalendar.Calendar.from_ical(part.get_content())
    raise AssertionError("no text/calendar part")


def to(received: list, address: str) -> list[EmailMessage]:
    return [r.message for r in received if address in r.recipients]


def wait_for_status(srv: Server, uid: str, guest: str, wanted: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = attendee(copy_of(srv, "alice", uid), guest).params.get("SCHEDULE-STATUS")
        if status == wanted:
            return
        time.sleep(0.2)
    raise AssertionError(f"SCHEDULE-STATUS of {guest} is {status}, expected {wanted}")


def test_guests_receive_real_invitations_and_updates(mailing: tuple[Server, MailSink]) -> None:
    srv, sink = mailing
    uid = str(uuid.uuid4())
    cal = calendar(srv, "alice")
    cal.save_event(review(uid))
    received = sink.wait_for(2)
    assert sorted(r.recipients[0] for r in received) == ["gino@partner.example.org", "grace@client.example.net"]

    grace = to(received, "grace@client.example.net")[0]
    assert grace["Subject"].startswith("Invitation: Quarterly review")
    assert grace["To"].addresses[0].display_name == "Grace Hopper"
    assert grace["From"].addresses[0].addr_spec == "invito@cal.example.com"
    # "Reply" reaches Invito too (Gnus and aerc send their REPLY there): the guest's reply address.
    assert TOKEN_ADDRESS.fullmatch("mailto:" + grace["Reply-To"].addresses[0].addr_spec)
    method, ics = calendar_part(grace)
    vevent = next(iter(ics.walk("VEVENT")))
    assert method == "REQUEST" and str(ics["METHOD"]) == "REQUEST"
    assert TOKEN_ADDRESS.fullmatch(str(vevent["ORGANIZER"])) and vevent["ORGANIZER"].params["CN"] == "Alice"
    assert "mailto:grace@client.example.net" in [str(a).lower() for a in vevent["ATTENDEE"]]
    assert int(vevent.get("SEQUENCE", 0)) == 0
    assert [str(tz["TZID"]) for tz in ics.walk("VTIMEZONE")] == ["Europe/Rome"]
    attachments = {p.get_filename(): p.get_content() for p in grace.iter_attachments()}
    assert attachments["agenda.pdf"] == AGENDA and "invite.ics" in attachments
    assert "Sala Verde" in grace.get_body(("plain",)).get_content()

    gino = to(received, "gino@partner.example.org")[0]
    assert gino["Subject"].startswith("Invito: Quarterly review")  # the guest's LANGUAGE=it
    assert "ottobre 2030" in gino.get_body(("plain",)).get_content()
    token_gino = str(next(iter(calendar_part(gino)[1].walk("VEVENT")))["ORGANIZER"])
    assert token_gino != str(vevent["ORGANIZER"])  # a token per guest

    wait_for_status(srv, uid, "mailto:grace@client.example.net", "1.1")

    cal.save_event(review(uid, start="20301011T090000"))  # moved by a day
    received = sink.wait_for(4)
    update = to(received, "grace@client.example.net")[-1]
    assert update["Subject"].startswith("Updated invitation: Quarterly review")
    _, ics = calendar_part(update)
    assert int(next(iter(ics.walk("VEVENT")))["SEQUENCE"]) == 1
    assert str(next(iter(ics.walk("VEVENT")))["ORGANIZER"]) == str(vevent["ORGANIZER"])  # same reply address

    cal.event_by_uid(uid).delete()
    received = sink.wait_for(6)
    cancel = to(received, "grace@client.example.net")[-1]
    assert calendar_part(cancel)[0] == "CANCEL" and cancel["Subject"].startswith("Cancelled: Quarterly review")


def test_relay_refusal_shows_in_the_organizers_event(mailing: tuple[Server, MailSink]) -> None:
    srv, sink = mailing
    sink.refuse["grace@client.example.net"] = "550 5.1.1 <grace@client.example.net>: no such user"
    uid = str(uuid.uuid4())
    calendar(srv, "alice").save_event(review(uid))
    wait_for_status(srv, uid, "mailto:grace@client.example.net", "5.2")
    wait_for_status(srv, uid, "mailto:gino@partner.example.org", "1.1")
    with queues(srv) as spools:
        failed = spools.outbound.failed_messages()
    assert len(failed) == 1 and "no such user" in failed[0].reason


def test_messages_wait_for_a_relay_that_is_down(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet
    proc, srv = start(tmp_path, mail_settings(port))
    try:
        uid = str(uuid.uuid4())
        calendar(srv, "alice").save_event(review(uid))
        time.sleep(1.5)
        # In the durable queue with a relay to take it: 1.1 from the PUT on, whatever the relay does.
        assert attendee(copy_of(srv, "alice", uid), "mailto:grace@client.example.net").params["SCHEDULE-STATUS"] == "1.1"
        controller, sink = start_sink(port)
        try:
            assert len(sink.wait_for(2, timeout=30)) == 2
            wait_for_status(srv, uid, "mailto:grace@client.example.net", "1.1")
        finally:
            controller.stop()
    finally:
        stop(proc)


def test_hostile_titles_and_names_make_safe_mail(mailing: tuple[Server, MailSink]) -> None:
    srv, sink = mailing
    hostile = event(str(uuid.uuid4()), summary="Hi\\nBcc: victim@evil.example\\n<script>alert(1)</script>",
                    attendees=(), extra='ATTENDEE;CN="Eve\\nBcc: x@evil.example <b>":mailto:eve@outside.example.org')
    calendar(srv, "alice").save_event(hostile)
    [mail] = [r.message for r in sink.wait_for(1)]
    assert mail["Bcc"] is None and "\n" not in mail["Subject"]
    assert all(name.lower() != "bcc" for name in mail.keys())
    html = mail.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_internal_attendee_answers_an_external_organizer_by_mail(mailing: tuple[Server, MailSink]) -> None:
    """Bob's client saved an invitation from outside (as Thunderbird does from an email); accepting it
    in his calendar makes the server mail a REPLY to that organizer."""
    srv, sink = mailing
    uid = str(uuid.uuid4())
    outside = event(uid, summary="Supplier visit", organizer="boss", attendees=("bob",)).replace(
        "mailto:boss@example.com", "mailto:boss@supplier.example.net")
    calendar(srv, "bob").save_event(outside)
    set_partstat(srv, "bob", uid, "ACCEPTED")
    [reply] = [r for r in sink.wait_for(1) if "boss@supplier.example.net" in r.recipients]
    method, ics = calendar_part(reply.message)
    vevent = next(iter(ics.walk("VEVENT")))
    assert method == "REPLY"
    assert str(vevent["ORGANIZER"]) == "mailto:boss@supplier.example.net"  # a reply keeps the real organizer
    assert str(vevent["ATTENDEE"]).lower() == "mailto:bob@example.com"
    assert vevent["ATTENDEE"].params["PARTSTAT"] == "ACCEPTED"
    assert reply.message["Subject"].startswith("Accepted: Supplier visit")


def test_hidden_guest_list_shows_each_guest_only_the_organizer_and_themselves(
        tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    settings = mail_settings(relay[0])
    settings["scheduling"] = {"hide_attendees": "true"}
    proc, srv = start(tmp_path, settings)
    try:
        uid = str(uuid.uuid4())
        calendar(srv, "alice").save_event(review(uid))
        grace = to(relay[1].wait_for(2), "grace@client.example.net")[0]
    finally:
        stop(proc)
    _, ics = calendar_part(grace)
    vevent = next(iter(ics.walk("VEVENT")))
    listed = vevent["ATTENDEE"] if isinstance(vevent["ATTENDEE"], list) else [vevent["ATTENDEE"]]
    assert [str(a).lower() for a in listed] == ["mailto:grace@client.example.net"]
    assert TOKEN_ADDRESS.fullmatch(str(vevent["ORGANIZER"]))
    for body in (grace.get_body(("plain",)).get_content(), grace.get_body(("html",)).get_content()):
        assert "alice@example.com" in body
        assert "Gino" not in body and "gino@" not in body and "bob@" not in body


def test_no_mail_twice_for_the_same_change(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    """Saving the event again unchanged, changing only a personal alarm, and restarting the server after
    delivery send nothing more: each guest got exactly one invitation."""
    port, sink = relay
    proc, srv = start(tmp_path, mail_settings(port))
    uid = str(uuid.uuid4())
    try:
        cal = calendar(srv, "alice")
        cal.save_event(review(uid))
        assert len(sink.wait_for(2)) == 2
        wait_for_status(srv, uid, "mailto:grace@client.example.net", "1.1")
        wait_for_status(srv, uid, "mailto:gino@partner.example.org", "1.1")
        cal.save_event(review(uid))  # the same again, as clients do on every sync
        alarm = "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:soon\r\nTRIGGER:-PT15M\r\nEND:VALARM"
        cal.save_event(review(uid).replace("END:VEVENT", alarm + "\r\nEND:VEVENT"))
    finally:
        stop(proc)
    proc, srv = start(tmp_path, mail_settings(port))  # the spool resumes: nothing left in it to send
    try:
        time.sleep(3)  # the sender retries every second (retry_seconds = 1)
        assert sorted(r.recipients[0] for r in sink.received) == ["gino@partner.example.org",
                                                                   "grace@client.example.net"]
    finally:
        stop(proc)


def test_the_relay_password_never_reaches_the_log(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    secret = "s3cret-" + uuid.uuid4().hex
    (tmp_path / "smtp-password").write_text(secret + "\n")
    settings = mail_settings(relay[0])
    settings["smtp"].update({"username": "invito", "password_file": str(tmp_path / "smtp-password")})
    proc, srv = start(tmp_path, settings)
    try:
        calendar(srv, "alice").save_event(review(str(uuid.uuid4())))
        deadline = time.monotonic() + 20
        while "SMTP AUTH" not in srv.log.read_text():  # this relay offers no login: the attempt fails
            assert time.monotonic() < deadline, "the failed login was not logged"
            time.sleep(0.2)
    finally:
        stop(proc)
    log = srv.log.read_text()
    assert secret not in log
