# SPDX-License-Identifier: GPL-3.0-or-later
"""The UID index answers like a full scan would, whoever changed the folder, and survives restarts."""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
import radicale.config
import radicale.item as radicale_item
import radicale.storage

from invito.storage import indexed, uid_index
from invito.storage.uid_index import Entry, IndexStore, Record, Sig, Stamp, UidIndex

CAL = "/alice/cal/"


def event(uid: str, summary: str = "x") -> str:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:{uid}\r\nDTSTAMP:20240101T090000Z\r\nDTSTART:20240102T100000Z\r\n"
            f"DTEND:20240102T110000Z\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")


def load_storage(folder: Path, type_: str = "invito.storage.indexed", **storage_options: str):
    configuration = radicale.config.load()
    configuration.update({"storage": {"type": type_, "filesystem_folder": str(folder), **storage_options}},
                         "test", privileged=True)
    return radicale.storage.load(configuration)


def collection(storage, path: str = CAL):
    found = next(iter(storage.discover(path)))
    assert isinstance(found, radicale.storage.BaseCollection)
    return found


def put(storage, uid: str, href: str | None = None, path: str = CAL) -> None:
    with storage.acquire_lock("w"):
        collection(storage, path).upload(href or uid + ".ics", radicale_item.Item(
            collection_path=path.strip("/"), text=event(uid)))


def has_uid(storage, uid: str, path: str = CAL) -> bool:
    with storage.acquire_lock("r"):
        return collection(storage, path).has_uid(uid)


def cal_folder(tmp_path: Path, path: str = CAL) -> Path:
    return tmp_path / "collection-root" / path.strip("/")


def settle() -> None:
    """Let the directory mtime tick: on coarse-timestamp filesystems a foreign change in the same tick
    as our own write is invisible until the periodic verification (a documented limit of the index)."""
    time.sleep(0.02)


@pytest.fixture
def storage(tmp_path: Path):
    store = load_storage(tmp_path)
    with store.acquire_lock("w"):
        store.create_collection("/alice/")
        store.create_collection(CAL, props={"tag": "VCALENDAR"})
    return store


@pytest.fixture
def count_reads(monkeypatch):
    """How many items the index had to read (parse or fetch from Radicale's cache)."""
    reads: list[str] = []
    original = indexed.IndexedCollection._read_uid

    def counting(self, href):
        reads.append(href)
        return original(self, href)
    monkeypatch.setattr(indexed.IndexedCollection, "_read_uid", counting)
    return reads


@pytest.fixture
def rebuilds(monkeypatch):
    """Collections whose index had to be reconciled with a full scan of the folder."""
    paths: list[str] = []
    original = indexed.IndexedCollection._reconcile

    def counting(self, index, store):
        paths.append(self.path)
        return original(self, index, store)
    monkeypatch.setattr(indexed.IndexedCollection, "_reconcile", counting)
    return paths


def test_has_uid_and_href_for_uid(storage):
    put(storage, "one")
    put(storage, "two", href="other-name.ics")
    with storage.acquire_lock("r"):
        cal = collection(storage)
        assert cal.has_uid("one") and cal.has_uid("two")
        assert not cal.has_uid("three")
        assert cal.href_for_uid("two") == "other-name.ics"
        assert cal.href_for_uid("three") is None


def test_delete_and_replace_with_other_uid(storage):
    put(storage, "one")
    put(storage, "two")
    with storage.acquire_lock("w"):
        collection(storage).delete("one.ics")
    put(storage, "renamed", href="two.ics")  # same href, new UID
    assert not has_uid(storage, "one")
    assert not has_uid(storage, "two")
    assert has_uid(storage, "renamed")


def test_lookups_do_not_read_items_when_nothing_changed(storage, count_reads):
    for i in range(20):
        put(storage, "e%d" % i)
    count_reads.clear()
    assert has_uid(storage, "e7") and not has_uid(storage, "nope")
    assert count_reads == []


def test_changes_by_plain_radicale_are_seen(tmp_path, storage):
    put(storage, "ours")
    put(storage, "doomed")
    assert has_uid(storage, "ours")  # warm in-memory index
    settle()
    plain = load_storage(tmp_path, "multifilesystem")
    put(plain, "theirs")
    with plain.acquire_lock("w"):
        collection(plain).delete("doomed.ics")
    assert has_uid(storage, "theirs")
    assert not has_uid(storage, "doomed")
    assert has_uid(storage, "ours")


