# SPDX-License-Identifier: GPL-3.0-or-later
"""One email must not hang the server: a guest's REPLY naming a far occurrence of a SECONDLY, MINUTELY or
HOURLY series is decided at once (applied, or quarantined with the reason) while CalDAV keeps answering,
also across a restart; the RSVP page of such a series opens; and a message whose processing never
finishes is set aside after two runs instead of hanging every restart."""
from __future__ import annotations

import contextlib
import email
import email.policy
import fcntl
import os
import signal
import time
import uuid
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import icalendar
import psycopg
import pytest
import requests

from tests.e2e.conftest import PASSWORD, Server, database_of, free_port, inbound_pending, queues, quarantined_entries, \
    restart, start, stop
from tests.e2e.mailsink import MailSink, start_sink
from tests.e2e.test_invitations_by_mail import calendar_part, review, to
from tests.e2e.test_replies_by_mail import GRACE, inbound_settings, send, wait_listening, wire
from tests.e2e.test_rsvp_page import answer_links, post_answer
from tests.e2e.test_scheduling import attendee, calendar

if TYPE_CHECKING:
    from invito.plugins.imip.inbound_spool import QuarantinedEntry

FAR = "20991231T235959Z"


class Site:
    """A running `invito serve` with its relay and listener; restartable on the same data and ports."""

    def __init__(self, tmp: Path, sink: MailSink, relay_port: int) -> None:
        self.tmp, self.sink, self.listen, self.port = tmp, sink, free_port(), free_port()
        # Walks of a message stop after 10 ms here, so that the time bound is seen; arithmetic needs µs.
        self.settings = inbound_settings(relay_port, self.listen, processing_timeout="0.01")
        self.settings["rsvp"] = {"public_url": f"http://127.0.0.1:{self.port}"}
        self.proc, self.srv = None, None
        self.start()
        calendar(self.srv, "alice", "work")

    def start(self) -> None:
        """The first start, or a restart on the same config (and so the same database)."""
        if self.srv is None:
            self.proc, self.srv = start(self.tmp, self.settings, port=self.port)
        else:
            self.proc = restart(self.srv)
        wait_listening(self.listen)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture(scope="module")
def sink() -> Iterator[tuple[int, MailSink]]:
    port = free_port()
    controller, found = start_sink(port)
    try:
        yield port, found
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, sink: tuple[int, MailSink],
         backend: str) -> Iterator[Site]:
    running = Site(tmp_path_factory.mktemp("bounds"), sink[1], sink[0])
    try:
        yield running
    finally:
        stop(running.proc)


def invite(site: Site, rule: str, start: str = "20301010T090000") -> tuple[str, EmailMessage]:
    """Alice saves a series with ``rule`` inviting Gino and Grace (a PUT, as her client does); Grace's
    invitation. The event is read back by its URL: caldav's event_by_uid would expand the series itself."""
    uid = str(uuid.uuid4())
    already = len(site.sink.received)
    began = time.monotonic()
    site.srv.principal("alice").calendar(cal_id="work").save_event(review(uid, start=start, extra=(f"RRULE:{rule}",)))
    assert time.monotonic() - began < 5  # the PUT itself never walks the series
    received = site.sink.wait_for(already + 2)[already:]
    return uid, to(received, "grace@client.example.net")[0]


def url_of(srv: Server, uid: str) -> str:
    return f"{srv.url}alice/work/{uid}.ics"


def organizers_copy(srv: Server, uid: str) -> icalendar.Calendar:
    """Alice's event as her client GETs it, answered within a few seconds."""
    began = time.monotonic()
    response = requests.get(url_of(srv, uid), auth=("alice", PASSWORD), timeout=5)
    assert response.status_code == 200 and time.monotonic() - began < 3
    return icalendar.Calendar.from_ical(response.content)


