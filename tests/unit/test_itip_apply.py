# SPDX-License-Identifier: GPL-3.0-or-later
"""Merging received iTIP messages into the recipient's copy."""
from __future__ import annotations

from datetime import date, datetime, timezone

import icalendar
import pytest

from invito.plugins.itip import Applied, Refused, apply, plan, schedule_tag
from tests.unit.itip_helpers import (ALICE, BOB, CAROL, DAVE, LATER, NOW, OWNER_ALICE, OWNER_BOB, ROME,
                                     addresses_in, attendee, calendar, events, in_rome, instance, message_to,
                                     rid_of, vevent)

RECEIVED = datetime(2030, 9, 10, tzinfo=timezone.utc)  # replies arrive after the guests gave them (DTSTAMP)
ALARM = "BEGIN:VALARM\nACTION:DISPLAY\nDESCRIPTION:mine\nTRIGGER:-PT5M\nEND:VALARM"
WEEKLY = "RRULE:FREQ=WEEKLY;COUNT=5"


def calendar_from(text: str) -> icalendar.Calendar:
    return icalendar.Calendar.from_ical(text)


def applied(result: Applied | Refused):
    assert isinstance(result, Applied), result
    return result.calendar


def refused(result: Applied | Refused) -> str:
    assert isinstance(result, Refused), result
    return result.reason


def request(*components: str):
    return calendar(*components, method="REQUEST")


def cancel(*components: str):
    return calendar(*components, method="CANCEL")


def reply(partstat: str = "ACCEPTED", who: str = "bob", rid: str | None = None, sequence: int | None = 1,
          stamp: str = "20300902T000000Z", start: str | None = None, extra: str = "",
          organizer: bool = True) -> icalendar.Calendar:
    lines = ["BEGIN:VEVENT", "UID:m1", f"DTSTAMP:{stamp}"]
    if rid:
        lines.append(f"RECURRENCE-ID:{rid}")
    lines.append(f"DTSTART:{start or rid or '20301010T090000Z'}")
    if sequence is not None:
        lines.append(f"SEQUENCE:{sequence}")
    if organizer:
        lines.append("ORGANIZER:mailto:alice@example.com")
    lines += [f"ATTENDEE;PARTSTAT={partstat}{extra}:mailto:{who}@example.com", "END:VEVENT", ""]
    return calendar("\n".join(lines), method="REPLY")


# -- REQUEST to an attendee ----------------------------------------------------------------------------


def test_message_from_another_organizer_is_refused() -> None:
    mine = calendar(vevent(sequence=1))
    for message in (request(vevent(organizer="dave", sequence=5)), cancel(vevent(organizer="dave", sequence=5)),
                    reply().to_ical().decode().replace("ORGANIZER:mailto:alice", "ORGANIZER:mailto:dave")):
        message = calendar_from(message) if isinstance(message, str) else message
        assert refused(apply(message, mine, BOB, NOW)) == \
            "the message's ORGANIZER mailto:dave@example.com is not this event's organizer"


def test_request_creates_the_copy() -> None:
    copy = applied(apply(request(vevent(sequence=1)), None, BOB, NOW))
    assert "METHOD" not in copy
    assert str(instance(copy)["SUMMARY"]) == "Planning"
    assert attendee(copy, BOB).params["PARTSTAT"] == "NEEDS-ACTION"


def test_request_without_partstat_means_needs_action() -> None:
    message = request(vevent().replace("CN=Bob;PARTSTAT=NEEDS-ACTION;", "CN=Bob;"))
    assert attendee(applied(apply(message, None, BOB, NOW)), BOB).params["PARTSTAT"] == "NEEDS-ACTION"


def test_request_updates_the_copy_keeping_the_attendees_own_settings() -> None:
    mine = calendar(vevent(ALARM, "TRANSP:TRANSPARENT", sequence=1, partstat={"bob": "ACCEPTED"}))
    update = request(vevent("TRANSP:OPAQUE", "LOCATION:Room 2", sequence=1))
    copy = applied(apply(update, mine, BOB, NOW))
    event = instance(copy)
    assert str(event["LOCATION"]) == "Room 2"
    assert str(event["TRANSP"]) == "TRANSPARENT"
    assert [str(a["DESCRIPTION"]) for a in event.walk("VALARM")] == ["mine"]
    assert attendee(copy, BOB).params["PARTSTAT"] == "ACCEPTED"  # same time: the answer still holds


