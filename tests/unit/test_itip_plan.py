# SPDX-License-Identifier: GPL-3.0-or-later
"""Implicit scheduling of a client write: who gets which message, and what the server stores."""
from __future__ import annotations

import pytest

from invito.plugins.itip import Role, SchedulingError, apply, plan, schedule_tag, with_schedule_status
from invito.plugins.itip.model import Applied
from tests.unit.itip_helpers import (ALICE, BOB, CAROL, DAVE, NOW, OWNER_ALICE, OWNER_BOB, ROME, addresses_in,
                                     attendee, attendee_line, calendar, events, in_rome, instance, message_to,
                                     rid_of, sent, vevent)

ALARM = "BEGIN:VALARM\nACTION:DISPLAY\nDESCRIPTION:soon\nTRIGGER:-PT15M\nEND:VALARM"
WEEKLY = "RRULE:FREQ=WEEKLY;COUNT=5"
MOVED = dict(start="20301011T090000Z", end="20301011T100000Z")
BASE = calendar(vevent())

# -- organizer writes: who gets what --------------------------------------------------------------

ORGANIZER_CASES = {
    "new event invites every attendee": (
        None, calendar(vevent()), {BOB: ["REQUEST"], CAROL: ["REQUEST"]}),
    "identical write sends nothing": (
        BASE, calendar(vevent()), {}),
    "added attendee is invited, the others see the new list": (
        BASE, calendar(vevent(attendees=("bob", "carol", "dave"))),
        {BOB: ["REQUEST"], CAROL: ["REQUEST"], DAVE: ["REQUEST"]}),
    "removed attendee is cancelled": (
        BASE, calendar(vevent(attendees=("bob",))), {CAROL: ["CANCEL"], BOB: ["REQUEST"]}),
    "new time goes to everyone": (
        BASE, calendar(vevent(**MOVED)), {BOB: ["REQUEST"], CAROL: ["REQUEST"]}),
    "new duration goes to everyone": (
        BASE, calendar(vevent(end="20301010T110000Z")), {BOB: ["REQUEST"], CAROL: ["REQUEST"]}),
    "new title goes to everyone": (
        BASE, calendar(vevent(summary="Planning (room 2)")), {BOB: ["REQUEST"], CAROL: ["REQUEST"]}),
    "new location goes to everyone": (
        BASE, calendar(vevent("LOCATION:Room 2")), {BOB: ["REQUEST"], CAROL: ["REQUEST"]}),
    "new description goes to everyone": (
        BASE, calendar(vevent("DESCRIPTION:Agenda")), {BOB: ["REQUEST"], CAROL: ["REQUEST"]}),
    "becoming recurring goes to everyone": (
        BASE, calendar(vevent(WEEKLY)), {BOB: ["REQUEST"], CAROL: ["REQUEST"]}),
    "alarm only sends nothing": (
        BASE, calendar(vevent(ALARM)), {}),
    "categories, transparency and X- properties send nothing": (
        BASE, calendar(vevent("CATEGORIES:internal", "TRANSP:TRANSPARENT", "X-FOO:bar")), {}),
    "the organizer's client writing an answer sends nothing": (
        BASE, calendar(vevent(partstat={"bob": "ACCEPTED"})), {}),
    "SCHEDULE-AGENT=CLIENT attendee is left to the client": (
        None, calendar(vevent(attendees=("carol",)).replace(
            "END:VEVENT", "ATTENDEE;SCHEDULE-AGENT=CLIENT:mailto:bob@example.com\nEND:VEVENT")),
        {CAROL: ["REQUEST"]}),
    "SCHEDULE-AGENT=NONE attendee gets nothing either": (
        None, calendar(vevent(attendees=("carol",)).replace(
            "END:VEVENT", "ATTENDEE;SCHEDULE-AGENT=NONE:mailto:bob@example.com\nEND:VEVENT")),
        {CAROL: ["REQUEST"]}),
    "rooms and resources get messages too": (
        None, calendar(vevent(attendees=("carol",)).replace(
            "END:VEVENT", "ATTENDEE;CUTYPE=ROOM:mailto:room@example.com\nEND:VEVENT")),
        {CAROL: ["REQUEST"], "mailto:room@example.com": ["REQUEST"]}),
    "delete cancels everyone": (
        BASE, None, {BOB: ["CANCEL"], CAROL: ["CANCEL"]}),
    "STATUS:CANCELLED cancels everyone": (
        BASE, calendar(vevent("STATUS:CANCELLED")), {BOB: ["CANCEL"], CAROL: ["CANCEL"]}),
    "deleting a cancelled event sends nothing more": (
        calendar(vevent("STATUS:CANCELLED")), None, {}),
    "removing every attendee cancels them": (
        BASE, calendar(vevent(attendees=())), {BOB: ["CANCEL"], CAROL: ["CANCEL"]}),
    "upper-case MAILTO is the same attendee": (
        BASE, calendar(vevent().replace("mailto:bob@", "MAILTO:Bob@")), {}),
}


