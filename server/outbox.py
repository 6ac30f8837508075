# SPDX-License-Identifier: GPL-3.0-or-later
"""POST to a scheduling outbox: free-busy lookups (RFC 6638 §5).

Events are scheduled implicitly on PUT/DELETE, so the only message a client may POST is a VFREEBUSY
REQUEST; the answer is a ``schedule-response`` with each internal attendee's busy time.
"""
from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET
from http import client
from typing import TYPE_CHECKING, Iterator

import icalendar
from radicale import types, xmlutils

from invito.server import errors
from invito.plugins.itip.freebusy import FreeBusyRequest, busy_periods, parse_request, response_calendar
from invito.storage import layout

if TYPE_CHECKING:
    from invito.storage import Storage

_ = xmlutils.make_clark


def post(storage: "Storage", user: str, body: str, encoding: str) -> types.WSGIResponse:
    try:
        request = parse_request(icalendar.Calendar.from_ical(body))
    except ValueError as e:
        return errors.precondition(client.BAD_REQUEST, "valid-scheduling-message",
                      "Only a VFREEBUSY REQUEST can be POSTed (events are scheduled on PUT): %s" % e, encoding)
    if request.organizer not in storage.directory.addresses_of(user):
        return errors.precondition(client.FORBIDDEN, "organizer-allowed",
                      "The ORGANIZER %s is not one of your addresses." % request.organizer, encoding)
    now = datetime.datetime.now(datetime.timezone.utc)
    root = ET.Element(_("C:schedule-response"))
    with storage.acquire_lock("r", user):
        for attendee in request.attendees:
            root.append(_response_for(storage, request, attendee, now))
    body_out = xmlutils.pretty_xml(root).encode(encoding)
    return client.OK, {"Content-Type": "text/xml; charset=%s" % encoding}, body_out, None


def _response_for(storage: "Storage", request: FreeBusyRequest, attendee: str,
                  now: datetime.datetime) -> ET.Element:
    response = ET.Element(_("C:response"))
    recipient = ET.SubElement(response, _("C:recipient"))
    ET.SubElement(recipient, _("D:href")).text = attendee
    status = ET.SubElement(response, _("C:request-status"))
    owner = storage.directory.user_for(attendee)
    if owner is None:
        status.text = "3.7;Invalid calendar user"
        return response
    busy = busy_periods(_calendars_in_range(storage, owner, request), request.start, request.end,
                        storage.directory.addresses_of(owner))
    status.text = "2.0;Success"
    data = ET.SubElement(response, _("C:calendar-data"))
    data.text = response_calendar(request, attendee, busy, now).to_ical().decode()
    return response


def _calendars_in_range(storage: "Storage", user: str, request: FreeBusyRequest) -> Iterator[icalendar.Calendar]:
    """The user's calendar objects whose time range (from Radicale's item cache) meets the request."""
    start, end = request.start.timestamp(), request.end.timestamp()
    for child in storage.discover("/%s/" % user, depth="1"):
        if getattr(child, "tag", None) != "VCALENDAR" or layout.scheduling_collection(child.path):
            continue
        for item in child.get_all():
            item_start, item_end = item.time_range
            if item_start < end and item_end > start:
                yield icalendar.Calendar.from_ical(item.serialize())