def test_request_moving_the_meeting_takes_the_organizers_view_of_the_answer() -> None:
    mine = calendar(vevent(sequence=1, partstat={"bob": "ACCEPTED"}))
    moved = request(vevent(sequence=2, start="20301011T090000Z", end="20301011T100000Z"))
    copy = applied(apply(moved, mine, BOB, NOW))
    assert attendee(copy, BOB).params["PARTSTAT"] == "NEEDS-ACTION"
    assert int(instance(copy)["SEQUENCE"]) == 2


def test_request_with_the_same_sequence_is_applied() -> None:
    """Attendee-list changes and forced resends may keep the SEQUENCE."""
    copy = applied(apply(request(vevent(sequence=3, attendees=("bob", "carol", "dave"))),
                         calendar(vevent(sequence=3)), BOB, NOW))
    assert DAVE in addresses_in(instance(copy))


def test_stale_request_is_refused() -> None:
    assert refused(apply(request(vevent(sequence=1)), calendar(vevent(sequence=3)), BOB, NOW)) == \
        "stale SEQUENCE 1 < 3"


def test_request_for_one_instance_keeps_the_rest() -> None:
    mine = calendar(vevent(WEEKLY, ALARM), vevent(rid="20301024T090000Z", start="20301024T090000Z",
                                                  end="20301024T100000Z", summary="Kept"))
    moved = vevent(rid="20301017T090000Z", start="20301017T140000Z", end="20301017T150000Z", sequence=1)
    copy = applied(apply(request(moved), mine, BOB, NOW))
    assert [rid_of(c) for c in events(copy)] == [None, "20301024T090000Z", "20301017T090000Z"]
    assert instance(copy, "20301017T090000Z")["DTSTART"].to_ical() == b"20301017T140000Z"
    assert str(instance(copy, "20301024T090000Z")["SUMMARY"]) == "Kept"
    assert instance(copy).get("RRULE") is not None
    # the new override takes the series' alarms: they are the attendee's
    assert len(instance(copy, "20301017T090000Z").walk("VALARM")) == 1

    again = request(moved.replace("SUMMARY:Planning", "SUMMARY:Moved twice").replace("SEQUENCE:1", "SEQUENCE:2"))
    copy = applied(apply(again, copy, BOB, NOW))
    assert str(instance(copy, "20301017T090000Z")["SUMMARY"]) == "Moved twice"
    assert len(events(copy)) == 3


def test_whole_request_replaces_every_instance() -> None:
    mine = calendar(vevent(WEEKLY), vevent(rid="20301024T090000Z", start="20301024T140000Z",
                                           end="20301024T150000Z"))
    copy = applied(apply(request(vevent(WEEKLY, "EXDATE:20301024T090000Z", sequence=1)), mine, BOB, NOW))
    assert [rid_of(c) for c in events(copy)] == [None]


def test_request_brings_its_time_zones() -> None:
    rome = in_rome(vevent(start="20301010T090000", end="20301010T100000"))
    copy = applied(apply(request(ROME, rome), None, BOB, NOW))
    assert [str(tz["TZID"]) for tz in copy.walk("VTIMEZONE")] == ["Europe/Rome"]
    assert instance(copy).decoded("DTSTART") == datetime(2030, 10, 10, 7, tzinfo=timezone.utc)


def test_request_changes_the_attendees_schedule_tag() -> None:
    mine = calendar(vevent(sequence=1))
    copy = applied(apply(request(vevent(sequence=2, summary="Review")), mine, BOB, NOW))
    assert schedule_tag(copy) != schedule_tag(mine)


# -- CANCEL to an attendee -----------------------------------------------------------------------------


