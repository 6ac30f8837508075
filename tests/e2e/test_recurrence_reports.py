# SPDX-License-Identifier: GPL-3.0-or-later
"""A dense series begun long ago (``FREQ=SECONDLY`` since 2020, no end) must not pin the server when a
client asks Radicale to expand series (``C:expand`` in calendar-query and calendar-multiget) or for a
``free-busy-query`` over a window years later: both answer within seconds, leave the dense series out
(logged with its UID) and still expand an ordinary series correctly. The organizer's PUT of such a series
with attendees and an overridden instance returns at once too. Events are read by URL with plain HTTP:
the caldav package's search would expand the dense series on the client, hanging the test itself."""
from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import icalendar
import pytest
import requests

from tests.e2e.conftest import PASSWORD, Server, start, stop
from tests.e2e.test_scheduling import calendar, event

WINDOW = ("20260601T000000Z", "20260608T000000Z")  # a week, six years after the dense series began
DAV = "{DAV:}"
CAL = "{urn:ietf:params:xml:ns:caldav}"

OVERRIDE = "\r\n".join([  # the dense series' 5th second, moved by the organizer
    "BEGIN:VEVENT", "UID:{uid}", "DTSTAMP:20300101T000000Z", "RECURRENCE-ID:20200110T090005Z",
    "DTSTART:20200110T100005Z", "DTEND:20200110T100105Z", "SUMMARY:Moved tick",
    "ORGANIZER;CN=Alice:mailto:alice@example.com", "ATTENDEE;CN=Alice;PARTSTAT=ACCEPTED:mailto:alice@example.com",
    "ATTENDEE;CN=Bob;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bob@example.com", "END:VEVENT"])


class Site:
    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self.dense = str(uuid.uuid4())
        self.daily = str(uuid.uuid4())
        self.put_seconds = 0.0

    def url(self, uid: str) -> str:
        return f"{self.srv.url}alice/work/{uid}.ics"

    def put(self, uid: str, text: str) -> None:
        began = time.monotonic()
        response = requests.put(self.url(uid), data=text.encode(), auth=("alice", PASSWORD), timeout=10,
                                headers={"Content-Type": "text/calendar; charset=utf-8"})
        self.put_seconds = max(self.put_seconds, time.monotonic() - began)
        assert response.status_code in (201, 204), response.text

    def report(self, body: str, depth: str = "1") -> tuple[requests.Response, float]:
        began = time.monotonic()
        response = requests.request("REPORT", f"{self.srv.url}alice/work/", auth=("alice", PASSWORD),
                                    timeout=10, data=body.encode(),
                                    headers={"Depth": depth, "Content-Type": "application/xml; charset=utf-8"})
        return response, time.monotonic() - began


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Site]:
    tmp: Path = tmp_path_factory.mktemp("reports")
    proc, srv = start(tmp)
    try:
        calendar(srv, "alice", "work")
        running = Site(srv)
        running.put(running.dense, event(running.dense, summary="Every second", start="20200110T090000Z",
                                         end="20200110T090001Z", attendees=("bob",), extra="RRULE:FREQ=SECONDLY",
                                         components=OVERRIDE.format(uid=running.dense)))
        running.put(running.daily, event(running.daily, summary="Stand-up", start="20260101T090000Z",
                                         end="20260101T091500Z", attendees=(), extra="RRULE:FREQ=DAILY"))
        yield running
    finally:
        stop(proc)


def responses(answer: requests.Response) -> dict[str, str]:
    """href → calendar-data of a multistatus."""
    found = {}
    for response in ET.fromstring(answer.content).iter(DAV + "response"):
        data = response.find(f".//{CAL}calendar-data")
        found[response.findtext(DAV + "href")] = data.text if data is not None else ""
    return found


def instances(text: str) -> list[str]:
    """The RECURRENCE-IDs (UTC) of an expanded calendar-data, in order."""
    cal = icalendar.Calendar.from_ical(text)
    assert not any("RRULE" in comp for comp in cal.walk("VEVENT")), "the series came back unexpanded"
    return sorted(comp.decoded("RECURRENCE-ID").strftime("%Y%m%dT%H%M%SZ") for comp in cal.walk("VEVENT"))


WEEK_OF_STANDUPS = [f"202606{day:02d}T090000Z" for day in range(1, 8)]

EXPAND_PROP = f"""<D:prop><D:getetag/><C:calendar-data>
    <C:expand start="{WINDOW[0]}" end="{WINDOW[1]}"/></C:calendar-data></D:prop>"""


