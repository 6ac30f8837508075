# SPDX-License-Identifier: GPL-3.0-or-later
"""On the database, ``[imip] processors`` threads apply inbound mail at once: each message by exactly one
of them, the writes of one organizer waiting for each other in the storage's locks."""
from __future__ import annotations

import threading
import time

import pytest
import radicale.item as radicale_item

from invito.server.inbound import Processor
from invito.storage import Storage
from tests.unit.test_inbound_group_commit import EVENT, REPLY, partstat

pytestmark = pytest.mark.only_backend("postgresql")

MEETINGS = 30


def test_two_processor_threads_apply_every_message_once(storage: Storage) -> None:
    configuration = storage.configuration
    configuration.update({"imip": {"direct": "on", "processors": "2"}}, "test", privileged=True)
    uids = [f"review-{n}" for n in range(MEETINGS)]
    with storage.acquire_lock("w", "alice"):
        collection = next(iter(storage.discover("/alice/calendar/")))
        for uid in uids:  # one organizer: every message waits for the home of the one before
            collection.store(uid + ".ics", radicale_item.Item(collection_path="alice/calendar",
                                                              text=EVENT.format(uid=uid)))
    processor = Processor(configuration, storage)
    assert processor.processors == 2
    for uid in uids:
        processor.spool.accept(REPLY.format(uid=uid).encode(), "guest@partner.org", ["alice@example.com"], "test")
    applied: list[str] = []
    answer = processor.answer
    processor.answer = lambda mail, recipient, source: applied.append(source) or answer(mail, recipient, source)  # type: ignore[method-assign]
    stop = threading.Event()
    threads = [threading.Thread(target=processor.run, args=(stop,)) for _ in range(processor.processors)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while processor.spool.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert processor.spool.pending() == []
    assert sorted(applied) == sorted(set(applied)) and len(applied) == MEETINGS  # each message once
    assert {partstat(storage, uid) for uid in uids} == {"ACCEPTED"}
    with storage.acquire_lock("r", "alice"):
        inbox = next(iter(storage.discover("/alice/schedule-inbox/")))
        assert len(list(inbox.get_all())) == MEETINGS  # one notice per answer, none twice
