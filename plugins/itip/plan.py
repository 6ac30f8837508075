# SPDX-License-Identifier: GPL-3.0-or-later
"""Implicit scheduling of one client write (RFC 6638 §3.2): what to store and which iTIP messages to send.

The storage layer hands over the object as it was and as the client wrote it; the answer is a
:class:`Plan`. Organizer writes become REQUESTs and CANCELs for the attendees whose instances changed;
attendee writes become a REPLY when the attendee's answer changed. Everything is per instance of a
recurring event, compared through :mod:`invito.plugins.itip.view`.
"""
from __future__ import annotations

import copy
from datetime import datetime

import icalendar

from invito.plugins.itip.address import normalize
from invito.plugins.itip.components import (NEEDS_ACTION, RESCHEDULED, SERVER_PARAMS, Component, addresses, answer, attendees,
                                            cancelled, collapse_duplicates, find_attendee, instance_key,
                                            new_calendar, organizer, param, replace, scheduled, sequence,
                                            set_answer, strip_params, values)
from invito.plugins.itip.model import ITipMessage, Plan, Role, SchedulingError
from invito.plugins.itip.view import (InstanceKeys, SchedulingObject, derive_instance, instance_keys,
                                      is_plain_instance)

_NOT_SENT_PARAMS = (*SERVER_PARAMS, "SCHEDULE-AGENT")  # meaningful only in the stored copy


def plan(old: icalendar.Calendar | None, new: icalendar.Calendar | None, owner: frozenset[str],
         now: datetime) -> Plan:
    """Plan a PUT (``new``) or DELETE (``new`` None) of an object stored as ``old`` (None: created)."""
    owner = frozenset(normalize(a) for a in owner)
    current = new if new is not None else old
    if current is None:
        return Plan(Role.NONE, None, False, ())
    role, organizer_address = _role(current, owner)
    if role is Role.NONE and old is not None and new is not None:
        # The organizer's client dropped ORGANIZER or every attendee: the attendees must hear it is off.
        was = _organizer_of(old)
        if was in owner and _has_attendees(old):
            role, organizer_address = Role.ORGANIZER, was
    if role is Role.ORGANIZER:
        return _as_organizer(old, new, owner | {organizer_address}, organizer_address, now)
    if role is Role.ATTENDEE:
        return _as_attendee(old, new, owner, organizer_address, now)
    return Plan(Role.NONE, new, False, ())


def _organizer_of(cal: icalendar.Calendar) -> str | None:
    """The one ORGANIZER of all components, None if there is none."""
    organizers = {organizer(c) for c in scheduled(cal)}
    if len(organizers) > 1:
        raise SchedulingError("same-organizer-in-all-components",
                              "every component of a scheduling object must have the same ORGANIZER")
    return organizers.pop() if organizers else None


def _has_attendees(cal: icalendar.Calendar) -> bool:
    return any(attendees(c) for c in scheduled(cal))


def _role(cal: icalendar.Calendar, owner: frozenset[str]) -> tuple[Role, str]:
    """RFC 6638 §3.1: organizer or attendee object, or not a scheduling object at all."""
    org = _organizer_of(cal)
    if org is None or not _has_attendees(cal):
        return Role.NONE, ""
    if org in owner:
        return Role.ORGANIZER, org
    if any(a in owner for c in scheduled(cal) for a in addresses(c)):
        return Role.ATTENDEE, org
    raise SchedulingError("valid-organizer", f"the ORGANIZER {org} is not one of your calendar user addresses"
                                             " and you are not an attendee")


# -- organizer ------------------------------------------------------------------------------------


