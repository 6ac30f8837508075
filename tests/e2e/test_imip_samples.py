# SPDX-License-Identifier: GPL-3.0-or-later
"""Real iMIP mail from other programs (``../shared/imip-samples/``, see its README) sent over SMTP to a
running server in direct mode, and the outcome read back with the caldav client.

The samples disagree about who is internal, so there are two servers: in one alice organizes the events
the replies answer; in the other alice and bob are the attendees the invitations name.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Iterator

import caldav
import icalendar
import pytest

from tests.e2e.conftest import Server, free_port, inbound_pending, quarantined_entries, side_records, start, stop
from tests.e2e.mailsink import MailSink, start_sink
from tests.e2e.samples_setup import SAMPLES, calendar_text, organizer_event, raw
from tests.e2e.test_invitations_by_mail import mail_settings
from tests.e2e.test_replies_by_mail import send, wait_listening
from tests.e2e.test_scheduling import attendee, copy_of, inbox_methods

assert SAMPLES.is_dir(), f"the iMIP samples are not in {SAMPLES} (../shared beside the repository)"

# Alice owns the organizer addresses the replies (and the proposal) are sent to.
ORGANIZER_ADDRESSES = {"alice": ("thomas.cataldo@blue-mind.net", "max.mustermann@bluemind.net", "tom@willow.vmw",
                                 "ical-living-on+d7cdf68d-8b73-4df1-ad3b-f08002fb285f@example.com",
                                 "l.kneschke@caldav.org", "unittest@tine20.org")}
# Alice and bob own the attendee addresses the invitations are sent to.
ATTENDEE_ADDRESSES = {"alice": ("thomas.cataldo@blue-mind.net", "tom@willow.vmw"),
                      "bob": ("rackid11@mairie-saint-ouen.fr", "bob@example.org", "sclever@tine20.org")}


@dataclass
@dataclass
class Site:
    srv: Server
    port: int          # the SMTP listener
    sink: MailSink     # the relay: invitations and the organizer's notifications end up here


@contextlib.contextmanager
def _serve(folder: Path, addresses: dict[str, tuple[str, ...]]) -> Iterator[Site]:
    listen, relay = free_port(), free_port()
    book = folder / "addresses"
    book.write_text("".join(f"{user}: {', '.join(owned)}\n" for user, owned in addresses.items()))
    settings = {"smtp": mail_settings(relay)["smtp"],  # no [imip] reply_address: direct mode
                "imip": {"listen": f"127.0.0.1:{listen}"}, "scheduling": {"addresses": str(book)}}
    controller, sink = start_sink(relay)
    try:
        proc, srv = start(folder, settings)
        try:
            wait_listening(listen)
            yield Site(srv, listen, sink)
        finally:
            stop(proc)
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def organizing(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Site]:
    with _serve(tmp_path_factory.mktemp("organizing"), ORGANIZER_ADDRESSES) as site:
        site.srv.principal("alice").make_calendar(name="work", cal_id="work")
        yield site


@pytest.fixture(scope="module")
def attending(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Site]:
    with _serve(tmp_path_factory.mktemp("attending"), ATTENDEE_ADDRESSES) as site:
        yield site


def deliver(site: Site, recipient: str, message: bytes, sender: str) -> list[str]:
    """Send ``message`` and wait until the server has processed it; why it was quarantined (empty: it was
    not). Messages are processed one at a time, so once the queue is empty the outcome is on disk."""
    before = {entry.id for entry in quarantined_entries(site.srv)}
    send(site.port, recipient, message, sender=sender)
    deadline = time.monotonic() + 20
    while inbound_pending(site.srv):
        assert time.monotonic() < deadline, "the server did not process the message"
        time.sleep(0.05)
    return [entry.reason for entry in quarantined_entries(site.srv) if entry.id not in before]


def uid_of_event(cal: icalendar.Calendar) -> str:
    return str(cal.walk("VEVENT")[0]["UID"])


def uid_of(sample: str) -> str:
    return uid_of_event(icalendar.Calendar.from_ical(calendar_text(sample)))


def organize(site: Site, sample: str, organizer: str, **overrides: str) -> str:
    """Alice's event that ``sample`` is about, stored afresh (a test may send its sample again); its UID."""
    text, uid = organizer_event(sample, "mailto:" + organizer, **overrides), uid_of(sample)
    work = site.srv.principal("alice").calendar(cal_id="work")
    try:
        work.event_by_uid(uid).delete()
    except caldav.lib.error.NotFoundError:
        pass
    work.save_event(text)
    return uid


