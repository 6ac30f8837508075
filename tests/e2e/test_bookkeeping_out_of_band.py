# SPDX-License-Identifier: GPL-3.0-or-later
"""Invito's own bookkeeping (when each answer was given, when the meeting last moved) never reaches a
client: after a guest's answer by mail, an internal attendee's answer and a move, every object a client
reads over HTTP (the organizer's event, the attendee's copy, inbox items) carries no ``X-INVITO``, while
what the bookkeeping is for still works: an older answer and an answer to the old time are refused."""
from __future__ import annotations

from pathlib import Path

import icalendar
import psycopg
import requests

from tests.e2e.conftest import PASSWORD, Server, database_of, free_port, restart, side_records, start, stop
from tests.e2e.mailsink import MailSink
from tests.e2e.test_replies_by_mail import (GINO, GRACE, answer, hours_ago, inbound_settings, invite,
                                            organizers_object, quarantined, send, wait_listening, wait_partstat)
from tests.e2e.test_replies_by_mail import replying  # noqa: F401  (the fixture: one server with a listener)
from tests.e2e.test_scheduling import attendee, copy_of, set_partstat

BOB = "mailto:bob@example.com"


def raw_objects(srv: Server, user: str) -> dict[str, str]:
    """Every object in ``user``'s calendars and inbox, as a plain GET over HTTP returns it, by URL."""
    principal = srv.principal(user)
    urls = [str(o.url) for c in principal.calendars() for o in c.objects()]
    urls += [str(i.url) for i in principal.schedule_inbox().get_items()]
    found = {}
    for url in urls:
        response = requests.get(url, auth=(user, PASSWORD), timeout=10)
        assert response.status_code == 200, url
        found[url] = response.text
    return found


def assert_no_bookkeeping(srv: Server, *users: str) -> None:
    for user in users:
        objects = raw_objects(srv, user)
        assert objects, f"{user} has nothing stored"
        leaking = [url for url, text in objects.items() if "X-INVITO" in text.upper()]
        assert not leaking, leaking
        # REPORT (what sync clients use) serves the same objects
        assert not [o.url for c in srv.principal(user).calendars() for o in c.events()
                    if "X-INVITO" in o.data.upper()]


def move(srv: Server, uid: str) -> None:
    """The organizer moves the meeting an hour later in her calendar program."""
    obj = organizers_object(srv, uid)
    obj.data = obj.data.replace("Rome:20301010T100000", "Rome:20301010T110000") \
                       .replace("Rome:20301010T090000", "Rome:20301010T100000")
    obj.save()


def test_answers_and_a_move_leave_no_bookkeeping_in_what_clients_read(
        replying: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = replying
    uid, invitations = invite(srv, sink)

    # An external guest answers by mail; a replay stamped earlier is still refused as older.
    address, declined = answer(invitations[GRACE], GRACE, "DECLINED", stamp=hours_ago(1))
    _, accepted = answer(invitations[GRACE], GRACE, "ACCEPTED", stamp=hours_ago(2))
    send(port, address, declined)
    wait_partstat(srv, uid, GRACE, "DECLINED")
    assert_no_bookkeeping(srv, "alice")
    send(port, address, accepted)
    assert "older" in quarantined(srv, 1)[0]
    assert attendee(copy_of(srv, "alice", uid), GRACE).params["PARTSTAT"] == "DECLINED"

    # An internal attendee answers in his own calendar.
    set_partstat(srv, "bob", uid, "ACCEPTED")
    assert attendee(copy_of(srv, "alice", uid), BOB).params["PARTSTAT"] == "ACCEPTED"
    assert_no_bookkeeping(srv, "alice", "bob")

    # The organizer moves the meeting: an answer to the old time is stale.
    before = organizers_object(srv, uid).data
    move(srv, uid)
    moved = copy_of(srv, "alice", uid)
    assert moved.walk("VEVENT")[0]["DTSTART"].to_ical() == b"20301010T100000"
    assert organizers_object(srv, uid).data != before
    assert_no_bookkeeping(srv, "alice", "bob")
    gino, old_time = answer(invitations[GINO], GINO, "ACCEPTED")  # to the invitation from before the move
    send(port, gino, old_time)
    reasons = quarantined(srv, 2)
    assert any("stale" in r for r in reasons), reasons
    assert attendee(copy_of(srv, "alice", uid), GINO).params["PARTSTAT"] == "NEEDS-ACTION"


def stored_event(srv: Server, user: str, uid: str) -> bytes:
    """``user``'s stored object of ``uid`` as the backend holds it (not as HTTP serves it)."""
    url = database_of(srv)
    if not url:
        [path] = [p for p in srv.data.rglob(f"{user}/work/*.ics") if uid in p.read_text()]
        return path.read_bytes()
    with psycopg.connect(url) as conn:
        (text,) = conn.execute("SELECT text FROM dav_item WHERE owner = %s AND uid = %s", (user, uid)).fetchone()
    return text.encode()


def store_event(srv: Server, user: str, uid: str, data: bytes) -> None:
    """Replace ``user``'s stored object of ``uid`` behind the server's back (it is stopped), as an older
    Invito stored it."""
    url = database_of(srv)
    if not url:
        [path] = [p for p in srv.data.rglob(f"{user}/work/*.ics") if uid in p.read_text()]
        path.write_bytes(data)
        return
    with psycopg.connect(url) as conn:
        assert conn.execute("UPDATE dav_item SET text = %s WHERE owner = %s AND uid = %s",
                            (data.decode(), user, uid)).rowcount == 1


def test_the_side_record_goes_with_the_event(replying: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = replying
    uid, invitations = invite(srv, sink)
    address, declined = answer(invitations[GRACE], GRACE, "DECLINED", stamp=hours_ago(1))
    send(port, address, declined)
    wait_partstat(srv, uid, GRACE, "DECLINED")
    records = side_records(srv)
    assert [r for r in records if uid in r], "the answer's time is kept beside the event"
    organizers_object(srv, uid).delete()
    assert not [r for r in side_records(srv) if uid in r]


def test_an_event_stored_by_an_older_version_is_cleaned_on_its_next_write(
        tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    port = free_port()
    proc, srv = start(tmp_path, inbound_settings(relay[0], port))
    try:
        wait_listening(port)
        uid, invitations = invite(srv, relay[1])
    finally:
        stop(proc)
    # As Invito stored answers before: Grace declined an hour ago, the time kept on her ATTENDEE line.
    legacy = icalendar.Calendar.from_ical(stored_event(srv, "alice", uid))
    attendee(legacy, GRACE).params.update({"PARTSTAT": "DECLINED", "X-INVITO-REPLY-DTSTAMP": hours_ago(1)})
    store_event(srv, "alice", uid, legacy.to_ical())
    proc = restart(srv)
    try:
        wait_listening(port)
        address, older = answer(invitations[GRACE], GRACE, "ACCEPTED", stamp=hours_ago(2))
        send(port, address, older)
        assert "older" in quarantined(srv, 1)[0]  # the stamp in the file is honoured
        _, newer = answer(invitations[GRACE], GRACE, "TENTATIVE")
        send(port, address, newer)
        wait_partstat(srv, uid, GRACE, "TENTATIVE")
        assert_no_bookkeeping(srv, "alice")  # moved out of the file by that write
        send(port, address, older)
        assert len(quarantined(srv, 2)) == 2  # and still ordering answers
        assert attendee(copy_of(srv, "alice", uid), GRACE).params["PARTSTAT"] == "TENTATIVE"
    finally:
        stop(proc)
