# SPDX-License-Identifier: GPL-3.0-or-later
"""Radicale's storage API on a real PostgreSQL (invito.storage.pg.dav): what Radicale's handlers see."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import psycopg
import pytest
import radicale.item as radicale_item
from radicale import storage as radicale_storage
from radicale import xmlutils

from invito.storage.pg import items
from invito.storage.pg.dav import Collection, Storage
from tests.unit.pg_dav_helpers import closed_pools, event, pg_storage  # noqa: F401 (closed_pools: a fixture)


def _collection(storage: Storage, path: str) -> Collection:
    found = next(iter(storage.discover(path)), None)
    assert isinstance(found, Collection)
    return found


def _time_range_filter(start: str, end: str) -> list[ET.Element]:
    C = xmlutils.make_clark
    root = ET.Element(C("C:filter"))
    calendar = ET.SubElement(root, C("C:comp-filter"), name="VCALENDAR")
    vevent = ET.SubElement(calendar, C("C:comp-filter"), name="VEVENT")
    ET.SubElement(vevent, C("C:time-range"), start=start, end=end)
    return [root]


def test_discover_finds_the_root_homes_calendars_and_items(database):
    storage = pg_storage(database)
    with storage.acquire_lock("w", "alice", path="/alice/calendar/a.ics"):
        _collection(storage, "/alice/calendar/").upload("a.ics", event("a"))
    with storage.acquire_lock("r", "alice"):
        root = list(storage.discover("/", depth="1"))
        assert [c.path for c in root] == ["", "alice", "bob"]
        home = list(storage.discover("/alice/", depth="1"))
        assert [c.path for c in home] == ["alice", "alice/calendar"] and home[0].is_principal
        calendar = list(storage.discover("/alice/calendar/", depth="1"))
        assert calendar[0].get_meta("tag") == "VCALENDAR"
        assert [(i.href, i.uid) for i in calendar[1:]] == [("a.ics", "a")]
        (item,) = storage.discover("/alice/calendar/a.ics")
        assert item.collection.path == "alice/calendar" and item.component_name == "VEVENT"
        assert list(storage.discover("/alice/calendar/missing.ics")) == []
        assert list(storage.discover("/nobody/calendar/", depth="1")) == []


def test_items_are_read_from_columns_without_parsing(database):
    storage = pg_storage(database)
    stored = event("plain", summary="Budget review")
    with storage.acquire_lock("w", "alice", path="/alice/calendar/plain.ics"):
        _collection(storage, "/alice/calendar/").upload("plain.ics", stored)
    with storage.acquire_lock("r", "alice"):
        (item,) = storage.discover("/alice/calendar/plain.ics")
        facts = (item.uid, item.etag, item.name, item.component_name, item.time_range, item.serialize())
        assert item._vobject_item is None  # nothing above parsed the text
    assert facts == (stored.uid, stored.etag, "VCALENDAR", "VEVENT", stored.time_range, stored.serialize())
    assert "SUMMARY:Budget review" in facts[-1]


def test_upload_get_multi_get_all_has_uid_and_delete(database):
    storage = pg_storage(database)
    with storage.acquire_lock("w", "alice", path="/alice/calendar/"):
        calendar = _collection(storage, "/alice/calendar/")
        first, replaced = calendar.upload("one.ics", event("one"))
        assert replaced is None and first.href == "one.ics"
        calendar.upload("two.ics", event("two"))
        again, replaced = calendar.upload("one.ics", event("one", summary="Moved to Friday"))
        assert replaced is not None and replaced.etag == first.etag and again.etag != first.etag
    with storage.acquire_lock("r", "alice"):
        calendar = _collection(storage, "/alice/calendar/")
        assert [i.href for i in calendar.get_all()] == ["one.ics", "two.ics"]
        found = dict(calendar.get_multi(["two.ics", "none.ics", "one.ics"]))
        assert found["none.ics"] is None and "Moved to Friday" in found["one.ics"].serialize()
        assert calendar.has_uid("two") and not calendar.has_uid("three")
        assert (calendar.href_for_uid("two"), calendar.href_for_uid("three")) == ("two.ics", None)  # COPY's check
        assert not _collection(storage, "/bob/calendar/").has_uid("two")
    with storage.acquire_lock("w", "alice", path="/alice/calendar/two.ics"):
        _collection(storage, "/alice/calendar/").delete("two.ics")
        with pytest.raises(radicale_storage.ComponentNotFoundError):
            _collection(storage, "/alice/calendar/").delete("two.ics")
    with storage.acquire_lock("r", "alice"):
        assert [i.href for i in _collection(storage, "/alice/calendar/").get_all()] == ["one.ics"]


def test_a_whole_calendar_put_replaces_items_and_props(database):
    storage = pg_storage(database)
    with storage.acquire_lock("w", "alice", path="/alice/work/"):
        storage.create_collection("/alice/work/inner/", props={"tag": "VCALENDAR"})
        _, replaced, new = storage.create_collection(
            "/alice/work/", items=[event("x"), event("y")], props={"tag": "VCALENDAR", "D:displayname": "Work"})
        assert replaced == {} and new == ["x.ics", "y.ics"]
    with storage.acquire_lock("w", "alice", path="/alice/work/"):
        _, replaced, new = storage.create_collection(
            "/alice/work/", items=[event("y", summary="Changed"), event("z")], props={"tag": "VCALENDAR"})
        assert list(replaced) == ["y.ics"] and "SUMMARY:Meeting" in replaced["y.ics"].serialize()
        assert new == ["z.ics"]
    with storage.acquire_lock("r", "alice"):
        work = list(storage.discover("/alice/work/", depth="1"))
        assert work[0].get_meta() == {"tag": "VCALENDAR"}  # props are replaced, not merged
        assert [i.href for i in work[1:]] == ["y.ics", "z.ics"]  # x gone, and the child collection too
        assert "Changed" in work[1].serialize()
    with storage.acquire_lock("w", "alice", path="/alice/plain/"):
        _, _, new = storage.create_collection("/alice/plain/", items=[event("w")], props={"D:displayname": "Plain"})
        assert new == []  # a collection without a tag holds no items (Radicale's contract)


def test_deleting_a_collection_removes_it_and_what_is_below(database):
    storage = pg_storage(database)
    with storage.acquire_lock("w", "alice", path="/alice/calendar/"):
        storage.create_collection("/alice/calendar/sub/", props={"tag": "VCALENDAR"})
        _collection(storage, "/alice/calendar/").upload("a.ics", event("a"))
        _collection(storage, "/alice/calendar/").delete()
    with storage.acquire_lock("r", "alice"):
        assert [c.path for c in storage.discover("/alice/", depth="1")] == ["alice"]
        assert list(storage.discover("/alice/calendar/sub/")) == []
        assert storage.find_uid("/alice/", "a") == []


def test_time_range_reports_are_prefiltered_by_an_index(database):
    storage = pg_storage(database)
    with storage.acquire_lock("w", "alice", path="/alice/calendar/"):
        calendar = _collection(storage, "/alice/calendar/")
        for day in range(1, 11):
            calendar.upload(f"may{day}.ics", event(f"may{day}", datetime(2026, 5, day, 9, tzinfo=timezone.utc)))
    with storage.acquire_lock("r", "alice"):
        found = list(_collection(storage, "/alice/calendar/").get_filtered(
            _time_range_filter("20260503T000000Z", "20260505T000000Z")))
        assert sorted(item.href for item, _ in found) == ["may3.ics", "may4.ics"]
        assert all(matched for _, matched in found)  # whole events inside the range: no second look needed
        conn = storage.connection()
        conn.execute("SET LOCAL enable_seqscan = off")  # ten rows: without this the planner reads them all
        window = {"id": _collection(storage, "/alice/calendar/").id, "start": 5, "end": 10, "component": None}
        plan = " ".join(row[0] for row in conn.execute("EXPLAIN " + items.OVERLAPPING, window))
        assert "dav_item_time_range" in plan


def test_move_within_and_across_collections(database):
    storage = pg_storage(database)
    with storage.acquire_lock("w", "alice", path="/alice/calendar/"):
        _collection(storage, "/alice/calendar/").upload("a.ics", event("a"))
    with storage.acquire_lock("r", "alice"):
        alice_token, _ = _collection(storage, "/alice/calendar/").sync()
        bob_token, _ = _collection(storage, "/bob/calendar/").sync()
    with storage.acquire_lock("w", "alice", path="/alice/calendar/a.ics", to_path="/alice/calendar/b.ics"):
        (item,) = storage.discover("/alice/calendar/a.ics")
        storage.move(item, _collection(storage, "/alice/calendar/"), "b.ics")
    with storage.acquire_lock("w", "alice", path="/alice/calendar/b.ics", to_path="/bob/calendar/c.ics"):
        (item,) = storage.discover("/alice/calendar/b.ics")
        storage.move(item, _collection(storage, "/bob/calendar/"), "c.ics")
    with storage.acquire_lock("r", "alice"):
        alice, bob = _collection(storage, "/alice/calendar/"), _collection(storage, "/bob/calendar/")
        assert alice.get_all() == [] and [i.href for i in bob.get_all()] == ["c.ics"]
        assert sorted(alice.sync(alice_token)[1]) == ["a.ics", "b.ics"]
        assert list(bob.sync(bob_token)[1]) == ["c.ics"]
        assert storage.find_uid("/bob/", "a") == [("/bob/calendar/", "c.ics")]
        assert storage.find_uid("/alice/", "a") == []


def test_meta_etag_and_last_modified_follow_each_write(database):
    storage = pg_storage(database)
    with storage.acquire_lock("r", "alice"):
        before = _collection(storage, "/alice/calendar/")
        etag, modified = before.etag, parsedate_to_datetime(before.last_modified)
    with storage.acquire_lock("w", "alice", path="/alice/calendar/"):
        calendar = _collection(storage, "/alice/calendar/")
        calendar.set_meta({"tag": "VCALENDAR", "C:calendar-description": "Team"})
        after_meta = calendar.etag
        calendar.upload("a.ics", event("a"))
        after_upload = calendar.etag
    assert len({etag, after_meta, after_upload}) == 3
    other_node = Storage(storage.configuration)  # the etag is the stored revision: every node agrees
    with other_node.acquire_lock("r", "alice"):
        seen = _collection(other_node, "/alice/calendar/")
        assert seen.etag == after_upload
        assert seen.get_meta("C:calendar-description") == "Team" and seen.tag == "VCALENDAR"
        assert parsedate_to_datetime(seen.last_modified) >= modified.replace(microsecond=0)
        assert parsedate_to_datetime(seen.get_all()[0].last_modified).tzinfo is not None
    with storage.acquire_lock("w", "alice", path="/alice/calendar/"):
        _collection(storage, "/alice/calendar/").delete()
        storage.create_collection("/alice/calendar/", props={"tag": "VCALENDAR"})
    with storage.acquire_lock("r", "alice"):
        assert _collection(storage, "/alice/calendar/").etag not in (etag, after_meta, after_upload)


def test_find_uid_uses_calendars_directly_under_the_home(database):
    storage = pg_storage(database)
    with storage.acquire_lock("w", "alice", path="/alice/"):
        storage.create_collection("/alice/contacts/", props={"tag": "VADDRESSBOOK"})
        storage.create_collection("/alice/second/", props={"tag": "VCALENDAR"})
        _collection(storage, "/alice/calendar/").upload("m.ics", event("meeting"))
        _collection(storage, "/alice/second/").upload("copy.ics", event("meeting"))
        _collection(storage, "/alice/calendar/").upload("other.ics", event("other"))
    with storage.acquire_lock("w", "bob", path="/bob/"):
        _collection(storage, "/bob/calendar/").upload("m.ics", event("meeting"))
    with storage.acquire_lock("r", "alice"):
        assert storage.find_uid("/alice/", "meeting") == [("/alice/calendar/", "m.ics"),
                                                          ("/alice/second/", "copy.ics")]
        assert storage.find_uid("/bob/", "meeting") == [("/bob/calendar/", "m.ics")]
        assert storage.find_uid("/carol/", "meeting") == []
        plan = " ".join(row[0] for row in storage.connection().execute(
            "EXPLAIN SELECT href FROM dav_item WHERE owner = 'alice' AND uid = 'meeting'"))
        assert "dav_item_uid" in plan


def test_the_storage_is_used_only_inside_a_lock(database):
    storage = pg_storage(database)
    with pytest.raises(RuntimeError, match="outside acquire_lock"):
        list(storage.discover("/alice/"))
    with storage.acquire_lock("r", "alice"):
        assert storage.verify()
    with psycopg.connect(database) as conn:  # the rows are where any node can read them
        assert conn.execute("SELECT count(*) FROM dav_collection").fetchone()[0] == 5


def test_an_address_book_keeps_its_contacts(database):
    storage = pg_storage(database)
    card = radicale_item.Item(collection_path="alice/contacts", text=(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:grace\r\nFN:Grace Hopper\r\nN:Hopper;Grace;;;\r\nEND:VCARD\r\n"))
    card.prepare()
    with storage.acquire_lock("w", "alice", path="/alice/contacts/"):
        _, _, new = storage.create_collection("/alice/contacts/", items=[card], props={"tag": "VADDRESSBOOK"})
        assert new == ["grace.vcf"]
    with storage.acquire_lock("r", "alice"):
        (contact,) = _collection(storage, "/alice/contacts/").get_all()
        assert (contact.uid, contact.name, contact.component_name) == ("grace", "VCARD", card.component_name)
        assert "FN:Grace Hopper" in contact.serialize()
        assert storage.find_uid("/alice/", "grace") == []  # the UID index looks into calendars only
