# SPDX-License-Identifier: GPL-3.0-or-later
"""SCHEDULE-STATUS (RFC 6638 §7.3): the server tells the writer's client what became of each message."""
from __future__ import annotations

from typing import Mapping

import icalendar

from invito.plugins.itip.address import normalize
from invito.plugins.itip.components import scheduled, values


def with_schedule_status(cal: icalendar.Calendar, statuses: Mapping[str, str]) -> icalendar.Calendar:
    """A copy where every ATTENDEE or ORGANIZER whose address is a key carries SCHEDULE-STATUS=<value>."""
    wanted = {normalize(address): status for address, status in statuses.items()}
    out = cal.copy(recursive=True)
    for comp in scheduled(out):
        for name in ("ATTENDEE", "ORGANIZER"):
            for prop in values(comp, name):
                status = wanted.get(normalize(str(prop)))
                if status is not None:
                    prop.params["SCHEDULE-STATUS"] = status
    return out


def changes_schedule_status(cal: icalendar.Calendar, statuses: Mapping[str, str]) -> bool:
    """Whether :func:`with_schedule_status` would change ``cal``: a client that stored the statuses it
    read keeps its own text (and gets a strong ETag) when the server has nothing new to say."""
    wanted = {normalize(address): status for address, status in statuses.items()}
    return any(wanted.get(normalize(str(prop)), prop.params.get("SCHEDULE-STATUS")) != prop.params.get("SCHEDULE-STATUS")
               for comp in scheduled(cal) for name in ("ATTENDEE", "ORGANIZER") for prop in values(comp, name))
