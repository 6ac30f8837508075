# SPDX-License-Identifier: GPL-3.0-or-later
"""Guests answer by email: the invitation the server mailed, answered as a mail client does, sent over SMTP
to Invito's listener on 127.0.0.1, and the organizer's event read back with the caldav client."""
from __future__ import annotations

import email
import email.policy
import smtplib
import socket
import threading
import time
import uuid
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Iterator

import caldav
import icalendar
import pytest
import requests

from tests.e2e.conftest import PASSWORD, Server, free_port, quarantined_entries, start, stop
from tests.e2e.mailsink import MailSink
from tests.e2e.test_invitations_by_mail import calendar_part, mail_settings, review, to, wait_for_status
from tests.e2e.test_scheduling import attendee, calendar, copy_of, inbox_methods

GRACE = "mailto:grace@client.example.net"
GINO = "mailto:gino@partner.example.org"


def inbound_settings(relay_port: int, listen_port: int, **imip: str) -> dict[str, dict[str, str]]:
    settings = mail_settings(relay_port)
    settings["imip"].update({"listen": f"127.0.0.1:{listen_port}", **imip})
    return settings


def wait_listening(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def replying(tmp_path: Path, relay: tuple[int, MailSink]) -> Iterator[tuple[Server, MailSink, int]]:
    listen = free_port()
    proc, srv = start(tmp_path, inbound_settings(relay[0], listen))
    try:
        wait_listening(listen)
        yield srv, relay[1], listen
    finally:
        stop(proc)


def invite(srv: Server, sink: MailSink) -> tuple[str, dict[str, EmailMessage]]:
    """Alice invites Gino and Grace; the invitations as their mail programs received them."""
    uid = str(uuid.uuid4())
    calendar(srv, "alice").save_event(review(uid))
    received = sink.wait_for(2)
    return uid, {GRACE: to(received, "grace@client.example.net")[0], GINO: to(received, "gino@partner.example.org")[0]}


def answer(invitation: EmailMessage, guest: str, partstat: str, *, stamp: str | None = None,
           sender: str | None = None, comment: str = "", as_attendee: str | None = None,
           shape: str = "thunderbird") -> tuple[str, bytes]:
    """The REPLY a mail client builds from ``invitation``, and the address it goes to (the invitation's
    ORGANIZER). ``shape``: thunderbird (text/calendar plus an invite.ics copy), outlook (the whole
    message is the calendar, no ORGANIZER, no SEQUENCE), gmail (inline 7bit calendar plus a base64
    invite.ics, CN kept, alarms left in) or apple (no method parameter, quoted-printable, MAILTO: in
    upper case)."""
    _, ics = calendar_part(invitation)
    event = next(iter(ics.walk("VEVENT")))
    reply = icalendar.Calendar()
    reply.add("PRODID", "-//Invito tests//%s//EN" % shape)
    reply.add("VERSION", "2.0")
    reply.add("METHOD", "REPLY")
    answered = icalendar.Event()
    names = ("UID", "DTSTART", "DTEND", "SUMMARY") if shape == "outlook" else \
        ("UID", "SEQUENCE", "DTSTART", "DTEND", "SUMMARY", "ORGANIZER")
    for name in names:
        answered[name] = event[name]
    answered.add("DTSTAMP", icalendar.vDatetime.from_ical(stamp) if stamp else
                 icalendar.vDatetime.from_ical(time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())))
    address = as_attendee or guest
    who = icalendar.vCalAddress("MAILTO:" + address[len("mailto:"):] if shape == "apple" else address)
    who.params["PARTSTAT"] = partstat
    if shape == "gmail":
        who.params["CN"] = "Grace Hopper"
        alarm = icalendar.Alarm()
        alarm.add("ACTION", "DISPLAY")
        alarm.add("TRIGGER", icalendar.vDuration.from_ical("-PT10M"))
        answered.add_component(alarm)
    answered.add("ATTENDEE", who)
    if comment:
        answered.add("COMMENT", comment)
    reply.add_component(answered)
    for tz in ics.walk("VTIMEZONE"):
        reply.add_component(tz)
    data = reply.to_ical()
    organizer = str(event["ORGANIZER"])[len("mailto:"):]
    msg = EmailMessage()
    if shape == "outlook":
        msg.set_content(data, maintype="text", subtype="calendar", params={"method": "REPLY", "charset": "utf-8"})
    else:
        msg.set_content(f"{partstat.title()}.")
        if shape == "apple":
            msg.add_alternative(data.decode(), subtype="calendar", cte="quoted-printable")
        else:
            msg.add_alternative(data.decode(), subtype="calendar", params={"method": "REPLY"},
                                cte="7bit" if shape == "gmail" else "base64")
        msg.add_attachment(data, maintype="application", subtype="ics", filename="invite.ics")
    msg["From"] = sender or guest[len("mailto:"):]
    msg["To"] = organizer
    msg["Subject"] = f"{partstat.title()}: Quarterly review"
    return organizer, wire(msg)


