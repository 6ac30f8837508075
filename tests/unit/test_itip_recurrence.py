# SPDX-License-Identifier: GPL-3.0-or-later
"""Bounded recurrence answers: far-future occurrences of dense series are decided without walking them,
the answers agree with dateutil's walk wherever that walk is affordable, and what is too costly raises."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import icalendar
import pytest
from dateutil.rrule import rrulestr

from invito.plugins.itip import Refused, apply
from invito.plugins.itip.freebusy import busy_periods
from invito.plugins.itip.recurrence import (MAX_STEPS, RecurrenceTooComplex, continues_after, deadline, is_occurrence,
                                             walk_cost)
from invito.plugins.rsvp.answer import State, assess

from tests.unit.itip_helpers import NOW, ROME, calendar, in_rome, vevent

FAR = datetime(2099, 12, 31, 23, 59, 59, tzinfo=timezone.utc)


def master(rule: str, start: str = "DTSTART:20300101T000000Z", *extra: str) -> icalendar.cal.Component:
    text = f"BEGIN:VEVENT\nUID:r\n{start}\nDURATION:PT1S\nRRULE:{rule}\n" + "".join(e + "\n" for e in extra)
    return calendar(ROME if "TZID" in start else "", text + "END:VEVENT\n").walk("VEVENT")[0]


@pytest.mark.parametrize("rule, member", [
    ("FREQ=SECONDLY", True),
    ("FREQ=SECONDLY;INTERVAL=2", False),       # 2099-12-31T23:59:59 is an odd number of seconds away
    ("FREQ=SECONDLY;INTERVAL=3", False),       # 2208988799 seconds: no small factor
    ("FREQ=MINUTELY", False),                  # minutely from :00 seconds never lands on :59
    ("FREQ=MINUTELY;BYSECOND=59", True),
    ("FREQ=HOURLY;BYMINUTE=59;BYSECOND=59", True),
    ("FREQ=HOURLY;BYMINUTE=59;BYSECOND=59;BYDAY=TH", True),   # 2099-12-31 is a Thursday
    ("FREQ=HOURLY;BYMINUTE=59;BYSECOND=59;BYDAY=FR", False),
    ("FREQ=SECONDLY;BYMONTH=12;BYMONTHDAY=-1", True),
    ("FREQ=SECONDLY;BYYEARDAY=-1;BYHOUR=23", True),
    ("FREQ=SECONDLY;BYYEARDAY=1", False),
    ("FREQ=SECONDLY;UNTIL=20991231T235958Z", False),
    ("FREQ=DAILY;BYHOUR=23;BYMINUTE=59;BYSECOND=59", True),
])
def test_far_future_occurrence_of_a_dense_series_is_decided(rule: str, member: bool) -> None:
    assert is_occurrence(master(rule), FAR) is member


def test_the_interval_counts_from_dtstart() -> None:
    assert is_occurrence(master("FREQ=SECONDLY;INTERVAL=3", "DTSTART:20300101T000002Z"), FAR)
    assert is_occurrence(master("FREQ=MINUTELY;INTERVAL=7", "DTSTART:20300101T000759Z"), FAR)  # 36816472 min
    assert not is_occurrence(master("FREQ=MINUTELY;INTERVAL=7", "DTSTART:20300101T000659Z"), FAR)


def test_a_removed_date_is_no_occurrence() -> None:
    event = master("FREQ=SECONDLY", "DTSTART:20300101T000000Z", "EXDATE:20991231T235959Z")
    assert not is_occurrence(event, FAR)
    assert is_occurrence(event, FAR - timedelta(seconds=1))
    assert not is_occurrence(master("FREQ=SECONDLY", "DTSTART:20300101T000000Z", "EXRULE:FREQ=MINUTELY;BYSECOND=59"),
                             FAR)


def test_an_rdate_outside_the_rule_is_an_occurrence() -> None:
    event = master("FREQ=HOURLY;UNTIL=20300102T000000Z", "DTSTART:20300101T000000Z", "RDATE:20991231T235959Z")
    assert is_occurrence(event, FAR)
    assert not is_occurrence(event, datetime(2030, 1, 3, tzinfo=timezone.utc))


# Every rule decided by arithmetic, checked against dateutil over its first two days (in Rome: across DST).
RULES = ["FREQ=SECONDLY;INTERVAL=7919", "FREQ=MINUTELY;INTERVAL=13", "FREQ=MINUTELY;INTERVAL=7;BYSECOND=0,30",
         "FREQ=HOURLY", "FREQ=HOURLY;INTERVAL=5;BYMINUTE=15,45", "FREQ=HOURLY;BYHOUR=1,2,3;BYDAY=SU,MO",
         "FREQ=MINUTELY;INTERVAL=11;BYHOUR=2;BYMONTHDAY=29,-3", "FREQ=DAILY;INTERVAL=3;BYHOUR=9,17",
         "FREQ=HOURLY;INTERVAL=2;UNTIL=20300331T120000Z"]
STARTS = ["DTSTART:20300330T013000Z", "DTSTART;TZID=Europe/Rome:20300330T013000", "DTSTART:20300330T013000"]


@pytest.mark.parametrize("rule, start", [(r, s) for r, s in itertools.product(RULES, STARTS)
                                         if "UNTIL" not in r or "Z" in s])  # UNTIL is in UTC: not floating
def test_arithmetic_agrees_with_walking_the_series(rule: str, start: str) -> None:
    event = master(rule, start)
    first = event.decoded("DTSTART")
    walked = set(rrulestr(rule, dtstart=first).between(first, first + timedelta(days=2), inc=True))
    samples = {first + timedelta(seconds=s) for s in range(0, 2 * 86400, 97)}
    for moment in sorted(samples | walked):
        assert is_occurrence(event, moment) is (moment in walked or moment == first), (rule, start, moment)


def test_a_series_that_must_be_walked_too_far_is_too_complex() -> None:
    with pytest.raises(RecurrenceTooComplex):
        is_occurrence(master("FREQ=SECONDLY;BYSETPOS=1"), FAR)
    with pytest.raises(RecurrenceTooComplex):
        is_occurrence(master("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR=1,2,3"), FAR)


def test_a_walk_within_budget_still_answers() -> None:
    assert is_occurrence(master("FREQ=WEEKLY;BYDAY=TH", "DTSTART:20300103T235959Z"), FAR)
    assert not is_occurrence(master("FREQ=SECONDLY;COUNT=100"), datetime(2030, 1, 1, 0, 1, 40, tzinfo=timezone.utc))
    assert is_occurrence(master("FREQ=SECONDLY;COUNT=100"), datetime(2030, 1, 1, 0, 1, 39, tzinfo=timezone.utc))


def test_the_callers_deadline_stops_a_walk() -> None:
    ticks = itertools.count()
    with deadline(10, lambda: next(ticks)), pytest.raises(RecurrenceTooComplex, match="longer than allowed"):
        is_occurrence(master("FREQ=WEEKLY;BYDAY=TH", "DTSTART:20300103T235959Z"), FAR)


def test_continues_after() -> None:
    hour = timedelta(hours=1)
    assert continues_after(master("FREQ=SECONDLY", "DTSTART:19700101T000000Z"), NOW, hour)
    assert continues_after(master("FREQ=HOURLY;UNTIL=20300901T120000Z", "DTSTART:20300801T000000Z"), NOW, hour)
    assert not continues_after(master("FREQ=HOURLY;UNTIL=20300901T113000Z", "DTSTART:20300801T000000Z"), NOW, hour)
    assert not continues_after(master("FREQ=HOURLY;UNTIL=20300901T103000Z", "DTSTART:20300801T000000Z"), NOW, hour)
    assert not continues_after(master("FREQ=DAILY;COUNT=3", "DTSTART:20300801T000000Z"), NOW, hour)
    with pytest.raises(RecurrenceTooComplex):
        continues_after(master("FREQ=SECONDLY;UNTIL=20300901T000000Z", "DTSTART:19700101T000000Z"), NOW, hour)


SERIES = vevent("RRULE:FREQ=SECONDLY", start="20300101T000000Z", end="20300101T000001Z")


def reply(rid: str) -> icalendar.Calendar:
    return calendar(f"""BEGIN:VEVENT
