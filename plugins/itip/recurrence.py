# SPDX-License-Identifier: GPL-3.0-or-later
"""Bounded answers about recurring series: input from outside must never make the server iterate forever.

A guest may name any RECURRENCE-ID (``20991231T235959Z`` of a ``FREQ=SECONDLY`` series is two billion
occurrences away), and dateutil answers "is this an occurrence" only by walking the series from its start.
So membership for SECONDLY, MINUTELY, HOURLY and DAILY rules without COUNT or BYSETPOS/BYWEEKNO is decided
by arithmetic (the period index and each BYxxx part, as RFC 5545 §3.3.10 and dateutil define them); every
other question walks the series under a :class:`Budget` of steps and, when the caller set one with
:func:`deadline`, of time. Running out raises :class:`RecurrenceTooComplex`, which callers turn into a
refusal with that reason (quarantine, error page), never a hang. Walks run by others (Radicale's
time-range filter, recurring_ical_events) are judged first by :func:`walk_cost`.

The core stays pure: the clock is the caller's, injected through :func:`deadline`.
"""
from __future__ import annotations

import calendar
import contextlib
import contextvars
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Callable, Iterator

import icalendar
from dateutil.rrule import rrulestr

from invito.plugins.itip.components import Component, date_values, decoded, in_zone_of, key_of, values

MAX_STEPS = 50_000  # occurrences a walk may visit (a daily series for 130 years; Radicale caps COUNT at 10000)

Clock = Callable[[], float]
_DEADLINE: contextvars.ContextVar[tuple[float, Clock] | None] = contextvars.ContextVar("deadline", default=None)

# Seconds per period of the frequencies decided by arithmetic, and the time fields finer than each.
_PERIOD = {"SECONDLY": 1, "MINUTELY": 60, "HOURLY": 3600, "DAILY": 86400}
_FINER = {"SECONDLY": (), "MINUTELY": ("SECOND",), "HOURLY": ("MINUTE", "SECOND"),
          "DAILY": ("HOUR", "MINUTE", "SECOND")}
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_WALKED = ("COUNT", "BYSETPOS", "BYWEEKNO")  # parts that need the series walked from its start
_APPROXIMATE = {**_PERIOD, "WEEKLY": 7 * 86400, "MONTHLY": 28 * 86400, "YEARLY": 365 * 86400}  # shortest periods


class RecurrenceTooComplex(Exception):
    """A recurrence question could not be answered within the step or time budget."""


@contextlib.contextmanager
def deadline(at: float, clock: Clock) -> Iterator[None]:
    """Within the block, recurrence walks stop (raising :class:`RecurrenceTooComplex`) once ``clock()``
    passes ``at``: how a caller bounds the time one message's processing may take."""
    token = _DEADLINE.set((at, clock))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


