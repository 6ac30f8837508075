# SPDX-License-Identifier: GPL-3.0-or-later
"""`invito queue`'s admin methods on the database's queues, on a real PostgreSQL: the same answers as the
filesystem spools give, each change one transaction that a running sender or processor on any node sees."""
from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Iterator

import icalendar
import psycopg
import pytest

from invito.plugins.imip import queues
from invito.plugins.imip.inbound_spool import InboundSpool, PageAnswer
from invito.plugins.imip.spool import OutboundSpool, SpoolEntry
from invito.plugins.itip import ITipMessage
from invito.storage.pg.db import Database
from invito.storage.pg.inbound import InboundQueue
from invito.storage.pg.outbox import Outbox

ORG = "mailto:alice@example.com"
LATER = 4102444800.0  # 2100-01-01
ICS = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:review-1\r\n"
       "DTSTAMP:20300101T000000Z\r\nDTSTART:20300102T100000Z\r\nSUMMARY:Review\\, as sent\r\nEND:VEVENT\r\n"
       "END:VCALENDAR\r\n")
ANSWER = PageAnswer(ICS.replace("REQUEST", "REPLY"), "mailto:guest@partner.example.org", ORG, "review-1",
                    "a1b2c3d4e5f6", "192.0.2.9")


@pytest.fixture
def db(database: str) -> Iterator[Database]:
    db = Database(database, max_size=3)
    yield db
    db.close()


def invite(outbox: Outbox, *guests: str) -> str:
    recipients = [f"mailto:{g}" for g in guests]
    with outbox.db.write():
        return outbox.prepare(ITipMessage("REQUEST", "review-1", ORG, tuple(recipients), icalendar.Calendar.from_ical(ICS)),
                              recipients, changes=("time",), notes=(("from", "alice@example.com"),), sources=(ICS,))


def claimed(outbox: Outbox, guest: str) -> SpoolEntry:
    [entry] = [e for e in outbox.claim(time.time()) if e.recipient == f"mailto:{guest}"]
    return entry


def greylist(outbox: Outbox, guest: str) -> None:
    outbox.update(dataclasses.replace(claimed(outbox, guest), attempts=2, next_try=LATER,
                                      last_error="451 4.7.1 greylisted", stage="recipient"))


def test_both_backends_offer_the_same_admin_methods() -> None:
    """What `invito queue` calls exists on the spools and on the database queues with the same parameters."""
    for protocol, backends in ((queues.OutboundAdmin, (OutboundSpool, Outbox)),
                               (queues.InboundAdmin, (InboundSpool, InboundQueue))):
        names = [n for n, v in vars(protocol).items() if inspect.isfunction(v) and not n.startswith("_")]
        assert len(names) >= 7
        for name in names:
            wanted = list(inspect.signature(getattr(protocol, name)).parameters)
            for backend in backends:
                assert len(inspect.signature(getattr(backend, name)).parameters) == len(wanted), (backend, name)


def test_send_now_makes_a_held_message_due_and_keeps_attempts(db: Database) -> None:
    outbox = Outbox(db)
    message = invite(outbox, "guest@partner.example.org", "bob@other.example.net")
    greylist(outbox, "guest@partner.example.org")
    outbox.claim(time.time())  # bob is this sender's now; the admin's change must not need its lease
    other_node = Outbox(Database(db.url, max_size=1))
    assert other_node.claim(time.time()) == []  # held back by its backoff, bob by the lease

    assert outbox.waiting_ids() == {message}
    assert outbox.send_now(message) == ["mailto:bob@other.example.net", "mailto:guest@partner.example.org"]
    [again] = other_node.claim(time.time())  # due now, though its attempts and error stay
    assert (again.recipient, again.attempts, again.next_try, again.last_error) == (
        "mailto:guest@partner.example.org", 2, 0.0, "451 4.7.1 greylisted")
    other_node.db.close()


def test_a_failed_delivery_is_named_as_the_spool_names_it_and_requeued_afresh(db: Database) -> None:
    outbox = Outbox(db)
    message = invite(outbox, "Guest@Partner.example.org")
    outbox.fail(claimed(outbox, "Guest@Partner.example.org"), "550 5.1.1 no such user")
    failed = f"{message}-guest@partner.example.org"
    assert outbox.failed_ids() == {failed} and outbox.waiting_ids() == set()
    [listed] = outbox.failed_messages()
    assert (listed.id, listed.message.recipients, listed.message.method, listed.message.uid, listed.reason) == (
        failed, ("mailto:Guest@Partner.example.org",), "REQUEST", "review-1", "550 5.1.1 no such user")
    assert outbox.failed_reason(failed) == "550 5.1.1 no such user"
    [kept] = outbox.read_failed(failed)

    new_id, recipient = outbox.requeue(failed)
    assert recipient == "mailto:Guest@Partner.example.org" and new_id != message
    assert outbox.failed_ids() == set() and outbox.waiting_ids() == {new_id}
    [again] = outbox.claim(time.time())
    assert (again.attempts, again.next_try, again.last_error, again.after_failure) == (0, 0.0, "", True)
    assert (again.ics, again.changes, again.notes) == (kept.ics, ("time",), (("from", "alice@example.com"),))
    assert "SUMMARY:Review\\, as sent" in again.ics  # the calendar's own text, not a re-serialization
    with psycopg.connect(db.url) as conn:  # the failed message's row went with its last delivery
        assert conn.execute("SELECT id FROM invito_outbox_message").fetchall() == [(new_id,)]


