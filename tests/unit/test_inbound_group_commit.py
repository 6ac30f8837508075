# SPDX-License-Identifier: GPL-3.0-or-later
"""Inbound mail is applied in batches with one flush to disk: a message leaves the inbound spool only once
its changes are on disk, so a crash before the flush means it is applied again (which changes nothing)."""
from __future__ import annotations

import os
from pathlib import Path

import icalendar
import pytest
import radicale.item as radicale_item

from invito.server.inbound import Processor
from invito.storage import Storage

pytestmark = pytest.mark.only_backend("files")  # the inbound spool's group commit; the database needs none

EVENT = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n"
         "DTSTAMP:20300101T000000Z\r\nDTSTART:20301010T090000Z\r\nDTEND:20301010T100000Z\r\nSUMMARY:Review\r\n"
         "ORGANIZER:mailto:alice@example.com\r\nATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:guest@partner.org\r\n"
         "END:VEVENT\r\nEND:VCALENDAR\r\n")
REPLY = ("From: guest@partner.org\r\nTo: alice@example.com\r\nSubject: Accepted\r\nMIME-Version: 1.0\r\n"
         "Content-Type: text/calendar; method=REPLY; charset=utf-8\r\n\r\n"
         "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nMETHOD:REPLY\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n"
         "DTSTAMP:20300102T000000Z\r\nDTSTART:20301010T090000Z\r\nSEQUENCE:0\r\n"
         "ORGANIZER:mailto:alice@example.com\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:guest@partner.org\r\n"
         "END:VEVENT\r\nEND:VCALENDAR\r\n")


@pytest.fixture
def processor(storage: Storage, tmp_path: Path) -> Processor:
    configuration = storage.configuration
    configuration.update({"imip": {"direct": "on"}}, "test", privileged=True)
    with storage.acquire_lock("w", "alice"):
        collection = next(iter(storage.discover("/alice/calendar/")))
        for uid in ("one", "two"):
            collection.store(uid + ".ics", radicale_item.Item(collection_path="alice/calendar",
                                                              text=EVENT.format(uid=uid)))
    return Processor(configuration, storage)


def partstat(storage: Storage, uid: str) -> str:
    with storage.acquire_lock("r", "alice"):
        _, _, item = storage.scheduler.find_copy("alice", uid)
    assert item is not None
    return str(icalendar.Calendar.from_ical(item.serialize()).walk("VEVENT")[0]["ATTENDEE"].params["PARTSTAT"])


def test_messages_leave_the_spool_only_after_the_flush(processor: Processor, storage: Storage,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for uid in ("one", "two"):
        processor.spool.accept(REPLY.format(uid=uid).encode(), "guest@partner.org", ["alice@example.com"], "test")
    flushes: list[int] = []
    monkeypatch.setattr(os, "sync", lambda: flushes.append(len(processor.spool.pending())))
    assert processor.process_batch() == 2
    assert flushes == [2]  # one flush for the batch, while both messages were still spooled
    assert processor.spool.pending() == []
    assert partstat(storage, "one") == partstat(storage, "two") == "ACCEPTED"
    assert storage._filesystem_fsync is True and storage.scheduler.spool.durable is True  # restored


def test_a_message_applied_again_after_a_crash_changes_nothing(processor: Processor, storage: Storage,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    raw = REPLY.format(uid="one").encode()
    processor.spool.accept(raw, "guest@partner.org", ["alice@example.com"], "test")
    monkeypatch.setattr(os, "sync", lambda: None)
    processor.process_batch()
    with storage.acquire_lock("r", "alice"):
        inbox_before = len(list(next(iter(storage.discover("/alice/schedule-inbox/"))).get_all()))
    processor.spool.accept(raw, "guest@partner.org", ["alice@example.com"], "test")  # as if never marked done
    processor.process_batch()
    with storage.acquire_lock("r", "alice"):
        inbox_after = len(list(next(iter(storage.discover("/alice/schedule-inbox/"))).get_all()))
    assert inbox_after == inbox_before == 1 and processor.spool.pending() == []
    assert partstat(storage, "one") == "ACCEPTED"


def test_the_file_spool_has_one_processor_whatever_is_configured(storage: Storage) -> None:
    storage.configuration.update({"imip": {"processors": "4"}}, "test", privileged=True)
    assert Processor(storage.configuration, storage).processors == 1
