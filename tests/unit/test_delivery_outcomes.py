# SPDX-License-Identifier: GPL-3.0-or-later
"""Each guest's delivery outcome is on disk before the guest leaves the queue: the outcome log for a
sent message, and for a refused one the organizer's event (``on_batch_end``) before ``failed/``. A
scripted relay, real spool files."""
from __future__ import annotations

import time
from pathlib import Path

import icalendar
import pytest

from invito.plugins.imip.sender import Sender
from invito.plugins.imip.smtp import Delivery, Outcome, Stage
from invito.plugins.imip.spool import OutboundSpool, SpoolEntry, itip_record
from invito.plugins.itip import ITipMessage
from tests.unit.test_imip_spool import SENT, SETTINGS, ScriptedRelay, build, queue

NO_SUCH_USER = Outcome(Delivery.PERMANENT, "550 5.1.1 no such user", Stage.RECIPIENT, 550)


@pytest.fixture
def spool(tmp_path: Path) -> OutboundSpool:
    return OutboundSpool(str(tmp_path / "outbound"))


def test_a_sent_message_is_in_the_outcome_log_before_it_leaves_the_queue(
        spool: OutboundSpool, monkeypatch: pytest.MonkeyPatch) -> None:
    queue(spool, "m1")
    logged_while_queued = []
    real_remove = OutboundSpool.remove

    def remove(self: OutboundSpool, entry: SpoolEntry) -> None:
        logged_while_queued.append([o["uid"] for o in self.recorded()])
        real_remove(self, entry)

    monkeypatch.setattr(OutboundSpool, "remove", remove)
    Sender(spool, SETTINGS, build, lambda *outcome: None, transport=ScriptedRelay(SENT)).process_due(2e9)
    assert logged_while_queued == [["m1"]] and spool.queued() == []
    [outcome] = spool.recorded()
    assert (outcome["recipient"], outcome["status"], outcome["detail"]) == (
        "mailto:guest@partner.example.org", "1.1", "accepted by relay.example.com:587")


def test_a_refusal_is_written_to_the_event_before_the_guest_leaves_the_queue(spool: OutboundSpool) -> None:
    queue(spool, "m1")
    seen_at_batch_end = []
    outcomes = []
    sender = Sender(spool, SETTINGS, build, lambda entry, status, detail: outcomes.append((entry.uid, status)),
                    transport=ScriptedRelay(NO_SUCH_USER),
                    on_batch_end=lambda settled: seen_at_batch_end.append([e.uid for e in spool.queued()]))
    sender.process_due(2e9)
    assert outcomes == [("m1", "5.2")]
    assert seen_at_batch_end == [["m1"]]  # a kill before this point sends it again; nothing is lost
    assert spool.queued() == [] and len(list(Path(spool.failed).glob("*.json"))) == 1
    assert [(o["uid"], o["status"]) for o in spool.recorded()] == [("m1", "5.2")]


def test_an_admins_retry_after_a_failure_is_settled_after_the_event_is_corrected(spool: OutboundSpool) -> None:
    cal = icalendar.Calendar.from_ical("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\n"
                                       "UID:m1\r\nDTSTAMP:20300101T000000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    guest = "mailto:guest@partner.example.org"
    spool.enqueue(itip_record(ITipMessage("REQUEST", "m1", "mailto:alice@example.com", (guest,), cal), [guest]),
                  after_failure=True)
    [entry] = spool.queued()
    assert entry.after_failure
    seen_at_batch_end = []
    Sender(spool, SETTINGS, build, lambda *outcome: None, transport=ScriptedRelay(SENT),
           on_batch_end=lambda settled: seen_at_batch_end.append(len(spool.queued()))).process_due(2e9)
    assert seen_at_batch_end == [1] and spool.queued() == []


def test_a_line_torn_by_a_kill_is_skipped_and_old_logs_are_pruned(spool: OutboundSpool) -> None:
    queue(spool, "m1")
    Sender(spool, SETTINGS, build, lambda *outcome: None, transport=ScriptedRelay(SENT)).process_due(2e9)
    [log] = Path(spool.outcomes).glob("*.jsonl")
    with open(log, "ab") as f:
        f.write(b'{"uid": "m2", "sta')
    assert [o["uid"] for o in spool.recorded()] == ["m1"]
    old = Path(spool.outcomes, "2000-01-01.jsonl")
    old.write_text('{"uid": "m0"}\n')
    spool.prune(30, time.time())
    assert old.exists() is False and log.exists()