def test_cancel_marks_the_whole_copy_cancelled() -> None:
    mine = calendar(vevent(WEEKLY, sequence=1), vevent(rid="20301017T090000Z", start="20301017T140000Z",
                                                       end="20301017T150000Z", sequence=1))
    message = cancel(vevent("STATUS:CANCELLED", attendees=("bob",), sequence=2))
    copy = applied(apply(message, mine, BOB, NOW))
    assert [str(c["STATUS"]) for c in events(copy)] == ["CANCELLED", "CANCELLED"]
    assert int(instance(copy)["SEQUENCE"]) == 2


def test_cancel_of_an_overridden_instance() -> None:
    mine = calendar(vevent(WEEKLY, sequence=1), vevent(rid="20301017T090000Z", start="20301017T140000Z",
                                                       end="20301017T150000Z", sequence=1))
    message = cancel(vevent("STATUS:CANCELLED", rid="20301017T090000Z", start="20301017T140000Z", sequence=2))
    copy = applied(apply(message, mine, BOB, NOW))
    assert str(instance(copy, "20301017T090000Z")["STATUS"]) == "CANCELLED"
    assert int(instance(copy, "20301017T090000Z")["SEQUENCE"]) == 2
    assert "STATUS" not in instance(copy)


def test_cancel_of_an_instance_without_override_excludes_it() -> None:
    mine = calendar(ROME, in_rome(vevent(WEEKLY, sequence=1, start="20301010T110000", end="20301010T120000")))
    message = cancel(vevent("STATUS:CANCELLED", rid="20301024T090000Z", start="20301024T090000Z", sequence=2))
    copy = applied(apply(message, mine, BOB, NOW))
    assert [rid_of(c) for c in events(copy)] == [None]
    master = instance(copy)
    assert master["EXDATE"].to_ical() == b"20301024T110000"  # in the series' zone
    assert master["EXDATE"].params["TZID"] == "Europe/Rome"
    assert int(master["SEQUENCE"]) == 2


def test_cancel_without_a_copy_stores_nothing() -> None:
    assert apply(cancel(vevent("STATUS:CANCELLED")), None, BOB, NOW) == Applied(None)


def test_stale_cancel_is_refused() -> None:
    old_cancel = cancel(vevent("STATUS:CANCELLED", sequence=1))
    assert refused(apply(old_cancel, calendar(vevent(sequence=4)), BOB, NOW)) == "stale SEQUENCE 1 < 4"


# -- REPLY to the organizer ----------------------------------------------------------------------------

ORGANIZER_COPY = calendar(vevent(sequence=1))


def test_reply_records_the_answer_and_nothing_else() -> None:
    merged = applied(apply(reply("ACCEPTED"), ORGANIZER_COPY, ALICE, RECEIVED))
    bob = attendee(merged, BOB)
    assert bob.params["PARTSTAT"] == "ACCEPTED"
    assert "RSVP" not in bob.params
    assert bob.params["X-INVITO-REPLY-DTSTAMP"] == "20300902T000000Z"
    assert attendee(merged, CAROL).params["PARTSTAT"] == "NEEDS-ACTION"
    # nothing else changed, and the input object was not modified
    bob.params.clear()
    expected = ORGANIZER_COPY.copy(recursive=True)
    attendee(expected, BOB).params.clear()
    assert merged.to_ical() == expected.to_ical()
    assert attendee(ORGANIZER_COPY, BOB).params["PARTSTAT"] == "NEEDS-ACTION"


def test_reply_keeps_the_schedule_tag() -> None:
    merged = applied(apply(reply("ACCEPTED"), ORGANIZER_COPY, ALICE, RECEIVED))
    assert schedule_tag(merged) == schedule_tag(ORGANIZER_COPY)


def test_a_reply_to_a_sequence_bumped_since_by_an_edit_still_counts() -> None:
    """Only a reschedule makes earlier answers stale; a new title or description does not."""
    edited = calendar(vevent("X-INVITO-RESCHEDULED:1", sequence=3, summary="Planning, with lunch"))
    merged = applied(apply(reply("ACCEPTED", sequence=1), edited, ALICE, RECEIVED))
    assert attendee(merged, BOB).params["PARTSTAT"] == "ACCEPTED"