def _as_organizer(old: icalendar.Calendar | None, new: icalendar.Calendar | None, exempt: frozenset[str],
                  org: str, now: datetime) -> Plan:
    """``exempt``: the organizer's own addresses, which never get messages and own their own answers."""
    before = SchedulingObject(old)
    stored = new.copy(recursive=True) if new is not None else None
    rewritten = False  # tracked rather than found by serializing: that costs more than all the rest
    forced: set[str] = set()
    if stored is not None:
        for comp in scheduled(stored):
            rewritten |= collapse_duplicates(comp)
            taken = _take_forced(comp, "ATTENDEE")
            rewritten |= bool(taken)
            forced |= {address for address, value in taken.items() if value == "REQUEST"}
        if old is not None:
            rewritten |= _keep_answers(before, stored, exempt)
    after = SchedulingObject(stored)
    rewritten |= _bump_sequences(before, after)
    messages = _organizer_messages(before, after, old, stored, exempt, forced, org, now)
    return Plan(Role.ORGANIZER, stored, rewritten, messages)


def _take_forced(comp: Component, name: str) -> dict[str, str]:
    """Remove SCHEDULE-FORCE-SEND (a one-shot instruction, RFC 6638 §7.2): address → what was asked."""
    found = {}
    for prop in values(comp, name):
        value = param(prop, "SCHEDULE-FORCE-SEND")
        if value:
            del prop.params["SCHEDULE-FORCE-SEND"]
            found[normalize(str(prop))] = value
    return found


def _copy_answers(source: Component, target: Component, exempt: frozenset[str], rescheduled: bool) -> bool:
    """Attendees' answers in ``target`` become those of ``source``: only attendees change their answers.

    The organizer's client may write from a copy older than the last merged REPLY; taking its PARTSTATs
    would silently undo answers. After a reschedule the organizer may ask again with NEEDS-ACTION.
    Returns whether ``target`` changed.
    """
    answers = {normalize(str(a)): a for a in reversed(attendees(source))}  # the first line of an address wins
    changed = False
    for prop in attendees(target):
        address = normalize(str(prop))
        known = answers.get(address) if address not in exempt else None
        if known is None:
            continue
        if rescheduled and param(prop, "PARTSTAT", NEEDS_ACTION) == NEEDS_ACTION:
            continue
        changed |= set_answer(prop, answer(known))
    return changed


def _keep_answers(before: SchedulingObject, stored: icalendar.Calendar, exempt: frozenset[str]) -> bool:
    changed = False
    after = SchedulingObject(stored)
    if after.master is not None:
        # Overrides the server made when merging per-instance replies, dropped by a client that never saw them.
        for key, comp in before.overrides.items():
            if key in after.overrides or key in after.excluded or not is_plain_instance(before.master, comp):
                continue
            candidate = derive_instance(after.master, before.rids[key])
            if _copy_answers(comp, candidate, exempt, rescheduled=False):
                stored.add_component(candidate)
                changed = True
        after = SchedulingObject(stored)
    for comp in after.components():
        key = instance_key(comp)
        rid = after.rids.get(key) if key else None
        previous = before.component(key, rid)
        if previous is not None:
            rescheduled = before.view(key, rid).timing != after.view(key).timing
            changed |= _copy_answers(previous, comp, exempt, rescheduled)
    return changed


def _bump_sequences(before: SchedulingObject, after: SchedulingObject) -> bool:
    """RFC 5546 §2.1.4: a significant change needs a higher SEQUENCE; a client that bumped it is respected.

    A change of time also records its SEQUENCE as RESCHEDULED (kept when a client drops it), against
    which replies are judged stale.
    """
    changed = False
    for comp in after.components():
        key = instance_key(comp)
        rid = after.rids.get(key) if key else None
        previous = before.component(key, rid)
        if previous is None:
            continue
        if before.view(key, rid) != after.view(key):
            wanted = max(sequence(previous) + 1, sequence(comp))
            if wanted != sequence(comp) or "SEQUENCE" not in comp:
                replace(comp, "SEQUENCE", wanted)
                changed = True
            if before.view(key, rid).timing != after.view(key).timing:
                replace(comp, RESCHEDULED, wanted)
                changed = True
        if RESCHEDULED in previous and RESCHEDULED not in comp:
            replace(comp, RESCHEDULED, int(previous[RESCHEDULED]))
            changed = True
    return changed


