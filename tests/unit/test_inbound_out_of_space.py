# SPDX-License-Identifier: GPL-3.0-or-later
"""A full disk is a reason to wait, never to refuse or set aside: the spools remove what a failed write
left at once, and a reply that cannot be applied for lack of space stays queued and is applied later."""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Iterator

import icalendar
import pytest

from invito.plugins.imip.inbound_spool import InboundSpool
from invito.plugins.imip.spool import OutboundSpool, out_of_space
from invito.plugins.itip import ITipMessage
from invito.server.inbound import Processor
from invito.storage import Storage
from tests.unit.test_inbound_group_commit import REPLY, partstat, processor  # noqa: F401 (fixture)

pytestmark = pytest.mark.only_backend("files")  # a full disk under the data folder; the database needs none


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB file system (tmpfs), so the kernel itself answers ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_message_too_big_for_the_disk_leaves_nothing_behind(small_disk: Path) -> None:
    spool = InboundSpool(str(small_disk / "inbound"))
    with pytest.raises(OSError) as full:
        spool.accept(b"x" * 200_000, "guest@partner.org", ["alice@example.com"], "test")
    assert full.value.errno == errno.ENOSPC
    assert os.listdir(small_disk / "inbound" / "tmp") == []  # at once, not after an hour
    assert spool.pending() == []
    entry = spool.accept(b"a small reply", "guest@partner.org", ["alice@example.com"], "test")  # room again
    assert [e.id for e in spool.pending()] == [entry.id]


def test_out_of_space_is_found_behind_a_wrapping_error() -> None:
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as e:
            raise RuntimeError("Failed to store item") from e
    except RuntimeError as wrapped:
        assert out_of_space(wrapped)
    assert not out_of_space(OSError(errno.EIO, "I/O error"))
    assert not out_of_space(ValueError("bad"))


def test_a_reply_that_meets_a_full_disk_stays_queued_and_is_applied_later(
        processor: Processor, storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    entry = processor.spool.accept(REPLY.format(uid="one").encode(), "guest@partner.org",
                                   ["alice@example.com"], "test")
    original = storage.schedule

    def full(*args: object, **kwargs: object) -> object:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "schedule", full)
    assert processor.process_batch() == 0  # 0: the processor waits before it tries again
    assert [e.id for e in processor.spool.pending()] == [entry.id]
    assert not os.path.exists(processor.spool.quarantined) or os.listdir(processor.spool.quarantined) == []
    assert partstat(storage, "one") == "NEEDS-ACTION"
    monkeypatch.setattr(storage, "schedule", original)  # space is back
    assert processor.process_batch() == 1
    assert processor.spool.pending() == []
    assert partstat(storage, "one") == "ACCEPTED"


def test_an_outbound_message_too_big_for_the_disk_leaves_nothing_behind(small_disk: Path) -> None:
    calendar = icalendar.Calendar()
    event = icalendar.Event()
    event.add("UID", "big")
    event.add("DESCRIPTION", "d" * 200_000)
    calendar.add_component(event)
    spool = OutboundSpool(str(small_disk / "outbound"))
    message = ITipMessage("REQUEST", "big", "mailto:alice@example.com", ("mailto:g@partner.org",), calendar)
    with pytest.raises(OSError) as full:
        spool.prepare(message, ["mailto:g@partner.org"])
    assert full.value.errno == errno.ENOSPC
    assert os.listdir(small_disk / "outbound" / "tmp") == []
