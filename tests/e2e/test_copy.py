# SPDX-License-Identifier: GPL-3.0-or-later
"""WebDAV COPY of calendar objects (RFC 4918 §9.8) with CalDAV's preconditions and RFC 6638's rules, as a
client sends it: python-caldav's own HTTP session, a real server, a real relay counting the mail."""
from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Iterator

import pytest
from caldav.lib.http_sync import requests

from tests.e2e.conftest import Server, free_port, start, stop
from tests.e2e.mailsink import MailSink, start_sink
from tests.e2e.test_invitations_by_mail import calendar_part, mail_settings
from tests.e2e.test_scheduling import calendar, event, inbox_methods

Response = requests.Response  # the HTTP library python-caldav uses
GUEST = "mailto:gino@partner.example.org"
# owner_only, plus: alice may write in carol's calendar "shared".
RIGHTS = """
[root]
user: .+
collection:
permissions: R

[principal]
user: .+
collection: {user}
permissions: RW

[own]
user: .+
collection: {user}/.+
permissions: rw

[alice-in-carols-shared]
user: alice
collection: carol/shared(/.*)?
permissions: rw
"""
VCARD = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:card-1\r\nFN:Gino Rossi\r\nN:Rossi;Gino;;;\r\nEND:VCARD\r\n"


@pytest.fixture(scope="module")
def mailing(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[tuple[Server, MailSink]]:
    tmp = tmp_path_factory.mktemp("copy")
    (tmp / "rights").write_text(RIGHTS)
    port = free_port()
    controller, sink = start_sink(port)
    settings = {**mail_settings(port), "rights": {"type": "from_file", "file": str(tmp / "rights")}}
    proc, srv = start(tmp, settings)
    try:
        for name in ("work", "home"):
            calendar(srv, "alice", name)
        calendar(srv, "bob")
        calendar(srv, "carol", "shared")
        yield srv, sink
    finally:
        stop(proc)
        controller.stop()


def _request(srv: Server, method: str, path: str, body: str = "", user: str = "alice", **headers: str) -> Response:
    """Through python-caldav's own HTTP session and login (its request() raises on a 403, whose body we read)."""
    client = srv.principal(user).client
    return client.session.request(method, srv.url + path, data=body.encode(), headers=headers, auth=client.auth)


def _put(srv: Server, path: str, text: str, content_type: str = "text/calendar") -> None:
    response = _request(srv, "PUT", path, text, **{"Content-Type": content_type})
    assert response.status_code in (201, 204), response.text


def _copy(srv: Server, source: str, target: str, user: str = "alice", **headers: str) -> Response:
    return _request(srv, "COPY", source, user=user, Destination=srv.url + target, **headers)


def _get(srv: Server, path: str, user: str = "alice") -> Response:
    return _request(srv, "GET", path, user=user)


def _error(response: Response) -> tuple[str, str | None]:
    """The precondition element an error body names, and the DAV:href inside it."""
    element = ET.fromstring(response.content)[0]
    return element.tag, element.findtext("{DAV:}href")


def _plain(uid: str, summary: str = "Dentist") -> str:
    return "\r\n".join(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Invito tests//EN", "BEGIN:VEVENT", f"UID:{uid}",
                        "DTSTAMP:20300101T000000Z", "DTSTART:20301011T090000Z", "DTEND:20301011T100000Z",
                        f"SUMMARY:{summary}", "X-CUSTOM-NOTE:kept as written", "END:VEVENT", "END:VCALENDAR", ""])


def test_a_plain_event_is_copied_exactly_and_overwrite_is_honoured(mailing: tuple[Server, MailSink]) -> None:
    srv, _ = mailing
    uid = str(uuid.uuid4())
    _put(srv, f"alice/work/{uid}.ics", _plain(uid))

    created = _copy(srv, f"alice/work/{uid}.ics", f"alice/home/{uid}.ics")
    assert created.status_code == 201
    source, copied = _get(srv, f"alice/work/{uid}.ics"), _get(srv, f"alice/home/{uid}.ics")
    assert copied.status_code == 200 and copied.text == source.text
    assert created.headers["ETag"] == copied.headers["ETag"] == source.headers["ETag"]
    assert srv.principal("alice").calendar(cal_id="home").event_by_uid(uid).icalendar_component["SUMMARY"] == "Dentist"

    assert _copy(srv, f"alice/work/{uid}.ics", f"alice/home/{uid}.ics", Overwrite="F").status_code == 412
    _put(srv, f"alice/work/{uid}.ics", _plain(uid, "Dentist later"))
    assert _copy(srv, f"alice/work/{uid}.ics", f"alice/home/{uid}.ics").status_code == 204  # Overwrite: T by default
    assert "Dentist later" in _get(srv, f"alice/home/{uid}.ics").text


