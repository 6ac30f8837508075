# SPDX-License-Identifier: GPL-3.0-or-later
"""RFC 6638 properties added to Radicale's PROPFIND and REPORT answers.

Radicale's PROPFIND and REPORT are large functions with no extension point, so we post-process their
multistatus: properties they could not answer (404) or answered for plain CalDAV (calendar-user-address-set,
inbox resourcetype) get their scheduling values and move to the 200 propstat.
"""
from __future__ import annotations

import functools
import posixpath
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Callable
from urllib.parse import unquote

import icalendar
from radicale import pathutils, xmlutils

from invito.plugins.itip import schedule_tag
from invito.plugins.itip.components import scheduled
from invito.storage import layout

if TYPE_CHECKING:
    from invito.storage import Collection, Storage

_ = xmlutils.make_clark
RESOURCETYPE = _("D:resourcetype")
OK_STATUS = xmlutils.make_response(200)
MISSING_STATUS = xmlutils.make_response(404)


def _hrefs(base_prefix: str, *values: str) -> list[ET.Element]:
    elements = []
    for value in values:
        href = ET.Element(_("D:href"))
        href.text = value if ":" in value.split("/", 1)[0] else xmlutils.make_href(base_prefix, value)
        elements.append(href)
    return elements


def _principal_user(path: str) -> str | None:
    stripped = pathutils.strip_path(path)
    return stripped if stripped and "/" not in stripped else None


@functools.lru_cache(maxsize=1024)  # clients ask again for the same objects at every sync
def schedule_tag_of(text: str | bytes) -> str | None:
    """The quoted Schedule-Tag of a stored object (RFC 6638 §3.2.10), None when it is no scheduling object.

    One definition for the GET header and the ``C:schedule-tag`` property, so clients see the same value.
    Most objects have no ORGANIZER: a search REPORT asks for the tag of each, so those are not parsed."""
    if b"ORGANIZER" not in (text.encode() if isinstance(text, str) else text).upper():
        return None
    try:
        cal = icalendar.Calendar.from_ical(text)
    except ValueError:
        return None
    if not any("ORGANIZER" in c for c in scheduled(cal)):
        return None
    return '"%s"' % schedule_tag(cal)


Collections = dict[str, "Collection | None"]  # found once per answer: a REPORT names many items of one


def _item_schedule_tag(path: str, storage: "Storage", collections: Collections) -> str | None:
    parent, href = posixpath.split(pathutils.strip_path(path))
    if parent not in collections:
        collections[parent] = layout.collection(storage, pathutils.unstrip_path(parent, True))
    collection = collections[parent]
    item = collection.get_item(href) if collection is not None and href else None
    return schedule_tag_of(item.serialize()) if item is not None else None


def _value(tag: str, path: str, base_prefix: str, storage: "Storage",
           collections: Collections) -> list[ET.Element] | str | None:
    """Children (or text) for a scheduling property of ``path``; None when it does not apply."""
    if tag == SCHEDULE_TAG:
        return _item_schedule_tag(path, storage, collections)
    user = _principal_user(path)
    kind = layout.scheduling_collection(path)
    if user is not None:
        if tag == _("C:calendar-user-address-set"):
            return _hrefs(base_prefix, *sorted(storage.directory.addresses_of(user)), "/%s/" % user)
        if tag == _("C:schedule-inbox-URL"):
            return _hrefs(base_prefix, layout.inbox_path(user))
        if tag == _("C:schedule-outbox-URL"):
            return _hrefs(base_prefix, layout.outbox_path(user))
        if tag == _("C:calendar-user-type"):
            return "INDIVIDUAL"
    if kind == "inbox" and tag == _("C:schedule-default-calendar-URL"):
        calendar = layout.find_default_calendar(storage, layout.owner_of(path))
        return _hrefs(base_prefix, pathutils.unstrip_path(calendar.path, True)) if calendar is not None else None
    return None


SCHEDULE_TAG = _("C:schedule-tag")
SCHEDULING_PROPERTIES = {_("C:calendar-user-address-set"), _("C:schedule-inbox-URL"),
                         _("C:schedule-outbox-URL"), _("C:calendar-user-type"),
                         _("C:schedule-default-calendar-URL"), SCHEDULE_TAG}


def rewrite(multistatus: ET.Element, base_prefix: str, storage: "Storage") -> None:
    collections: Collections = {}
    for response in multistatus.findall(_("D:response")):
        href = response.find(_("D:href"))
        if href is None or not href.text:
            continue
        path = unquote(href.text)
        if base_prefix and path.startswith(base_prefix):
            path = path[len(base_prefix):]
        _rewrite_response(response, pathutils.sanitize_path(path),
                          lambda tag: _value(tag, path, base_prefix, storage, collections))


def _rewrite_response(response: ET.Element, path: str,
                      value_of: Callable[[str], list[ET.Element] | str | None]) -> None:
    for propstat in list(response.findall(_("D:propstat"))):
        prop = propstat.find(_("D:prop"))
        if prop is None:
            continue
        for element in list(prop):
            if element.tag == RESOURCETYPE:
                _mark_scheduling_collection(element, path)
            elif element.tag in SCHEDULING_PROPERTIES:
                value = value_of(element.tag)
                if value is None:
                    continue
                for child in list(element):
                    element.remove(child)
                if isinstance(value, str):
                    element.text = value
                else:
                    element.extend(value)
                prop.remove(element)
                _prop_with_status(response, OK_STATUS).append(element)
        if len(prop) == 0:
            response.remove(propstat)


def _mark_scheduling_collection(resourcetype: ET.Element, path: str) -> None:
    kind = layout.scheduling_collection(path)
    if kind is None:
        return
    for child in list(resourcetype):
        if child.tag == _("C:calendar"):
            resourcetype.remove(child)
    resourcetype.append(ET.Element(_("C:schedule-inbox" if kind == "inbox" else "C:schedule-outbox")))


def _prop_with_status(response: ET.Element, status: str) -> ET.Element:
    for propstat in response.findall(_("D:propstat")):
        status_element = propstat.find(_("D:status"))
        if status_element is not None and status_element.text == status:
            prop = propstat.find(_("D:prop"))
            if prop is not None:
                return prop
    propstat = ET.SubElement(response, _("D:propstat"))
    prop = ET.SubElement(propstat, _("D:prop"))
    ET.SubElement(propstat, _("D:status")).text = status
    return prop
