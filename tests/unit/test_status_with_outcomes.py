# SPDX-License-Identifier: GPL-3.0-or-later
"""A refused guest's SCHEDULE-STATUS and the delivery's outcome are recorded together: on the database
in one transaction (a node killed before its commit leaves the event and the queue as they were, and the
delivery is tried again), and on either backend the outcome is recorded even when the status cannot be,
so a refused invitation is not sent again at every batch. The real storage, a scripted relay."""
from __future__ import annotations

import time

import psycopg
import pytest

from invito.plugins.imip.sender import Sender
from invito.plugins.imip.smtp import Delivery, Outcome, Stage
from invito.server.mail import StatusWriter
from invito.storage import Storage
from invito.storage.pg.outbox import Outbox
from tests.unit.test_imip_spool import SETTINGS, ScriptedRelay, build
from tests.unit.test_storage_schedule import GUEST, attendee, organized  # noqa: F401 (fixture)

NO_SUCH_USER = Outcome(Delivery.PERMANENT, "550 5.1.1 no such user", Stage.RECIPIENT, 550)


class Killed(BaseException):
    """The process dying at this point: nothing after it runs, no handler sees it."""


def sender(storage: Storage, relay: ScriptedRelay) -> Sender:
    return Sender(storage.scheduler.spool, SETTINGS, build, None, transport=relay,
                  on_batch_end=StatusWriter(storage))


def outcomes(storage: Storage) -> list[tuple[str, str]]:
    return [(o["recipient"], o["status"]) for o in storage.scheduler.spool.recorded()]


@pytest.mark.only_backend("postgresql")
def test_a_kill_before_the_commit_leaves_the_status_and_the_queue_as_they_were(
        organized: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    stamped = attendee(organized, GUEST).params["SCHEDULE-STATUS"]
    real_fail = Outbox.fail

    def fail_then_die(self: Outbox, entry, reason: str) -> None:  # type: ignore[no-untyped-def]
        real_fail(self, entry, reason)
        raise Killed()

    monkeypatch.setattr(Outbox, "fail", fail_then_die)
    with pytest.raises(Killed):
        sender(organized, ScriptedRelay(NO_SUCH_USER)).process_due(time.time())
    assert attendee(organized, GUEST).params["SCHEDULE-STATUS"] == stamped  # the 5.2 was rolled back
    assert [e.recipient for e in organized.scheduler.spool.queued()] == [GUEST]
    assert organized.scheduler.spool.failed_ids() == set() and outcomes(organized) == []

    monkeypatch.setattr(Outbox, "fail", real_fail)
    other_node = Outbox(organized.db)  # another sender, once the dead one's lease is over
    relay = ScriptedRelay(NO_SUCH_USER)
    Sender(other_node, SETTINGS, build, None, transport=relay,
           on_batch_end=StatusWriter(organized)).process_due(time.time() + other_node.lease + 1)
    assert relay.sent_to == ["guest@partner.example.org"]
    assert attendee(organized, GUEST).params["SCHEDULE-STATUS"] == "5.2"
    assert organized.scheduler.spool.queued() == [] and len(organized.scheduler.spool.failed_ids()) == 1
    assert outcomes(organized) == [(GUEST, "5.2")]


@pytest.mark.only_backend("postgresql")
def test_a_deadlock_reruns_the_status_and_the_outcome_once_each(
        organized: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fail = Outbox.fail
    calls = []

    def deadlock_once(self: Outbox, entry, reason: str) -> None:  # type: ignore[no-untyped-def]
        real_fail(self, entry, reason)
        calls.append(entry.recipient)
        if len(calls) == 1:
            raise psycopg.errors.DeadlockDetected("deadlock detected")

    monkeypatch.setattr(Outbox, "fail", deadlock_once)
    sender(organized, ScriptedRelay(NO_SUCH_USER)).process_due(time.time())
    assert calls == [GUEST, GUEST]
    assert attendee(organized, GUEST).params["SCHEDULE-STATUS"] == "5.2"
    assert len(organized.scheduler.spool.failed_ids()) == 1
    assert outcomes(organized) == [(GUEST, "5.2")]  # the first run's outcome was rolled back with it


def test_an_outcome_is_recorded_even_when_the_status_cannot_be(
        organized: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    stamped = attendee(organized, GUEST).params["SCHEDULE-STATUS"]

    def broken(self: Storage, user: str, change: object) -> None:
        raise OSError("the organizer's calendar cannot be written")

    monkeypatch.setattr(type(organized), "schedule", broken)
    relay = ScriptedRelay(NO_SUCH_USER)
    sender(organized, relay).process_due(time.time())
    sender(organized, relay).process_due(time.time() + 86400)
    assert relay.sent_to == ["guest@partner.example.org"]  # refused once, not again at the next batch
    assert organized.scheduler.spool.queued() == [] and len(organized.scheduler.spool.failed_ids()) == 1
    assert outcomes(organized) == [(GUEST, "5.2")]
    monkeypatch.undo()
    assert attendee(organized, GUEST).params["SCHEDULE-STATUS"] == stamped
