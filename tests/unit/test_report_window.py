# SPDX-License-Identifier: GPL-3.0-or-later
"""How far a REPORT makes Radicale walk series, and which series are too costly to walk that far."""
from __future__ import annotations

from datetime import datetime, timezone

import radicale.item as radicale_item

from invito.server.report_window import walked_until
from invito.storage import walks

EXPAND = b"""<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop>
<C:calendar-data><C:expand start="20260601T000000Z" end="20260608T000000Z"/></C:calendar-data></D:prop>
</C:calendar-query>"""
FREEBUSY = b"""<C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav">
<C:time-range start="20260601T000000Z" end="20260602T000000Z"/></C:free-busy-query>"""
PLAIN = b"""<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/></D:prop>
<C:filter><C:comp-filter name="VCALENDAR"/></C:filter></C:calendar-query>"""

JUNE = datetime(2026, 6, 8, tzinfo=timezone.utc)


def series(rule: str, start: str = "20200110T090000Z") -> radicale_item.Item:
    text = "\r\n".join(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN", "BEGIN:VEVENT", "UID:u",
                        "DTSTAMP:20200101T000000Z", f"DTSTART:{start}", "DURATION:PT1S", f"RRULE:{rule}",
                        "END:VEVENT", "END:VCALENDAR", ""])
    return radicale_item.Item(collection_path="alice/work", text=text)


def test_an_expand_walks_to_the_end_of_its_window() -> None:
    assert walked_until(EXPAND) == JUNE


def test_a_free_busy_query_walks_to_the_end_of_its_range_or_of_time() -> None:
    assert walked_until(FREEBUSY) == datetime(2026, 6, 2, tzinfo=timezone.utc)
    assert walked_until(FREEBUSY.replace(b' end="20260602T000000Z"', b"")).year == 9999


def test_other_reports_and_broken_bodies_walk_nothing() -> None:
    assert walked_until(PLAIN) is None
    assert walked_until(b"<C:free-busy-query") is None
    assert walked_until(EXPAND.replace(b' end="20260608T000000Z"', b"")) is None  # Radicale refuses it


def test_a_dense_series_begun_long_ago_is_too_costly_an_ordinary_one_is_not() -> None:
    assert walks.costly(series("FREQ=SECONDLY"), JUNE)
    assert walks.costly(series("FREQ=MINUTELY"), JUNE)
    assert not walks.costly(series("FREQ=DAILY"), JUNE)
    assert not walks.costly(series("FREQ=SECONDLY", start="20260607T230000Z"), JUNE)  # an hour of seconds
