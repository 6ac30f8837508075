# SPDX-License-Identifier: GPL-3.0-or-later
"""The inbound queue on a real PostgreSQL: stored before the 250, applied exactly once by whichever
processor claims it, left pending by a crash, quarantined with its reason."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import Iterator

import psycopg
import pytest

from invito.plugins.imip.inbound_spool import PageAnswer
from invito.storage.pg.db import Database
from invito.storage.pg.inbound import InboundMail, InboundQueue, NoTransaction

RAW = b"From: guest@partner.example.org\r\nSubject: Accepted\r\n\r\nyes\r\n"


@pytest.fixture
def db(database: str) -> Iterator[Database]:
    db = Database(database, max_size=4)
    with db.write() as conn:  # what "applying" writes here: one row per message, by whom
        conn.execute("CREATE TABLE applied (id text, processor text)")
    yield db
    db.close()


def accept(queue: InboundQueue, n: int = 0) -> InboundMail:
    return queue.accept(RAW + b"%d" % n, "guest@partner.example.org", ["invito+tok@cal.example.com"], "127.0.0.1:2525")


def applied(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id, processor FROM applied").fetchall()


def test_accepted_mail_is_committed_before_accept_returns(db, database) -> None:
    """Even from a thread whose own write then fails: the 250 promises the message, whatever follows."""
    queue = InboundQueue(db)
    with pytest.raises(ValueError):
        with db.write():
            mail = accept(queue)
            raise ValueError("something else this thread wrote failed")
    other_node = InboundQueue(Database(database, max_size=1))
    [pending] = other_node.pending()
    assert pending == mail and pending.raw() == mail.raw() == RAW + b"0"
    assert (pending.mail_from, pending.recipients, pending.peer) == \
        ("guest@partner.example.org", ("invito+tok@cal.example.com",), "127.0.0.1:2525")
    other_node.db.close()


def process_all(url: str, name: str, start: threading.Barrier) -> None:
    """One node's processor: claim, apply (a row in ``applied``), done, in one transaction each."""
    db = Database(url, max_size=3)
    queue = InboundQueue(db)

    def one(conn: psycopg.Connection) -> bool:
        mail = queue.claim()
        if mail is None:
            return False
        queue.start(mail)
        conn.execute("INSERT INTO applied VALUES (%s, %s)", (mail.id, name))
        queue.done(mail)
        return True

    start.wait()
    while db.run(one):
        pass
    db.close()


def test_two_processors_apply_each_of_1000_messages_once(db, database) -> None:
    queue = InboundQueue(db)
    ids = {accept(queue, n).id for n in range(1000)}
    start = threading.Barrier(2)
    threads = [threading.Thread(target=process_all, args=(database, name, start)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = applied(database)
    assert len(rows) == 1000 and {i for i, _ in rows} == ids
    assert {p for _, p in rows} == {"a", "b"}  # both nodes took part
    assert queue.pending() == []
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM invito_inbound_run").fetchone()[0] == 0


def test_a_failure_before_done_leaves_the_message_pending_and_unapplied(db, database) -> None:
    queue = InboundQueue(db)
    mail = accept(queue)
    with pytest.raises(RuntimeError):
        with db.write() as conn:
            claimed = queue.claim()
            assert claimed == mail
            conn.execute("INSERT INTO applied VALUES (%s, 'a')", (mail.id,))
            raise RuntimeError("the storage write failed")
    assert applied(database) == [] and queue.pending() == [mail]
    with pytest.raises(NoTransaction):  # a claim outside the applying transaction would unlock at once
        queue.claim()


KILLED = """
import sys
from invito.storage.pg.db import Database
from invito.storage.pg.inbound import InboundQueue
db = Database(sys.argv[1], max_size=2)
queue = InboundQueue(db)
with db.write() as conn:
    mail = queue.claim()
    queue.start(mail)
    conn.execute("INSERT INTO applied VALUES (%s, 'killed')", (mail.id,))
    print("applied, not done", flush=True)
    sys.stdin.readline()  # killed here, before done and the commit
"""


def test_a_node_killed_before_done_leaves_the_message_to_another_and_counts_the_run(db, database) -> None:
    queue = InboundQueue(db)
    mail = accept(queue)
    node = subprocess.Popen([sys.executable, "-c", KILLED, database], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout.readline() == "applied, not done\n"
        with db.write():
            assert queue.claim() is None  # held by the other node's processor: not taken twice
        node.send_signal(signal.SIGKILL)
        node.wait(10)
    finally:
        node.kill()
    deadline = time.monotonic() + 10  # until the server has noticed its client died and rolled back
    while True:
        with db.write() as conn:
            claimed = queue.claim()
            if claimed is not None or time.monotonic() > deadline:
                break
    assert claimed == mail and applied(database) == []
    assert queue.start(mail) == 1  # the killed run counts: a message that kills nodes is set aside
    queue.finish(mail)
    assert queue.start(mail) == 0  # a run that finished leaves no count behind


def test_quarantine_is_a_state_with_its_reason(db, database) -> None:
    queue = InboundQueue(db)
    mail = accept(queue)
    with db.write():
        claimed = queue.claim()
        assert claimed is not None
        queue.start(claimed)
        assert queue.quarantine(claimed, "no iTIP message in the mail") == queue.quarantined
    queue.set_aside_answer(PageAnswer("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", "mailto:guest@partner.example.org",
                                      "mailto:alice@example.com", "review-1", "tag", "127.0.0.1"),
                           "the answer was refused on the page")
    assert queue.pending() == []
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT id, state, reason FROM invito_inbound ORDER BY id").fetchall() == [
            (mail.id, "quarantined", "no iTIP message in the mail"),
            (conn.execute("SELECT max(id) FROM invito_inbound").fetchone()[0], "quarantined",
             "the answer was refused on the page")]
        assert conn.execute("SELECT count(*) FROM invito_inbound_run").fetchone()[0] == 0


def test_mail_accepted_on_one_node_wakes_the_other_nodes_processor(db, database) -> None:
    waiting = InboundQueue(Database(database, max_size=1), poll_seconds=3600)
    arrived = waiting.arrived
    assert waiting._wakeup.listening(10)
    arrived.wait(1)  # the wake-up every (re)connection gives
    arrived.clear()
    accepted = time.monotonic()
    accept(InboundQueue(db))
    assert arrived.wait(1) and time.monotonic() - accepted < 0.5
    waiting.close()
    waiting.db.close()