def test_files_added_removed_and_replaced_by_hand(tmp_path, storage):
    put(storage, "keep")
    put(storage, "gone")
    put(storage, "swap")
    assert has_uid(storage, "keep")
    settle()
    folder = cal_folder(tmp_path)
    (folder / "hand.ics").write_text(event("by-hand"), newline="")
    (folder / "gone.ics").unlink()
    replacement = tmp_path / "replacement.ics"
    replacement.write_text(event("swapped-in"), newline="")
    os.replace(replacement, folder / "swap.ics")  # an editor's atomic save
    with storage.acquire_lock("r"):
        cal = collection(storage)
        assert cal.href_for_uid("by-hand") == "hand.ics"
        assert not cal.has_uid("gone")
        assert not cal.has_uid("swap")
        assert cal.href_for_uid("swapped-in") == "swap.ics"
        assert cal.has_uid("keep")


def test_in_place_rewrite_of_found_file_is_caught(tmp_path, storage):
    put(storage, "before")
    assert has_uid(storage, "before")
    path = cal_folder(tmp_path) / "before.ics"
    with open(path, "r+", newline="") as f:  # same inode, folder untouched
        f.write(event("after-edit"))
    assert not has_uid(storage, "before")  # the positive hit is re-checked against the file


def test_restart_reuses_the_persisted_index(tmp_path, storage, count_reads):
    for i in range(10):
        put(storage, "e%d" % i)
    with storage.acquire_lock("w"):
        collection(storage).delete("e3.ics")
    count_reads.clear()
    restarted = load_storage(tmp_path)
    assert has_uid(restarted, "e9")
    assert not has_uid(restarted, "e3")
    assert count_reads == []  # snapshot + journal matched the folder: no item re-read


def test_restart_after_changes_while_down(tmp_path, storage):
    put(storage, "e1")
    put(storage, "e2")
    settle()
    (cal_folder(tmp_path) / "e1.ics").unlink()
    (cal_folder(tmp_path) / "new.ics").write_text(event("e3"), newline="")
    restarted = load_storage(tmp_path)
    assert not has_uid(restarted, "e1")
    assert has_uid(restarted, "e2") and has_uid(restarted, "e3")


@pytest.mark.parametrize("damage", ["garbage-snapshot", "garbage-journal", "torn-journal", "no-index"])
def test_damaged_index_files_mean_rebuild_not_error(tmp_path, storage, damage):
    put(storage, "a")
    put(storage, "b")
    index_folder = cal_folder(tmp_path) / ".Radicale.cache" / "invito-uid"
    journal, = index_folder.glob("journal.*")
    if damage == "garbage-snapshot":
        (index_folder / "snapshot.json").write_bytes(b"\x00{not json")
    elif damage == "garbage-journal":
        journal.write_bytes(b'["a.ics",["zzz"]]\n' + journal.read_bytes())
    elif damage == "torn-journal":
        journal.write_bytes(journal.read_bytes()[:-7])
    else:
        shutil.rmtree(index_folder)
    restarted = load_storage(tmp_path)
    assert has_uid(restarted, "a") and has_uid(restarted, "b")
    assert not has_uid(restarted, "zzz")
    put(restarted, "c")  # and writes still work
    assert has_uid(load_storage(tmp_path), "c")


def test_second_storage_object_catches_up_from_the_journal(tmp_path, storage, rebuilds):
    """Two Invito processes on one folder: the other's writes reach us through its journal."""
    put(storage, "mine")
    assert has_uid(storage, "mine")
    other = load_storage(tmp_path)
    assert has_uid(other, "mine")
    put(other, "theirs")
    rebuilds.clear()
    assert has_uid(storage, "theirs")
    assert rebuilds == []


def test_journal_is_compacted(tmp_path, storage, monkeypatch):
    monkeypatch.setattr(uid_index, "MIN_COMPACT_RECORDS", 5)
    for round_ in range(10):  # 30 writes to 3 items: the journal must not keep all 30
        for i in range(3):
            put(storage, "e%d-%d" % (i, round_), href="e%d.ics" % i)
    index_folder = cal_folder(tmp_path) / ".Radicale.cache" / "invito-uid"
    journal, = index_folder.glob("journal.*")
    assert len(journal.read_bytes().splitlines()) <= 5
    restarted = load_storage(tmp_path)
    assert all(has_uid(restarted, "e%d-9" % i) for i in range(3))
    assert not has_uid(restarted, "e0-8")


def test_move_between_collections(tmp_path, storage, rebuilds):
    with storage.acquire_lock("w"):
        storage.create_collection("/alice/work/", props={"tag": "VCALENDAR"})
    put(storage, "travelling")
    put(storage, "stays")
    put(storage, "other", path="/alice/work/")
    rebuilds.clear()
    with storage.acquire_lock("w"):
        item = next(iter(storage.discover(CAL + "travelling.ics")))
        storage.move(item, collection(storage, "/alice/work/"), "moved.ics")
    assert not has_uid(storage, "travelling")
    assert rebuilds == []  # both indexes were updated by the move itself
    for store in (storage, load_storage(tmp_path)):
        assert not has_uid(store, "travelling")
        assert has_uid(store, "stays")
        with store.acquire_lock("r"):
            assert collection(store, "/alice/work/").href_for_uid("travelling") == "moved.ics"


