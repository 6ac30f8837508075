# SPDX-License-Identifier: GPL-3.0-or-later
"""`invito serve` killed with SIGKILL while it schedules or sends: after the restart every guest's
invitation goes out (at most twice, acceptable at the SMTP boundary) or, for an event that was not
stored, none does; and every guest's status in the event and in `invito queue` tells the truth.
Real server processes, real HTTP PUTs, an aiosmtpd relay on 127.0.0.1.
"""
from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import icalendar
import psycopg

from tests.e2e.conftest import PASSWORD, Server, database_of, free_port, restart, start, stop
from tests.e2e.mailsink import MailSink, start_sink
from tests.e2e.test_delivery_status import INVITO, section
from tests.e2e.test_invitations_by_mail import mail_settings
from tests.e2e.test_scheduling import calendar, event

KILL_AFTER_PUTS = 0.4  # the report's timing: the sender is mid-batch
KILLS = 8
KILL_STEP = 0.002  # seconds between kill points, from the message's preparation on
DATABASE_KILL_STEP = 0.03  # seconds between kill points during a PUT on the database, from its start
REFUSED = "nobody@partner.example.org"


def guests(uid: str, count: int) -> list[str]:
    return [f"g{n}-{uid[:8]}@partner.example.org" for n in range(count)]


def invitation(uid: str, addresses: list[str]) -> str:
    return event(uid, attendees=(), extra="\r\n".join(
        f"ATTENDEE;CN=Guest {n};PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{a}" for n, a in enumerate(addresses)))


