# SPDX-License-Identifier: GPL-3.0-or-later
"""Several `invito serve` nodes on one database: what one node writes the other serves, answers arriving
at either node are all applied, each invitation leaves exactly once whichever node sends it, and a node
killed in the middle of its work loses nothing and leaves nothing half-done."""
from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import smtplib
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import caldav
import icalendar
import psycopg
import pytest
import requests

from tests.e2e.conftest import PASSWORD, Server, database_of, free_port, restart, start, stop, write_config
from tests.e2e.mailsink import MailSink
from tests.e2e.test_invitations_by_mail import mail_settings
from tests.e2e.test_replies_by_mail import answer, wait_listening
from tests.e2e.test_rsvp_page import answer_links, form_of

pytestmark = pytest.mark.only_backend("postgresql")  # several nodes share a database; folders are one node's


@dataclass
class Node:
    proc: subprocess.Popen
    srv: Server
    smtp_port: int


def nodes_on_one_database(tmp_path: Path, settings: dict[str, dict[str, str]], count: int = 2) -> list[Node]:
    """``count`` nodes on one database and one users file, each with its own HTTP and SMTP port and an
    RSVP public URL of its own."""
    users = tmp_path / "users"
    nodes: list[Node] = []
    for n in range(count):
        port, smtp_port = free_port(), free_port()
        own = {section: dict(values) for section, values in settings.items()}
        own.setdefault("auth", {})["htpasswd_filename"] = str(users)
        own.setdefault("imip", {})["listen"] = f"127.0.0.1:{smtp_port}"
        own.setdefault("rsvp", {}).setdefault("public_url", f"http://127.0.0.1:{port}")
        folder = tmp_path / f"node{n}"
        folder.mkdir()
        if not nodes:
            proc, srv = start(folder, own, port=port)
        else:
            own["invito"] = {**own.get("invito", {}), "database": database_of(nodes[0].srv)}
            config = write_config(folder, port, own)
            srv = Server(url=f"http://127.0.0.1:{port}/", data=folder / "data", config=config, log=folder / "server.log")
            proc = restart(srv)
        wait_listening(smtp_port)
        nodes.append(Node(proc, srv, smtp_port))
    return nodes


@pytest.fixture
def relay_settings(relay: tuple[int, MailSink]) -> dict[str, dict[str, str]]:
    settings = mail_settings(relay[0])
    settings["smtp"]["lease_seconds"] = "3"  # a dead node's deliveries are another's after 3 s
    settings["imip"]["notify_organizer"] = "off"  # the relay sees only the guests' mail
    settings["rsvp"] = {"requests_per_minute": "1000000"}  # every page answer here comes from 127.0.0.1
    return settings


@pytest.fixture
def two_nodes(tmp_path: Path, relay_settings: dict[str, dict[str, str]]) -> Iterator[list[Node]]:
    nodes = nodes_on_one_database(tmp_path, relay_settings)
    try:
        yield nodes
    finally:
        for node in nodes:
            stop(node.proc)


def work_calendar(srv: Server, user: str = "alice") -> caldav.Calendar:
    """``user``'s calendar "work" as this node serves it, made on first use (by whichever node)."""
    principal = srv.principal(user)
    for found in principal.calendars():
        if found.url.path.rstrip("/").endswith("/work"):
            return found
    return principal.make_calendar(name="work", cal_id="work")


def meeting(uid: str, guests: list[str], summary: str = "All hands") -> str:
    return "\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Invito tests//EN", "BEGIN:VEVENT", f"UID:{uid}",
        "DTSTAMP:20300101T000000Z", "DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", f"SUMMARY:{summary}",
        "ORGANIZER;CN=Alice:mailto:alice@example.com", "ATTENDEE;CN=Alice;PARTSTAT=ACCEPTED:mailto:alice@example.com",
        *(f"ATTENDEE;CN=Guest {n};PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{g}" for n, g in enumerate(guests)),
        "END:VEVENT", "END:VCALENDAR", ""])


def guests(count: int, tag: str = "g") -> list[str]:
    return [f"{tag}{n}@guests.example.net" for n in range(count)]


