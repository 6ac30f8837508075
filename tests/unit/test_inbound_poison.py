# SPDX-License-Identifier: GPL-3.0-or-later
"""Poison messages: a spooled message whose processing never finished twice (a crash, a kill of a hung
server) is set aside with the reason on its third start, and only runs that never finished count."""
from __future__ import annotations

import os
from pathlib import Path

from invito.plugins.imip.inbound_spool import MAX_UNFINISHED, InboundSpool
from invito.server.inbound import Processor
from invito.storage import Storage
from tests.unit.test_inbound_group_commit import REPLY, partstat, processor  # noqa: F401 (the fixture)

RAW = b"From: guest@partner.example.org\r\nSubject: Accepted\r\n\r\nsee you\r\n"


def test_start_counts_runs_that_never_finished(tmp_path: Path) -> None:
    spool = InboundSpool(str(tmp_path))
    entry = spool.accept(RAW, "guest@partner.example.org", ["invito+abc@cal.example.com"], "192.0.2.7:4711")
    assert spool.start(entry) == 0
    assert spool.start(entry) == 1  # the first run never reached finish: it crashed
    spool.finish(entry)
    assert spool.start(entry) == 0  # a run that ended, however it ended, is not held against the message
    assert spool.start(entry) == 1
    spool.quarantine(entry, "test")
    assert sorted(os.listdir(spool.quarantined)) == [entry.id + ".eml", entry.id + ".json", entry.id + ".reason"]
    assert os.listdir(spool.queue) == []  # no count left behind: moved back, the message starts afresh


def test_done_forgets_the_count(tmp_path: Path) -> None:
    spool = InboundSpool(str(tmp_path))
    entry = spool.accept(RAW, "guest@partner.example.org", ["invito+abc@cal.example.com"], "192.0.2.7:4711")
    spool.start(entry)
    spool.done(entry)
    assert os.listdir(spool.queue) == [] and spool.pending() == []


def test_a_message_that_crashed_twice_is_set_aside(processor: Processor, storage: Storage) -> None:  # noqa: F811
    poison = processor.spool.accept(REPLY.format(uid="one").encode(), "guest@partner.org", ["alice@example.com"],
                                    "test")
    fine = processor.spool.accept(REPLY.format(uid="two").encode(), "guest@partner.org", ["alice@example.com"],
                                  "test")
    for _ in range(MAX_UNFINISHED):  # what two runs killed during this message leave on disk
        processor.spool.start(poison)
    assert processor.process_batch() == 2
    assert processor.spool.pending() == []
    assert processor.spool.quarantined_ids() == {poison.id}  # set aside; the fine one was applied
    assert "processing crashed or timed out 2 times" in processor.spool.quarantined_entry(poison.id).reason
    assert partstat(storage, "one") == "NEEDS-ACTION" and partstat(storage, "two") == "ACCEPTED"