UID:m1
DTSTAMP:20300101T000000Z
RECURRENCE-ID:{rid}
SEQUENCE:0
ORGANIZER:mailto:alice@example.com
ATTENDEE;PARTSTAT=ACCEPTED:mailto:bob@example.com
END:VEVENT
""", method="REPLY")


def test_a_reply_to_a_far_occurrence_of_a_secondly_series_is_applied() -> None:
    result = apply(reply("20991231T235959Z"), calendar(SERIES), "mailto:alice@example.com", NOW)
    assert result.calendar is not None
    assert [str(c.get("RECURRENCE-ID").to_ical().decode()) for c in result.calendar.walk("VEVENT")
            if "RECURRENCE-ID" in c] == ["20991231T235959Z"]


def test_a_reply_that_cannot_be_checked_is_refused_with_the_reason() -> None:
    stored = calendar(vevent("RRULE:FREQ=SECONDLY;BYSETPOS=1", start="20300101T000000Z", end="20300101T000001Z"))
    result = apply(reply("20991231T235959Z"), stored, "mailto:alice@example.com", NOW)
    assert isinstance(result, Refused) and "could not be checked" in result.reason


def test_rsvp_page_of_an_uncheckable_occurrence_says_so() -> None:
    stored = calendar(vevent("RRULE:FREQ=SECONDLY;BYSETPOS=1", start="20300101T000000Z", end="20300101T000001Z"))
    assert assess(stored, "mailto:bob@example.com", "20991231T235959Z", NOW).state is State.TOO_COMPLEX
    assert assess(calendar(SERIES), "mailto:bob@example.com", "20991231T235959Z", NOW).state is State.OPEN
    assert assess(calendar(in_rome(SERIES), ROME), "mailto:bob@example.com", None, NOW).state is State.OPEN


def test_walk_cost_tells_dense_old_series_from_ordinary_ones() -> None:
    week_later = datetime(2030, 1, 8, tzinfo=timezone.utc)
    assert walk_cost(master("FREQ=SECONDLY"), week_later) > MAX_STEPS
    assert walk_cost(master("FREQ=HOURLY;BYMINUTE=0,15,30,45"), week_later) < MAX_STEPS
    assert walk_cost(master("FREQ=DAILY", "DTSTART:19700101T090000Z"), week_later) < MAX_STEPS
    assert walk_cost(master("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR", "DTSTART:19700101T090000Z"), week_later) < MAX_STEPS
    assert walk_cost(master("FREQ=DAILY;BYHOUR=9,10,11,12;BYMINUTE=0,30", "DTSTART:19700101T090000Z"),
                     week_later) > MAX_STEPS


def test_free_busy_skips_a_series_too_costly_to_expand_and_keeps_the_others() -> None:
    dense = calendar(vevent("RRULE:FREQ=SECONDLY", uid="dense", start="20200101T000000Z", end="20200101T000001Z"))
    daily = calendar(vevent("RRULE:FREQ=DAILY", uid="daily", start="20200101T090000Z", end="20200101T100000Z"))
    day = datetime(2030, 9, 2, tzinfo=timezone.utc)
    assert busy_periods([dense, daily], day, day + timedelta(days=1), frozenset()) == [
        (day + timedelta(hours=9), day + timedelta(hours=10), "BUSY")]