def test_the_organizers_put_of_a_dense_series_with_attendees_and_an_override_returns_at_once(site: Site) -> None:
    assert site.put_seconds < 5
    stored = requests.get(site.url(site.dense), auth=("alice", PASSWORD), timeout=5)
    assert stored.status_code == 200 and b"RRULE:FREQ=SECONDLY" in stored.content
    assert b"RECURRENCE-ID:20200110T090005Z" in stored.content
    bobs = [url for url in (str(o.url) for c in site.srv.principal("bob").calendars() for o in c.objects())
            if site.dense in requests.get(url, auth=("bob", PASSWORD), timeout=5).text]  # not expanded by a client
    assert bobs, "Bob has no calendar copy of the series"


def test_an_expand_query_over_a_dense_old_series_answers_and_still_expands_the_rest(site: Site) -> None:
    body = f"""<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">{EXPAND_PROP}
  <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">
    <C:time-range start="{WINDOW[0]}" end="{WINDOW[1]}"/></C:comp-filter></C:comp-filter></C:filter>
</C:calendar-query>"""
    answer, seconds = site.report(body)
    assert answer.status_code == 207 and seconds < 5
    found = responses(answer)
    assert f"/alice/work/{site.dense}.ics" not in found
    assert instances(found[f"/alice/work/{site.daily}.ics"]) == WEEK_OF_STANDUPS
    assert f"uid={site.dense}" in site.srv.log.read_text() and "left out of the REPORT" in site.srv.log.read_text()


def test_an_expand_multiget_naming_the_dense_series_answers_and_expands_the_other(site: Site) -> None:
    body = f"""<?xml version="1.0" encoding="utf-8"?>
<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">{EXPAND_PROP}
  <D:href>/alice/work/{site.dense}.ics</D:href><D:href>/alice/work/{site.daily}.ics</D:href>
</C:calendar-multiget>"""
    answer, seconds = site.report(body)
    assert answer.status_code == 207 and seconds < 5
    found = responses(answer)
    assert f"/alice/work/{site.dense}.ics" not in found  # as for an object with no instance in the window
    assert instances(found[f"/alice/work/{site.daily}.ics"]) == WEEK_OF_STANDUPS


def test_a_free_busy_query_over_a_dense_old_series_answers_with_the_other_busy_time(site: Site) -> None:
    body = f"""<?xml version="1.0" encoding="utf-8"?>
<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">
  <C:time-range start="{WINDOW[0]}" end="{WINDOW[1]}"/>
</C:free-busy-query>"""
    answer, seconds = site.report(body)
    assert answer.status_code == 200 and seconds < 5, answer.text
    freebusy = next(iter(icalendar.Calendar.from_ical(answer.content).walk("VFREEBUSY")))
    periods = freebusy.get("FREEBUSY")
    periods = periods if isinstance(periods, list) else [periods]
    starts = sorted(period.dt[0].strftime("%Y%m%dT%H%M%SZ") for period in periods)  # one period a line
    assert starts == WEEK_OF_STANDUPS


def test_caldav_answers_at_once_after_those_reports(site: Site) -> None:
    began = time.monotonic()
    assert requests.get(site.url(site.daily), auth=("alice", PASSWORD), timeout=5).status_code == 200
    assert time.monotonic() - began < 2


def test_a_free_busy_post_to_the_outbox_over_a_dense_old_series_answers(site: Site) -> None:
    """RFC 6638 free-busy lookup of Alice (both series) and Bob (his copy of the dense one only)."""
    began = time.monotonic()
    response = requests.post(
        site.srv.url + "alice/schedule-outbox/", auth=("alice", PASSWORD), timeout=10,
        headers={"Content-Type": "text/calendar"}, data="\r\n".join([
            "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN", "METHOD:REQUEST", "BEGIN:VFREEBUSY",
            "UID:fb-dense", "DTSTAMP:20260101T000000Z", f"DTSTART:{WINDOW[0]}", f"DTEND:{WINDOW[1]}",
            "ORGANIZER:mailto:alice@example.com", "ATTENDEE:mailto:alice@example.com",
            "ATTENDEE:mailto:bob@example.com", "END:VFREEBUSY", "END:VCALENDAR", ""]))
    assert response.status_code == 200 and time.monotonic() - began < 5
    answers = {r.findtext(f"{CAL}recipient/{DAV}href"): r.findtext(f"{CAL}calendar-data") or ""
               for r in ET.fromstring(response.content).iter(f"{CAL}response")}
    alice = icalendar.Calendar.from_ical(answers["mailto:alice@example.com"])
    busy = [p for fb in alice.walk("VFREEBUSY") for line in fb.get("FREEBUSY", [])
            for p in (line if isinstance(line, list) else [line])]
    assert sorted(p.dt[0].strftime("%Y%m%dT%H%M%SZ") for p in busy) == WEEK_OF_STANDUPS
    assert "FREEBUSY" not in answers["mailto:bob@example.com"].replace("VFREEBUSY", "")
