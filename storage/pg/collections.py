# SPDX-License-Identifier: GPL-3.0-or-later
"""The rows of ``dav_collection``: one per collection, addressed by Radicale's sanitized path without
slashes ("" is the root, "alice" a home, "alice/calendar" a calendar)."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping

import psycopg
from psycopg.types.json import Jsonb

COLUMNS = "id, path, props, revision, history_floor, modified"


@dataclass
class CollectionRow:
    id: int
    path: str
    props: dict[str, str]
    revision: int
    history_floor: int
    modified: datetime


def owner_of(path: str) -> str:
    """The home a path lives in: its first segment ("" for the root)."""
    return path.split("/", 1)[0]


def parent_of(path: str) -> str | None:
    return posixpath.dirname(path) if path else None


def load(conn: psycopg.Connection, path: str) -> CollectionRow | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM dav_collection WHERE path = %s", (path,)).fetchone()
    return CollectionRow(*row) if row else None


def existing(conn: psycopg.Connection, paths: set[str]) -> set[str]:
    """Which of ``paths`` are collections, in one query."""
    if not paths:
        return set()
    return {row[0] for row in conn.execute("SELECT path FROM dav_collection WHERE path = ANY(%s)", (list(paths),))}


def children(conn: psycopg.Connection, path: str) -> list[CollectionRow]:
    rows = conn.execute(f"SELECT {COLUMNS} FROM dav_collection WHERE parent = %s ORDER BY path",
                        (path,)).fetchall()
    return [CollectionRow(*row) for row in rows]


def calendars_of(conn: psycopg.Connection, home: str) -> list[CollectionRow]:
    rows = conn.execute(f"SELECT {COLUMNS} FROM dav_collection WHERE parent = %s "
                        "AND props->>'tag' = 'VCALENDAR' ORDER BY path", (home,)).fetchall()
    return [CollectionRow(*row) for row in rows]


def ensure(conn: psycopg.Connection, path: str) -> CollectionRow:
    """The collection at ``path``, created empty with any missing parents (like ``mkdir -p``)."""
    parent = parent_of(path)
    if parent is not None:
        ensure(conn, parent)
    conn.execute("INSERT INTO dav_collection (path, parent, owner) VALUES (%s, %s, %s) "
                 "ON CONFLICT (path) DO NOTHING", (path, parent, owner_of(path)))
    found = load(conn, path)
    assert found is not None
    return found


def set_props(conn: psycopg.Connection, collection_id: int, props: Mapping[str, str]) -> None:
    """Replace every property (Radicale hands over the whole set). The caller bumps the revision, so the
    collection's etag changes."""
    conn.execute("UPDATE dav_collection SET props = %s WHERE id = %s", (Jsonb(dict(props)), collection_id))


def remove_children(conn: psycopg.Connection, path: str) -> None:
    """Every collection below ``path``, with their items and history (a whole-collection PUT replaces the
    folder, children included)."""
    conn.execute("DELETE FROM dav_collection WHERE starts_with(path, %s)", (path + "/",))


def remove(conn: psycopg.Connection, path: str) -> None:
    """The collection at ``path`` and everything below it."""
    conn.execute("DELETE FROM dav_collection WHERE path = %s OR starts_with(path, %s)", (path, path + "/"))