def test_the_same_reply_twice_changes_nothing() -> None:
    once = applied(apply(reply("TENTATIVE"), ORGANIZER_COPY, ALICE, RECEIVED))
    assert apply(reply("TENTATIVE"), once, ALICE, RECEIVED) == Applied(None)  # nothing to store


def test_the_same_answer_given_again_later_is_recorded_quietly() -> None:
    """A newer reply repeating the answer: its time is kept (later replies are ordered by it), but it is no
    news for the organizer; a changed answer is."""
    once = applied(apply(reply("DECLINED"), ORGANIZER_COPY, ALICE, RECEIVED))
    again = apply(reply("DECLINED", stamp="20300903T000000Z"), once, ALICE, RECEIVED)
    assert isinstance(again, Applied) and again.calendar is not None and not again.news
    assert attendee(again.calendar, BOB).params["X-INVITO-REPLY-DTSTAMP"] == "20300903T000000Z"
    # So a reply from between the two, arriving last, is still out of order.
    assert refused(apply(reply("ACCEPTED", stamp="20300902T120000Z"), again.calendar, ALICE, RECEIVED)).startswith(
        "out of order")
    changed = apply(reply("ACCEPTED", stamp="20300904T000000Z"), again.calendar, ALICE, RECEIVED)
    assert isinstance(changed, Applied) and changed.news


REFUSED_REPLIES = {
    "party crasher": (reply(who="dave"), ORGANIZER_COPY, "mailto:dave@example.com is not invited to this event"),
    "stale sequence": (reply(sequence=0), calendar(vevent("X-INVITO-RESCHEDULED:1", sequence=1)),
                       "stale: the reply answers SEQUENCE 0, the event was rescheduled at 1"),
    "out of order": (reply("DECLINED", stamp="20300901T000000Z"),
                     applied(apply(reply("ACCEPTED", stamp="20300902T000000Z"), ORGANIZER_COPY, ALICE, RECEIVED)),
                     "out of order: reply from 20300901T000000Z is older than the one applied from "
                     "20300902T000000Z"),
    "no copy": (reply(), None, "there is no copy of this event to record the reply in"),
    "excluded instance": (reply(rid="20301024T090000Z"), calendar(vevent(WEEKLY, "EXDATE:20301024T090000Z")),
                          "the event has no instance 20301024T090000Z"),
    "instance of a single event": (reply(rid="20301024T090000Z"), ORGANIZER_COPY,
                                   "the event has no instance 20301024T090000Z"),
    "date after the last instance": (reply(rid="20301114T090000Z", sequence=0), calendar(vevent(WEEKLY)),
                                     "the event has no instance 20301114T090000Z"),
    "time between instances": (reply(rid="20301017T100000Z", sequence=0), calendar(vevent(WEEKLY)),
                               "the event has no instance 20301017T100000Z"),
}


@pytest.mark.parametrize("message,stored,reason", REFUSED_REPLIES.values(), ids=REFUSED_REPLIES.keys())
def test_refused_replies(message, stored, reason: str) -> None:
    assert refused(apply(message, stored, ALICE, NOW)) == reason


def test_newer_reply_replaces_the_answer() -> None:
    first = applied(apply(reply("ACCEPTED", stamp="20300902T000000Z"), ORGANIZER_COPY, ALICE, RECEIVED))
    second = applied(apply(reply("DECLINED", stamp="20300903T000000Z"), first, ALICE, RECEIVED))
    assert attendee(second, BOB).params["PARTSTAT"] == "DECLINED"
    assert attendee(second, BOB).params["X-INVITO-REPLY-DTSTAMP"] == "20300903T000000Z"


def test_reply_without_organizer_or_sequence_is_accepted() -> None:
    """Outlook's replies lack both."""
    merged = applied(apply(reply("ACCEPTED", sequence=None, organizer=False), calendar(vevent(sequence=2)),
                           ALICE, NOW))
    assert attendee(merged, BOB).params["PARTSTAT"] == "ACCEPTED"