def wait_until(condition, timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def sent_lines(node: Node) -> int:
    """Deliveries this node's sender handed to the relay, from its log."""
    return node.srv.log.read_text(errors="replace").count(": sent, ")


def test_a_put_on_one_node_is_in_the_other_nodes_next_sync(two_nodes: list[Node]) -> None:
    a, b = two_nodes
    on_a, on_b = work_calendar(a.srv), work_calendar(b.srv)
    before = on_b.objects_by_sync_token(load_objects=False)
    uid = str(uuid.uuid4())
    on_a.save_event(meeting(uid, []))
    changed = on_b.objects_by_sync_token(sync_token=before.sync_token, load_objects=True)
    assert [icalendar.Calendar.from_ical(o.data).walk("VEVENT")[0]["UID"] for o in changed] == [uid]


def test_a_thousand_answers_split_across_both_nodes_are_all_applied(two_nodes: list[Node],
                                                                    relay: tuple[int, MailSink]) -> None:
    """1,000 guests of one event answer, half by mail and half on the RSVP page, each half split across
    both nodes' listeners and pages, all at once."""
    a, b = two_nodes
    sink = relay[1]
    invited = guests(1000)
    uid = str(uuid.uuid4())
    work_calendar(a.srv).save_event(meeting(uid, invited))
    invitations = {r.recipients[0]: r.message for r in sink.wait_for(1000, timeout=180)}
    assert sorted(invitations) == sorted(invited)
    assert sent_lines(a) and sent_lines(b)  # both nodes sent some of them

    def give(n: int, guest: str) -> None:
        node = two_nodes[(n // 2) % 2]
        if n % 2 == 0:  # by mail, from the guest's mail program
            to, raw = answer(invitations[guest], "mailto:" + guest, "ACCEPTED")
            with smtplib.SMTP("127.0.0.1", node.smtp_port, timeout=30) as smtp:
                smtp.sendmail(guest, [to], raw)
        else:  # on the page, through whichever node the link is sent to
            link = urllib.parse.urlsplit(answer_links(invitations[guest])["accept"])
            page = requests.get(f"{node.srv.url.rstrip('/')}{link.path}?{link.query}", timeout=30)
            assert page.status_code == 200, page.text
            form = form_of(page.text)
            done = requests.post(node.srv.url.rstrip("/") + form.pop("action"), data={**form, "answer": "ACCEPTED"},
                                 allow_redirects=False, timeout=30)
            assert done.status_code == 303, done.text

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(give, range(len(invited)), invited))

    def answers() -> dict[str, str]:
        data = work_calendar(b.srv).event_by_uid(uid).data
        event = icalendar.Calendar.from_ical(data).walk("VEVENT")[0]
        return {str(p)[len("mailto:"):]: p.params.get("PARTSTAT") for p in event.get("ATTENDEE")}

    wait_until(lambda: list(answers().values()).count("ACCEPTED") == 1001, 300, "every answer applied", every=2)
    with psycopg.connect(database_of(a.srv)) as conn:
        left = conn.execute("SELECT state, count(*) FROM invito_inbound GROUP BY state").fetchall()
    assert left == []  # none pending, none quarantined


def invite_everyone(srv: Server, events: int, per_event: int, tag: str) -> set[str]:
    """``events`` events of ``per_event`` guests each, PUT on ``srv``; every guest invited (each to one)."""
    expected = set()
    on = work_calendar(srv)
    for e in range(events):
        invited = guests(per_event, f"{tag}{e}x")
        on.save_event(meeting(f"{tag}-{e}-{uuid.uuid4()}", invited))
        expected.update(invited)
    return expected


def delivered(sink: MailSink) -> list[tuple[str, str]]:
    """(guest, Message-ID) of each message the relay received, in arrival order (headers only: each
    guest of ``invite_everyone`` is invited to one event)."""
    return [(r.recipients[0], str(r.headers["Message-ID"])) for r in list(sink.received)]


def test_five_thousand_invitations_leave_both_nodes_exactly_once(two_nodes: list[Node],
                                                                 relay: tuple[int, MailSink]) -> None:
    a, b = two_nodes
    sink = relay[1]
    expected = invite_everyone(a.srv, 50, 100, "once")
    sink.wait_for(5000, timeout=300)
    time.sleep(2)  # what a second send of anything would need to arrive (leases are 3 s)
    got = delivered(sink)
    assert len(got) == 5000 and {guest for guest, _ in got} == expected
    assert len({message_id for _, message_id in got}) == 5000  # no Message-ID twice
    assert sent_lines(a) + sent_lines(b) == 5000 and min(sent_lines(a), sent_lines(b)) > 0


def test_a_node_killed_while_sending_loses_no_invitation(two_nodes: list[Node], relay: tuple[int, MailSink]) -> None:
    """Node B is killed (SIGKILL) halfway through 5,000 invitations: node A sends the rest, B's unfinished
    deliveries included once their lease ends; a message sent twice is the same message (its Message-ID)."""
    a, b = two_nodes
    sink = relay[1]
    expected = invite_everyone(a.srv, 50, 100, "kill")
    wait_until(lambda: len(sink.received) >= 2000, 300, "2,000 invitations sent", every=0.05)
    os.kill(b.proc.pid, signal.SIGKILL)
    b.proc.wait()
    sent_by_b = sent_lines(b)
    wait_until(lambda: {guest for guest, _ in delivered(sink)} >= expected, 300, "every invitation sent")
    got = delivered(sink)
    assert {guest for guest, _ in got} == expected  # none lost, none made up
    by_delivery: dict[str, set[str]] = {}
    for guest, message_id in got:
        by_delivery.setdefault(guest, set()).add(message_id)
    assert all(len(ids) == 1 for ids in by_delivery.values())  # a re-send carries the same Message-ID
    assert sent_by_b > 0 and len(got) - 5000 <= 200  # at most B's claimed batch went twice


def test_a_node_killed_during_a_put_leaves_the_event_with_all_its_deliveries_or_neither(tmp_path: Path) -> None:
    """A 50-guest PUT, the node killed at moments spread over how long such a PUT takes: each time, the
    database has the event and its 50 deliveries, or neither (no relay: deliveries wait in the outbox)."""
    [node] = nodes_on_one_database(tmp_path, {}, count=1)
    url = database_of(node.srv)
    work_calendar(node.srv)
    auth = ("alice", PASSWORD)

    def put(uid: str) -> None:
        requests.put(f"{node.srv.url}alice/work/{uid}.ics", data=meeting(uid, guests(50, uid[:8])), auth=auth,
                     headers={"Content-Type": "text/calendar; charset=utf-8"}, timeout=30)

    def warm_up() -> None:  # a login is checked once per process: the PUT's time is then the PUT's alone
        requests.request("PROPFIND", f"{node.srv.url}alice/work/", auth=auth, headers={"Depth": "0"}, timeout=30)

    warm_up()
    started = time.monotonic()
    put(str(uuid.uuid4()))
    duration = time.monotonic() - started
    outcomes = []
    try:
        for run in range(10):
            uid = str(uuid.uuid4())
            warm_up()
            writer = threading.Thread(target=lambda: _ignoring_errors(put, uid))
            writer.start()
            time.sleep(random.uniform(0, 1.5 * duration) if run > 1 else (0 if run == 0 else 2 * duration))
            os.kill(node.proc.pid, signal.SIGKILL)
            node.proc.wait()
            writer.join()
            with psycopg.connect(url) as conn:
                (events,) = conn.execute("SELECT count(*) FROM dav_item WHERE uid = %s", (uid,)).fetchone()
                (deliveries,) = conn.execute("SELECT count(*) FROM invito_outbox_delivery d JOIN invito_outbox_message m "
                                             "ON m.id = d.message WHERE m.uid = %s", (uid,)).fetchone()
            assert (events, deliveries) in ((0, 0), (1, 50)), f"run {run}: {events} event(s), {deliveries} deliveries"
            outcomes.append(events)
            node.proc = restart(node.srv)
    finally:
        stop(node.proc)
    assert 0 in outcomes and 1 in outcomes  # killed before the commit and after it, at least once each


def _ignoring_errors(put, uid: str) -> None:
    try:
        put(uid)
    except requests.RequestException:  # the node died under the request: what the client sees
        pass
