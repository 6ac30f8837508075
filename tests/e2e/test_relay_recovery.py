# SPDX-License-Identifier: GPL-3.0-or-later
"""Mail recovers by itself from a relay outage: the waiting invitations go as soon as the relay answers,
without a restart, and a restart tries the queue at once. Real `invito serve` with the default
``retry_seconds`` and ``probe_seconds``, the caldav client, an aiosmtpd relay on 127.0.0.1 that starts late.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import psycopg

from invito.plugins.imip.spool import SpoolEntry
from tests.e2e.conftest import Server, database_of, free_port, restart, start, stop
from tests.e2e.mailsink import start_sink
from tests.e2e.test_delivery_status import queue_list, section
from tests.e2e.test_invitations_by_mail import calendar_part
from tests.e2e.test_scheduling import calendar, event

GRACE = "mailto:grace@client.example.net"
GINO = "mailto:gino@partner.example.org"


def relay_settings(port: int) -> dict[str, dict[str, str]]:
    """A relay on ``port``, every retry setting at its default: a relay outage must not wait out a backoff."""
    return {"smtp": {"host": "127.0.0.1", "port": str(port), "security": "none", "sender": "invito@cal.example.com"},
            "imip": {"reply_address": "invito+{token}@cal.example.com"}}


def invite(srv: Server, *guests: str) -> str:
    uid = str(uuid.uuid4())
    extra = "\r\n".join(f"ATTENDEE;CN=Guest;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:{g}" for g in guests)
    calendar(srv, "alice").save_event(event(uid, attendees=(), extra=extra))
    return uid


def rows(srv: Server, title: str, uid: str, text: str, count: int, timeout: float = 20) -> list[str]:
    """The rows about ``uid`` in section ``title`` of `invito queue list`, once ``count`` of them say ``text``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [row for row in section(queue_list(srv), title) if uid in row]
        if sum(text in row for row in found) >= count:
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.2)


def cells(row: str) -> list[str]:
    """A row's columns (two spaces apart): ID, RECIPIENT, METHOD, UID, ATTEMPTS or STATUS, NEXT TRY or AT..."""
    return re.split(r"\s{2,}", row.strip())


def log_lines(srv: Server, text: str) -> list[str]:
    return [line for line in srv.log.read_text(errors="replace").splitlines() if text in line]


def left_by_an_older_version(srv: Server, states: dict[str, dict]) -> None:
    """The one waiting message's recipients in ``states`` as an older Invito left them (a state without
    "stage" is from before that field), written while ``srv`` is stopped: its spool file, or its rows."""
    url = database_of(srv)
    if not url:
        [path] = (srv.data / "spool" / "outbound" / "queue").glob("*.json")
        record = json.loads(path.read_text())
        record["recipients"] = states
        path.write_text(json.dumps(record))
        return
    with psycopg.connect(url) as conn:
        for recipient, state in states.items():
            stage = state.get("stage")  # NULL, as migrate-to-db copies such a file
            entry = SpoolEntry("", "", "", "", recipient, "", 0.0, next_try=state["next_try"], stage=stage)
            assert conn.execute("UPDATE invito_outbox_delivery SET attempts = %s, next_try = %s, last_error = %s, "
                                "stage = %s, ready_at = %s WHERE recipient = %s AND state = 'queued'",
                                (state["attempts"], state["next_try"], state["last_error"], stage, entry.ready_at,
                                 recipient)).rowcount == 1


def test_relay_down_at_the_put_and_up_5_s_later_the_invitation_arrives_within_30_s(tmp_path: Path) -> None:
    port = free_port()  # nothing listens yet
    proc, srv = start(tmp_path, relay_settings(port))
    controller = None
    try:
        put_at = time.monotonic()
        uid = invite(srv, GRACE)
        [row] = rows(srv, "Outbound (waiting)", uid, f"cannot reach 127.0.0.1:{port}", 1)  # the admin sees why
        assert cells(row)[4] == "0"  # ATTEMPTS: none of its own spent on the relay's outage
        time.sleep(max(0.0, put_at + 5 - time.monotonic()))  # the relay comes back 5 s after the PUT
        controller, sink = start_sink(port)
        [received] = sink.wait_for(1, timeout=max(0.0, put_at + 30 - time.monotonic()))
        method, invitation = calendar_part(received.message)
        assert (received.recipients, method) == (["grace@client.example.net"], "REQUEST")
        assert str(invitation.walk("VEVENT")[0]["UID"]) == uid
    finally:
        stop(proc)
        if controller is not None:
            controller.stop()
    [down] = log_lines(srv, "unreachable")
    assert down.endswith(f"[WARNING] relay 127.0.0.1:{port} unreachable: cannot reach 127.0.0.1:{port}: "
                         "Connection refused; 1 message waits; probing every 15 s")
    [back] = log_lines(srv, "back; sending")
    assert back.endswith(f"[INFO] relay 127.0.0.1:{port} back; sending 1 waiting message")


def test_at_start_the_queue_is_tried_at_once_and_a_guests_own_backoff_is_kept(tmp_path: Path) -> None:
    """The spool as the version before left it after a relay outage: the next try an hour ahead, with no
    word of why. Beside it a guest whose own mail server said 4xx, who waits for their own next try."""
    port = free_port()
    proc, srv = start(tmp_path, relay_settings(port))
    try:
        uid = invite(srv, GRACE, GINO)
        rows(srv, "Outbound (waiting)", uid, f"cannot reach 127.0.0.1:{port}", 2)
    finally:
        stop(proc)
    later = time.time() + 3600
    left_by_an_older_version(srv, {
        GRACE: {"attempts": 4, "next_try": later, "last_error": f"cannot reach 127.0.0.1:{port}: Connection refused"},
        GINO: {"attempts": 2, "next_try": later, "last_error": "451 4.7.1 greylisted", "stage": "recipient"}})
    controller, sink = start_sink(port)
    proc = restart(srv)
    try:
        [received] = sink.wait_for(1)
        assert received.recipients == ["grace@client.example.net"]
        [done] = rows(srv, "Outbound (done)", uid, " 1.1 ", 1)  # recorded once the batch is over
        assert cells(done)[1] == "grace@client.example.net"
        [row] = rows(srv, "Outbound (waiting)", uid, "451 4.7.1 greylisted", 1)
        assert cells(row)[1] == "gino@partner.example.org" and cells(row)[4] == "2" and cells(row)[5] != "now"
        assert [r.recipients for r in sink.received] == [["grace@client.example.net"]]
    finally:
        stop(proc)
        controller.stop()