def hours_ago(hours: int) -> str:
    """A DTSTAMP ``hours`` before now, as a mail program with a right clock writes it."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - hours * 3600))


def wire(msg: EmailMessage) -> bytes:
    """As mail travels: CRLF line ends (smtplib sends bytes unchanged)."""
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def send(port: int, recipient: str, raw: bytes, sender: str = "guest@client.example.net") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail(sender, [recipient], raw)


def wait_partstat(srv: Server, uid: str, guest: str, wanted: str, timeout: float = 20) -> icalendar.Calendar:
    deadline = time.monotonic() + timeout
    while True:
        cal = copy_of(srv, "alice", uid)
        if attendee(cal, guest).params.get("PARTSTAT") == wanted:
            return cal
        if time.monotonic() > deadline:
            raise AssertionError(f"{guest} is {attendee(cal, guest).params.get('PARTSTAT')}, expected {wanted}")
        time.sleep(0.2)


def quarantined(srv: Server, count: int, timeout: float = 20) -> list[str]:
    """The reasons of what ``srv`` quarantined, oldest first, once there are ``count``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reasons = [entry.reason for entry in quarantined_entries(srv)]
        if len(reasons) >= count:
            return reasons
        time.sleep(0.1)
    raise AssertionError(f"expected {count} quarantined messages")


def organizers_object(srv: Server, uid: str) -> caldav.CalendarObjectResource:
    """Alice's copy of ``uid`` as her client sees it."""
    return next(o for c in srv.principal("alice").calendars() for o in c.events()
                if str(icalendar.Calendar.from_ical(o.data).walk("VEVENT")[0]["UID"]) == uid)


def schedule_tag(srv: Server, uid: str) -> str:
    href = organizers_object(srv, uid).url
    return requests.get(str(href), auth=("alice", PASSWORD), timeout=10).headers["Schedule-Tag"]


