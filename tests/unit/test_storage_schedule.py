# SPDX-License-Identifier: GPL-3.0-or-later
"""The one entry into stored events from outside HTTP, ``Storage.schedule``: each change's outcome kinds,
and what a user then finds in the event, their inbox and the outbound mail queue (real storage on disk)."""
from __future__ import annotations

from collections import Counter

import icalendar
import pytest
import radicale.item as radicale_item

from invito.plugins.imip.policy import queued
from invito.plugins.itip import ITipMessage
from invito.plugins.itip.components import find_attendee, scheduled
from invito.storage import Storage, layout
from invito.storage.changes import (Forward, Kind, Notification, Outcome, Receive, RecordStatus, Refresh, Send,
                                    ToInbox)

ALICE, CAROL = "mailto:alice@example.com", "mailto:carol@example.com"
GUEST, STRANGER = "mailto:guest@partner.example.org", "mailto:crasher@elsewhere.example.net"
EVENT = "\r\n".join([
    "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN", "BEGIN:VEVENT", "UID:meeting-1",
    "DTSTAMP:20300101T000000Z", "DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", "SUMMARY:Plan",
    f"ORGANIZER:{ALICE}", f"ATTENDEE;PARTSTAT=ACCEPTED:{ALICE}", f"ATTENDEE:{CAROL}", f"ATTENDEE:{GUEST}",
    "END:VEVENT", "END:VCALENDAR", ""])


def message(method: str, sender: str, recipients: tuple[str, ...], uid: str = "meeting-1",
            partstat: str = "ACCEPTED") -> ITipMessage:
    text = "\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//guest//EN", f"METHOD:{method}", "BEGIN:VEVENT",
        f"UID:{uid}", "DTSTAMP:20300102T000000Z", "DTSTART:20301010T090000Z", "SEQUENCE:0",
        f"ORGANIZER:{ALICE}", f"ATTENDEE;PARTSTAT={partstat}:{sender if method == 'REPLY' else recipients[0]}",
        "END:VEVENT", "END:VCALENDAR", ""])
    return ITipMessage(method, uid, sender, recipients, icalendar.Calendar.from_ical(text))


def reply(sender: str = GUEST, uid: str = "meeting-1") -> Receive:
    answer = message("REPLY", sender, (ALICE,), uid)
    return Receive(answer, ALICE, Notification(answer, ALICE))


@pytest.fixture
def organized(storage: Storage) -> Storage:
    """alice's meeting with carol (a user here) and a guest elsewhere, written as by her client."""
    with storage.acquire_lock("w"):
        alice = next(iter(storage.discover("/alice/calendar/")))
        alice.upload("meeting.ics", radicale_item.Item(collection_path="alice/calendar", text=EVENT))
    return storage


def attendee(storage: Storage, address: str, user: str = "alice") -> icalendar.prop.vCalAddress:
    stored = storage.read_event(user, "meeting-1")
    assert stored is not None
    found = find_attendee(scheduled(stored)[0], address)
    assert found is not None
    return found


def inbox(storage: Storage, user: str) -> list[str]:
    with storage.acquire_lock("r"):
        found = layout.collection(storage, layout.inbox_path(user))
        return [item.serialize() for item in found.get_all()] if found is not None else []


def mail(storage: Storage) -> Counter[tuple[str, str]]:
    """The queued mail: how many of each (method, recipient)."""
    return Counter((e.method, e.recipient) for e in storage.scheduler.spool.queued())


def test_a_guests_answer_is_applied_once_and_announced_once(organized: Storage) -> None:
    queued_before = mail(organized)
    assert organized.schedule("alice", reply()) == Outcome(Kind.APPLIED)
    assert attendee(organized, GUEST).params["PARTSTAT"] == "ACCEPTED"
    assert len(inbox(organized, "alice")) == 1
    assert mail(organized) == queued_before + Counter([("REPLY", ALICE)])

    assert organized.schedule("alice", reply()).kind is Kind.UNCHANGED  # the same mail again
    assert len(inbox(organized, "alice")) == 1 and mail(organized) == queued_before + Counter([("REPLY", ALICE)])