@pytest.mark.parametrize("old,new,expected", ORGANIZER_CASES.values(), ids=ORGANIZER_CASES.keys())
def test_organizer_messages(old, new, expected) -> None:
    result = plan(old, new, OWNER_ALICE, NOW)
    assert result.role is Role.ORGANIZER
    assert sent(result) == expected
    assert all(m.sender == ALICE for m in result.messages)


def test_messages_never_go_to_the_owner_or_the_organizer() -> None:
    result = plan(None, calendar(vevent()), frozenset({ALICE, "mailto:alice.alias@example.com"}), NOW)
    assert ALICE not in sent(result)


def test_attendees_with_identical_content_share_one_message() -> None:
    result = plan(None, calendar(vevent()), OWNER_ALICE, NOW)
    assert len(result.messages) == 1
    assert set(result.messages[0].recipients) == {BOB, CAROL}


# -- organizer writes: what is stored --------------------------------------------------------------


def test_unchanged_write_is_stored_as_sent() -> None:
    new = calendar(vevent(ALARM))
    result = plan(BASE, new, OWNER_ALICE, NOW)
    assert result.changed is False
    assert result.stored.to_ical() == new.to_ical()


def test_new_object_keeps_the_clients_sequence() -> None:
    assert "SEQUENCE" not in instance(plan(None, calendar(vevent()), OWNER_ALICE, NOW).stored)
    result = plan(None, calendar(vevent(sequence=4)), OWNER_ALICE, NOW)
    assert instance(result.stored)["SEQUENCE"] == 4
    assert result.changed is False


SEQUENCE_CASES = {
    "significant change bumps": (2, vevent(sequence=2, **MOVED), 3, True),
    # A move is also recorded as the reschedule replies are judged by: a rewrite even then.
    "client already bumped": (2, vevent(sequence=3, **MOVED), 3, True),
    "client bumped further": (2, vevent(sequence=7, **MOVED), 7, True),
    "client sent no SEQUENCE": (2, vevent(**MOVED), 3, True),
    "insignificant change keeps it": (2, vevent(ALARM, sequence=2), 2, False),
}


@pytest.mark.parametrize("before,new,expected,changed", SEQUENCE_CASES.values(), ids=SEQUENCE_CASES.keys())
def test_sequence(before: int, new: str, expected: int, changed: bool) -> None:
    result = plan(calendar(vevent(sequence=before)), calendar(new), OWNER_ALICE, NOW)
    assert int(instance(result.stored)["SEQUENCE"]) == expected
    assert result.changed is changed
    for message in result.messages:
        assert int(instance(message.calendar)["SEQUENCE"]) == expected
        assert "X-INVITO-RESCHEDULED" not in instance(message.calendar)  # bookkeeping stays home


def test_a_move_records_the_reschedule_and_a_later_edit_keeps_it() -> None:
    moved = plan(calendar(vevent(sequence=2)), calendar(vevent(sequence=2, **MOVED)), OWNER_ALICE, NOW).stored
    assert int(instance(moved)["X-INVITO-RESCHEDULED"]) == 3
    edited = calendar(vevent(sequence=3, summary="Planning, with lunch", **MOVED))  # the client dropped it
    again = plan(moved, edited, OWNER_ALICE, NOW).stored
    assert int(instance(again)["SEQUENCE"]) == 4 and int(instance(again)["X-INVITO-RESCHEDULED"]) == 3


def test_duplicate_attendees_are_collapsed() -> None:
    new = calendar(vevent().replace("END:VEVENT", "ATTENDEE;CN=Again:MAILTO:BOB@example.com\nEND:VEVENT"))
    result = plan(None, new, OWNER_ALICE, NOW)
    assert addresses_in(instance(result.stored)).count(BOB) == 1
    assert attendee(result.stored, BOB).params["CN"] == "Bob"  # the first line wins
    assert result.changed is True
    assert sent(result) == {BOB: ["REQUEST"], CAROL: ["REQUEST"]}


