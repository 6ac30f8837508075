# SPDX-License-Identifier: GPL-3.0-or-later
"""Invito's bookkeeping on stored events, kept out of the client's object.

The iTIP core records what it needs to order and judge later answers on the calendar it works with, as
``X-INVITO-*`` properties (``X-INVITO-RESCHEDULED``: the SEQUENCE of the last move) and parameters
(``X-INVITO-REPLY-DTSTAMP`` on an ATTENDEE: when the applied answer was given). Clients must never see
them: a value the server changes behind a client's back changes the object's ETag (vdirsyncer then
re-downloads it and undoes a local delete). So storage :func:`split` s them off before writing and keeps
them in a side record (``side_records``), and :func:`merge` s them back when scheduling reads the copy.
"""
from __future__ import annotations

import copy

import icalendar

from invito.plugins.itip.address import normalize
from invito.plugins.itip.components import PRIVATE_PREFIX, instance_key, scheduled

# {instance: {"props": {NAME: value}, "params": {"PROPERTY value": {PARAM: value}}}}; JSON-able.
Record = dict[str, dict[str, dict]]

_ADDRESSES = ("ATTENDEE", "ORGANIZER")


def _private(name: str) -> bool:
    return name.upper().startswith(PRIVATE_PREFIX)


def _instance(comp: icalendar.cal.component.Component) -> str:
    try:
        return instance_key(comp) or ""
    except (ValueError, TypeError):  # a RECURRENCE-ID the core cannot read: keyed by its text
        return str(comp.get("RECURRENCE-ID", ""))


def _line(name: str, prop: object) -> str:
    """What identifies a property within its component: its name and (addresses normalized) value."""
    value = normalize(str(prop)) if name.upper() in _ADDRESSES else str(prop)
    return "%s %s" % (name.upper(), value)


def split(cal: icalendar.Calendar) -> tuple[icalendar.Calendar, Record]:
    """A copy of ``cal`` without any ``X-INVITO-*`` property or parameter, and what was removed."""
    clean = copy.deepcopy(cal)
    record: Record = {}
    for comp in scheduled(clean):
        found: dict[str, dict] = {"props": {}, "params": {}}
        for name in [n for n in comp if _private(n)]:
            value = comp.pop(name)
            found["props"][name.upper()] = str(value[-1] if isinstance(value, list) else value)
        for name, props in list(comp.items()):
            for prop in props if isinstance(props, list) else [props]:
                params = getattr(prop, "params", None)
                private = {k.upper(): str(v) for k, v in (params or {}).items() if _private(k)}
                if private:
                    found["params"][_line(name, prop)] = private
                    for key in [k for k in params if _private(k)]:
                        del params[key]
        if found["props"] or found["params"]:
            record.setdefault(_instance(comp), {"props": {}, "params": {}})
            for part in ("props", "params"):
                record[_instance(comp)][part].update(found[part])
    return clean, record


def merge(cal: icalendar.Calendar, record: Record) -> icalendar.Calendar:
    """Put a side record back on ``cal`` (in place), for scheduling to read; returns ``cal``."""
    if not record:
        return cal
    for comp in scheduled(cal):
        kept = record.get(_instance(comp))
        if not kept:
            continue
        for name, value in kept["props"].items():
            comp.pop(name, None)
            comp.add(name, value)
        for name, props in comp.items():
            for prop in props if isinstance(props, list) else [props]:
                params = kept["params"].get(_line(name, prop))
                if params and hasattr(prop, "params"):
                    prop.params.update(params)
    return cal