def http(srv: Server, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(srv.url + path, method=method, data=body.encode() if body else None, headers={
        "Authorization": "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode(),
        "Content-Type": "text/calendar; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _put_until_killed(srv: Server, uid: str) -> None:
    with contextlib.suppress(OSError):  # the connection dies with the server
        http(srv, "PUT", f"alice/work/{uid}.ics", invitation(uid, guests(uid, 30)))


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def received_for(sink: MailSink, uid: str) -> Counter[str]:
    """How many invitations to ``uid`` each guest got (their calendar names the UID)."""
    counts: Counter[str] = Counter()
    for r in list(sink.received):
        for part in r.message.walk():
            if part.get_content_type() == "text/calendar" and uid in part.get_content():
                counts.update(a.lower() for a in r.recipients)
    return counts


def wait_until_sent(srv: Server, sink: MailSink, marker_guest: str) -> None:
    """A fresh invitation after everything else: the sender takes the oldest messages first (recovered
    ones included), so once this one arrived, nothing older still waits."""
    uid = str(uuid.uuid4())
    assert http(srv, "PUT", f"alice/work/{uid}.ics", invitation(uid, [marker_guest]))[0] == 201
    deadline = time.monotonic() + 60
    while not received_for(sink, uid):
        assert time.monotonic() < deadline, "the marker invitation never arrived"
        time.sleep(0.1)


def queue_list(srv: Server) -> str:
    result = subprocess.run([INVITO, "queue", "list", "--config", str(srv.config)], capture_output=True,
                            text=True, timeout=30, env={**os.environ, "TZ": "UTC"})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_kill_during_a_30_guest_put_stores_the_event_with_its_invitations_or_neither(tmp_path: Path) -> None:
    port = free_port()
    controller, sink = start_sink(port)
    try:
        proc, srv = start(tmp_path, mail_settings(port))
        calendar(srv, "alice")
        prepared = srv.data / "spool" / "outbound" / "tmp"
        database = database_of(srv)
        outcomes: dict[str, tuple[bool, int]] = {}
        for n in range(KILLS):
            # Kill points around the event write: a few milliseconds after the PUT's message appears in
            # the spool (it is prepared first), or right after the event's file appears (the window where
            # the event was stored and its message not yet queued). On the database, whose commit makes
            # both visible at once: during the PUT, or a few milliseconds after its commit.
            uid = str(uuid.uuid4())
            event_file = srv.data / "collections" / "collection-root" / "alice" / "work" / f"{uid}.ics"
            put = threading.Thread(target=_put_until_killed, args=(srv, uid))
            put.start()
            deadline = time.monotonic() + 30
            if n % 2:
                stored = (lambda: committed(database, uid)) if database else event_file.exists
                while not stored():
                    # A PUT may end between a look and the next: it stored nothing only if it is still unseen.
                    assert time.monotonic() < deadline and (put.is_alive() or stored()), "the PUT stored nothing"
                time.sleep((n // 2) * KILL_STEP / 4)
            elif database:
                time.sleep((n // 2) * DATABASE_KILL_STEP)
            else:
                while not any(name.endswith(".json") for name in _names(prepared)):
                    assert time.monotonic() < deadline and put.is_alive(), "the PUT prepared no message"
                time.sleep((n // 2) * KILL_STEP)
            kill(proc)
            put.join()
            outcomes[uid] = (False, 0)
            proc = restart(srv)
        wait_until_sent(srv, sink, "marker@partner.example.org")
        for uid in outcomes:
            stored = http(srv, "GET", f"alice/work/{uid}.ics")[0] == 200
            got = received_for(sink, uid)
            outcomes[uid] = (stored, len(got))
            assert (stored and set(got) == set(guests(uid, 30))) or (not stored and not got), outcomes
        stop(proc)
    finally:
        controller.stop()
    print(f"after {KILLS} kills (stored, guests reached): {dict(Counter(outcomes.values()))}")


def committed(database: str, uid: str) -> bool:
    """Whether the event ``uid`` is in the database (its write committed)."""
    with psycopg.connect(database) as conn:
        return conn.execute("SELECT 1 FROM dav_item WHERE uid = %s", (uid,)).fetchone() is not None


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def test_delivery_status_survives_a_kill_while_sending(tmp_path: Path) -> None:
    port = free_port()
    controller, sink = start_sink(port)
    sink.delay = 0.005  # a relay that takes its time: the kill lands mid-batch
    sink.refuse[REFUSED] = "550 5.1.1 <%s>: no such user" % REFUSED
    try:
        proc, srv = start(tmp_path, mail_settings(port))
        calendar(srv, "alice")
        events = {str(uuid.uuid4()): [] for _ in range(4)}
        for uid in events:
            events[uid] = guests(uid, 49) + [REFUSED]
            assert http(srv, "PUT", f"alice/work/{uid}.ics", invitation(uid, events[uid]))[0] == 201
        time.sleep(KILL_AFTER_PUTS)
        kill(proc)
        at_kill = len(sink.received)
        proc = restart(srv)
        try:
            wait_until_sent(srv, sink, "marker@partner.example.org")
            listing = queue_list(srv)
            done, waiting = section(listing, "Outbound (done)"), section(listing, "Outbound (waiting)")
            for uid, addresses in events.items():
                got = received_for(sink, uid)
                assert set(got) == set(addresses) - {REFUSED}, uid
                stored = icalendar.Calendar.from_ical(http(srv, "GET", f"alice/work/{uid}.ics")[1])
                statuses = {str(a)[len("mailto:"):].lower(): a.params.get("SCHEDULE-STATUS")
                            for a in stored.walk("VEVENT")[0].get("ATTENDEE") if "alice" not in str(a)}
                assert statuses == {a: "5.2" if a == REFUSED else "1.1" for a in addresses}, uid
                for address in addresses:
                    rows = [row for row in done if uid in row and f" {address} " in row]
                    wanted = " 5.2 " if address == REFUSED else " 1.1 "
                    assert rows and all(wanted in row for row in rows), (address, rows)
            assert waiting == ["  none"], waiting
            twice = sum(n - 1 for uid in events for n in received_for(sink, uid).values())
        finally:
            stop(proc)
    finally:
        controller.stop()
    print(f"{at_kill} of 196 invitations were out at the kill; {twice} sent twice after the restart")
    assert 0 < at_kill < 196, "the kill did not land while the invitations were being sent"