def test_force_send_requests_an_insignificant_update_once() -> None:
    new = calendar(vevent(ALARM).replace(
        "RSVP=TRUE:mailto:bob@", "RSVP=TRUE;SCHEDULE-FORCE-SEND=REQUEST:mailto:bob@"))
    result = plan(BASE, new, OWNER_ALICE, NOW)
    assert sent(result) == {BOB: ["REQUEST"]}
    assert result.messages[0].significant is False
    assert "SCHEDULE-FORCE-SEND" not in attendee(result.stored, BOB).params
    assert "SCHEDULE-FORCE-SEND" not in attendee(result.messages[0].calendar, BOB).params
    assert result.changed is True


def test_answers_merged_by_the_server_survive_a_stale_client_write() -> None:
    """The organizer's client edits the title from a copy read before Bob's reply was merged."""
    merged = calendar(vevent(partstat={"bob": "ACCEPTED"}).replace(
        "ACCEPTED;RSVP=TRUE:mailto:bob", "ACCEPTED;X-INVITO-REPLY-DTSTAMP=20300902T000000Z:mailto:bob"))
    result = plan(merged, calendar(vevent(summary="Planning (room 2)")), OWNER_ALICE, NOW)
    bob = attendee(result.stored, BOB)
    assert bob.params["PARTSTAT"] == "ACCEPTED"
    assert "RSVP" not in bob.params
    assert bob.params["X-INVITO-REPLY-DTSTAMP"] == "20300902T000000Z"
    assert result.changed is True
    assert attendee(message_to(result, CAROL, "REQUEST").calendar, BOB).params["PARTSTAT"] == "ACCEPTED"
    assert "X-INVITO-REPLY-DTSTAMP" not in attendee(message_to(result, CAROL, "REQUEST").calendar, BOB).params


def test_reschedule_may_ask_attendees_again() -> None:
    accepted = calendar(vevent(partstat={"bob": "ACCEPTED"}))
    result = plan(accepted, calendar(vevent(**MOVED)), OWNER_ALICE, NOW)
    assert attendee(result.stored, BOB).params["PARTSTAT"] == "NEEDS-ACTION"
    kept = plan(accepted, calendar(vevent(partstat={"bob": "ACCEPTED"}, **MOVED)), OWNER_ALICE, NOW)
    assert attendee(kept.stored, BOB).params["PARTSTAT"] == "ACCEPTED"


def test_organizer_may_change_their_own_answer() -> None:
    result = plan(BASE, calendar(vevent(partstat={"alice": "TENTATIVE"})), OWNER_ALICE, NOW)
    assert attendee(result.stored, ALICE).params["PARTSTAT"] == "TENTATIVE"
    assert result.messages == ()


# -- message content ---------------------------------------------------------------------------------


def test_request_content() -> None:
    new = calendar(ROME, in_rome(vevent(ALARM, start="20301010T090000", end="20301010T100000")).replace(
        "PARTSTAT=ACCEPTED:mailto:alice", "PARTSTAT=ACCEPTED;SCHEDULE-STATUS=1.2:mailto:alice"))
    cal = plan(None, new, OWNER_ALICE, NOW).messages[0].calendar
    assert str(cal["METHOD"]) == "REQUEST"
    assert "PRODID" in cal and "VERSION" in cal
    assert [str(tz["TZID"]) for tz in cal.walk("VTIMEZONE")] == ["Europe/Rome"]
    event = instance(cal)
    assert event.decoded("DTSTAMP") == NOW
    assert int(event["SEQUENCE"]) == 0
    assert event.walk("VALARM") == []
    assert "SCHEDULE-STATUS" not in attendee(cal, ALICE).params
    assert str(event["UID"]) == "m1" and str(event["SUMMARY"]) == "Planning"


def test_cancel_content() -> None:
    without_carol = calendar(vevent(attendees=("bob",), sequence=2))
    result = plan(calendar(vevent(sequence=2)), without_carol, OWNER_ALICE, NOW)
    cal = message_to(result, CAROL, "CANCEL").calendar
    assert str(cal["METHOD"]) == "CANCEL"
    event = instance(cal)
    assert addresses_in(event) == [CAROL]
    assert str(event["ORGANIZER"]).lower() == ALICE
    assert str(event["UID"]) == "m1" and str(event["STATUS"]) == "CANCELLED"
    assert int(event["SEQUENCE"]) == 3 == int(instance(result.stored)["SEQUENCE"])
    assert event["DTSTART"].to_ical() == b"20301010T090000Z"
    assert "RECURRENCE-ID" not in event
    assert event.decoded("DTSTAMP") == NOW


