# SPDX-License-Identifier: GPL-3.0-or-later
"""RFC 6578 sync on a per-collection revision counter and one change row per href.

A write bumps its collection's counter with ``UPDATE … RETURNING``: the row stays locked until the write
commits, so a second writer of that collection gets the next revision only after the first is visible. A
reader who saw revision N can therefore never miss a change that commits later with a revision ≤ N — the
lost change a global sequence has (a slow transaction takes 1, a fast one takes 2 and commits first).

A token names the collection (its id, never reused) and a revision. Tombstones older than
``[storage] max_sync_token_age`` are pruned and raise the collection's ``history_floor``; a token below the
floor, from another collection, or from the future is refused with ``ValueError`` (Radicale answers 403
``valid-sync-token`` and the client syncs from scratch).
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

import psycopg

from invito.storage.pg import collections
from invito.storage.pg.collections import CollectionRow

PREFIX = "urn:invito:sync:"
_TOKEN = re.compile(re.escape(PREFIX) + r"(\d+)-(\d+)")


def token(collection_id: int, revision: int) -> str:
    return f"{PREFIX}{collection_id}-{revision}"


def revision_of(old_token: str, collection_id: int, current: int, floor: int) -> int:
    """The revision ``old_token`` stands for in this collection; ValueError when it cannot be answered."""
    match = _TOKEN.fullmatch(old_token)
    if not match:
        raise ValueError(f"malformed sync token: {old_token!r}")
    if int(match.group(1)) != collection_id:
        raise ValueError(f"sync token of another collection: {old_token!r}")
    revision = int(match.group(2))
    if revision > current:
        raise ValueError(f"sync token from the future: {old_token!r}")
    if revision < floor:
        raise ValueError(f"sync token older than the kept history: {old_token!r}")
    return revision


def bump(conn: psycopg.Connection, collection_id: int) -> CollectionRow:
    """The collection's next revision (the row as it is now); the row stays locked until this transaction
    ends."""
    row = conn.execute(f"UPDATE dav_collection SET revision = revision + 1, modified = now() WHERE id = %s "
                       f"RETURNING {collections.COLUMNS}", (collection_id,)).fetchone()
    assert row is not None, "the collection vanished inside its own write lock"
    return CollectionRow(*row)


def record(conn: psycopg.Connection, collection_id: int, changes: Mapping[str, bool]) -> CollectionRow:
    """One new revision for ``changes`` (href → deleted); returns the collection's row with it."""
    collection = bump(conn, collection_id)
    revision = collection.revision
    if changes:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO dav_change (collection_id, href, revision, deleted) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (collection_id, href) DO UPDATE SET revision = excluded.revision, "
                "deleted = excluded.deleted, changed_at = now()",
                [(collection_id, href, revision, deleted) for href, deleted in changes.items()])
    return collection


def changed_since(conn: psycopg.Connection, collection_id: int, revision: int) -> Iterable[str]:
    rows = conn.execute("SELECT href FROM dav_change WHERE collection_id = %s AND revision > %s ORDER BY href",
                        (collection_id, revision)).fetchall()
    return [href for (href,) in rows]


def prune(conn: psycopg.Connection, collection_id: int, max_age: int) -> None:
    """Forget tombstones older than ``max_age`` seconds; tokens from before them are refused from now on."""
    conn.execute(
        "WITH pruned AS (DELETE FROM dav_change WHERE collection_id = %s AND deleted "
        "AND changed_at < now() - make_interval(secs => %s) RETURNING revision) "
        "UPDATE dav_collection SET history_floor = greatest(history_floor, (SELECT max(revision) FROM pruned)) "
        "WHERE id = %s AND EXISTS (SELECT 1 FROM pruned)", (collection_id, max_age, collection_id))
