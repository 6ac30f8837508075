# SPDX-License-Identifier: GPL-3.0-or-later
"""The transactional outbox on a real PostgreSQL: rows in the event's transaction, claims that never
overlap, leases that expire, wake-ups by NOTIFY, and the sender's loop on top."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from email.message import EmailMessage
from typing import Iterator

import icalendar
import psycopg
import pytest

from invito.plugins.imip.sender import Sender
from invito.plugins.imip.smtp import Delivery, Outcome, SmtpSettings, Stage
from invito.plugins.imip.spool import FORWARD, SpoolEntry
from invito.plugins.itip import ITipMessage
from invito.storage.pg.db import Database
from invito.storage.pg.outbox import NoTransaction, Outbox

ORG = "mailto:alice@example.com"
SETTINGS = SmtpSettings(host="relay.example.com", sender="invito@cal.example.com")
SENT = Outcome(Delivery.SENT, "accepted by relay.example.com:587")
GREYLISTED = Outcome(Delivery.TEMPORARY, "451 4.7.1 greylisted", Stage.RECIPIENT, 451)
REFUSED = Outcome(Delivery.PERMANENT, "550 5.1.1 no such user", Stage.RECIPIENT, 550)


def message(uid: str) -> ITipMessage:
    cal = icalendar.Calendar.from_ical("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nMETHOD:REQUEST\r\n"
                                       f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20300101T000000Z\r\n"
                                       "END:VEVENT\r\nEND:VCALENDAR\r\n")
    return ITipMessage("REQUEST", uid, ORG, (), cal)


def guests(n: int, prefix: str = "guest") -> list[str]:
    return [f"mailto:{prefix}{i}@partner.example.org" for i in range(n)]


@pytest.fixture
def db(database: str) -> Iterator[Database]:
    db = Database(database, max_size=4)
    yield db
    db.close()


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def queue(db: Database, events: int, per_event: int) -> None:
    """``events`` invitations to ``per_event`` guests each, committed in one write."""
    outbox = Outbox(db)
    with db.write():
        for n in range(events):
            outbox.prepare(message(f"uid-{n}"), guests(per_event))


def test_messages_prepared_in_a_write_that_rolls_back_leave_nothing(db, database) -> None:
    outbox = Outbox(db)
    with pytest.raises(ValueError):
        with db.write():
            outbox.prepare(message("uid-1"), guests(50))
            raise ValueError("the organizer's write failed after scheduling")
    assert outbox.queued() == []
    assert count(database, "invito_outbox_message") == 0 and count(database, "invito_outbox_delivery") == 0
    with pytest.raises(NoTransaction):  # outside a write it could never roll back with the event
        outbox.prepare(message("uid-1"), guests(1))


def test_a_committed_message_is_queued_whole_for_each_recipient(db) -> None:
    outbox = Outbox(db)
    with db.write():
        entry_id = outbox.prepare(message("uid-1"), guests(2), changes=("time",), notes=(("from", "bob"),))
        outbox.commit([entry_id])  # the database already decides: nothing to do
        forward_id = outbox.prepare_mail("uid-1", "mailto:guest0@partner.example.org", ORG, b"Subject: hi\r\n\r\nok")
    entries = outbox.queued()
    assert [(e.id, e.recipient) for e in entries] == [(entry_id, g) for g in guests(2)] + [(forward_id, ORG)]
    first = entries[0]
    assert (first.method, first.uid, first.sender, first.changes, first.notes) == \
        ("REQUEST", "uid-1", ORG, ("time",), (("from", "bob"),))
    assert "UID:uid-1" in first.ics and (first.attempts, first.next_try, first.stage) == (0, 0.0, "")
    assert (entries[2].method, entries[2].mail, entries[2].ics) == (FORWARD, b"Subject: hi\r\n\r\nok", "")


def claim_and_send(url: str, claimed: list[tuple[str, str]], start: threading.Barrier | None = None) -> None:
    """One node's sender without the relay: claim, record the outcome, remove; until nothing is left."""
    db = Database(url, max_size=2)
    outbox = Outbox(db, batch=100)
    if start is not None:
        start.wait()
    while batch := outbox.claim(time.time()):
        for entry in batch:
            claimed.append((entry.id, entry.recipient))
            outbox.record(entry, "1.1", "accepted")
            outbox.remove(entry)
    db.close()


