# SPDX-License-Identifier: GPL-3.0-or-later
"""The spools' admin methods (what `invito queue` does through them), on real spool files: damaged files
are listed with what they still say, retries keep or reset what they should, drops report what went."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import radicale.config

from invito.plugins.data_folder import DataFolder
from invito.plugins.imip.inbound_spool import IncompleteEntry, InboundSpool
from invito.plugins.imip.spool import MessageSummary, OutboundSpool, UnreadableFile
from invito.server import config as invito_config
from tests.unit.test_imip_spool import queue

RAW = b"From: guest@partner.example.org\r\nSubject: Accepted\r\n\r\nsee you\r\n"


@pytest.fixture
def outbound(tmp_path: Path) -> OutboundSpool:
    return OutboundSpool(str(tmp_path / "outbound"))


@pytest.fixture
def inbound(tmp_path: Path) -> InboundSpool:
    return InboundSpool(str(tmp_path / "inbound"))


def test_send_now_makes_every_recipient_due_and_keeps_attempts(outbound: OutboundSpool) -> None:
    entry_id = queue(outbound, "m1")
    [entry] = outbound.queued()
    outbound.update(dataclasses.replace(entry, attempts=3, next_try=4e9, last_error="451"))
    with outbound.locked():
        assert outbound.send_now(entry_id) == ["mailto:guest@partner.example.org"]
    [now] = outbound.read_waiting(entry_id)
    assert (now.attempts, now.next_try, now.last_error) == (3, 0.0, "451")


def test_a_damaged_file_is_unreadable_by_name_yet_listed_and_dropped(outbound: OutboundSpool) -> None:
    queue(outbound, "m1")
    outbound.fail(outbound.queued()[0], "550 no such user")
    [failed_id] = outbound.failed_ids()
    path = Path(outbound.failed) / (failed_id + ".json")
    path.write_text(json.dumps({"method": "REQUEST", "recipients": ["not", "a", "map"]}))
    with pytest.raises(UnreadableFile) as caught:
        outbound.read_failed(failed_id)
    assert caught.value.path == str(path)
    [listed] = outbound.failed_messages()
    assert (listed.id, listed.message, listed.reason) == (
        failed_id, MessageSummary(None, "REQUEST", None), "550 no such user")
    assert outbound.drop_failed(failed_id) == MessageSummary(None, "REQUEST", None)
    assert outbound.failed_ids() == set() and not list(Path(outbound.failed).iterdir())


def test_requeue_gives_a_failed_recipient_a_new_message(outbound: OutboundSpool) -> None:
    queue(outbound, "m1")
    outbound.fail(outbound.queued()[0], "gave up")
    [failed_id] = outbound.failed_ids()
    new_id, recipient = outbound.requeue(failed_id)
    assert recipient == "mailto:guest@partner.example.org"
    assert outbound.failed_ids() == set() and outbound.waiting_ids() == {new_id}
    [entry] = outbound.read_waiting(new_id)
    assert (entry.uid, entry.attempts, entry.after_failure) == ("m1", 0, True)


def test_drop_records_the_outcome_of_each_recipient(outbound: OutboundSpool) -> None:
    entry_id = queue(outbound, "m1")
    summary, entries = outbound.drop(entry_id, "5.1", "dropped by the admin")
    assert summary == MessageSummary(("mailto:guest@partner.example.org",), "REQUEST", "m1")
    assert [e.uid for e in entries] == ["m1"]
    assert [(o["uid"], o["status"]) for o in outbound.recorded()] == [("m1", "5.1")]
    assert outbound.waiting_ids() == set()


def test_quarantined_entries_say_what_their_files_still_tell(inbound: InboundSpool) -> None:
    inbound.quarantine(inbound.accept(RAW, "", ["invito+x@cal.example.com"], "192.0.2.7:25"), "no calendar in it")
    [whole] = inbound.quarantined_entries()
    damaged = inbound.accept(RAW, "guest@partner.example.org", [], "192.0.2.7:25")
    inbound.quarantine(damaged, "bad signature")
    Path(inbound.quarantined, damaged.id + ".json").write_text("{torn")
    (Path(inbound.quarantined) / "1-lonely.eml").write_bytes(RAW)
    listed = {entry.id: entry for entry in inbound.quarantined_entries()}
    assert (whole.mail_from, whole.recipients, whole.reason) == ("", ("invito+x@cal.example.com",),
                                                                 "no calendar in it")
    assert whole.received is not None
    assert (listed[damaged.id].mail_from, listed[damaged.id].reason) == (None, "bad signature")
    assert (listed["1-lonely"].recipients, listed["1-lonely"].reason) == (None, "(no reason file)")
    assert inbound.quarantined_mail("1-lonely") == RAW
    with pytest.raises(IncompleteEntry) as caught:
        inbound.release("1-lonely")
    assert caught.value.name == "1-lonely.json"
    assert inbound.drop_quarantined("1-lonely") is None
    assert inbound.quarantined_ids() == {whole.id, damaged.id}


def test_release_puts_a_quarantined_mail_back_to_be_processed(inbound: InboundSpool) -> None:
    entry = inbound.accept(RAW, "guest@partner.example.org", ["invito+x@cal.example.com"], "192.0.2.7:25")
    inbound.quarantine(entry, "the organizer's event was busy")
    inbound.release(entry.id)
    assert [pending.id for pending in inbound.pending()] == [entry.id]
    assert inbound.quarantined_ids() == set() and not list(Path(inbound.quarantined).iterdir())


def test_the_data_folder_names_every_part(tmp_path: Path) -> None:
    config = tmp_path / "invito.conf"
    config.write_text(f"[invito]\ndata_folder = {tmp_path / 'srv'}\n[storage]\nfilesystem_folder = /var/cal\n")
    data = DataFolder.of(invito_config.load(str(config)))
    assert (data.root, data.collections, data.users_file) == (
        str(tmp_path / "srv"), "/var/cal", str(tmp_path / "srv" / "users"))
    assert (data.collection_root, data.outbound_spool, data.inbound_spool, data.tokens) == (
        "/var/cal/collection-root", str(tmp_path / "srv" / "spool" / "outbound"),
        str(tmp_path / "srv" / "spool" / "inbound"), str(tmp_path / "srv" / "imip" / "tokens"))


def test_a_plain_radicale_configuration_keeps_the_data_beside_its_collections(tmp_path: Path) -> None:
    configuration = radicale.config.load()
    configuration.update({"storage": {"filesystem_folder": str(tmp_path / "collections")}}, "test")
    assert DataFolder.of(configuration).outbound_spool == str(tmp_path / "spool" / "outbound")