def _schedulable(old: icalendar.Calendar | None, stored: icalendar.Calendar | None,
                 exempt: frozenset[str]) -> list[str]:
    """Attendees the server schedules for (SCHEDULE-AGENT=SERVER, the default), first seen first."""
    agents: dict[str, str] = {}
    for cal in (old, stored):
        for comp in scheduled(cal) if cal is not None else ():
            for prop in attendees(comp):
                agents[normalize(str(prop))] = param(prop, "SCHEDULE-AGENT", "SERVER")
    return [a for a, agent in agents.items() if agent == "SERVER" and a not in exempt]


Cancels = dict[tuple[str | None, ...], list[str]]  # instances to cancel → recipients
Requests = dict[tuple[tuple[str | None, ...], tuple[str, ...], bool], list[str]]  # (sent, excluded, significant)


def _organizer_messages(before: SchedulingObject, after: SchedulingObject, old: icalendar.Calendar | None,
                        stored: icalendar.Calendar | None, exempt: frozenset[str], forced: set[str], org: str,
                        now: datetime) -> tuple[ITipMessage, ...]:
    live = SchedulingObject(None) if stored is None or after.cancelled else after
    keys = instance_keys(before, after)
    cancels, requests = _decide(before, live, keys, _schedulable(old, stored, exempt), forced)
    uid = _uid(stored if stored is not None else old)
    sources = [c for c in (stored, old) if c is not None]
    messages = [ITipMessage("CANCEL", uid, org, tuple(who), new_calendar(
                    "CANCEL", [_cancelled(before, after, keys, k, who, now) for k in wanted], sources))
                for wanted, who in cancels.items()]
    messages += [ITipMessage("REQUEST", uid, org, tuple(who), new_calendar(
                     "REQUEST", _requested(live, included, excluded, now), sources), significant)
                 for (included, excluded, significant), who in requests.items()]
    return tuple(messages)


def _decide(before: SchedulingObject, live: SchedulingObject, keys: InstanceKeys, recipients: list[str],
            forced: set[str]) -> tuple[Cancels, Requests]:
    """Per attendee and instance: invited before and not now → CANCEL; invited now and new to it or
    significantly changed → REQUEST (just the changed overrides when the series itself did not change)."""
    changed_keys = set()
    for key, rid in keys.items():
        a, b = before.view(key, rid), live.view(key, rid)
        if a is not None and b is not None and a.needs_request(b):
            changed_keys.add(key)
    cancels: Cancels = {}
    requests: Requests = {}
    for address in recipients:
        was = [k for k, rid in keys.items() if before.attends(k, address, rid)]
        now_in = [k for k, rid in keys.items() if live.attends(k, address, rid)]
        if not now_in:
            if was:
                cancels.setdefault((None,) if None in was else tuple(was), []).append(address)
            continue
        dropped = tuple(k for k in was if k is not None and k not in now_in)
        if dropped:
            cancels.setdefault(dropped, []).append(address)
        changed = [k for k in now_in if k not in was or k in changed_keys]
        if was and changed and all(k in live.overrides for k in changed):
            requests.setdefault((tuple(changed), (), True), []).append(address)
        elif changed or address in forced:
            included, excluded = _selection(live, address)
            requests.setdefault((included, excluded, bool(changed)), []).append(address)
    return cancels, requests


def _selection(obj: SchedulingObject, address: str) -> tuple[tuple[str | None, ...], tuple[str, ...]]:
    """The instances ``address`` is invited to: the master unless they are only in overrides, plus those
    overrides; instances they are not invited to become EXDATEs of their master."""
    in_master = obj.master is not None and address in addresses(obj.master)
    included: list[str | None] = [None] if in_master else []
    excluded: list[str] = []
    for key in obj.overrides:
        if obj.attends(key, address):
            included.append(key)
        elif in_master:
            excluded.append(key)
    return tuple(included), tuple(excluded)


def _outgoing(comp: Component, now: datetime) -> Component:
    """A copy fit to send: no alarms (they are the organizer's), no server-side parameters, fresh DTSTAMP."""
    out = comp.copy(recursive=True)
    out.subcomponents = [s for s in out.subcomponents if s.name != "VALARM"]
    for name in ("ATTENDEE", "ORGANIZER"):
        for prop in values(out, name):
            strip_params(prop, _NOT_SENT_PARAMS)
    replace(out, "DTSTAMP", now)
    replace(out, RESCHEDULED, None)  # our bookkeeping
    if "SEQUENCE" not in out:  # mail clients order updates by it; absent means 0, say so
        out.add("SEQUENCE", 0)
    return out