def test_find_uid_across_calendars(storage):
    with storage.acquire_lock("w"):
        storage.create_collection("/alice/work/", props={"tag": "VCALENDAR"})
        storage.create_collection("/alice/contacts/", props={"tag": "VADDRESSBOOK"})
        storage.create_collection("/bob/")
        storage.create_collection("/bob/cal/", props={"tag": "VCALENDAR"})
    put(storage, "shared", href="a.ics")
    put(storage, "shared", href="b.ics", path="/alice/work/")
    put(storage, "shared", path="/bob/cal/")
    put(storage, "alone", path="/alice/work/")
    contact = ("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:shared\r\nFN:Someone\r\nN:One;Some;;;\r\nEND:VCARD\r\n")
    with storage.acquire_lock("w"):
        collection(storage, "/alice/contacts/").upload("c.vcf", radicale_item.Item(
            collection_path="alice/contacts", text=contact))
        assert storage.find_uid("/alice/", "shared") == [("/alice/cal/", "a.ics"), ("/alice/work/", "b.ics")]
        assert storage.find_uid("/alice/", "alone") == [("/alice/work/", "alone.ics")]
        assert storage.find_uid("/alice/", "missing") == []
        assert storage.find_uid("/nobody/", "shared") == []


def test_history_cleaning_is_throttled_but_still_happens(tmp_path):
    store = load_storage(tmp_path, max_sync_token_age="1")
    with store.acquire_lock("w"):
        store.create_collection("/alice/")
        store.create_collection(CAL, props={"tag": "VCALENDAR"})
    put(store, "old")
    with store.acquire_lock("w"):
        collection(store).delete("old.ics")
    history = cal_folder(tmp_path) / ".Radicale.cache" / "history" / "old.ics"
    long_ago = time.time() - 3600
    os.utime(history, (long_ago, long_ago))
    put(store, "another")
    assert history.exists()  # cleaned on the collection's first write; not again within the interval
    store.housekeeping_interval = 0
    put(store, "yet-another")
    assert not history.exists()


# -- the pure index -----------------------------------------------------------------------------------

def test_reconcile_reads_only_changed_files():
    index = UidIndex({"a.ics": Entry("a", Sig(1, 1, 1)), "b.ics": Entry("b", Sig(2, 2, 2))}, Stamp(9, 1))
    reads: list[str] = []

    def read(href: str) -> str:
        reads.append(href)
        return "new-" + href
    changed = index.reconcile({"a.ics": Sig(1, 1, 1), "b.ics": Sig(2, 3, 2), "c.ics": Sig(4, 4, 4)},
                              read, Stamp(9, 2))
    assert changed == 2 and sorted(reads) == ["b.ics", "c.ics"]
    assert index.hrefs("b") == [] and index.hrefs("new-b.ics") == ["b.ics"] and index.hrefs("a") == ["a.ics"]
    assert index.stamp == Stamp(9, 2)
    index.reconcile({}, read, Stamp(9, 3))
    assert len(index) == 0 and index.hrefs("a") == []


def test_store_round_trip_and_partial_append(tmp_path):
    store = IndexStore(str(tmp_path / "idx"))
    index = UidIndex(stamp=Stamp(1, 1))
    store.save(index)
    for i, record in enumerate([Record("a.ics", Entry("a", Sig(1, 1, 1)), Stamp(1, 2)),
                                Record("b.ics", Entry(None, Sig(2, 2, 2)), Stamp(1, 3)),
                                Record("a.ics", None, Stamp(1, 4))]):
        index.apply(record)
        store.append(index, record)
    loaded = store.load()
    assert loaded is not None
    assert loaded.entries == {"b.ics": Entry(None, Sig(2, 2, 2))} and loaded.stamp == Stamp(1, 4)
    journal = tmp_path / "idx" / ("journal.%s.jsonl" % index.gen)
    with open(journal, "ab") as f:  # another process's append, caught half-way
        f.write(Record("c.ics", Entry("c", Sig(3, 3, 3)), Stamp(1, 5)).to_line()[:10])
    assert store.catch_up(loaded) and loaded.stamp == Stamp(1, 4) and "c.ics" not in loaded.entries


def test_a_large_index_build_says_how_many_items_it_read(storage, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    for n in range(600):  # written behind the server's back, as by an import or plain Radicale
        (cal_folder(tmp_path) / f"e{n}.ics").write_text(event(f"u{n}"))
    with caplog.at_level("INFO", logger="invito.storage"):
        assert has_uid(storage, "u599")
    assert any(re.fullmatch(r"rebuilt the UID index of 'alice/cal': 600 items in [0-9.]+ s", r.getMessage())
               for r in caplog.records)