def test_an_answer_from_someone_not_invited_is_refused_and_says_so(organized: Storage) -> None:
    outcome = organized.schedule("alice", reply(STRANGER))
    assert outcome.kind is Kind.REFUSED and outcome.uninvited and STRANGER[len("mailto:"):] in outcome.reason
    assert inbox(organized, "alice") == []
    with pytest.raises(AssertionError):
        attendee(organized, STRANGER)


def test_an_answer_about_no_stored_event_is_refused(organized: Storage) -> None:
    outcome = organized.schedule("alice", reply(uid="never-sent"))
    assert outcome.kind is Kind.REFUSED and not outcome.uninvited and "no copy" in outcome.reason


def test_a_delivery_status_is_recorded_once_and_only_for_guests(organized: Storage) -> None:
    status = RecordStatus("meeting-1", ((GUEST, "5.1"),))
    assert organized.schedule("alice", status).kind is Kind.APPLIED
    assert attendee(organized, GUEST).params["SCHEDULE-STATUS"] == "5.1"
    assert organized.schedule("alice", status).kind is Kind.UNCHANGED
    gone = organized.schedule("alice", RecordStatus("meeting-1", ((STRANGER, "5.1"),)))
    assert gone.kind is Kind.REFUSED and STRANGER in gone.reason
    assert organized.schedule("alice", RecordStatus("never-sent", ((GUEST, "5.1"),))).kind is Kind.NO_EVENT


def test_a_counter_goes_to_the_inbox_only(organized: Storage) -> None:
    before = organized.read_event("alice", "meeting-1")
    queued_before = mail(organized)
    counter = message("COUNTER", GUEST, (ALICE,))
    assert organized.schedule("alice", ToInbox(counter.calendar, Notification(counter, ALICE))).kind is Kind.APPLIED
    assert [m for m in inbox(organized, "alice") if "METHOD:COUNTER" in m]
    assert mail(organized) == queued_before + Counter([("COUNTER", ALICE)])
    after = organized.read_event("alice", "meeting-1")
    assert before is not None and after is not None and after.to_ical() == before.to_ical()


def test_a_decline_counter_names_each_recipients_status(organized: Storage) -> None:
    decline = message("DECLINECOUNTER", ALICE, (GUEST, CAROL))
    outcome = organized.schedule("alice", Send(decline))
    assert outcome.kind is Kind.APPLIED
    assert outcome.statuses == ((GUEST, queued(relay_configured=False)), (CAROL, "1.2"))
    assert [m for m in inbox(organized, "carol") if "METHOD:DECLINECOUNTER" in m]
    assert mail(organized)[("DECLINECOUNTER", GUEST)] == 1
    assert organized.schedule("alice", Send(message("DECLINECOUNTER", ALICE, (GUEST,), uid="never-sent"))
                              ).kind is Kind.NO_EVENT


def test_a_refresh_queues_the_invitation_again_for_guests_only(organized: Storage) -> None:
    queued_before = mail(organized)
    assert organized.schedule("alice", Refresh("meeting-1", GUEST)).kind is Kind.APPLIED
    assert mail(organized) == queued_before + Counter([("REQUEST", GUEST)])
    stranger = organized.schedule("alice", Refresh("meeting-1", STRANGER))
    assert stranger.kind is Kind.REFUSED and STRANGER in stranger.reason
    assert organized.schedule("alice", Refresh("never-sent", GUEST)).kind is Kind.NO_EVENT
    assert mail(organized) == queued_before + Counter([("REQUEST", GUEST)])


def test_a_plain_reply_is_queued_for_the_organizer(organized: Storage) -> None:
    forwarded = b"From: guest@partner.example.org\r\nSubject: Fwd: Plan\r\n\r\nSee you there.\r\n"
    assert organized.schedule("alice", Forward("meeting-1", GUEST, ALICE, forwarded)).kind is Kind.APPLIED
    (entry,) = [e for e in organized.scheduler.spool.queued() if e.method == "FORWARD"]
    assert (entry.recipient, entry.uid, entry.mail) == (ALICE, "meeting-1", forwarded)
