# SPDX-License-Identifier: GPL-3.0-or-later
"""Schedule-Tag as python-caldav 3.6 relies on it (RFC 6638 §3.2.10, §3.3): stable while an attendee only
answers, new when the organizer's update reaches them, and the same in the GET header, PROPFIND and REPORT."""
from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Iterator

import caldav
import icalendar
import pytest

from tests.e2e.conftest import Server, start, stop

SCHEDULE_TAG = "{urn:ietf:params:xml:ns:caldav}schedule-tag"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    proc, server = start(tmp_path_factory.mktemp("schedule-tag"))
    try:
        for user in ("alice", "bob"):
            server.principal(user).make_calendar(name="work", cal_id="work")
        yield server
    finally:
        stop(proc)


def _calendar(srv: Server, user: str) -> caldav.Calendar:
    return srv.principal(user).calendar(cal_id="work")


def _invite(srv: Server, summary: str = "Quarterly review") -> tuple[str, caldav.CalendarObjectResource]:
    """alice invites bob with python-caldav's own scheduling call; returns the UID and alice's object."""
    uid = "st-%s" % uuid.uuid4().hex
    ical = "\r\n".join(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Invito tests//EN", "BEGIN:VEVENT",
                        f"UID:{uid}", "DTSTAMP:20300101T000000Z", "DTSTART:20301010T090000Z",
                        "DTEND:20301010T100000Z", f"SUMMARY:{summary}", "END:VEVENT", "END:VCALENDAR", ""])
    alice, bob = srv.principal("alice"), srv.principal("bob")
    return uid, _calendar(srv, "alice").save_with_invites(ical, attendees=[alice, bob])


def _accepted_copy(srv: Server, uid: str) -> caldav.CalendarObjectResource:
    """bob accepts from his inbox as python-caldav does it, and loads his calendar's copy."""
    invitation = next(i for i in srv.principal("bob").schedule_inbox().get_items()
                      if uid in i.data and i.is_invite_request())
    invitation.accept_invite()
    mine = _calendar(srv, "bob").event_by_uid(uid)
    mine.load()
    return mine


def _partstat(obj: caldav.CalendarObjectResource, address: str) -> str:
    event = icalendar.Calendar.from_ical(obj.data).walk("VEVENT")[0]
    return next(str(a.params.get("PARTSTAT")) for a in event.get("ATTENDEE") if str(a).lower() == address)


def test_an_attendees_own_answers_keep_the_tag_the_organizers_update_changes_it(srv: Server) -> None:
    uid, organizers = _invite(srv)
    mine = _accepted_copy(srv, uid)
    accepted_tag = mine.schedule_tag
    assert accepted_tag

    mine.change_attendee_status(partstat="TENTATIVE")
    mine.save()  # python-caldav bumps SEQUENCE on every save by default
    mine.load()
    assert mine.schedule_tag == accepted_tag
    mine.change_attendee_status(partstat="DECLINED")
    mine.save()
    mine.load()
    assert mine.schedule_tag == accepted_tag
    assert _partstat(mine, "mailto:bob@example.com") == "DECLINED"
    organizers.load()
    assert _partstat(organizers, "mailto:bob@example.com") == "DECLINED"  # the REPLYs arrived

    event = organizers.icalendar_instance.walk("VEVENT")[0]
    event["SUMMARY"] = icalendar.vText("Quarterly review, moved")
    event["LOCATION"] = icalendar.vText("Room 2")
    organizers.save()
    mine.load()
    assert "Room 2" in mine.data  # applied although bob's client had bumped SEQUENCE twice
    assert mine.schedule_tag != accepted_tag


def _get_tag(client: caldav.DAVClient, url: str) -> str:
    response = client.request(url, "GET")
    assert response.status == 200
    return response.headers["Schedule-Tag"]


def test_propfind_and_reports_give_the_schedule_tag_of_the_get_header(srv: Server) -> None:
    uid, _ = _invite(srv, "Tagged")
    mine = _accepted_copy(srv, uid)
    plain = _calendar(srv, "bob").save_event(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Invito tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:dentist-{uuid.uuid4().hex}\r\nDTSTAMP:20300101T000000Z\r\nDTSTART:20301011T090000Z\r\n"
        "DTEND:20301011T100000Z\r\nSUMMARY:Dentist\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    client = srv.principal("bob").client
    header = _get_tag(client, str(mine.url))

    body = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            "<D:prop><D:getetag/><C:schedule-tag/></D:prop></D:propfind>")
    response = client.request(str(_calendar(srv, "bob").url), "PROPFIND", body,
                              {"Depth": "1", "Content-Type": "application/xml"})
    assert response.status == 207
    tags = {}
    for answer in ET.fromstring(response.raw).iter("{DAV:}response"):
        href = answer.findtext("{DAV:}href")
        for propstat in answer.iter("{DAV:}propstat"):
            element = propstat.find("{DAV:}prop/" + SCHEDULE_TAG)
            if element is not None:
                tags[href.rsplit("/", 1)[-1]] = (element.text, propstat.findtext("{DAV:}status"))
    assert tags[str(mine.url).rsplit("/", 1)[-1]] == (header, "HTTP/1.1 200 OK")
    assert tags[str(plain.url).rsplit("/", 1)[-1]][1] == "HTTP/1.1 404 Not Found"  # no scheduling object

    fetched = _calendar(srv, "bob").multiget([mine.url, plain.url])  # calendar-multiget asks for it
    by_url = {str(o.url): o.schedule_tag for o in fetched}
    assert by_url[str(mine.url)] == header
    assert by_url[str(plain.url)] is None
    found = _calendar(srv, "bob").search(event=True, uid=uid)  # calendar-query asks for it too
    assert [o.schedule_tag for o in found] == [header]
