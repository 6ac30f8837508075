# SPDX-License-Identifier: GPL-3.0-or-later
"""Every way a guest answers an invitation by mail lands: the calendar buttons of Gnus (gnus-icalendar,
run here in batch mode) and hand-made Thunderbird, Outlook and Apple replies, sent to the invitation's
Reply-To or to its ORGANIZER; a plain "Thanks, I'll be there" is forwarded to the organizer; what no
person wrote, loops and floods are kept aside with the reason; what a guest's REPLY says never
disguises itself as the event in the organizer's notice. One `invito serve` for the module, real SMTP
both ways on 127.0.0.1."""
from __future__ import annotations

import email
import email.policy
import re
import shutil
import smtplib
import subprocess
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.e2e.aerc import Aerc
from tests.e2e.conftest import Server, free_port, quarantined_entries, queues, start, stop
from tests.e2e.mailsink import MailSink, start_sink
from tests.e2e.test_invitations_by_mail import calendar_part, review
from tests.e2e.test_queue_admin import config, outbound, queue, scheduling_write  # noqa: F401 (config: a fixture)
from tests.e2e.test_replies_by_mail import (GINO, GRACE, answer, inbound_settings, send, wait_listening,
                                            wait_partstat, wire)
from tests.e2e.test_scheduling import attendee, copy_of

GNUS_ANSWER = Path(__file__).parent / "clients" / "gnus-answer.el"
ALICE_BOX = "alice@example.com"
FORWARDS_PER_HOUR = 3


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[tuple[Server, MailSink, int]]:
    relay_port, listen = free_port(), free_port()
    controller, sink = start_sink(relay_port)
    settings = inbound_settings(relay_port, listen, forwards_per_hour=str(FORWARDS_PER_HOUR))
    proc, srv = start(tmp_path_factory.mktemp("guest-replies"), settings)
    try:
        wait_listening(listen)
        srv.principal("alice").make_calendar(name="work", cal_id="work")
        yield srv, sink, listen
    finally:
        stop(proc)
        controller.stop()