def occurrence_reply(invitation: EmailMessage, rid: str, partstat: str = "ACCEPTED") -> tuple[str, bytes]:
    """Grace's answer for the one occurrence ``rid``, as a mail client sends it, and where it goes."""
    _, ics = calendar_part(invitation)
    event = next(iter(ics.walk("VEVENT")))
    answered = icalendar.Event()
    for name in ("UID", "SEQUENCE", "ORGANIZER", "SUMMARY"):
        answered[name] = event[name]
    answered.add("RECURRENCE-ID", icalendar.vDatetime.from_ical(rid))
    answered.add("DTSTART", icalendar.vDatetime.from_ical(rid))
    answered.add("DTSTAMP", icalendar.vDatetime.from_ical(time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())))
    who = icalendar.vCalAddress(GRACE)
    who.params["PARTSTAT"] = partstat
    answered.add("ATTENDEE", who)
    reply = icalendar.Calendar()
    for name, value in (("PRODID", "-//Invito tests//recurrence//EN"), ("VERSION", "2.0"), ("METHOD", "REPLY")):
        reply.add(name, value)
    reply.add_component(answered)
    msg = EmailMessage()
    msg.set_content(f"{partstat.title()}.")
    msg.add_alternative(reply.to_ical().decode(), subtype="calendar", params={"method": "REPLY"})
    msg["From"] = "grace@client.example.net"
    msg["To"] = str(event["ORGANIZER"])[len("mailto:"):]
    msg["Subject"] = f"{partstat.title()}: Quarterly review"
    return msg["To"], wire(msg)


def instance_answer(srv: Server, uid: str, rid: str) -> str | None:
    """Grace's PARTSTAT in the organizer's override for ``rid``; None while there is none."""
    for comp in organizers_copy(srv, uid).walk("VEVENT"):
        if "RECURRENCE-ID" in comp and utc(comp.decoded("RECURRENCE-ID")) == rid:  # written in Rome time
            return next(str(a.params.get("PARTSTAT")) for a in comp.get("ATTENDEE") if str(a) == GRACE)
    return None


def utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def reason_containing(srv: Server, text: str, timeout: float = 20) -> "QuarantinedEntry":
    """The quarantined entry whose reason has ``text``, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in quarantined_entries(srv):
            if text in entry.reason:
                return entry
        time.sleep(0.1)
    raise AssertionError(f"no quarantined message with {text!r}")


def uid_of(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    _, ics = calendar_part(message)
    return str(next(iter(ics.walk("VEVENT")))["UID"])


def outcome(site: Site, uid: str, rid: str, expected: str, timeout: float = 20) -> str:
    """Wait until the reply for ``rid`` is applied or quarantined; which one, with the reason."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        organizers_copy(site.srv, uid)
        if instance_answer(site.srv, uid, rid) == "ACCEPTED":
            return "applied"
        with queues(site.srv) as spools:
            for entry in spools.inbound.quarantined_entries():
                if rid in entry.reason and uid_of(spools.inbound.quarantined_mail(entry.id)) == uid:
                    return "quarantined: " + entry.reason
        time.sleep(0.2)
    raise AssertionError(f"the reply for {rid} was neither applied nor quarantined; expected {expected}")


@pytest.mark.parametrize("rule, rid, expected", [
    ("FREQ=SECONDLY", FAR, "applied"),
    ("FREQ=MINUTELY", "20991231T235900Z", "applied"),
    ("FREQ=MINUTELY", FAR, "the event has no instance"),        # minutely at :00 never lands on :59
    ("FREQ=HOURLY", "20991231T230000Z", "applied"),
    ("FREQ=HOURLY;INTERVAL=7", "20991231T230000Z", "the event has no instance"),
    ("FREQ=SECONDLY;BYSETPOS=1", FAR, "could not be checked"),  # must be walked: too far to walk
    # Walked: 25,000 days are within the step budget, not within [imip] processing_timeout.
    ("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU", "20991231T080000Z", "took longer than allowed"),
])
def test_a_reply_for_a_far_occurrence_is_decided_while_caldav_answers(site: Site, rule: str, rid: str,
                                                                      expected: str) -> None:
    uid, invitation = invite(site, rule)
    address, raw = occurrence_reply(invitation, rid)
    began = time.monotonic()
    send(site.listen, address, raw)
    organizers_copy(site.srv, uid)
    found = outcome(site, uid, rid, expected)
    assert expected in found, found
    decided = time.monotonic() - began
    assert decided < 15, decided
    assert inbound_pending(site.srv) == []


def test_the_rsvp_page_of_a_dense_series_begun_long_ago_opens(site: Site) -> None:
    """Is the series over? Once answered by expanding it from its start in 2020, a second at a time."""
    uid, invitation = invite(site, "FREQ=SECONDLY", start="20200110T090000")
    links = answer_links(invitation)
    began = time.monotonic()
    assert requests.get(links["accept"], timeout=5).status_code == 200
    assert time.monotonic() - began < 3
    assert post_answer(site.srv, links["tentative"], "TENTATIVE").status_code == 303
    assert str(attendee(organizers_copy(site.srv, uid), GRACE).params["PARTSTAT"]) == "TENTATIVE"


