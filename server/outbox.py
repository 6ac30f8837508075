# SPDX-License-Identifier: GPL-3.0-or-later
"""POST to a scheduling outbox: free-busy lookups (RFC 6638 §5), and declining a proposed change.

Events are scheduled implicitly on PUT/DELETE, so a client POSTs only what no PUT can say: a VFREEBUSY
REQUEST (the answer is a ``schedule-response`` with each internal attendee's busy time), or the
organizer's DECLINECOUNTER to an attendee's COUNTER (RFC 5546 §3.2.8), delivered to its recipients.
"""
from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET
from http import client
from typing import TYPE_CHECKING, Iterator

import icalendar
from radicale import types, xmlutils

from invito.server import errors
from invito.plugins.itip import ITipMessage
from invito.plugins.itip.components import addresses, organizer, scheduled
from invito.plugins.itip.freebusy import FreeBusyRequest, busy_periods, parse_request, response_calendar
from invito.storage import layout
from invito.storage.changes import Kind, Send

if TYPE_CHECKING:
    from invito.storage import Storage

_ = xmlutils.make_clark


def post(storage: "Storage", user: str, body: str, encoding: str) -> types.WSGIResponse:
    try:
        calendar = icalendar.Calendar.from_ical(body)
        if str(calendar.get("METHOD", "")).upper() == "DECLINECOUNTER":
            return _decline_counter(storage, user, calendar, encoding)
        request = parse_request(calendar)
    except ValueError as e:
        return errors.precondition(client.BAD_REQUEST, "valid-scheduling-message",
                      "Only a VFREEBUSY REQUEST or a DECLINECOUNTER can be POSTed (events are scheduled on "
                      "PUT): %s" % e, encoding)
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


def _decline_counter(storage: "Storage", user: str, calendar: icalendar.Calendar,
                     encoding: str) -> types.WSGIResponse:
    """The organizer turns down an attendee's proposal: the DECLINECOUNTER goes to the ATTENDEEs it names."""
    comps = scheduled(calendar)
    uids = {str(c.get("UID", "")) for c in comps}
    organizers = {organizer(c) for c in comps}
    recipients = tuple(dict.fromkeys(a for c in comps for a in addresses(c)))
    if len(uids) != 1 or not recipients:
        raise ValueError("a DECLINECOUNTER names one event (UID) and the attendee(s) it answers")
    if len(organizers) != 1 or not organizers <= storage.directory.addresses_of(user):
        return errors.precondition(client.FORBIDDEN, "organizer-allowed",
                                   "The ORGANIZER must be one of your addresses.", encoding)
    uid = uids.pop()
    message = ITipMessage("DECLINECOUNTER", uid, organizers.pop() or "", recipients, calendar)
    outcome = storage.schedule(user, Send(message))
    if outcome.kind is Kind.NO_EVENT:
        return errors.refusal(client.NOT_FOUND, "You organize no event with UID %s." % uid)
    root = ET.Element(_("C:schedule-response"))
    for recipient, status in outcome.statuses:
        response = ET.SubElement(root, _("C:response"))
        ET.SubElement(ET.SubElement(response, _("C:recipient")), _("D:href")).text = recipient
        ET.SubElement(response, _("C:request-status")).text = status + ";" + (
            "Delivered" if status == "1.2" else "Queued for mail")
    return client.OK, {"Content-Type": "text/xml; charset=%s" % encoding}, xmlutils.pretty_xml(root).encode(encoding), None


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