def test_a_guest_accepts_from_their_mail_program(replying: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = replying
    uid, invitations = invite(srv, sink)
    tag = schedule_tag(srv, uid)
    to_address, raw = answer(invitations[GRACE], GRACE, "ACCEPTED", comment="See you there")
    send(port, to_address, raw)
    cal = wait_partstat(srv, uid, GRACE, "ACCEPTED")
    assert attendee(cal, GINO).params["PARTSTAT"] == "NEEDS-ACTION"  # nothing else changed
    assert "RSVP" not in attendee(cal, GRACE).params or attendee(cal, GRACE).params["RSVP"] in ("FALSE", False)
    assert schedule_tag(srv, uid) == tag  # the organizer's next PUT is not refused because of the reply
    assert "REPLY" in inbox_methods(srv, "alice", uid)
    [note] = [r.message for r in sink.wait_for(3) if "alice@example.com" in r.recipients]
    assert note["Subject"].startswith("Accepted: Quarterly review")
    body = note.get_body(("plain",)).get_content()
    assert "Grace Hopper accepted: Quarterly review" in body and "See you there" in body


@pytest.mark.parametrize("shape", ["outlook", "gmail", "apple"])
def test_replies_shaped_as_other_mail_programs_do_are_applied(replying: tuple[Server, MailSink, int],
                                                              shape: str) -> None:
    srv, sink, port = replying
    uid, invitations = invite(srv, sink)
    to_address, raw = answer(invitations[GRACE], GRACE, "DECLINED", shape=shape)
    send(port, to_address, raw)
    wait_partstat(srv, uid, GRACE, "DECLINED")
    cal = copy_of(srv, "alice", uid)
    assert not list(cal.walk("VALARM"))  # nothing but the answer came from the guest's calendar


def test_forged_and_misdirected_replies_change_nothing(replying: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = replying
    uid, invitations = invite(srv, sink)
    grace_address, _ = answer(invitations[GRACE], GRACE, "ACCEPTED")
    # A made-up token is not a recipient here: refused at RCPT, never a relay.
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("mallory@evil.example")
        code, _ = smtp.rcpt("invito+" + "a" * 32 + "@cal.example.com")
        assert code == 550
        code, _ = smtp.rcpt("someone@elsewhere.example")
        assert code == 550
    # Grace's reply address used to answer for Gino: quarantined, Gino's answer untouched.
    _, forged = answer(invitations[GRACE], GRACE, "DECLINED", as_attendee=GINO, sender="gino@partner.example.org")
    send(port, grace_address, forged)
    [reason] = quarantined(srv, 1)
    assert "gino@partner.example.org" in reason
    assert attendee(copy_of(srv, "alice", uid), GINO).params["PARTSTAT"] == "NEEDS-ACTION"


def test_replayed_and_out_of_order_replies(replying: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = replying
    uid, invitations = invite(srv, sink)
    # Stamped in the past: a DTSTAMP in the future is ordered as the time it was received.
    address, declined = answer(invitations[GRACE], GRACE, "DECLINED", stamp=hours_ago(1))
    _, accepted = answer(invitations[GRACE], GRACE, "ACCEPTED", stamp=hours_ago(2))  # written earlier
    send(port, address, declined)
    wait_partstat(srv, uid, GRACE, "DECLINED")
    send(port, address, declined)  # the same mail again
    send(port, address, accepted)  # arrives late: older than the answer applied
    [reason] = quarantined(srv, 1)
    assert "older" in reason
    assert attendee(copy_of(srv, "alice", uid), GRACE).params["PARTSTAT"] == "DECLINED"
    notes = [r for r in sink.received if "alice@example.com" in r.recipients]
    assert len(notes) == 1  # the replay changed nothing and told nobody


def test_reply_from_an_alias_is_applied_and_flagged(replying: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = replying
    uid, invitations = invite(srv, sink)
    address, raw = answer(invitations[GRACE], GRACE, "TENTATIVE", sender="g.hopper@private.example.com")
    send(port, address, raw)
    wait_partstat(srv, uid, GRACE, "TENTATIVE")
    [note] = [r.message for r in sink.wait_for(3) if "alice@example.com" in r.recipients]
    assert "g.hopper@private.example.com" in note.get_body(("plain",)).get_content()


def test_mail_that_is_not_a_reply_is_kept_aside(replying: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = replying
    uid, invitations = invite(srv, sink)
    address, _ = answer(invitations[GRACE], GRACE, "ACCEPTED")
    plain = EmailMessage()
    plain["From"], plain["To"], plain["Subject"] = "grace@client.example.net", address, "Re: Quarterly review"
    plain.set_content("Sounds good, see you!")
    send(port, address, wire(plain))
    out_of_office = EmailMessage()
    out_of_office["From"], out_of_office["To"] = "grace@client.example.net", address
    out_of_office["Subject"], out_of_office["Auto-Submitted"] = "Out of office", "auto-replied"
    out_of_office.set_content("I am away.")
    send(port, address, wire(out_of_office))
    [reason] = quarantined(srv, 1)
    assert "auto" in reason.lower()
    # The plain reply, processed before: forwarded to the organizer (see test_guest_replies_paths.py).
    forward = sink.wait_one(lambda r: r.message["Subject"] == "Re: Quarterly review")
    assert forward.recipients == ["alice@example.com"]
    assert attendee(copy_of(srv, "alice", uid), GRACE).params["PARTSTAT"] == "NEEDS-ACTION"
    assert not [r for r in sink.received if "grace@client.example.net" in r.recipients][1:]  # never answered


def test_an_organizer_edit_and_a_reply_at_the_same_time_both_survive(
        replying: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = replying
    uid, invitations = invite(srv, sink)
    obj = organizers_object(srv, uid)
    tag = schedule_tag(srv, uid)
    # A new description bumps the SEQUENCE but is no reschedule: the guest's answer still holds.
    edited = obj.data.replace("Numbers and plans", "Numbers and plans over lunch")
    address, raw = answer(invitations[GRACE], GRACE, "ACCEPTED")
    put = threading.Thread(target=lambda: results.append(requests.put(
        str(obj.url), data=edited.encode(), auth=("alice", PASSWORD), timeout=20,
        headers={"Content-Type": "text/calendar", "If-Schedule-Tag-Match": tag}).status_code))
    results: list[int] = []
    put.start()
    send(port, address, raw)
    put.join()
    assert results and results[0] in (200, 201, 204)
    cal = wait_partstat(srv, uid, GRACE, "ACCEPTED")
    assert "Numbers and plans over lunch" in str(cal.walk("VEVENT")[0]["DESCRIPTION"])


@pytest.mark.parametrize("name, body", [
    ("malformed calendar", b"BEGIN:VCALENDAR\r\nMETHOD:REPLY\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:garbage\r\n"),
    ("two methods", b"BEGIN:VCALENDAR\r\nMETHOD:REPLY\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:x\r\n"
                    b"DTSTAMP:20300101T000000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"),
    ("20,000 overrides", b"BEGIN:VCALENDAR\r\nMETHOD:REPLY\r\n" + b"".join(
        b"BEGIN:VEVENT\r\nUID:x\r\nRECURRENCE-ID:2030%04dT090000Z\r\nEND:VEVENT\r\n" % i for i in range(20_000))
        + b"END:VCALENDAR\r\n"),
])
def test_hostile_mail_is_kept_aside_and_the_listener_keeps_serving(
        replying: tuple[Server, MailSink, int], name: str, body: bytes) -> None:
    srv, sink, port = replying
    uid, invitations = invite(srv, sink)
    address, good = answer(invitations[GRACE], GRACE, "ACCEPTED")
    hostile = EmailMessage()
    hostile["From"], hostile["To"], hostile["Subject"] = "grace@client.example.net", address, name
    hostile.set_content(body, maintype="text", subtype="calendar", params={"method": "REPLY"})
    try:
        send(port, address, wire(hostile))
    except smtplib.SMTPDataError as e:  # too big for the listener: refused at once, nothing to keep
        assert e.smtp_code == 552
    else:
        [reason] = quarantined(srv, 1)
        assert reason.strip()
    send(port, address, good)  # the next sender is served as usual
    wait_partstat(srv, uid, GRACE, "ACCEPTED")


def itip_mail(invitation: EmailMessage, method: str, guest: str, start: str | None = None) -> tuple[str, bytes]:
    """A COUNTER (the event at another time) or REFRESH from ``guest``, built from their invitation."""
    _, ics = calendar_part(invitation)
    event = next(iter(ics.walk("VEVENT")))
    message = icalendar.Calendar()
    message.add("PRODID", "-//Invito tests//EN")
    message.add("VERSION", "2.0")
    message.add("METHOD", method)
    sent = icalendar.Event()
    for name in ("UID", "SEQUENCE", "ORGANIZER", "SUMMARY", *(("DTSTART", "DTEND") if start else ())):
        sent[name] = event[name]
    if start:
        begin = icalendar.vDatetime.from_ical(start)
        sent["DTSTART"], sent["DTEND"] = icalendar.vDDDTypes(begin), icalendar.vDDDTypes(begin + timedelta(hours=1))
    sent.add("DTSTAMP", icalendar.vDatetime.from_ical(time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())))
    sent.add("ATTENDEE", icalendar.vCalAddress(guest))
    message.add_component(sent)
    msg = EmailMessage()
    organizer = str(event["ORGANIZER"])[len("mailto:"):]
    msg["From"], msg["To"], msg["Subject"] = guest[len("mailto:"):], organizer, method
    msg.set_content(message.to_ical(), maintype="text", subtype="calendar", params={"method": method})
    return organizer, wire(msg)


def test_a_proposed_new_time_reaches_the_organizer_who_can_decline_it(
        replying: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = replying
    uid, invitations = invite(srv, sink)
    address, counter = itip_mail(invitations[GRACE], "COUNTER", GRACE, start="20301010T140000Z")
    send(port, address, counter)
    [note] = [r.message for r in sink.wait_for(3) if "alice@example.com" in r.recipients]
    method, proposal = calendar_part(note)
    assert method == "COUNTER" and note["Subject"].startswith("New time proposed: Quarterly review")
    assert str(proposal.walk("VEVENT")[0]["DTSTART"].to_ical().decode()) == "20301010T140000Z"
    assert "COUNTER" in inbox_methods(srv, "alice", uid)
    assert copy_of(srv, "alice", uid).walk("VEVENT")[0]["DTSTART"].to_ical().decode() == "20301010T090000"

    decline = proposal.to_ical().decode().replace("METHOD:COUNTER", "METHOD:DECLINECOUNTER").replace(
        address, "alice@example.com")
    outbox = srv.url + "alice/schedule-outbox/"
    answer_post = requests.post(outbox, data=decline.encode(), auth=("alice", PASSWORD), timeout=20,
                                headers={"Content-Type": "text/calendar"})
    assert answer_post.status_code == 200 and "1.0" in answer_post.text
    declined = [r.message for r in sink.wait_for(4) if "grace@client.example.net" in r.recipients][-1]
    method, ics = calendar_part(declined)
    assert method == "DECLINECOUNTER" and declined["Subject"].startswith("Proposal declined: Quarterly review")
    assert str(ics.walk("VEVENT")[0]["ORGANIZER"]) == "mailto:" + address  # answers still come back here


def test_a_guest_who_asks_again_gets_the_current_invitation(replying: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = replying
    uid, invitations = invite(srv, sink)
    address, refresh = itip_mail(invitations[GRACE], "REFRESH", GRACE)
    send(port, address, refresh)
    again = [r.message for r in sink.wait_for(3) if "grace@client.example.net" in r.recipients]
    assert len(again) == 2
    method, ics = calendar_part(again[-1])
    assert method == "REQUEST" and str(ics.walk("VEVENT")[0]["UID"]) == uid


def test_a_bounced_invitation_shows_in_the_organizers_event(replying: tuple[Server, MailSink, int]) -> None:
    """The invitation's envelope sender is the guest's reply address, so the bounce comes back to Invito."""
    srv, sink, port = replying
    uid, _ = invite(srv, sink)
    [bounce_to] = [r.sender for r in sink.received if "grace@client.example.net" in r.recipients]
    assert bounce_to.startswith("invito+")
    wait_for_status(srv, uid, GRACE, "1.1")  # the relay took it; the bounce comes later
    report = (
        "From: MAILER-DAEMON@client.example.net\r\nTo: %s\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.client.example.net\r\n\r\n"
        "Final-Recipient: rfc822; grace@client.example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n--b--\r\n") % bounce_to
    send(port, bounce_to, report.encode(), sender="")
    deadline = time.monotonic() + 20
    while attendee(copy_of(srv, "alice", uid), GRACE).params.get("SCHEDULE-STATUS") != "5.2":
        assert time.monotonic() < deadline, "the bounce was not recorded"
        time.sleep(0.2)
    assert attendee(copy_of(srv, "alice", uid), GINO).params.get("SCHEDULE-STATUS") == "1.1"


def test_required_authentication_trusts_only_the_configured_mail_server(
        tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    listen = free_port()
    proc, srv = start(tmp_path, inbound_settings(relay[0], listen, authentication="require",
                                                 authserv_id="mx.cal.example.com"))
    try:
        wait_listening(listen)
        uid, invitations = invite(srv, relay[1])
        address, raw = answer(invitations[GRACE], GRACE, "DECLINED")
        forged = b"Authentication-Results: mx.evil.example; dmarc=pass header.from=client.example.net\r\n" + raw
        send(listen, address, forged)
        [reason] = quarantined(srv, 1)
        assert "authentication" in reason
        vouched = b"Authentication-Results: mx.cal.example.com; dmarc=pass header.from=client.example.net\r\n" + raw
        send(listen, address, vouched)
        wait_partstat(srv, uid, GRACE, "DECLINED")
    finally:
        stop(proc)


def test_behind_postfix_replies_arrive_by_lmtp(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    listen = free_port()
    proc, srv = start(tmp_path, inbound_settings(relay[0], listen, protocol="lmtp"))
    try:
        wait_listening(listen)
        uid, invitations = invite(srv, relay[1])
        address, raw = answer(invitations[GRACE], GRACE, "TENTATIVE")
        with smtplib.LMTP("127.0.0.1", listen) as lmtp:
            assert lmtp.sendmail("grace@client.example.net", [address], raw) == {}
        wait_partstat(srv, uid, GRACE, "TENTATIVE")
    finally:
        stop(proc)


def test_a_removed_guest_who_answers_is_not_added_back_and_the_organizer_is_told(
        replying: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = replying
    uid, invitations = invite(srv, sink)
    obj = organizers_object(srv, uid)
    obj.data = "\r\n".join(line for line in obj.data.replace("\r\n ", "").splitlines()
                           if "grace@client.example.net" not in line.lower()) + "\r\n"
    obj.save()
    address, raw = answer(invitations[GRACE], GRACE, "ACCEPTED")
    send(port, address, raw)
    [reason] = quarantined(srv, 1)
    assert "not invited" in reason
    assert "grace@client.example.net" not in copy_of(srv, "alice", uid).to_ical().decode().lower()
    deadline = time.monotonic() + 20
    while not [r for r in sink.received if "alice@example.com" in r.recipients]:
        assert time.monotonic() < deadline, "the organizer was not told"
        time.sleep(0.2)
    [note] = [r.message for r in sink.received if "alice@example.com" in r.recipients]
    assert "not invited" in note.get_body(("plain",)).get_content()


def test_a_guest_answers_for_one_occurrence_of_a_series(replying: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = replying
    uid = str(uuid.uuid4())
    calendar(srv, "alice").save_event(review(uid, extra=("RRULE:FREQ=WEEKLY;COUNT=4",)))
    invitation = to(sink.wait_for(2), "grace@client.example.net")[0]
    address, raw = answer(invitation, GRACE, "DECLINED")
    # The guest declines the second occurrence only: the REPLY carries its RECURRENCE-ID.
    _, reply = calendar_part(email.message_from_bytes(raw, policy=email.policy.default))
    reply.walk("VEVENT")[0].add("RECURRENCE-ID", icalendar.vDatetime.from_ical("20301017T090000"),
                                parameters={"TZID": "Europe/Rome"})
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "grace@client.example.net", address, "Declined: one occurrence"
    msg.set_content(reply.to_ical(), maintype="text", subtype="calendar", params={"method": "REPLY"})
    send(port, address, wire(msg))
    deadline = time.monotonic() + 20
    while not (overrides := [c for c in copy_of(srv, "alice", uid).walk("VEVENT") if "RECURRENCE-ID" in c]):
        assert time.monotonic() < deadline, "no override for the occurrence answered"
        time.sleep(0.2)
    cal = copy_of(srv, "alice", uid)
    [override] = overrides
    assert attendee(cal, GRACE, override["RECURRENCE-ID"].to_ical().decode()).params["PARTSTAT"] == "DECLINED"
    assert attendee(cal, GRACE).params["PARTSTAT"] == "NEEDS-ACTION"  # the series itself is unanswered