def test_delete_cancels_with_a_higher_sequence() -> None:
    result = plan(calendar(vevent(sequence=2)), None, OWNER_ALICE, NOW)
    assert result.stored is None and result.changed is False
    event = instance(result.messages[0].calendar)
    assert int(event["SEQUENCE"]) == 3
    assert sorted(addresses_in(event)) == [BOB, CAROL]


# -- recurring events --------------------------------------------------------------------------------

SERIES = vevent(WEEKLY)
# The 17 October instance moved to the afternoon, with Dave invited to it only.
OVERRIDE = vevent(rid="20301017T090000Z", start="20301017T140000Z", end="20301017T150000Z",
                  attendees=("bob", "carol", "dave"))


def test_attendee_of_one_instance_gets_only_that_instance() -> None:
    result = plan(None, calendar(SERIES, OVERRIDE), OWNER_ALICE, NOW)
    assert sent(result) == {BOB: ["REQUEST"], CAROL: ["REQUEST"], DAVE: ["REQUEST"]}
    to_dave = message_to(result, DAVE, "REQUEST").calendar
    assert [rid_of(c) for c in events(to_dave)] == ["20301017T090000Z"]
    to_bob = message_to(result, BOB, "REQUEST").calendar
    assert [rid_of(c) for c in events(to_bob)] == [None, "20301017T090000Z"]


def test_attendee_missing_from_an_override_gets_that_date_excluded() -> None:
    only_bob = vevent(rid="20301017T090000Z", start="20301017T140000Z", end="20301017T150000Z",
                      attendees=("bob",))
    result = plan(None, calendar(SERIES, only_bob), OWNER_ALICE, NOW)
    to_carol = message_to(result, CAROL, "REQUEST").calendar
    assert [rid_of(c) for c in events(to_carol)] == [None]
    assert instance(to_carol)["EXDATE"].to_ical() == b"20301017T090000Z"
    assert [rid_of(c) for c in events(message_to(result, BOB, "REQUEST").calendar)] == [None, "20301017T090000Z"]


def test_exdate_cancels_that_instance_only() -> None:
    result = plan(calendar(vevent(WEEKLY, sequence=1)),
                  calendar(vevent(WEEKLY, "EXDATE:20301024T090000Z", sequence=1)), OWNER_ALICE, NOW)
    assert sent(result) == {BOB: ["CANCEL"], CAROL: ["CANCEL"]}
    event = instance(result.messages[0].calendar, "20301024T090000Z")
    assert str(event["STATUS"]) == "CANCELLED"
    assert event["DTSTART"].to_ical() == b"20301024T090000Z"
    assert int(event["SEQUENCE"]) == 2 == int(instance(result.stored)["SEQUENCE"])


def test_cancelling_one_override() -> None:
    cancelled = OVERRIDE.replace("END:VEVENT", "STATUS:CANCELLED\nEND:VEVENT")
    result = plan(calendar(SERIES, OVERRIDE), calendar(SERIES, cancelled), OWNER_ALICE, NOW)
    assert sent(result) == {BOB: ["CANCEL"], CAROL: ["CANCEL"], DAVE: ["CANCEL"]}
    assert [rid_of(c) for c in events(result.messages[0].calendar)] == ["20301017T090000Z"]


def test_removing_an_attendee_from_one_override() -> None:
    without_dave = OVERRIDE.replace(attendee_line("dave") + "\n", "")
    result = plan(calendar(SERIES, OVERRIDE), calendar(SERIES, without_dave), OWNER_ALICE, NOW)
    assert sent(result) == {DAVE: ["CANCEL"], BOB: ["REQUEST"], CAROL: ["REQUEST"]}
    assert [rid_of(c) for c in events(message_to(result, DAVE, "CANCEL").calendar)] == ["20301017T090000Z"]
    # the others see the new attendee list of that instance only
    assert [rid_of(c) for c in events(message_to(result, BOB, "REQUEST").calendar)] == ["20301017T090000Z"]


