# SPDX-License-Identifier: GPL-3.0-or-later
"""The scheduling view of a calendar object: per instance, what attendees care about.

A recurring event is a master plus overrides (RECURRENCE-ID). Every rule of iTIP is per instance: an
instance without its own override is the master moved to that date ("derived"). :class:`Instance` is the
comparable summary of one instance; comparing summaries decides significance, and a canonical text of
everything except attendees' answers gives the Schedule-Tag.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime

import icalendar

from invito.plugins.itip.components import (PRIVATE_PREFIX, REPLY_PARAMS, SCHEDULED, Component, addresses,
                                            cancelled, date_values, decoded, excluded_dates, in_zone_of,
                                            instance_key, key_of, replace, scheduled, values)

_RECURRENCE = ("RRULE", "RDATE", "EXDATE", "EXRULE")
_TIMING = ("DTSTART", "DTEND", "DUE", "RRULE", "RDATE")
_DETAILS = ("SUMMARY", "LOCATION", "DESCRIPTION", "STATUS")
_VOLATILE_PROPS = ("DTSTAMP", "LAST-MODIFIED")
# Parameters changed by answers and deliveries: merging them keeps the Schedule-Tag (RFC 6638 §3.2.10).
_VOLATILE_PARAMS = (*REPLY_PARAMS, "SCHEDULE-STATUS")


@dataclass(frozen=True)
class Instance:
    """The significant content of one instance (RFC 5546 §2.1.4); PARTSTAT and alarms are not in it."""

    timing: tuple[str, ...]  # _TIMING: start, end (also from DURATION), due, recurrence rules and dates
    details: tuple[str, ...]  # _DETAILS
    attendees: frozenset[str]
    exdates: frozenset[str]

    @property
    def cancelled(self) -> bool:
        return self.details[-1] == "CANCELLED"

    def needs_request(self, newer: "Instance") -> bool:
        """Whether attendees must see ``newer``; newly excluded dates are sent as CANCELs instead."""
        return (self.timing != newer.timing or self.details != newer.details
                or self.attendees != newer.attendees or bool(self.exdates - newer.exdates))

    def edits(self, newer: "Instance") -> list[str]:
        """The properties an attendee may not change that ``newer`` changes (adding EXDATEs is allowed)."""
        pairs = zip(_TIMING + _DETAILS, self.timing + self.details, newer.timing + newer.details)
        names = [name for name, a, b in pairs if a != b]
        return names + (["EXDATE"] if self.exdates - newer.exdates else [])


def _text(value: object) -> str:
    return str(value).strip()


def instance_view(comp: Component) -> Instance:
    start = decoded(comp, "DTSTART")
    end = decoded(comp, "DTEND")
    duration = decoded(comp, "DURATION")
    if end is None and start is not None and duration is not None:
        end = start + duration
    timing = (
        key_of(start) if start is not None else "",
        key_of(end) if end is not None else "",
        key_of(decoded(comp, "DUE")) if "DUE" in comp else "",
        "|".join(sorted(r.to_ical().decode() for r in values(comp, "RRULE"))),
        "|".join(sorted({key_of(d) for d in date_values(comp, "RDATE")})),
    )
    details = (*(_text(comp.get(name, "")) for name in _DETAILS[:-1]), _text(comp.get("STATUS", "")).upper())
    return Instance(timing, details, frozenset(addresses(comp)),
                    frozenset(key_of(d) for d in excluded_dates(comp)))


def derive_instance(master: Component, rid: date | datetime, shared: bool = False) -> Component:
    """The master moved to one occurrence, as an override: what the instance is until someone overrides it.

    ``shared``: the result shares property values and alarms with ``master`` (cheap, but read-only).
    """
    if shared:
        inst = master.copy()
        inst.subcomponents = list(master.subcomponents)
    else:
        inst = master.copy(recursive=True)
    for name in _RECURRENCE:
        inst.pop(name, None)
    start = decoded(master, "DTSTART")
    value = in_zone_of(rid, start)  # written like the master's DTSTART
    replace(inst, "RECURRENCE-ID", value)
    if start is not None:
        replace(inst, "DTSTART", value)
        for name in ("DTEND", "DUE"):
            other = decoded(master, name)
            if other is not None:
                replace(inst, name, value + (other - start))
    return inst


InstanceKeys = dict[str | None, date | datetime | None]  # instance key (None: master) → RECURRENCE-ID value


class SchedulingObject:
    """One stored object as master + overrides, answering "what is instance X" for any instance.

    Derived instances and views are computed once: build it after the last change to dates, text or
    attendee lists of the calendar it reads, and never modify the components it derives.
    """

    def __init__(self, cal: icalendar.Calendar | None) -> None:
        self.master: Component | None = None
        self.overrides: dict[str, Component] = {}
        self.rids: dict[str, date | datetime] = {}  # instance key → RECURRENCE-ID value
        self._derived: dict[str, Component] = {}
        self._views: dict[str | None, Instance | None] = {}
        for comp in scheduled(cal) if cal is not None else ():
            key = instance_key(comp)
            if key is None:
                self.master = self.master if self.master is not None else comp
            else:
                self.overrides.setdefault(key, comp)
                self.rids.setdefault(key, comp.decoded("RECURRENCE-ID"))
        self.excluded: frozenset[str] = frozenset()
        if self.master is not None:
            exdates = excluded_dates(self.master)
            self.rids.update({key_of(d): d for d in exdates if key_of(d) not in self.rids})
            self.excluded = frozenset(key_of(d) for d in exdates)

    @property
    def cancelled(self) -> bool:
        """The whole object is cancelled (STATUS:CANCELLED on the master, or it has nothing left)."""
        if self.master is not None:
            return cancelled(self.master)
        return all(cancelled(c) for c in self.overrides.values())

    def components(self) -> list[Component]:
        return ([self.master] if self.master is not None else []) + list(self.overrides.values())

    def component(self, key: str | None, rid: date | datetime | None = None) -> Component | None:
        """The master (key None), the override, or the derived instance; None if it does not exist."""
        if key is None:
            return self.master
        if key in self.overrides:
            return self.overrides[key]
        rid = rid if rid is not None else self.rids.get(key)
        if self.master is None or key in self.excluded or rid is None:
            return None
        if key not in self._derived:
            self._derived[key] = derive_instance(self.master, rid, shared=True)
        return self._derived[key]

    def view(self, key: str | None, rid: date | datetime | None = None) -> Instance | None:
        if key not in self._views:
            comp = self.component(key, rid)
            self._views[key] = instance_view(comp) if comp is not None else None
        return self._views[key]

    def attends(self, key: str | None, address: str, rid: date | datetime | None = None) -> bool:
        """Whether ``address`` is invited to this instance and the instance is not cancelled."""
        seen = self.view(key, rid)
        return seen is not None and not seen.cancelled and address in seen.attendees


def instance_keys(*objects: SchedulingObject) -> InstanceKeys:
    """Every instance any of the objects says something about: the master, overrides, excluded dates."""
    keys: InstanceKeys = {None: None}
    for obj in objects:
        for key, rid in obj.rids.items():
            keys.setdefault(key, rid)
    return keys


# What an update tells guests changed, in the order an invitation shows them.
ASPECTS = ("time", "recurrence", "title", "location", "description", "status", "participants")
_ASPECT_OF = {"DTSTART": "time", "DTEND": "time", "DUE": "time", "RRULE": "recurrence", "RDATE": "recurrence",
              "SUMMARY": "title", "LOCATION": "location", "DESCRIPTION": "description", "STATUS": "status"}


def changed_aspects(old: icalendar.Calendar, new: icalendar.Calendar) -> tuple[str, ...]:
    """Which of :data:`ASPECTS` differ in any instance; empty when nothing significant changed."""
    before, after = SchedulingObject(old), SchedulingObject(new)
    found: set[str] = set()
    for key, rid in instance_keys(before, after).items():
        a, b = before.view(key, rid), after.view(key, rid)
        if a == b:
            continue
        if a is None or b is None:  # an occurrence appeared or was excluded
            found.add("recurrence")
            continue
        pairs = zip(_TIMING + _DETAILS, a.timing + a.details, b.timing + b.details)
        found.update(_ASPECT_OF[name] for name, x, y in pairs if x != y)
        if a.exdates != b.exdates:
            found.add("recurrence")
        if a.attendees != b.attendees:
            found.add("participants")
    return tuple(aspect for aspect in ASPECTS if aspect in found)


def significant_change(old: icalendar.Calendar, new: icalendar.Calendar) -> bool:
    """True if any instance differs in what attendees must be told about."""
    return bool(changed_aspects(old, new))


def _without_answers(prop: object) -> icalendar.vCalAddress:
    out = icalendar.vCalAddress(str(prop))
    out.params.update({k: v for k, v in prop.params.items()
                       if k.upper() not in _VOLATILE_PARAMS and not k.upper().startswith(PRIVATE_PREFIX)})
    return out


def _stable_lines(comp: Component) -> list[str]:
    lines = []
    for name, value in comp.property_items(recursive=False, sorted=False):
        if name in ("BEGIN", "END") or name in _VOLATILE_PROPS or name.upper().startswith(PRIVATE_PREFIX):
            continue  # our bookkeeping is never part of the Schedule-Tag (clients never see it)
        if name in ("ATTENDEE", "ORGANIZER"):
            value = _without_answers(value)
        lines.append(comp.content_line(name, value).to_ical().decode())
    return sorted(lines)


def _stable_text(comp: Component) -> str:
    """Order-independent text of a component without what replies and deliveries change (stamps, answers)."""
    subs = sorted(_stable_text(sub) for sub in comp.subcomponents)
    return "\n".join([f"BEGIN:{comp.name}", *_stable_lines(comp), *subs, f"END:{comp.name}"])


def is_plain_instance(master: Component | None, override: Component) -> bool:
    """An override that only records attendees' answers for one date (as merging a REPLY creates)."""
    rid = decoded(override, "RECURRENCE-ID")
    if master is None or rid is None:
        return False
    return _stable_text(override) == _stable_text(derive_instance(master, rid, shared=True))


def schedule_tag(cal: icalendar.Calendar) -> str:
    """RFC 6638 §3.2.10: changes with every change except attendees' answers merged into the object."""
    master = SchedulingObject(cal).master
    parts = sorted(_stable_text(comp) for comp in cal.subcomponents
                   if comp.name not in SCHEDULED or not is_plain_instance(master, comp))
    text = "\n".join([*_stable_lines(cal), *parts])
    return "st-" + hashlib.sha256(text.encode()).hexdigest()[:16]