def mails(sink: MailSink, box: str, needle: str, count: int = 1, timeout: float = 20) -> list[EmailMessage]:
    """The messages to ``box`` whose subject contains ``needle``, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r.message for r in list(sink.received) if box in r.recipients and needle in str(r.message["Subject"])]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} of {count} messages to {box} about {needle!r}")
        time.sleep(0.1)


def invite(srv: Server, sink: MailSink, change: Callable[[str], str] = lambda text: text
           ) -> tuple[str, str, dict[str, EmailMessage]]:
    """Alice invites Gino and Grace to an event of its own title; (UID, title, each guest's invitation)."""
    uid = str(uuid.uuid4())
    title = "Quarterly review " + uid[:8]
    srv.principal("alice").calendar(cal_id="work").save_event(
        change(review(uid).replace("SUMMARY:Quarterly review", "SUMMARY:" + title)))
    return uid, title, {GRACE: mails(sink, "grace@client.example.net", title)[0],
                        GINO: mails(sink, "gino@partner.example.org", title)[0]}


def reply_to(invitation: EmailMessage) -> str:
    [address] = invitation["Reply-To"].addresses
    return address.addr_spec


def quarantined_for(srv: Server, needle: str, timeout: float = 20) -> str:
    """The reason of the quarantined message that contains ``needle`` (a subject, a UID)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with queues(srv) as spools:
            for entry in spools.inbound.quarantined_entries():
                try:
                    raw = spools.inbound.quarantined_mail(entry.id)
                except FileNotFoundError:  # an RSVP page answer, or a move not yet complete
                    raw = b""
                if needle.encode() in raw or needle in entry.reason:
                    return entry.reason
        time.sleep(0.1)
    raise AssertionError(f"nothing about {needle!r} in the quarantine: {quarantined_entries(srv)}")


# -- Gnus's own buttons ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("button,partstat", [("Accept", "ACCEPTED"), ("Decline", "DECLINED")])
def test_gnus_buttons_answer_through_reply_to_even_for_an_event_with_duration(
        site: tuple[Server, MailSink, int], tmp_path: Path, button: str, partstat: str) -> None:
    """gnus-icalendar 28 fails on an event with DURATION and no DTEND (no buttons at all) and sends its
    REPLY by "reply", to Reply-To; its REPLY's SUMMARY is "Accepted: <title>"."""
    srv, sink, port = site
    assert shutil.which("emacs"), "Debian emacs-nox is needed (.ci/run installs it)"
    uid, title, invitations = invite(srv, sink, lambda text: re.sub(
        r"DTEND;TZID=Europe/Rome:\w+", "DURATION:PT1H30M", text))
    _, sent = calendar_part(invitations[GRACE])
    [vevent] = sent.walk("VEVENT")
    assert "DURATION" not in vevent and vevent["DTEND"].to_ical() == b"20301010T103000"
    assert "DURATION" in copy_of(srv, "alice", uid).walk("VEVENT")[0]  # the stored event keeps what was PUT
    message = tmp_path / "invitation.eml"
    message.write_bytes(wire(invitations[GRACE]))
    run = subprocess.run(["emacs", "-Q", "--batch", "-l", str(GNUS_ANSWER), str(message), str(port), button,
                          "grace@client.example.net"], capture_output=True, text=True, timeout=120)
    assert "ANSWERED " + button in run.stderr, run.stderr[-2000:]
    wait_partstat(srv, uid, GRACE, partstat)
    [note] = mails(sink, ALICE_BOX, title)
    assert note["Subject"].startswith(f"{partstat.title()}: {title}")
    assert "Accepted: Accepted" not in note["Subject"] and f": {partstat.title()}: " not in note["Subject"]


# -- aerc, in a terminal ---------------------------------------------------------------------------------------

def test_aerc_accept_and_reply_both_reach_the_organizer(site: tuple[Server, MailSink, int], tmp_path: Path) -> None:
    """aerc 0.14's :accept sends the REPLY to Reply-To, as its :reply does the guest's words."""
    srv, sink, port = site
    assert shutil.which("aerc") and shutil.which("tmux"), "Debian aerc and tmux are needed (.ci/run installs them)"
    uid, title, invitations = invite(srv, sink)
    client = Aerc(tmp_path / "aerc", port, "Grace Hopper <grace@client.example.net>")
    client.deliver(wire(invitations[GRACE]))
    client.start()
    try:
        client.wait_for(uid[:8])
        client.keys("Enter")  # open the invitation
        client.wait_for("Subject: Invitation: " + title)
        client.command("accept")
        client.wait_for("Send this email?")
        client.keys("y")
        wait_partstat(srv, uid, GRACE, "ACCEPTED")
        client.wait_for("Subject: Invitation: " + title)  # back in the message
        client.write("Thanks, I'll be there")
        client.command("reply")
        client.wait_for("Send this email?")
        client.keys("y")
        [forwarded] = mails(sink, ALICE_BOX, "Re: Invitation: " + title)
    finally:
        client.stop()
    assert str(forwarded["From"]) == "Grace Hopper via Invito <invito@cal.example.com>"
    assert "Thanks, I'll be there" in forwarded.get_body(("plain",)).get_content()
    assert [n["Subject"] for n in mails(sink, ALICE_BOX, "Accepted: " + title)]  # and the answer's notice


# -- hand-made replies of other mail programs -------------------------------------------------------------------

@pytest.mark.parametrize("target", ["reply-to", "organizer"])
@pytest.mark.parametrize("shape", ["thunderbird", "outlook", "apple"])
def test_calendar_replies_apply_whether_sent_to_reply_to_or_to_the_organizer(
        site: tuple[Server, MailSink, int], shape: str, target: str) -> None:
    srv, sink, port = site
    uid, _, invitations = invite(srv, sink)
    organizer, raw = answer(invitations[GINO], GINO, "TENTATIVE", shape=shape, sender="gino@partner.example.org")
    if target == "reply-to":
        message = email.message_from_bytes(raw, policy=email.policy.default)
        message.replace_header("To", reply_to(invitations[GINO]))
        raw = wire(message)  # type: ignore[arg-type]
    send(port, reply_to(invitations[GINO]) if target == "reply-to" else organizer, raw,
         sender="gino@partner.example.org")
    cal = wait_partstat(srv, uid, GINO, "TENTATIVE")
    assert attendee(cal, GRACE).params["PARTSTAT"] == "NEEDS-ACTION"


# -- a person's plain reply -----------------------------------------------------------------------------------------

def plain_reply(invitation: EmailMessage, text: str = "Thanks, I'll be there", **headers: str) -> EmailMessage:
    """What a person writes after pressing "reply": words, a file."""
    return plain_reply_to(reply_to(invitation), text, **{"Subject": "Re: " + str(invitation["Subject"]),
                                                         "In-Reply-To": invitation["Message-ID"], **headers})


def plain_reply_to(address: str, text: str = "Thanks, I'll be there", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Grace Hopper <grace@client.example.net>"
    msg["To"] = address
    for name, value in headers.items():
        del msg[name]
        msg[name] = value
    msg.set_content(text)
    msg.add_attachment(b"%PDF-1.4 my slides", maintype="application", subtype="pdf", filename="slides.pdf")
    return msg


def test_a_plain_reply_reaches_the_organizer_and_what_no_person_wrote_does_not(
        site: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = site
    uid, title, invitations = invite(srv, sink)
    box = reply_to(invitations[GRACE])
    send(port, box, wire(plain_reply(invitations[GRACE])))
    [forwarded] = mails(sink, ALICE_BOX, "Re: Invitation: " + title)
    assert str(forwarded["From"]) == "Grace Hopper via Invito <invito@cal.example.com>"
    assert [a.addr_spec for a in forwarded["Reply-To"].addresses] == ["grace@client.example.net"]
    assert forwarded.get_body(("plain",)).get_content().strip() == "Thanks, I'll be there"
    [slides] = list(forwarded.iter_attachments())
    assert slides.get_filename() == "slides.pdf" and slides.get_content() == b"%PDF-1.4 my slides"
    assert attendee(copy_of(srv, "alice", uid), GRACE).params["PARTSTAT"] == "NEEDS-ACTION"  # words, no answer

    # Our own forward coming back (an organizer's rule forwarding to the guest, who forwards back): a loop.
    send(port, box, forwarded.as_bytes(policy=email.policy.SMTP))
    assert "loop" in quarantined_for(srv, forwarded["Message-ID"].strip("<>"))
    for headers, envelope, reason in (
            ({"Auto-Submitted": "auto-replied", "Subject": "Out of office " + uid}, "grace@client.example.net",
             "automatic"),
            ({"Precedence": "bulk", "Subject": "Newsletter " + uid}, "grace@client.example.net", "Precedence: bulk"),
            ({"Subject": "Null sender " + uid}, "", "empty envelope sender")):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.sendmail(envelope, [box], wire(plain_reply(invitations[GRACE], "I am away", **headers)))
        assert reason in quarantined_for(srv, str(headers["Subject"]))
    time.sleep(1)  # nothing more may reach the organizer: give a stray forward the time to show
    assert len(mails(sink, ALICE_BOX, title)) == 1


def test_plain_replies_are_limited_per_guest(site: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = site
    _, title, invitations = invite(srv, sink)
    for n in range(FORWARDS_PER_HOUR + 1):
        send(port, reply_to(invitations[GINO]), wire(plain_reply(invitations[GINO], f"Note {n}",
                                                                   Subject=f"Note {n} on {title}")),
             sender="gino@partner.example.org")
    assert len(mails(sink, ALICE_BOX, title, FORWARDS_PER_HOUR)) == FORWARDS_PER_HOUR
    reason = quarantined_for(srv, f"Note {FORWARDS_PER_HOUR} on {title}")
    assert f"more than {FORWARDS_PER_HOUR} plain replies an hour" in reason
    send(port, reply_to(invitations[GRACE]), wire(plain_reply(invitations[GRACE], Subject="Grace on " + title)))
    mails(sink, ALICE_BOX, "Grace on " + title)  # another guest's budget is their own


# -- what a REPLY may not smuggle into the organizer's notice --------------------------------------------------------

def hostile_reply(invitation: EmailMessage, guest: str, *lines: str) -> tuple[str, bytes]:
    organizer, raw = answer(invitation, guest, "ACCEPTED", comment="x" * 100_000)
    cal_text = "\r\n".join(lines)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    for part in message.walk():
        if part.get_content_type() in ("text/calendar", "application/ics"):
            data = part.get_payload(decode=True).replace(b"END:VEVENT", cal_text.encode() + b"\r\nEND:VEVENT")
            part.set_content(data, maintype=part.get_content_maintype(), subtype=part.get_content_subtype(),
                             params=dict(part.get_params()[1:]), cte="base64",
                             disposition="attachment" if part.get_filename() else None,
                             filename=part.get_filename())
    return organizer, wire(message)  # type: ignore[arg-type]


def test_a_reply_cannot_put_links_or_a_huge_comment_in_the_organizers_notice(
        site: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = site
    uid, title, invitations = invite(srv, sink)
    organizer, raw = hostile_reply(invitations[GRACE], GRACE, "URL:javascript:alert(document.cookie)",
                                   "ATTACH:file:///etc/passwd", "SUMMARY:Click here")
    send(port, organizer, raw)
    wait_partstat(srv, uid, GRACE, "ACCEPTED")
    [note] = mails(sink, ALICE_BOX, title)
    text, html = note.get_body(("plain",)).get_content(), note.get_body(("html",)).get_content()
    for body in (text, html):
        assert "javascript" not in body and "file:" not in body and "Click here" not in body
        assert "x" * 1999 in body and "x" * 2001 not in body  # the COMMENT, cut at 2000 characters
    size = len(note.as_bytes())
    assert size < 40_000, size  # 491 KB before: the comment was echoed whole, four times


def test_a_party_crasher_is_not_added_and_the_organizer_is_told(site: tuple[Server, MailSink, int]) -> None:
    """Grace forwards her invitation to Dave, who accepts: his REPLY comes to Grace's reply address."""
    srv, sink, port = site
    uid, title, invitations = invite(srv, sink)
    dave = "mailto:dave@elsewhere.example"
    address, raw = answer(invitations[GRACE], GRACE, "ACCEPTED", as_attendee=dave, sender="dave@elsewhere.example")
    send(port, address, raw, sender="dave@elsewhere.example")
    assert "dave@elsewhere.example" in quarantined_for(srv, "dave@elsewhere.example")
    [note] = mails(sink, ALICE_BOX, title)
    assert "dave@elsewhere.example is not invited to this event" in note.get_body(("plain",)).get_content()
    cal = copy_of(srv, "alice", uid)
    assert "dave@elsewhere.example" not in cal.to_ical().decode().lower()
    assert attendee(cal, GRACE).params["PARTSTAT"] == "NEEDS-ACTION"


def test_a_forward_the_organizers_mailbox_refused_can_be_sent_again(config: Path) -> None:
    """`invito queue retry` of a forwarded plain reply queues the very message again."""
    spool = outbound(config)
    mail = wire(plain_reply_to("invito+x@cal.example.com"))
    with scheduling_write(spool):
        first = spool.prepare_mail("review-1", GRACE, "mailto:alice@example.com", mail)
    spool.commit([first])
    [waiting] = spool.queued()
    spool.fail(waiting, "552 5.2.2 mailbox full")
    result = queue(config, "retry", f"{first}-alice@example.com")
    assert result.returncode == 0, result.stderr
    [again] = spool.due(time.time())
    assert (again.method, again.uid, again.sender, again.recipient, again.mail) == (
        "FORWARD", "review-1", GRACE, "mailto:alice@example.com", mail)