def test_change_limited_to_one_override() -> None:
    relocated = OVERRIDE.replace("END:VEVENT", "LOCATION:Room 7\nEND:VEVENT")
    result = plan(calendar(SERIES, OVERRIDE), calendar(SERIES, relocated), OWNER_ALICE, NOW)
    assert sent(result) == {BOB: ["REQUEST"], CAROL: ["REQUEST"], DAVE: ["REQUEST"]}
    assert all([rid_of(c) for c in events(m.calendar)] == ["20301017T090000Z"] for m in result.messages)
    assert int(instance(result.stored, "20301017T090000Z")["SEQUENCE"]) == 1
    assert "SEQUENCE" not in instance(result.stored)


def test_master_change_sends_the_whole_series() -> None:
    result = plan(calendar(SERIES, OVERRIDE), calendar(vevent(WEEKLY, summary="Review"), OVERRIDE), OWNER_ALICE,
                  NOW)
    assert sent(result) == {BOB: ["REQUEST"], CAROL: ["REQUEST"]}  # Dave's instance did not change
    assert [rid_of(c) for c in events(message_to(result, BOB, "REQUEST").calendar)] == [None, "20301017T090000Z"]


def test_server_made_instance_answer_survives_a_client_that_never_saw_it() -> None:
    """After Bob declined one instance, the server's copy has an override the organizer's client lacks."""
    organizer_copy = calendar(SERIES)
    reply = calendar(vevent(rid="20301017T090000Z", start="20301017T090000Z", end="20301017T100000Z",
                            attendees=("bob",), organizer=None,
                            stamp="20300902T000000Z").replace("PARTSTAT=NEEDS-ACTION", "PARTSTAT=DECLINED"),
                     method="REPLY")
    merged = apply(reply, organizer_copy, ALICE, NOW)
    assert isinstance(merged, Applied)
    result = plan(merged.calendar, calendar(vevent(WEEKLY, "LOCATION:Room 2")), OWNER_ALICE, NOW)
    assert attendee(result.stored, BOB, "20301017T090000Z").params["PARTSTAT"] == "DECLINED"
    assert attendee(result.stored, BOB).params["PARTSTAT"] == "NEEDS-ACTION"
    assert str(instance(result.stored, "20301017T090000Z")["LOCATION"]) == "Room 2"


# -- attendee writes ---------------------------------------------------------------------------------

BOBS_COPY = calendar(vevent(sequence=1))


def bobs(*lines: str, **kwargs) -> str:
    return vevent(*lines, sequence=1, **kwargs)


ATTENDEE_CASES = {
    "accepting replies": (BOBS_COPY, calendar(bobs(partstat={"bob": "ACCEPTED"})), {ALICE: ["REPLY"]}),
    "deleting declines": (BOBS_COPY, None, {ALICE: ["REPLY"]}),
    "own alarm sends nothing": (BOBS_COPY, calendar(bobs(ALARM)), {}),
    "own transparency and X- properties send nothing": (
        BOBS_COPY, calendar(bobs("TRANSP:TRANSPARENT", "X-NOTE:mine")), {}),
    "identical write sends nothing": (BOBS_COPY, calendar(bobs()), {}),
    "organizer handled by the client sends nothing": (
        calendar(bobs().replace("ORGANIZER;", "ORGANIZER;SCHEDULE-AGENT=CLIENT;")),
        calendar(bobs(partstat={"bob": "ACCEPTED"}).replace("ORGANIZER;", "ORGANIZER;SCHEDULE-AGENT=CLIENT;")),
        {}),
    "deleting an already declined event sends nothing": (
        calendar(bobs(partstat={"bob": "DECLINED"})), None, {}),
    "deleting a cancelled event sends nothing": (calendar(bobs("STATUS:CANCELLED")), None, {}),
    "answering a cancelled event sends nothing": (
        calendar(bobs("STATUS:CANCELLED")), calendar(bobs("STATUS:CANCELLED", partstat={"bob": "ACCEPTED"})),
        {}),
    "creating an accepted copy replies": (
        None, calendar(bobs(partstat={"bob": "ACCEPTED"})), {ALICE: ["REPLY"]}),
    "creating an unanswered copy sends nothing": (None, calendar(bobs()), {}),
}


@pytest.mark.parametrize("old,new,expected", ATTENDEE_CASES.values(), ids=ATTENDEE_CASES.keys())
def test_attendee_messages(old, new, expected) -> None:
    result = plan(old, new, OWNER_BOB, NOW)
    assert result.role is Role.ATTENDEE
    assert sent(result) == expected
    assert all(m.sender == BOB for m in result.messages)