def _requested(obj: SchedulingObject, included: tuple[str | None, ...], excluded: tuple[str, ...],
               now: datetime) -> list[Component]:
    comps = []
    for key in included:
        comp = _outgoing(obj.master if key is None else obj.overrides[key], now)
        if key is None:
            for other in excluded:
                comp.add("EXDATE", obj.rids[other])
        comps.append(comp)
    return comps


def _address_copy(prop: object) -> icalendar.vCalAddress:
    out = icalendar.vCalAddress(str(prop))
    out.params.update(copy.deepcopy(dict(prop.params)))
    strip_params(out, _NOT_SENT_PARAMS)
    return out


def _cancelled(before: SchedulingObject, current: SchedulingObject, keys: InstanceKeys, key: str | None,
               recipients: list[str], now: datetime) -> Component:
    """RFC 5546 §3.2.5: the CANCEL component for one instance (or the whole object when ``key`` is None)."""
    source = current.component(key, keys[key])
    seq = sequence(source) if source is not None else 0
    if source is None:  # deleted or excluded: announce it with a SEQUENCE above the last one sent
        source = before.component(key, keys[key])
        assert source is not None
        seq = max(sequence(source) + 1, sequence(current.master) if current.master is not None else 0)
    old_version = before.component(key, keys[key])
    out = type(source)()
    out.add("UID", source["UID"])
    out.add("DTSTAMP", now)
    out.add("SEQUENCE", seq)
    if "ORGANIZER" in source:
        out.add("ORGANIZER", _address_copy(source["ORGANIZER"]))
    for address in recipients:
        prop = (find_attendee(old_version, address) if old_version is not None else None) \
            or find_attendee(source, address)
        out.add("ATTENDEE", _address_copy(prop) if prop is not None else icalendar.vCalAddress(address))
    if key is not None:
        out.add("RECURRENCE-ID", keys[key])
    for name in ("DTSTART", "SUMMARY"):
        if name in source:
            out.add(name, copy.deepcopy(source[name]))
    out.add("STATUS", "CANCELLED")
    return out


def _uid(cal: icalendar.Calendar | None) -> str:
    comps = scheduled(cal) if cal is not None else []
    return str(comps[0].get("UID", "")) if comps else ""


# -- attendee -------------------------------------------------------------------------------------


def _as_attendee(old: icalendar.Calendar | None, new: icalendar.Calendar | None, owner: frozenset[str],
                 org: str, now: datetime) -> Plan:
    before = SchedulingObject(old)
    current = new if new is not None else old
    assert current is not None
    me = next(a for c in scheduled(current) for a in addresses(c) if a in owner)
    stored = new.copy(recursive=True) if new is not None else None
    changed = forced = False
    if stored is not None:
        for comp in scheduled(stored):
            changed |= collapse_duplicates(comp)
            taken = _take_forced(comp, "ORGANIZER")
            changed |= bool(taken)
            forced |= "REPLY" in taken.values()
        if old is not None:
            _check_attendee_change(before, SchedulingObject(stored), org)
            changed |= _keep_sequences(before, stored)
    if not _server_schedules(current):
        return Plan(Role.ATTENDEE, stored, changed, ())
    parts = _answered(before, SchedulingObject(stored), me, old is not None, forced, now)
    if not parts:
        return Plan(Role.ATTENDEE, stored, changed, ())
    sources = [c for c in (stored, old) if c is not None]
    message = ITipMessage("REPLY", _uid(current), me, (org,), new_calendar("REPLY", parts, sources))
    return Plan(Role.ATTENDEE, stored, changed, (message,))