def test_drop_records_each_recipients_outcome_and_keeps_its_failed_ones(db: Database) -> None:
    outbox = Outbox(db)
    message = invite(outbox, "guest@partner.example.org", "gone@partner.example.org")
    outbox.fail(claimed(outbox, "gone@partner.example.org"), "550 5.1.1 no such user")

    summary, entries = outbox.drop(message, "5.1", "dropped by the admin")
    assert (summary.recipients, summary.method, summary.uid) == (("mailto:guest@partner.example.org",), "REQUEST",
                                                                 "review-1")
    assert [e.recipient for e in entries] == ["mailto:guest@partner.example.org"]
    assert [(o["id"], o["recipient"], o["status"], o["detail"]) for o in outbox.recorded()] == [
        (message, "mailto:guest@partner.example.org", "5.1", "dropped by the admin")]
    assert outbox.waiting_ids() == set() and outbox.failed_ids() == {f"{message}-gone@partner.example.org"}
    dropped = outbox.drop_failed(f"{message}-gone@partner.example.org")
    assert dropped.recipients == ("mailto:gone@partner.example.org",) and outbox.failed_ids() == set()
    with psycopg.connect(db.url) as conn:
        assert conn.execute("SELECT count(*) FROM invito_outbox_message").fetchone() == (0,)


def test_an_entry_gone_meanwhile_is_file_not_found_as_on_the_spool(db: Database) -> None:
    outbox, inbound = Outbox(db), InboundQueue(db)
    message = invite(outbox, "guest@partner.example.org")
    outbox.remove(claimed(outbox, "guest@partner.example.org"))  # sent meanwhile
    for change in (lambda: outbox.send_now(message), lambda: outbox.drop(message, "5.1", "x"),
                   lambda: outbox.read_waiting(message), lambda: outbox.requeue(f"{message}-guest@partner.example.org"),
                   lambda: inbound.release("1-nothing"), lambda: inbound.drop_quarantined("1-nothing"),
                   lambda: inbound.quarantined_entry("1-nothing")):
        with pytest.raises(FileNotFoundError):
            change()


def test_quarantined_mail_and_answers_are_listed_shown_and_dropped(db: Database) -> None:
    inbound = InboundQueue(db)
    mail = inbound.accept(b"From: guest@partner.example.org\r\n\r\nyes\r\n", "guest@partner.example.org",
                          ["invito+tok@cal.example.com"], "192.0.2.7:4711")
    with db.write():
        inbound.quarantine(inbound.claim(), "no event with UID review-1 here")
    answer = inbound.set_aside_answer(ANSWER, "the event changed since the page was opened")

    assert inbound.quarantined_ids() == {mail.id, answer.id}
    kept_mail, kept_answer = inbound.quarantined_entries()
    assert (kept_mail.id, kept_mail.mail_from, kept_mail.recipients, kept_mail.reason, kept_mail.answer) == (
        mail.id, "guest@partner.example.org", ("invito+tok@cal.example.com",), "no event with UID review-1 here",
        None)
    assert (kept_answer.id, kept_answer.reason, kept_answer.answer) == (
        answer.id, "the event changed since the page was opened", ANSWER)
    assert abs(kept_mail.received - mail.received) < 1e-6
    assert inbound.quarantined_mail(mail.id) == mail.raw()
    assert inbound.quarantined_answer(answer.id) == ANSWER and inbound.quarantined_answer(mail.id) is None
    with pytest.raises(FileNotFoundError):  # an answer has no mail
        inbound.quarantined_mail(answer.id)
    assert inbound.pending() == []

    assert inbound.drop_quarantined(mail.id).mail_from == "guest@partner.example.org"
    assert inbound.quarantined_ids() == {answer.id}


def test_a_released_answer_is_pending_again_with_its_answer_and_wakes_processors(db: Database) -> None:
    inbound = InboundQueue(db)
    answer = inbound.set_aside_answer(ANSWER, "the event changed since the page was opened")
    other_node = InboundQueue(Database(db.url, max_size=1), poll_seconds=3600)
    arrived = other_node.arrived
    assert other_node._wakeup.listening(10)
    arrived.wait(1)  # the wake-up every (re)connection gives
    arrived.clear()

    inbound.release(answer.id)
    assert arrived.wait(2)
    [pending] = other_node.pending()
    assert (pending.id, pending.answer, pending.data, pending.peer) == (answer.id, ANSWER, b"", "192.0.2.9")
    assert inbound.quarantined_ids() == set()
    other_node.close()
    other_node.db.close()


def test_a_drop_while_a_sender_holds_the_delivery_stands_against_its_outcome(db: Database) -> None:
    admin, sender = Outbox(db), Outbox(Database(db.url, max_size=1))
    message = invite(admin, "guest@partner.example.org")
    [sending] = sender.claim(time.time())
    admin.drop(message, "5.1", "dropped by the admin")
    sender.update(dataclasses.replace(sending, attempts=1, last_error="451 try later"))  # a temporary failure
    sender.fail(sending, "550 5.1.1 no such user")  # or a final one: neither brings the delivery back
    assert admin.waiting_ids() == set() and admin.failed_ids() == set() and admin.queued() == []
    sender.db.close()