def test_reply_address_matching_ignores_case_and_email_parameter() -> None:
    message = reply("ACCEPTED", extra=";EMAIL=bob@other.example").to_ical().decode().replace(
        "mailto:bob@example.com", "MAILTO:Bob@Example.COM")
    merged = applied(apply(calendar_from(message), ORGANIZER_COPY, "MAILTO:ALICE@example.com", NOW))
    assert attendee(merged, BOB).params["PARTSTAT"] == "ACCEPTED"
    assert addresses_in(instance(merged)).count(BOB) == 1


def test_reply_carries_delegation_and_comment() -> None:
    message = reply("DELEGATED", extra=';DELEGATED-TO="mailto:dave@example.com"').to_ical().decode().replace(
        "END:VEVENT", 'COMMENT:Dave knows "this" better\r\nEND:VEVENT')
    merged = applied(apply(calendar_from(message), ORGANIZER_COPY, ALICE, NOW))
    bob = attendee(merged, BOB)
    assert bob.params["PARTSTAT"] == "DELEGATED"
    assert bob.params["DELEGATED-TO"] == "mailto:dave@example.com"
    assert bob.params["X-INVITO-COMMENT"] == 'Dave knows "this" better'
    assert "COMMENT" not in instance(merged)
    assert schedule_tag(merged) == schedule_tag(ORGANIZER_COPY)
    # survives a round trip through text (RFC 6868 escaping)
    assert attendee(calendar_from(merged.to_ical().decode()), BOB).params["X-INVITO-COMMENT"] == \
        'Dave knows "this" better'


def test_reply_for_one_instance_creates_its_override() -> None:
    series = calendar(ROME, in_rome(vevent(WEEKLY, ALARM, sequence=1, start="20301010T110000",
                                           end="20301010T120000")))
    merged = applied(apply(reply("DECLINED", rid="20301017T090000Z"), series, ALICE, RECEIVED))
    assert [rid_of(c) for c in events(merged)] == [None, "20301017T110000"]
    override = instance(merged, "20301017T110000")
    assert override["RECURRENCE-ID"].params["TZID"] == "Europe/Rome"
    assert override.decoded("DTSTART") == datetime(2030, 10, 17, 9, tzinfo=timezone.utc)
    assert override.decoded("DTEND") == datetime(2030, 10, 17, 10, tzinfo=timezone.utc)
    assert all(name not in override for name in ("RRULE", "RDATE", "EXDATE"))
    assert str(override["SUMMARY"]) == "Planning" and int(override["SEQUENCE"]) == 1
    assert attendee(merged, BOB, "20301017T110000").params["PARTSTAT"] == "DECLINED"
    assert attendee(merged, BOB).params["PARTSTAT"] == "NEEDS-ACTION"
    assert schedule_tag(merged) == schedule_tag(series)


def test_reply_for_an_instance_after_a_daylight_saving_change() -> None:
    """11:00 in Rome is 09:00Z in October until the 27th and 10:00Z after: instances follow the wall clock."""
    series = calendar(ROME, in_rome(vevent(WEEKLY, start="20301010T110000", end="20301010T120000")))
    merged = applied(apply(reply("ACCEPTED", rid="20301031T100000Z", sequence=0), series, ALICE, RECEIVED))
    assert attendee(merged, BOB, "20301031T110000").params["PARTSTAT"] == "ACCEPTED"
    assert isinstance(apply(reply("ACCEPTED", rid="20301031T090000Z", sequence=0), series, ALICE, RECEIVED), Refused)


def test_reply_for_an_all_day_instance() -> None:
    series = calendar(vevent(WEEKLY, start="20301010", end="20301011").replace(
        "DTSTART:", "DTSTART;VALUE=DATE:").replace("DTEND:", "DTEND;VALUE=DATE:"))
    message = reply(rid="20301017", start="20301017").to_ical().decode().replace(
        "RECURRENCE-ID:", "RECURRENCE-ID;VALUE=DATE:").replace("DTSTART:", "DTSTART;VALUE=DATE:")
    merged = applied(apply(calendar_from(message), series, ALICE, NOW))
    override = instance(merged, "20301017")
    assert override.decoded("DTSTART") == date(2030, 10, 17)
    assert override.decoded("DTEND") == date(2030, 10, 18)