def test_a_reply_queued_at_a_crash_is_decided_after_the_restart(site: Site) -> None:
    uid, invitation = invite(site, "FREQ=SECONDLY")
    address, raw = occurrence_reply(invitation, FAR)
    send(site.listen, address, raw)
    site.kill()  # at once: the reply is in the inbound queue, perhaps being applied
    site.start()
    organizers_copy(site.srv, uid)
    assert outcome(site, uid, FAR, "applied") == "applied"
    organizers_copy(site.srv, uid)


@contextlib.contextmanager
def applying_held(srv: Server, uid: str) -> Iterator[None]:
    """Another program holds what applying a reply to ``uid`` waits for, as a stuck backup job would: the
    filesystem's storage lock, or the database's lock on the meeting, in a transaction left open."""
    url = database_of(srv)
    if not url:
        with open(next(srv.data.rglob(".Radicale.lock")), "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(held, fcntl.LOCK_UN)
        return
    with psycopg.connect(url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("uid:" + uid,))  # as db.lock
        try:
            yield
        finally:
            conn.rollback()


def unfinished_runs(srv: Server) -> list[int]:
    """The count of processing runs that began and did not finish, of each message that has one."""
    url = database_of(srv)
    if not url:
        queue = srv.data / "spool" / "inbound" / "queue"
        return [int(count) for p in queue.glob("*.attempts") if (count := p.read_text()).isdigit()]
    with psycopg.connect(url) as conn:
        return [n for (n,) in conn.execute("SELECT unfinished FROM invito_inbound_run")]


def test_a_message_whose_processing_never_finishes_is_set_aside_after_two_runs(site: Site) -> None:
    """Processing hangs (here: another program holds what it waits for, as a stuck backup job would), an
    admin restarts the hung server, twice: the third start sets the message aside instead of hanging."""
    uid, invitation = invite(site, "FREQ=SECONDLY")
    address, raw = occurrence_reply(invitation, "20301010T070000Z")
    with applying_held(site.srv, uid):
        send(site.listen, address, raw)
        for run in (1, 2):
            deadline = time.monotonic() + 20
            while run not in unfinished_runs(site.srv):
                assert time.monotonic() < deadline, f"processing run {run} did not start"
                time.sleep(0.05)
            site.kill()  # the hung server is restarted
            if run == 1:
                site.start()
    site.start()
    entry = reason_containing(site.srv, "processing crashed or timed out 2 times")
    assert entry.mail_from == "guest@client.example.net"
    assert inbound_pending(site.srv) == [] and unfinished_runs(site.srv) == []
    if not database_of(site.srv):
        assert not list((site.srv.data / "spool" / "inbound" / "queue").glob("*"))
    organizers_copy(site.srv, uid)
    assert str(attendee(organizers_copy(site.srv, uid), GRACE).params["PARTSTAT"]) == "NEEDS-ACTION"


QUERY = """<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><D:getetag/></D:prop>
  <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">
    <C:time-range start="{start}" end="{end}"/>
  </C:comp-filter></C:comp-filter></C:filter>
</C:calendar-query>"""


def test_a_time_range_query_over_a_dense_series_begun_long_ago_answers(site: Site) -> None:
    """What every client does to show a week: Radicale's own check walked the series from 2020 a second
    at a time, for hours."""
    uid, _ = invite(site, "FREQ=SECONDLY", start="20200110T090000")
    other = str(uuid.uuid4())  # long over: not in the week, and no mail goes out for it
    site.srv.principal("alice").calendar(cal_id="work").save_event(
        review(other, start="20200110T090000", extra=("RRULE:FREQ=DAILY;COUNT=3",)))
    week = time.strftime("%Y%m%dT000000Z", time.gmtime())
    began = time.monotonic()
    response = requests.request("REPORT", f"{site.srv.url}alice/work/", auth=("alice", PASSWORD), timeout=10,
                                headers={"Depth": "1", "Content-Type": "application/xml"},
                                data=QUERY.format(start=week, end=week[:8] + "T235959Z"))
    assert response.status_code == 207 and time.monotonic() - began < 3
    assert f"/alice/work/{uid}.ics" in response.text and f"/alice/work/{other}.ics" not in response.text
    organizers_copy(site.srv, uid)