def test_two_senders_claim_each_of_5000_deliveries_once(db, database) -> None:
    queue(db, 50, 100)
    claims: list[list[tuple[str, str]]] = [[], []]
    start = threading.Barrier(2)
    threads = [threading.Thread(target=claim_and_send, args=(database, claims[n], start)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = claims[0] + claims[1]
    assert len(every) == 5000 and len(set(every)) == 5000
    assert claims[0] and claims[1]  # both shared the work
    assert count(database, "invito_outbox_delivery") == 0 and count(database, "invito_outbox_message") == 0
    assert count(database, "invito_outbox_outcome") == 5000


CLAIMER = """
import json, sys, time
from invito.storage.pg.db import Database
from invito.storage.pg.outbox import Outbox
db = Database(sys.argv[1], max_size=2)
outbox = Outbox(db, batch=100)
sys.stdin.readline()  # both processes start claiming together
while batch := outbox.claim(time.time()):
    for entry in batch:
        print(json.dumps([entry.id, entry.recipient]), flush=True)
        outbox.record(entry, "1.1", "accepted")
        outbox.remove(entry)
db.close()
"""


def test_two_processes_claim_each_of_5000_deliveries_once(db, database) -> None:
    queue(db, 10, 500)
    processes = [subprocess.Popen([sys.executable, "-c", CLAIMER, database], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for p in processes:
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    claims = [[tuple(json.loads(line)) for line in out.splitlines()] for out in outputs]
    every = Counter(claims[0] + claims[1])
    assert len(every) == 5000 and set(every.values()) == {1}
    assert claims[0] and claims[1]
    assert count(database, "invito_outbox_delivery") == 0


def test_a_claim_whose_lease_expires_is_claimed_again(db, database) -> None:
    """A node killed mid-send never reports an outcome: once its lease ends another node sends it."""
    queue(db, 1, 3)
    now = time.time()
    dead, alive = Outbox(db, lease=60), Outbox(Database(database, max_size=2), lease=60)
    assert len(dead.claim(now)) == 3
    assert alive.claim(now + 59) == []  # still leased
    assert alive.next_ready(now + 59) == pytest.approx(now + 60)  # the other's lease counts until it ends
    again = alive.claim(now + 61)
    assert len(again) == 3
    dead.update(again[0])  # the old holder, come back late, cannot overwrite what is not its own
    for entry in again:
        alive.record(entry, "1.1", "accepted")
        alive.remove(entry)
    assert alive.queued() == [] and len(alive.recorded()) == 3
    alive.db.close()


def test_a_restarted_server_releases_what_its_killed_sender_held_at_once(db) -> None:
    """The holder names its host and process: a sender of this host whose process is gone gets its claims
    released by the next start (``release_the_dead``); a live process's and another host's stay leased."""
    queue(db, 3, 1)
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()
    gone, running, elsewhere = Outbox(db), Outbox(db), Outbox(db)
    gone.holder = gone.holder.replace(f":{os.getpid()}:", f":{killed.pid}:")
    elsewhere.holder = "other-host" + elsewhere.holder[elsewhere.holder.index(":"):]
    now = time.time()
    for outbox in (gone, running, elsewhere):
        assert len(outbox.claim(now, limit=1)) == 1
    restarted = Outbox(db)
    assert restarted.claim(now) == []  # everything is leased
    assert restarted.release_the_dead() == [gone.holder]
    [again] = restarted.claim(now)
    assert restarted.claim(now + 1) == [again]  # the one the killed sender held, now the restarted one's


def test_outcomes_temporary_and_final(db, database) -> None:
    queue(db, 1, 2)
    now = time.time()
    outbox = Outbox(db)
    first, second = outbox.claim(now)
    outbox.update(SpoolEntry(**{**first.__dict__, "attempts": 1, "next_try": now + 60,
                                "last_error": "451 4.7.1 greylisted", "stage": "recipient"}))
    outbox.record(second, "5.2", "550 no such user")
    outbox.fail(second, "550 no such user")
    assert outbox.claim(now + 1) == []  # backing off; the failed one is never due again
    assert outbox.next_ready(now + 1) == pytest.approx(now + 60)
    [waiting] = outbox.queued()
    assert (waiting.recipient, waiting.attempts, waiting.last_error) == (first.recipient, 1, "451 4.7.1 greylisted")
    assert [e.recipient for e in outbox.claim(now + 60)] == [first.recipient]
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT recipient, state, reason FROM invito_outbox_delivery WHERE state = 'failed'"
                            ).fetchall() == [(second.recipient, "failed", "550 no such user")]
    assert [(o["recipient"], o["status"]) for o in outbox.recorded()] == [(second.recipient, "5.2")]
    outbox.prune(0, time.time() + 1)
    assert outbox.recorded() == []


def test_a_commit_on_another_node_wakes_a_waiting_sender_at_once(db, database) -> None:
    """NOTIFY is delivered at commit, to every node: no wake-up before it, well under a second after."""
    waiting = Outbox(Database(database, max_size=2), poll_seconds=3600)
    arrived = waiting.arrived
    assert waiting._wakeup.listening(10)
    arrived.wait(1)  # the wake-up every (re)connection gives
    arrived.clear()
    other = Outbox(db)
    with db.write():
        other.prepare(message("uid-1"), guests(1))
        assert not arrived.wait(0.2)  # not before the commit
        committed = time.monotonic()
    assert arrived.wait(1)
    assert time.monotonic() - committed < 0.5
    waiting.close()
    waiting.db.close()


class Relay:
    """A scripted relay: each recipient's outcome by its address, every send recorded."""

    def __init__(self, by_address: dict[str, Outcome]) -> None:
        self.by_address = by_address
        self.sent: list[tuple[str, str]] = []

    def send(self, msg: EmailMessage, from_addr: str, to_addr: str) -> Outcome:
        self.sent.append((to_addr, str(msg["Subject"])))
        return self.by_address.get(to_addr, SENT)

    def close(self) -> None:
        pass


def build(entry: SpoolEntry) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = entry.uid
    msg.set_content(entry.ics)
    return msg


def test_the_sender_loop_sends_the_outbox_and_records_every_outcome(db) -> None:
    queue(db, 3, 100)
    outbox = Outbox(db, batch=40)  # several claims per pass of the loop
    relay = Relay({"guest7@partner.example.org": GREYLISTED, "guest8@partner.example.org": REFUSED})
    statuses: list[tuple[str, str]] = []
    sender = Sender(outbox, SETTINGS, build, lambda e, status, detail: statuses.append((e.recipient, status)),
                    transport=relay, next_ready=outbox.next_ready)
    now = time.time()
    while sender._until_next(now) == 0:
        sender.process_due(now)
    assert len(relay.sent) == 300 and len(set(relay.sent)) == 300
    assert sorted(s for _, s in statuses) == ["1.1"] * 294 + ["5.2"] * 3  # 3 greylisted wait
    assert {e.recipient for e in outbox.queued()} == {"mailto:guest7@partner.example.org"}
    assert sender._until_next(now) == pytest.approx(60, abs=1)  # the greylisted ones back off
    assert len([o for o in outbox.recorded() if o["status"] == "1.1"]) == 294


def test_a_delivery_sent_again_after_a_lost_lease_has_the_same_message_id(db, configuration) -> None:
    """At the SMTP boundary a kill after the relay's 250 means a second send: the row keeps what the
    Message-ID is made of, so the second one is recognisably the same message."""
    from invito.server.mail import Composer

    configuration.update({"smtp": {"sender": "invito@cal.example.com"}}, "test")
    cal = icalendar.Calendar.from_ical(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:uid-1\r\n"
        "DTSTAMP:20300101T000000Z\r\nDTSTART:20300102T090000Z\r\nDTEND:20300102T100000Z\r\nSUMMARY:Planning\r\n"
        "SEQUENCE:2\r\nORGANIZER:mailto:alice@example.com\r\nATTENDEE:mailto:guest0@partner.example.org\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n")
    with db.write():
        Outbox(db).prepare(ITipMessage("REQUEST", "uid-1", ORG, (), cal), guests(1))
    now = time.time()
    [first] = Outbox(db, lease=60).claim(now)
    sent = Composer(configuration)(first)
    [again] = Outbox(db, lease=60).claim(now + 61)  # the first sender died after the relay took it
    assert again == first
    assert Composer(configuration)(again)["Message-ID"] == sent["Message-ID"]


def test_two_running_senders_send_what_a_commit_queues_once_each_and_at_once(db, database) -> None:
    """Two nodes' sender loops, idle and woken only by NOTIFY (the poll is an hour): 1,000 invitations
    committed on a third connection all go out, none twice, the first one well under a second later."""
    relay = Relay({})
    lock, first_sent, all_sent = threading.Lock(), threading.Event(), threading.Event()

    def send(msg: EmailMessage, from_addr: str, to_addr: str) -> Outcome:
        with lock:
            relay.sent.append((to_addr, str(msg["Subject"])))
            first_sent.set()
            if len(relay.sent) >= 1000:
                all_sent.set()
        return SENT

    relay.send = send  # type: ignore[method-assign]
    stop = threading.Event()
    nodes = []
    for _ in range(2):
        outbox = Outbox(Database(database, max_size=2), batch=50, poll_seconds=3600)
        sender = Sender(outbox, SETTINGS, build, lambda *_: None, transport=relay, next_ready=outbox.next_ready)
        wake = outbox.arrived
        assert outbox._wakeup.listening(10)
        nodes.append((outbox, threading.Thread(target=sender.run, args=(stop, wake))))
    for _, thread in nodes:
        thread.start()
    try:
        committed = time.monotonic()
        queue(db, 10, 100)
        assert first_sent.wait(5) and time.monotonic() - committed < 1.0
        assert all_sent.wait(120)
    finally:
        stop.set()
        for outbox, thread in nodes:
            outbox.arrived.set()
            thread.join()
            outbox.close()
            outbox.db.close()
    assert len(relay.sent) == 1000 and len(set(relay.sent)) == 1000
    assert count(database, "invito_outbox_delivery") == 0