def test_reply_for_an_existing_override_updates_it() -> None:
    stored = calendar(vevent(WEEKLY), vevent(rid="20301017T090000Z", start="20301017T140000Z",
                                             end="20301017T150000Z"))
    merged = applied(apply(reply("ACCEPTED", rid="20301017T090000Z", sequence=0), stored, ALICE, RECEIVED))
    assert len(events(merged)) == 2
    assert attendee(merged, BOB, "20301017T090000Z").params["PARTSTAT"] == "ACCEPTED"
    assert instance(merged, "20301017T090000Z")["DTSTART"].to_ical() == b"20301017T140000Z"


def test_instance_reply_repeating_the_series_answer_adds_no_override() -> None:
    stored = calendar(vevent(WEEKLY, partstat={"bob": "ACCEPTED"}))
    assert apply(reply("ACCEPTED", rid="20301017T090000Z", sequence=0), stored, ALICE, RECEIVED) == Applied(None)


def test_unsupported_method_is_refused() -> None:
    assert refused(apply(calendar(vevent(), method="COUNTER"), ORGANIZER_COPY, ALICE, NOW)) == \
        "METHOD COUNTER is not supported"
    assert refused(apply(calendar(method="REQUEST"), None, BOB, NOW)) == "the message has no VEVENT or VTODO"


# -- RFC 5546 §4.2: a group meeting from invitation to cancellation, through plan() and apply() -------------


def test_rfc5546_group_meeting() -> None:
    """A invites B, C and D; B accepts, C declines; A reschedules; A cancels."""
    first = calendar(vevent("STATUS:CONFIRMED", attendees=("bob", "carol", "dave"), sequence=0,
                            summary="Conference"))
    invited = plan(None, first, OWNER_ALICE, NOW)
    copies = {who: applied(apply(message_to(invited, who, "REQUEST").calendar, None, who, NOW))
              for who in (BOB, CAROL, DAVE)}
    organizer_copy = invited.stored
    tag = schedule_tag(organizer_copy)

    for who, owner, answer in ((BOB, OWNER_BOB, "ACCEPTED"), (CAROL, frozenset({CAROL}), "DECLINED")):
        answered = copies[who].copy(recursive=True)
        attendee(answered, who).params["PARTSTAT"] = answer
        written = plan(copies[who], answered, owner, NOW)
        organizer_copy = applied(apply(message_to(written, ALICE, "REPLY").calendar, organizer_copy, ALICE, NOW))
    assert [attendee(organizer_copy, w).params["PARTSTAT"] for w in (BOB, CAROL, DAVE)] == \
        ["ACCEPTED", "DECLINED", "NEEDS-ACTION"]
    assert schedule_tag(organizer_copy) == tag

    moved = organizer_copy.copy(recursive=True)
    instance(moved)["DTSTART"].dt = datetime(2030, 10, 10, 11, tzinfo=timezone.utc)
    instance(moved)["DTEND"].dt = datetime(2030, 10, 10, 12, tzinfo=timezone.utc)
    rescheduled = plan(organizer_copy, moved, OWNER_ALICE, LATER)
    assert int(instance(rescheduled.stored)["SEQUENCE"]) == 1
    bobs = applied(apply(message_to(rescheduled, BOB, "REQUEST").calendar, copies[BOB], BOB, LATER))
    assert instance(bobs).decoded("DTSTART") == datetime(2030, 10, 10, 11, tzinfo=timezone.utc)

    cancelled = plan(rescheduled.stored, None, OWNER_ALICE, LATER)
    assert {r for m in cancelled.messages for r in m.recipients} == {BOB, CAROL, DAVE}
    bobs = applied(apply(message_to(cancelled, BOB, "CANCEL").calendar, bobs, BOB, LATER))
    assert str(instance(bobs)["STATUS"]) == "CANCELLED"
    # the first invitation arriving late is refused
    assert isinstance(apply(message_to(invited, BOB, "REQUEST").calendar, bobs, BOB, LATER), Refused)