def _keep_sequences(before: SchedulingObject, stored: icalendar.Calendar) -> bool:
    """SEQUENCE is the organizer's (RFC 5546 §2.1.4): an attendee's client that bumps it on save (python-caldav
    does by default) would change the Schedule-Tag on a mere answer and make the organizer's next update look
    stale. Each instance keeps the SEQUENCE the organizer gave it; returns whether ``stored`` changed."""
    changed = False
    after = SchedulingObject(stored)
    for comp in after.components():
        key = instance_key(comp)
        previous = before.component(key, after.rids.get(key) if key else None)
        if previous is None or comp.get("SEQUENCE") == previous.get("SEQUENCE"):
            continue
        replace(comp, "SEQUENCE", sequence(previous) if "SEQUENCE" in previous else None)
        changed = True
    return changed


def _server_schedules(cal: icalendar.Calendar) -> bool:
    """ORGANIZER;SCHEDULE-AGENT=CLIENT or NONE: the attendee's client handles replies itself (RFC 6638 §7.1)."""
    return all(param(c["ORGANIZER"], "SCHEDULE-AGENT", "SERVER") == "SERVER"
               for c in scheduled(cal) if "ORGANIZER" in c)


def _check_attendee_change(before: SchedulingObject, after: SchedulingObject, org: str) -> None:
    """RFC 6638 §3.2.2.1: an attendee may answer, set alarms, or drop instances, not edit the meeting."""
    def refuse(what: str) -> SchedulingError:
        return SchedulingError("allowed-attendee-scheduling-object-change",
                               f"only the organizer can change {what} of this meeting")

    previous = {organizer(c) for c in before.components()} - {None}
    if not previous:
        return  # it was not a scheduling object before: nothing of the organizer's to protect
    if previous != {org}:
        raise refuse("the ORGANIZER")
    for key, rid in instance_keys(before, after).items():
        va, vb = before.view(key, rid), after.view(key, rid)
        if vb is not None and va is None and key in before.excluded:
            raise refuse(f"the instances (instance {key} was removed)")
        edits = va.edits(vb) if va is not None and vb is not None else []
        if edits:
            raise refuse(", ".join(edits))


def _answered(before: SchedulingObject, after: SchedulingObject, me: str, existed: bool, forced: bool,
              now: datetime) -> list[Component]:
    """REPLY components for every instance whose answer from ``me`` changed (RFC 5546 §3.2.3)."""
    parts = []
    for key, rid in instance_keys(before, after).items():
        mine = after.component(key, rid)
        previous = before.component(key, rid) if existed else None
        old_answer = _partstat(previous, me)
        if mine is None:  # the attendee removed the instance (or the whole object): that declines it
            if before.attends(key, me, rid) and old_answer != "DECLINED":
                parts.append(_reply_component(previous, me, now, "DECLINED"))
            continue
        if cancelled(mine) or find_attendee(mine, me) is None:
            continue
        if forced or _partstat(mine, me) != old_answer:
            parts.append(_reply_component(mine, me, now))
    return parts


def _partstat(comp: Component | None, me: str) -> str:
    prop = find_attendee(comp, me) if comp is not None else None
    return param(prop, "PARTSTAT", NEEDS_ACTION) if prop is not None else NEEDS_ACTION


def _reply_component(comp: Component, me: str, now: datetime, partstat: str | None = None) -> Component:
    """What a REPLY carries: identity, the instance, the attendee's own line, and the title, time and
    place (optional in RFC 5546, but what the organizer's mail shows; Google and Outlook send them too)."""
    out = type(comp)()
    out.add("UID", comp["UID"])
    out.add("DTSTAMP", now)
    out.add("SEQUENCE", sequence(comp))
    for name in ("RECURRENCE-ID", "DTSTART", "DTEND", "DURATION", "SUMMARY", "LOCATION", "ORGANIZER"):
        if name in comp:
            out.add(name, copy.deepcopy(comp[name]))
    attendee = _address_copy(find_attendee(comp, me))
    strip_params(attendee, (*_NOT_SENT_PARAMS, "RSVP"))
    if partstat is not None:
        attendee.params["PARTSTAT"] = partstat
    out.add("ATTENDEE", attendee)
    if "ORGANIZER" in out:
        strip_params(out["ORGANIZER"], _NOT_SENT_PARAMS)
    return out