def test_reply_content() -> None:
    result = plan(BOBS_COPY, calendar(bobs(ALARM, partstat={"bob": "ACCEPTED"})), OWNER_BOB, NOW)
    assert result.changed is False
    cal = result.messages[0].calendar
    assert str(cal["METHOD"]) == "REPLY"
    event = instance(cal)
    assert addresses_in(event) == [BOB]
    assert attendee(cal, BOB).params["PARTSTAT"] == "ACCEPTED"
    assert "RSVP" not in attendee(cal, BOB).params
    assert str(event["ORGANIZER"]).lower() == ALICE
    assert int(event["SEQUENCE"]) == 1
    assert event.decoded("DTSTAMP") == NOW
    assert event["DTSTART"].to_ical() == b"20301010T090000Z"
    assert str(event["SUMMARY"]) == "Planning"  # the organizer's mail shows what is being answered
    assert event["DTEND"].to_ical() == b"20301010T100000Z"
    assert event.walk("VALARM") == [] and "DESCRIPTION" not in event


def test_deleting_declines_every_instance_attended() -> None:
    copy = calendar(vevent(WEEKLY), vevent(rid="20301017T090000Z", start="20301017T140000Z",
                                           end="20301017T150000Z"))
    result = plan(copy, None, OWNER_BOB, NOW)
    cal = result.messages[0].calendar
    assert [rid_of(c) for c in events(cal)] == [None, "20301017T090000Z"]
    assert {attendee(cal, BOB, rid).params["PARTSTAT"] for rid in (None, "20301017T090000Z")} == {"DECLINED"}
    assert result.stored is None


def test_answering_one_instance_replies_for_that_instance() -> None:
    """The attendee's client adds an override for one date with the new answer (as the e2e test does)."""
    copy = calendar(vevent(WEEKLY))
    answered = calendar(vevent(WEEKLY), vevent(rid="20301017T090000Z", start="20301017T090000Z",
                                               end="20301017T100000Z", partstat={"bob": "ACCEPTED"}))
    result = plan(copy, answered, OWNER_BOB, NOW)
    assert sent(result) == {ALICE: ["REPLY"]}
    cal = result.messages[0].calendar
    assert [rid_of(c) for c in events(cal)] == ["20301017T090000Z"]
    assert attendee(cal, BOB, "20301017T090000Z").params["PARTSTAT"] == "ACCEPTED"


def test_removing_one_instance_declines_it() -> None:
    result = plan(calendar(vevent(WEEKLY)), calendar(vevent(WEEKLY, "EXDATE:20301024T090000Z")), OWNER_BOB, NOW)
    cal = result.messages[0].calendar
    assert [rid_of(c) for c in events(cal)] == ["20301024T090000Z"]
    assert attendee(cal, BOB, "20301024T090000Z").params["PARTSTAT"] == "DECLINED"


def test_force_send_reply() -> None:
    forced = calendar(bobs().replace("ORGANIZER;", "ORGANIZER;SCHEDULE-FORCE-SEND=REPLY;"))
    result = plan(BOBS_COPY, forced, OWNER_BOB, NOW)
    assert sent(result) == {ALICE: ["REPLY"]}
    assert "SCHEDULE-FORCE-SEND" not in instance(result.stored)["ORGANIZER"].params
    assert result.changed is True


def test_an_attendees_client_cannot_move_the_organizers_sequence() -> None:
    """python-caldav's save() bumps SEQUENCE: stored (and replied) as the organizer's, so the Schedule-Tag
    stays and the organizer's next update is not taken for a stale one."""
    result = plan(BOBS_COPY, calendar(vevent(sequence=3, partstat={"bob": "ACCEPTED"})), OWNER_BOB, NOW)
    assert int(instance(result.stored)["SEQUENCE"]) == 1
    assert int(instance(result.messages[0].calendar)["SEQUENCE"]) == 1
    assert result.changed is True
    assert schedule_tag(result.stored) == schedule_tag(BOBS_COPY)


ATTENDEE_EDITS = {
    "start": bobs(**MOVED),
    "title": bobs(summary="Mine now"),
    "location": bobs("LOCATION:Elsewhere"),
    "description": bobs("DESCRIPTION:my notes"),
    "status": bobs("STATUS:CANCELLED"),
    "recurrence": bobs(WEEKLY),
    "organizer": bobs().replace("mailto:alice@example.com", "mailto:mallory@example.com"),
}