def note_to(site: Site, address: str, since: int, timeout: float = 10) -> EmailMessage:
    """The first mail to ``address`` that the relay received after its first ``since`` messages."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r.message for r in site.sink.received[since:] if address in r.recipients]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no mail to {address}")


def text_of(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


# -- guests answer an organizer of ours --------------------------------------------------------------------

REPLIES = [  # sample, the address it goes to (alice's), the guest who answers (the envelope sender)
    ("01-google-reply-accept.eml", "thomas.cataldo@blue-mind.net", "tcataldo@gmail.com"),
    ("03-ios-iphone-reply-accept.eml", "tom@willow.vmw", "admin@willow.vmw"),
    ("04-outlook-mac-reply-accept.eml", "tom@willow.vmw", "admin@willow.vmw"),
    ("05-android-email-reply-accept.eml", "thomas.cataldo@blue-mind.net", "david.phan@blue-mind.net"),
    ("06-bluemind-mapi-outlook-reply-no-organizer.eml", "alice@example.com", "lucie.takvorian@blue-mind.net"),
    ("10-apple-ical3-mail-reply-no-method-param.eml",
     "ical-living-on+d7cdf68d-8b73-4df1-ad3b-f08002fb285f@example.com", "xyzzy@example.com"),
    ("13-thunderbird-lightning-reply-accept.eml", "l.kneschke@caldav.org", "tine20admin@caldav.net"),
    ("15-google-reply-organizer-without-mailto.ics", "unittest@tine20.org", "mail@corneliusweiss.de"),
]


def reply(site: Site, sample: str, organizer: str, guest: str) -> tuple[str, list[str]]:
    """Alice organizes the sample's event, the guest's sample reply arrives: the UID, and any quarantine."""
    uid = organize(site, sample, organizer)
    return uid, deliver(site, organizer, raw(sample, sender=guest, to=organizer), sender=guest)


@pytest.mark.parametrize("sample, organizer, guest", REPLIES, ids=[r[0][:2] for r in REPLIES])
def test_a_real_reply_is_applied_once(organizing: Site, sample: str, organizer: str, guest: str) -> None:
    replies_before = inbox_methods(organizing.srv, "alice", uid_of(sample)).count("REPLY")
    uid, quarantined = reply(organizing, sample, organizer, guest)
    assert not quarantined, quarantined
    event = copy_of(organizing.srv, "alice", uid)
    assert attendee(event, "mailto:" + guest).params["PARTSTAT"] == "ACCEPTED"
    assert str(event.walk("VEVENT")[0]["ORGANIZER"]).lower() == "mailto:" + organizer  # still alice's event
    assert not event.walk("VALARM")  # the guest's own reminders stay theirs
    # Two copies of one calendar in a mail (inline and attached) are one answer.
    assert inbox_methods(organizing.srv, "alice", uid).count("REPLY") == replies_before + 1


def test_an_iphone_comment_reaches_the_organizer(organizing: Site) -> None:
    sample, organizer, guest = REPLIES[1]
    since = len(organizing.sink.received)
    uid, quarantined = reply(organizing, sample, organizer, guest)
    assert not quarantined, quarantined
    answered = attendee(copy_of(organizing.srv, "alice", uid), "mailto:" + guest)
    assert answered.params["PARTSTAT"] == "ACCEPTED"
    assert "Annotation" in text_of(note_to(organizing, organizer, since))  # told by mail, as for a COMMENT
    assert "X-INVITO" not in str(answered.params)  # kept with the answer, out of band:
    assert any("Annotation" in record for record in side_records(organizing.srv))


def test_a_reply_sent_from_an_alias_is_applied_and_the_organizer_is_told(organizing: Site) -> None:
    sample, organizer, guest = REPLIES[4]  # From: lucie.takvorian@bluemind.net answers for …@blue-mind.net
    since = len(organizing.sink.received)
    uid, quarantined = reply(organizing, sample, organizer, guest)
    assert not quarantined, quarantined
    assert attendee(copy_of(organizing.srv, "alice", uid), "mailto:" + guest).params["PARTSTAT"] == "ACCEPTED"
    assert "lucie.takvorian@bluemind.net" in text_of(note_to(organizing, organizer, since))


def test_a_proposed_new_time_leaves_the_event_as_it_is(organizing: Site) -> None:
    """Google's proposal says method=REPLY in its Content-Type and METHOD:COUNTER in the calendar; its attached
    copy names another organizer and guest. The original time is 6pm-7pm CET, as its Subject says."""
    sample, organizer, guest = "02-google-counter-method-mismatch.eml", "max.mustermann@bluemind.net", "max@gmail.com"
    uid = organize(organizing, sample, organizer, DTSTART="DTSTART:20210113T170000Z", DTEND="DTEND:20210113T180000Z")
    since = len(organizing.sink.received)
    assert not deliver(organizing, organizer, raw(sample), sender=guest)
    event = copy_of(organizing.srv, "alice", uid).walk("VEVENT")[0]
    assert event["DTSTART"].to_ical() == b"20210113T170000Z" and event["DTEND"].to_ical() == b"20210113T180000Z"
    assert attendee(copy_of(organizing.srv, "alice", uid), "mailto:" + guest).params["PARTSTAT"] == "NEEDS-ACTION"
    assert inbox_methods(organizing.srv, "alice", uid)[-1] == "COUNTER"
    proposal = next(icalendar.Calendar.from_ical(item.data)
                    for item in organizing.srv.principal("alice").schedule_inbox().get_items()
                    if uid in item.data and "METHOD:COUNTER" in item.data)
    assert proposal.walk("VEVENT")[0]["DTSTART"].to_ical() == b"20210113T184500Z"
    merged = proposal.to_ical().decode().lower()
    assert "nicolas.lascombes" not in merged and "mailto:gfritos" not in merged  # the attachment disagrees
    note = note_to(organizing, organizer, since)
    assert note["Subject"].startswith("New time proposed")


def test_a_bounce_quoting_an_invitation_is_never_applied(organizing: Site) -> None:
    sample = "11-dsn-bounce-containing-request.eml"
    uid = uid_of(sample)
    before = inbox_methods(organizing.srv, "alice", uid)
    [reason] = deliver(organizing, "alice@example.com", raw(sample), sender="")
    assert "delivery failure" in reason  # that matches no invitation this server sent
    assert inbox_methods(organizing.srv, "alice", uid) == before  # the quoted REQUEST was not delivered


# -- an external organizer invites a user of ours ------------------------------------------------------

INVITATIONS = [  # sample, the attendee address it goes to, the user owning it, the envelope sender
    ("07-outlook2010-request-bare-text-calendar.eml", "thomas.cataldo@blue-mind.net", "alice",
     "sylvain.garcia@blue-mind.net"),
    ("08-outlook-mac-request-attendee-uppercase.eml", "tom@willow.vmw", "alice", "admin@willow.vmw"),
    ("09-lotus-notes-request-octet-stream-ics.eml", "rackid11@mairie-saint-ouen.fr", "bob",
     "rkidai@mairie-saint-ouen.fr"),
    ("12-outlook-com-exchange2010-request.eml", "bob@example.org", "bob", "alice@example.org"),
    ("14-exchange2010-request-single-instance-only.ics", "sclever@tine20.org", "bob", "l.kneschke@caldav.org"),
]


def _instances(cal: icalendar.Calendar) -> list[str | None]:
    return [c["RECURRENCE-ID"].to_ical().decode() if "RECURRENCE-ID" in c else None for c in cal.walk("VEVENT")]


@pytest.mark.parametrize("sample, address, user, sender", INVITATIONS, ids=[i[0][:2] for i in INVITATIONS])
def test_a_real_invitation_reaches_the_user_it_names(attending: Site, sample: str, address: str, user: str,
                                                     sender: str) -> None:
    sent = icalendar.Calendar.from_ical(calendar_text(sample))
    uid = uid_of_event(sent)
    assert not deliver(attending, address, raw(sample, sender=sender, to=address), sender=sender)
    events = [icalendar.Calendar.from_ical(obj.data) for cal in attending.srv.principal(user).calendars()
              for obj in cal.events()]
    stored = [cal for cal in events if uid_of_event(cal) == uid]
    assert len(stored) == 1  # one event, whatever number of copies the mail carries
    [copy] = stored
    assert attendee(copy, "mailto:" + address, _instances(sent)[0]).params["PARTSTAT"] == "NEEDS-ACTION"
    assert _instances(copy) == _instances(sent)  # 14: that one instance, and no series made up around it
    assert str(copy.walk("VEVENT")[0]["SUMMARY"]) == str(sent.walk("VEVENT")[0]["SUMMARY"])
    assert inbox_methods(attending.srv, user, uid) == ["REQUEST"]
