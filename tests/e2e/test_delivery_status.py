# SPDX-License-Identifier: GPL-3.0-or-later
"""What the organizer's client stored is not rewritten by routine mail progress.

The PUT stamps each guest's SCHEDULE-STATUS with what Invito knows then (1.1 queued with a relay, 1.0
without); the sender's progress goes to the spool's outcome log (`invito queue`), and the event changes
later only for a permanent failure (5.x), with its Schedule-Tag kept. Real `invito serve`, the caldav
client, an aiosmtpd relay on 127.0.0.1.
"""
from __future__ import annotations

import base64
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import caldav
import icalendar
import pytest

from tests.e2e.conftest import PASSWORD, Server, start, stop
from tests.e2e.mailsink import MailSink
from tests.e2e.test_invitations_by_mail import mail_settings, to, wait_for_status
from tests.e2e.test_scheduling import attendee, calendar, event

GRACE = "mailto:grace@client.example.net"
GINO = "mailto:gino@partner.example.org"
GUESTS = "\r\n".join(f"ATTENDEE;CN=Guest;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:{g}" for g in (GRACE, GINO))
INVITO = str(Path(sys.executable).parent / "invito")


def get(srv: Server, url: str) -> tuple[str, str | None, icalendar.Calendar]:
    """ETag, Schedule-Tag and content of a stored object, as a client's GET sees them."""
    request = urllib.request.Request(str(url), headers={
        "Authorization": "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()})
    with urllib.request.urlopen(request, timeout=10) as response:
        return (response.headers["ETag"], response.headers.get("Schedule-Tag"),
                icalendar.Calendar.from_ical(response.read()))


def queue_list(srv: Server) -> str:
    result = subprocess.run([INVITO, "queue", "list", "--config", str(srv.config)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def section(listing: str, title: str) -> list[str]:
    """The rows of one section of `invito queue list` (up to the blank line after it)."""
    lines = listing.splitlines()
    rows = []
    for line in lines[lines.index(title) + 1:]:
        if not line.strip():
            break
        rows.append(line)
    return rows


@pytest.fixture(scope="module")
def mailing(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[tuple[Server, MailSink]]:
    from tests.e2e.conftest import free_port
    from tests.e2e.mailsink import start_sink

    port = free_port()
    controller, sink = start_sink(port)
    proc, srv = start(tmp_path_factory.mktemp("status"), mail_settings(port))
    try:
        calendar(srv, "alice")
        yield srv, sink
    finally:
        stop(proc)
        controller.stop()


def work(srv: Server) -> caldav.Calendar:
    """alice's calendar on the module's server (made once, by the fixture)."""
    return srv.principal("alice").calendar(cal_id="work")


def test_sending_does_not_change_the_organizers_event(mailing: tuple[Server, MailSink]) -> None:
    srv, sink = mailing
    uid = str(uuid.uuid4())
    before = len(sink.received)
    saved = work(srv).save_event(event(uid, attendees=(), extra=GUESTS))
    etag, tag, stored = get(srv, saved.url)
    assert [attendee(stored, g).params["SCHEDULE-STATUS"] for g in (GRACE, GINO)] == ["1.1", "1.1"]
    sink.wait_for(before + 2)
    # A later event's mail went out too: the sender has finished the batch that sent ours.
    work(srv).save_event(event(str(uuid.uuid4()), attendees=(), extra=GUESTS))
    sink.wait_for(before + 4)
    assert get(srv, saved.url)[:2] == (etag, tag)
    done = section(queue_list(srv), "Outbound (done)")
    ours = [line for line in done if uid in line]
    assert len(ours) == 2 and all(" 1.1 " in line for line in ours), done
    assert {a for line in ours for a in ("grace@client.example.net", "gino@partner.example.org") if a in line} \
        == {"grace@client.example.net", "gino@partner.example.org"}


def test_a_refused_address_shows_as_5_2_and_keeps_the_schedule_tag(mailing: tuple[Server, MailSink]) -> None:
    srv, sink = mailing
    sink.refuse["grace@client.example.net"] = "550 5.1.1 <grace@client.example.net>: no such user"
    try:
        uid = str(uuid.uuid4())
        before = len(sink.received)
        saved = work(srv).save_event(event(uid, attendees=(), extra=GUESTS))
        etag, tag, _ = get(srv, saved.url)
        assert tag is not None
        wait_for_status(srv, uid, GRACE, "5.2")
        new_etag, new_tag, stored = get(srv, saved.url)
        assert new_etag != etag and new_tag == tag  # changed because the organizer must see it; same tag
        assert attendee(stored, GINO).params["SCHEDULE-STATUS"] == "1.1"
        assert len(to(sink.received[before:], "gino@partner.example.org")) == 1
        listing = queue_list(srv)
        assert any(uid in line and "no such user" in line for line in section(listing, "Outbound (failed)"))
        assert any(uid in line and " 5.2 " in line and "grace@" in line for line in section(listing, "Outbound (done)"))
    finally:
        sink.refuse.clear()


def test_without_a_relay_the_status_says_queued(tmp_path: Path) -> None:
    proc, srv = start(tmp_path)
    try:
        uid = str(uuid.uuid4())
        saved = calendar(srv, "alice").save_event(event(uid, attendees=(), extra=GUESTS))
        _, _, stored = get(srv, saved.url)
        assert [attendee(stored, g).params["SCHEDULE-STATUS"] for g in (GRACE, GINO)] == ["1.0", "1.0"]
        waiting = section(queue_list(srv), "Outbound (waiting)")
        assert any(uid in line and "grace@client.example.net" in line for line in waiting), waiting
    finally:
        stop(proc)