@pytest.mark.parametrize("new", ATTENDEE_EDITS.values(), ids=ATTENDEE_EDITS.keys())
def test_attendee_cannot_change_the_meeting(new: str) -> None:
    with pytest.raises(SchedulingError) as raised:
        plan(BOBS_COPY, calendar(new), OWNER_BOB, NOW)
    assert raised.value.precondition == "allowed-attendee-scheduling-object-change"


def test_attendee_may_write_the_same_instant_in_another_zone() -> None:
    rome = in_rome(bobs(start="20301010T110000", end="20301010T120000"))
    result = plan(BOBS_COPY, calendar(ROME, rome), OWNER_BOB, NOW)
    assert result.messages == ()


# -- roles and refusals ------------------------------------------------------------------------------

NONE_CASES = {
    "no organizer": calendar(vevent(organizer=None)),
    "organizer without attendees": calendar(vevent(attendees=())),
    "someone else's event without attendees": calendar(vevent(organizer="dave", attendees=())),
}


@pytest.mark.parametrize("new", NONE_CASES.values(), ids=NONE_CASES.keys())
def test_not_a_scheduling_object(new) -> None:
    result = plan(None, new, OWNER_ALICE, NOW)
    assert result == type(result)(Role.NONE, new, False, ())
    assert result.stored is new


def test_stranger_as_organizer_is_refused() -> None:
    with pytest.raises(SchedulingError) as raised:
        plan(None, calendar(vevent(organizer="dave", attendees=("carol",))), OWNER_ALICE, NOW)
    assert raised.value.precondition == "valid-organizer"
    assert isinstance(raised.value, ValueError)


def test_components_must_share_one_organizer() -> None:
    mixed = calendar(SERIES, vevent(rid="20301017T090000Z", organizer="dave", attendees=("bob",)))
    with pytest.raises(SchedulingError) as raised:
        plan(None, mixed, OWNER_ALICE, NOW)
    assert raised.value.precondition == "same-organizer-in-all-components"


def test_vtodo_is_scheduled_like_an_event() -> None:
    todo = vevent().replace("VEVENT", "VTODO").replace("DTEND:20301010T100000Z", "DUE:20301010T100000Z")
    result = plan(None, calendar(todo), OWNER_ALICE, NOW)
    assert sent(result) == {BOB: ["REQUEST"], CAROL: ["REQUEST"]}
    assert len(result.messages[0].calendar.walk("VTODO")) == 1


# -- SCHEDULE-STATUS -------------------------------------------------------------------------------


def test_with_schedule_status_marks_recipients_in_every_component() -> None:
    stored = calendar(SERIES, OVERRIDE)
    marked = with_schedule_status(stored, {"MAILTO:Bob@Example.com": "1.2", DAVE: "3.7"})
    assert attendee(marked, BOB).params["SCHEDULE-STATUS"] == "1.2"
    assert attendee(marked, BOB, "20301017T090000Z").params["SCHEDULE-STATUS"] == "1.2"
    assert attendee(marked, DAVE, "20301017T090000Z").params["SCHEDULE-STATUS"] == "3.7"
    assert "SCHEDULE-STATUS" not in attendee(marked, CAROL).params
    assert "SCHEDULE-STATUS" not in attendee(stored, BOB).params  # the input is left alone


def test_with_schedule_status_on_the_organizer() -> None:
    marked = with_schedule_status(calendar(vevent()), {ALICE: "1.2"})
    assert instance(marked)["ORGANIZER"].params["SCHEDULE-STATUS"] == "1.2"


# -- `changed` tells the truth ---------------------------------------------------------------------------


@pytest.mark.parametrize("old,new,owner", [(o, n, OWNER_ALICE) for o, n, _ in ORGANIZER_CASES.values()] +
                         [(o, n, OWNER_BOB) for o, n, _ in ATTENDEE_CASES.values()],
                         ids=[*ORGANIZER_CASES.keys(), *ATTENDEE_CASES.keys()])
def test_changed_means_the_stored_copy_differs_from_the_written_one(old, new, owner) -> None:
    result = plan(old, new, owner, NOW)
    if new is None:
        assert result.stored is None and result.changed is False
    else:
        assert result.changed is (result.stored.to_ical() != new.to_ical())