def test_copy_refuses_what_a_collection_cannot_hold(mailing: tuple[Server, MailSink]) -> None:
    srv, _ = mailing
    uid, other = str(uuid.uuid4()), str(uuid.uuid4())
    _put(srv, f"alice/work/{uid}.ics", _plain(uid))
    _put(srv, f"alice/home/{other}.ics", _plain(other))

    assert _copy(srv, f"alice/work/{uid}.ics", f"alice/nowhere/{uid}.ics").status_code == 409
    same_collection = _copy(srv, f"alice/work/{uid}.ics", "alice/work/again.ics")  # the UID twice in one calendar
    assert same_collection.status_code == 403
    assert _error(same_collection) == ("{urn:ietf:params:xml:ns:caldav}no-uid-conflict", f"/alice/work/{uid}.ics")
    over_another = _copy(srv, f"alice/work/{uid}.ics", f"alice/home/{other}.ics")  # would change that one's UID
    assert over_another.status_code == 403
    assert _error(over_another) == ("{urn:ietf:params:xml:ns:caldav}no-uid-conflict", f"/alice/home/{other}.ics")
    assert other in _get(srv, f"alice/home/{other}.ics").text
    assert _copy(srv, f"alice/work/{uid}.ics", f"alice/work/{uid}.ics").status_code == 403  # onto itself

    mkcol = ('<?xml version="1.0"?><D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><D:set>'
             "<D:prop><D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>")
    assert _request(srv, "MKCOL", "alice/contacts/", mkcol).status_code == 201
    _put(srv, "alice/contacts/card-1.vcf", VCARD, "text/vcard")
    card = _copy(srv, "alice/contacts/card-1.vcf", "alice/work/card-1.ics")
    assert card.status_code == 403
    assert _error(card)[0] == "{urn:ietf:params:xml:ns:caldav}supported-calendar-data"
    assert _get(srv, "alice/work/card-1.ics").status_code == 404


def test_a_scheduling_object_is_never_in_a_home_twice_nor_sent_twice(mailing: tuple[Server, MailSink]) -> None:
    srv, sink = mailing
    uid = str(uuid.uuid4())
    _put(srv, f"alice/work/{uid}.ics", event(uid, attendees=("bob",), extra=f"ATTENDEE;CN=Gino:{GUEST}"))
    before = len(sink.wait_for(1))

    refused = _copy(srv, f"alice/work/{uid}.ics", f"alice/home/{uid}.ics")
    assert refused.status_code == 403
    assert _error(refused)[0] == "{urn:ietf:params:xml:ns:caldav}unique-scheduling-object-resource"
    assert _get(srv, f"alice/home/{uid}.ics").status_code == 404
    # Into bob's calendar: alice may not write there; into carol's, where she may, carol is no attendee.
    assert _copy(srv, f"alice/work/{uid}.ics", f"bob/work/{uid}.ics").status_code == 403
    not_carols = _copy(srv, f"alice/work/{uid}.ics", f"carol/shared/{uid}.ics")
    assert not_carols.status_code == 403
    assert _error(not_carols)[0] == "{urn:ietf:params:xml:ns:caldav}valid-organizer"

    marker = str(uuid.uuid4())  # mail queued after the COPYs arrives after anything they might have queued
    _put(srv, f"alice/work/{marker}.ics", event(marker, attendees=(), extra=f"ATTENDEE;CN=Gino:{GUEST}"))
    received = sink.wait_for(before + 1)
    assert len(received) == before + 1
    assert [str(calendar_part(r.message)[1].walk("VEVENT")[0]["UID"]) for r in received[-2:]] == [uid, marker]
    assert inbox_methods(srv, "bob", uid) == ["REQUEST"]


def test_a_plain_event_copied_into_another_users_calendar_is_theirs(mailing: tuple[Server, MailSink]) -> None:
    srv, _ = mailing
    uid = str(uuid.uuid4())
    _put(srv, f"alice/work/{uid}.ics", _plain(uid, "Lunch"))
    assert _copy(srv, f"alice/work/{uid}.ics", f"carol/shared/{uid}.ics").status_code == 201
    assert _get(srv, f"carol/shared/{uid}.ics", "carol").text == _get(srv, f"alice/work/{uid}.ics").text
