# SPDX-License-Identifier: GPL-3.0-or-later
"""The rows of ``dav_item``: a stored calendar object or contact with the facts Radicale would otherwise
parse its text for (UID, component, time range, etag), so reading never runs vobject."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

import psycopg
import radicale.item as radicale_item

from invito.storage.pg.collections import COLUMNS, CollectionRow

_COLUMNS = "href, uid, name, component, starts, ends, etag, text, modified"
_ITEM_COLUMNS = ", ".join("i." + column for column in _COLUMNS.split(", "))
_COLLECTION_COLUMNS = ", ".join("c." + column for column in COLUMNS.split(", "))


@dataclass(frozen=True)
class ItemRow:
    href: str
    uid: str
    name: str
    component: str
    starts: int
    ends: int
    etag: str
    text: str
    modified: datetime


def get(conn: psycopg.Connection, collection_id: int, href: str) -> ItemRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM dav_item WHERE collection_id = %s AND href = %s",
                       (collection_id, href)).fetchone()
    return ItemRow(*row) if row else None


def get_many(conn: psycopg.Connection, collection_id: int, hrefs: Iterable[str]) -> dict[str, ItemRow]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM dav_item WHERE collection_id = %s AND href = ANY(%s)",
                        (collection_id, list(hrefs))).fetchall()
    return {row[0]: ItemRow(*row) for row in rows}


def all_of(conn: psycopg.Connection, collection_id: int) -> list[ItemRow]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM dav_item WHERE collection_id = %s ORDER BY href",
                        (collection_id,)).fetchall()
    return [ItemRow(*row) for row in rows]


# The box test is the index's: boxes of one collection share their x, so it also selects the collection
# (no ``collection_id =`` beside it, which would tempt the planner to read the whole collection by its key).
# It is inclusive, a superset; the exact half-open overlap follows.
OVERLAPPING = (f"SELECT {_COLUMNS} FROM dav_item WHERE box(point(collection_id, starts), point(collection_id, ends)) "
               "&& box(point(%(id)s, %(start)s), point(%(id)s, %(end)s)) "
               "AND starts < %(end)s AND ends > %(start)s "
               "AND (%(component)s::text IS NULL OR component = %(component)s) ORDER BY href")


def overlapping(conn: psycopg.Connection, collection_id: int, component: str | None, start: int,
                end: int) -> list[ItemRow]:
    """Items whose time range overlaps [start, end) (index ``dav_item_time_range``), of ``component`` if
    given: a superset of a time-range REPORT's answer that Radicale's own filter then decides exactly."""
    rows = conn.execute(OVERLAPPING, {"id": collection_id, "start": start, "end": end,
                                      "component": component}).fetchall()
    return [ItemRow(*row) for row in rows]


def hrefs(conn: psycopg.Connection, collection_id: int) -> list[str]:
    rows = conn.execute("SELECT href FROM dav_item WHERE collection_id = %s ORDER BY href",
                        (collection_id,)).fetchall()
    return [href for (href,) in rows]


def href_for_uid(conn: psycopg.Connection, owner: str, collection_id: int, uid: str) -> str | None:
    """The href of the item with ``uid`` in the collection (the first by name if several), by the index on
    (owner, uid); None when there is none."""
    row = conn.execute("SELECT href FROM dav_item WHERE owner = %s AND uid = %s AND collection_id = %s "
                       "ORDER BY href LIMIT 1", (owner, uid, collection_id)).fetchone()
    return row[0] if row else None


def find_uid(conn: psycopg.Connection, home: str, uid: str) -> list[tuple[CollectionRow, ItemRow]]:
    """Each item with ``uid`` in the calendars directly under ``home`` and its collection, by the index on
    (owner, uid): one query for what would be three (where, which collection, the item)."""
    rows = conn.execute(
        f"SELECT {_COLLECTION_COLUMNS}, {_ITEM_COLUMNS} FROM dav_item i JOIN dav_collection c "
        "ON c.id = i.collection_id WHERE i.owner = %s AND i.uid = %s AND c.parent = %s "
        "AND c.props->>'tag' = 'VCALENDAR' ORDER BY c.path, i.href", (home, uid, home)).fetchall()
    width = len(dataclasses.fields(CollectionRow))
    return [(CollectionRow(*row[:width]), ItemRow(*row[width:])) for row in rows]


def store(conn: psycopg.Connection, collection_id: int, owner: str, href: str,
          item: radicale_item.Item) -> tuple[ItemRow, ItemRow | None]:
    """Insert or replace the item at ``href`` from a parsed Radicale item (the one place text is parsed);
    the row written and the one it replaced, read in the same statement (one round trip, not two)."""
    text = item.serialize()
    starts, ends = item.time_range
    row = conn.execute(
        f"WITH old AS (SELECT {_COLUMNS} FROM dav_item WHERE collection_id = %(id)s AND href = %(href)s), "
        "new AS (INSERT INTO dav_item (collection_id, href, owner, uid, name, component, starts, ends, etag, text) "
        "VALUES (%(id)s, %(href)s, %(owner)s, %(uid)s, %(name)s, %(component)s, %(starts)s, %(ends)s, %(etag)s, "
        "%(text)s) ON CONFLICT (collection_id, href) DO UPDATE SET "
        "owner = excluded.owner, uid = excluded.uid, name = excluded.name, component = excluded.component, "
        "starts = excluded.starts, ends = excluded.ends, etag = excluded.etag, text = excluded.text, "
        f"modified = now() RETURNING {_COLUMNS}) "
        "SELECT new.*, old.* FROM new LEFT JOIN old ON true",  # old: the row as it was before this statement
        {"id": collection_id, "href": href, "owner": owner, "uid": item.uid, "name": item.name,
         "component": item.component_name, "starts": starts, "ends": ends, "etag": radicale_item.get_etag(text),
         "text": text}).fetchone()
    assert row is not None
    width = len(dataclasses.fields(ItemRow))
    return ItemRow(*row[:width]), ItemRow(*row[width:]) if row[width] is not None else None


def remove(conn: psycopg.Connection, collection_id: int, href: str) -> bool:
    """Delete the item at ``href``; whether there was one."""
    return conn.execute("DELETE FROM dav_item WHERE collection_id = %s AND href = %s",
                        (collection_id, href)).rowcount > 0


def remove_all(conn: psycopg.Connection, collection_id: int, keep: Iterable[str]) -> list[str]:
    """Delete every item but ``keep``; the hrefs deleted."""
    rows = conn.execute("DELETE FROM dav_item WHERE collection_id = %s AND NOT (href = ANY(%s)) RETURNING href",
                        (collection_id, list(keep))).fetchall()
    return [href for (href,) in rows]


def rename(conn: psycopg.Connection, collection_id: int, href: str, to_collection_id: int, to_owner: str,
           to_href: str) -> None:
    """Move an item's row, replacing any item at the target."""
    if (collection_id, href) == (to_collection_id, to_href):
        return
    conn.execute("DELETE FROM dav_item WHERE collection_id = %s AND href = %s", (to_collection_id, to_href))
    conn.execute("UPDATE dav_item SET collection_id = %s, owner = %s, href = %s, modified = now() "
                 "WHERE collection_id = %s AND href = %s", (to_collection_id, to_owner, to_href, collection_id, href))