@dataclass
class Budget:
    """Steps left for one question; the caller's :func:`deadline`, if any, is checked as they are spent."""

    steps: int = MAX_STEPS

    def spend(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise RecurrenceTooComplex(f"the recurrence needs more than {MAX_STEPS} steps to check")
        limit = _DEADLINE.get()
        if limit is not None and self.steps % 256 == 0 and limit[1]() > limit[0]:
            raise RecurrenceTooComplex("checking the recurrence took longer than allowed")


def _as_datetime(value: date | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime(value.year, value.month, value.day)


def _naive(value: datetime) -> datetime:
    return value.replace(tzinfo=None)


def is_occurrence(master: Component, rid: date | datetime) -> bool:
    """Whether the series ``master`` has an instance at ``rid``: its start, an RDATE, or a date of one of its
    RRULEs that no EXDATE or EXRULE removes."""
    start = decoded(master, "DTSTART")
    if start is None:
        return False
    key = key_of(rid)
    if key in {key_of(d) for d in date_values(master, "EXDATE")}:
        return False
    if key in {key_of(start), *(key_of(d) for d in date_values(master, "RDATE"))}:
        return True
    first, wanted = _as_datetime(start), _as_datetime(in_zone_of(rid, start))
    if any(_in_rule(rule, first, wanted) for rule in values(master, "EXRULE")):
        return False
    return any(_in_rule(rule, first, wanted) for rule in values(master, "RRULE"))


def _in_rule(rule: icalendar.vRecur, first: datetime, wanted: datetime) -> bool:
    parts = {name: list(value) for name, value in rule.items()}
    freq = str(parts.get("FREQ", [""])[0]).upper()
    try:
        if freq in _PERIOD and not any(name in parts for name in _WALKED):
            return _matches(parts, freq, first, wanted)
        return _walk_to(rule, first, wanted)
    except (ValueError, TypeError, OverflowError):  # a rule we cannot evaluate: give the sender the benefit of doubt
        return True


def _matches(parts: dict[str, list], freq: str, first: datetime, wanted: datetime) -> bool:
    """Membership by arithmetic: on the period grid from DTSTART, within UNTIL, and allowed by every BYxxx."""
    if wanted < first or not _before_until(parts, first, wanted):
        return False
    a, b = _naive(first), _naive(wanted)  # dateutil steps wall-clock time, as RFC 5545 does
    if b.microsecond != a.microsecond:
        return False
    period = _PERIOD[freq]
    interval = int(parts.get("INTERVAL", [1])[0])
    if (_seconds(b) // period - _seconds(a) // period) % interval:
        return False
    for name in ("HOUR", "MINUTE", "SECOND"):
        allowed = parts.get("BY" + name)
        mine = getattr(b, name.lower())
        if allowed is not None:
            if mine not in {int(v) for v in allowed}:
                return False
        elif name in _FINER[freq] and mine != getattr(a, name.lower()):  # unset finer parts come from DTSTART
            return False
    return _date_allowed(parts, b)


def _seconds(value: datetime) -> int:
    return value.toordinal() * 86400 + value.hour * 3600 + value.minute * 60 + value.second


def _before_until(parts: dict[str, list], first: datetime, wanted: datetime) -> bool:
    if "UNTIL" not in parts:
        return True
    until = _as_datetime(parts["UNTIL"][0])
    if (until.tzinfo is None) != (first.tzinfo is None):  # compare as written when one side is floating
        return _naive(wanted) <= _naive(until)
    return wanted <= until


def _date_allowed(parts: dict[str, list], day: datetime) -> bool:
    """The BYMONTH, BYMONTHDAY, BYYEARDAY and BYDAY parts, which limit every frequency decided here."""
    if "BYMONTH" in parts and day.month not in {int(v) for v in parts["BYMONTH"]}:
        return False
    if "BYMONTHDAY" in parts:
        length = calendar.monthrange(day.year, day.month)[1]
        if not {day.day, day.day - length - 1} & {int(v) for v in parts["BYMONTHDAY"]}:
            return False
    if "BYYEARDAY" in parts:
        number, length = day.timetuple().tm_yday, 366 if calendar.isleap(day.year) else 365
        if not {number, number - length - 1} & {int(v) for v in parts["BYYEARDAY"]}:
            return False
    if "BYDAY" in parts:  # an ordinal (1MO) means nothing below MONTHLY: dateutil ignores it, so do we
        days = {re.sub(r"^[+-]?\d*", "", str(v)).upper() for v in parts["BYDAY"]}
        if _WEEKDAYS[day.weekday()] not in days:
            return False
    return True


def _walk_to(rule: icalendar.vRecur, first: datetime, wanted: datetime) -> bool:
    """Membership by walking the series up to ``wanted``, one budget step per occurrence."""
    budget = Budget()
    for found in rrulestr(rule.to_ical().decode(), dtstart=first):
        budget.spend()
        if found >= wanted:
            return found == wanted
    return False


def continues_after(master: Component, moment: datetime, length: timedelta) -> bool:
    """Whether the series ``master`` has an occurrence (each ``length`` long) still going on after ``moment``
    (aware). A rule without COUNT or UNTIL never ends; any other is walked under a :class:`Budget`."""
    start = decoded(master, "DTSTART")
    if start is None:
        return False
    excluded = {key_of(d) for d in date_values(master, "EXDATE")}

    def ongoing(begin: date | datetime) -> bool:
        return key_of(begin) not in excluded and _aware(begin, moment) + length > moment

    if ongoing(start) or any(ongoing(d) for d in date_values(master, "RDATE") if not isinstance(d, tuple)):
        return True
    for rule in values(master, "RRULE"):
        if "COUNT" not in rule and "UNTIL" not in rule:
            return True
        budget = Budget()
        try:
            walk = rrulestr(rule.to_ical().decode(), dtstart=_as_datetime(start))
        except (ValueError, TypeError):  # a rule dateutil cannot evaluate: it may still be taking place
            return True
        for found in walk:
            budget.spend()
            if ongoing(found if isinstance(start, datetime) else found.date()):
                return True
    return False


def walk_cost(master: Component, until: datetime) -> float:
    """An upper estimate of the steps walking ``master``'s rules from DTSTART up to ``until`` (aware) takes,
    for callers that cannot bound a walk they do not run themselves (Radicale's time-range filter)."""
    start = decoded(master, "DTSTART")
    if start is None:
        return 0
    span = max((until - _aware(start, until)).total_seconds(), 0.0)
    cost = 0.0
    try:
        for rule in values(master, "RRULE"):
            freq = str(rule.get("FREQ", [""])[0]).upper()
            interval = max(int(rule.get("INTERVAL", [1])[0]), 1)
            expansions = 1
            for name, parts in rule.items():
                if name.startswith("BY") and name != "BYSETPOS":
                    expansions *= max(len(parts), 1)
            cost += (span / (_APPROXIMATE.get(freq, 1) * interval) + 1) * expansions
    except ValueError:  # a broken rule (icalendar raises when it is read): whoever walks it skips it
        return 0
    return cost


def _aware(value: date | datetime, reference: datetime) -> datetime:
    """``value`` comparable with the aware ``reference``: floating times and dates are read in its zone."""
    value = _as_datetime(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=reference.tzinfo)
