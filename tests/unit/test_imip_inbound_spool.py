# SPDX-License-Identifier: GPL-3.0-or-later
"""The inbound spool: durable entries in arrival order, leftovers of interrupted writes, quarantine, and
answers given on the RSVP page kept there as answers."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from invito.plugins.imip.inbound_spool import ABANDONED_AFTER, InboundSpool, PageAnswer
from invito.plugins.imip.tokens import ReplyToken, tag

RAW = b"From: guest@partner.example.org\r\nSubject: Accepted\r\n\r\nsee you\r\n"


def make_old(path: Path) -> None:
    old = time.time() - ABANDONED_AFTER - 60
    os.utime(path, (old, old))


def test_accept_pending_done_round_trip(tmp_path: Path) -> None:
    spool = InboundSpool(str(tmp_path))
    assert spool.pending() == []
    entry = spool.accept(RAW, "guest@partner.example.org", ["invito+abc@cal.example.com"], "192.0.2.7:4711")

    assert spool.arrived.is_set()
    [pending] = spool.pending()
    assert pending == entry
    assert (pending.mail_from, pending.recipients, pending.peer) == (
        "guest@partner.example.org", ("invito+abc@cal.example.com",), "192.0.2.7:4711")
    assert abs(pending.received - time.time()) < 5
    assert pending.raw() == RAW
    assert sorted(os.listdir(tmp_path / "queue")) == [entry.id + ".eml", entry.id + ".json"]

    spool.done(entry)
    assert spool.pending() == []
    assert os.listdir(tmp_path / "queue") == []


def test_arrived_is_shared_by_spools_on_the_same_folder(tmp_path: Path) -> None:
    reader = InboundSpool(str(tmp_path))
    reader.arrived.clear()
    InboundSpool(str(tmp_path)).accept(RAW, "a@x.org", ["b@y.org"], "peer")
    assert reader.arrived.is_set()


def test_pending_is_in_arrival_order(tmp_path: Path) -> None:
    spool = InboundSpool(str(tmp_path))
    senders = ["guest%d@partner.example.org" % i for i in range(12)]
    for sender in senders:
        spool.accept(RAW, sender, ["invito@cal.example.com"], "peer")
    assert [entry.mail_from for entry in spool.pending()] == senders


def test_half_written_entries_are_ignored_and_abandoned_ones_removed(tmp_path: Path) -> None:
    spool = InboundSpool(str(tmp_path))
    entry = spool.accept(RAW, "guest@partner.example.org", ["invito@cal.example.com"], "peer")
    queue, tmp = tmp_path / "queue", tmp_path / "tmp"
    # A crash between the two renames (message in queue/, envelope still in tmp/), and one mid-write.
    (queue / "1-crashed.eml").write_bytes(RAW)
    (tmp / "1-crashed.json").write_text("{}")
    (tmp / "2-midwrite.eml").write_bytes(RAW[:10])
    # Another writer's entry in progress, just now.
    (queue / "3-inflight.eml").write_bytes(RAW)

    assert spool.pending() == [entry]
    assert (queue / "1-crashed.eml").exists()  # too recent to be called abandoned

    for path in (queue / "1-crashed.eml", tmp / "1-crashed.json", tmp / "2-midwrite.eml"):
        make_old(path)
    assert spool.pending() == [entry]
    assert sorted(os.listdir(queue)) == sorted([entry.id + ".eml", entry.id + ".json", "3-inflight.eml"])
    assert os.listdir(tmp) == []


def test_quarantine_keeps_the_message_with_a_reason(tmp_path: Path) -> None:
    spool = InboundSpool(str(tmp_path))
    kept = spool.accept(RAW, "other@partner.example.org", ["invito+def@cal.example.com"], "peer")
    entry = spool.accept(RAW, "guest@partner.example.org", ["invito+abc@cal.example.com"], "192.0.2.7:4711")

    folder = spool.quarantine(entry, "no calendar part in the message")

    assert folder == str(tmp_path / "quarantine")
    assert spool.pending() == [kept]
    assert (tmp_path / "quarantine" / (entry.id + ".eml")).read_bytes() == RAW
    envelope = json.loads((tmp_path / "quarantine" / (entry.id + ".json")).read_text())
    assert envelope["mail_from"] == "guest@partner.example.org"
    reason = (tmp_path / "quarantine" / (entry.id + ".reason")).read_text()
    assert reason.count("\n") == 1
    for part in (entry.id, "<guest@partner.example.org>", "<invito+abc@cal.example.com>", "192.0.2.7:4711",
                 "no calendar part in the message", "queue/"):
        assert part in reason


def test_an_interrupted_quarantine_is_completed_not_cleaned(tmp_path: Path) -> None:
    spool = InboundSpool(str(tmp_path))
    entry = spool.accept(RAW, "guest@partner.example.org", ["invito@cal.example.com"], "peer")
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir()
    # Crash after the envelope moved, before the message did.
    os.rename(entry.path[:-len(".eml")] + ".json", quarantine / (entry.id + ".json"))
    make_old(Path(entry.path))

    assert spool.pending() == []
    assert (quarantine / (entry.id + ".eml")).read_bytes() == RAW
    assert os.listdir(tmp_path / "queue") == []


def test_an_unreadable_envelope_is_quarantined(tmp_path: Path) -> None:
    spool = InboundSpool(str(tmp_path))
    good = spool.accept(RAW, "guest@partner.example.org", ["invito@cal.example.com"], "peer")
    (tmp_path / "queue" / "1-broken.eml").write_bytes(RAW)
    (tmp_path / "queue" / "1-broken.json").write_text("{not json")

    assert spool.pending() == [good]
    assert (tmp_path / "quarantine" / "1-broken.eml").read_bytes() == RAW
    assert "envelope file was unreadable" in (tmp_path / "quarantine" / "1-broken.reason").read_text()


TOKEN = ReplyToken("a" * 32, "mailto:alice@example.com", "meeting-1", "mailto:guest@partner.example.org")
REPLY = "BEGIN:VCALENDAR\r\nMETHOD:REPLY\r\nEND:VCALENDAR\r\n"


def test_an_answer_is_set_aside_as_one_record_and_read_back(tmp_path: Path) -> None:
    spool = InboundSpool(str(tmp_path))
    answer = PageAnswer.of(REPLY, TOKEN, "192.0.2.7")
    assert answer.token_tag == tag(TOKEN.token) and answer.proved_by(TOKEN)
    assert not answer.proved_by(ReplyToken("b" * 32, TOKEN.organizer, TOKEN.uid, TOKEN.guest))

    entry = spool.set_aside_answer(answer, "the answer is out of order")

    assert sorted(os.listdir(tmp_path / "quarantine")) == [entry.id + ".json", entry.id + ".reason"]
    assert spool.quarantined_answer(entry.id) == answer
    assert (entry.answer, entry.peer, entry.mail_from, entry.recipients) == (answer, "192.0.2.7", "", ())
    assert abs(entry.received - time.time()) < 5
    record = (tmp_path / "quarantine" / (entry.id + ".json")).read_text()
    assert TOKEN.token not in record  # the guest's key is named by its tag only
    reason = (tmp_path / "quarantine" / (entry.id + ".reason")).read_text()
    assert reason.count("\n") == 1 and reason.endswith("was set aside and not processed: the answer is out of order\n")
    for part in (entry.id, "by <guest@partner.example.org>", "for event meeting-1", answer.token_tag, "192.0.2.7"):
        assert part in reason
    assert spool.pending() == [] and os.listdir(tmp_path / "tmp") == []  # set aside, never queued, no leftover


def test_a_released_answer_is_pending_and_refused_again_returns_to_the_quarantine(tmp_path: Path) -> None:
    spool = InboundSpool(str(tmp_path))
    kept = spool.set_aside_answer(PageAnswer.of(REPLY, TOKEN, "192.0.2.7"), "out of order")

    spool.release(kept.id)

    [pending] = spool.pending()
    assert (pending.id, pending.answer) == (kept.id, kept.answer)
    assert os.listdir(tmp_path / "quarantine") == []
    assert os.listdir(tmp_path / "queue") == [kept.id + ".json"]
    spool.start(pending)
    spool.quarantine(pending, "still out of order")
    assert spool.quarantined_answer(kept.id) == kept.answer
    assert "still out of order" in (tmp_path / "quarantine" / (kept.id + ".reason")).read_text()
    assert spool.pending() == []


def test_release_moves_a_quarantined_mail_back_message_first(tmp_path: Path) -> None:
    spool = InboundSpool(str(tmp_path))
    mail = spool.accept(RAW, "guest@partner.example.org", ["invito+abc@cal.example.com"], "peer")
    spool.quarantine(mail, "no event")
    assert spool.quarantined_answer(mail.id) is None  # a mail, not an answer

    spool.release(mail.id)

    assert spool.pending() == [mail] and os.listdir(tmp_path / "quarantine") == []


def test_an_unreadable_record_reads_back_as_none(tmp_path: Path) -> None:
    spool = InboundSpool(str(tmp_path))
    kept = spool.set_aside_answer(PageAnswer.of(REPLY, TOKEN, "192.0.2.7"), "out of order")
    (tmp_path / "quarantine" / (kept.id + ".json")).write_text('{"id": "x", "answer": {"guest": 1}}')
    assert spool.quarantined_answer(kept.id) is None
    with pytest.raises(FileNotFoundError):
        spool.quarantined_answer("1-gone")
