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


def record(conn: psycopg.Connection, collection_id: int, changes: Mapping[str, bool],
           max_age: int | None = None) -> CollectionRow:
    """One new revision for ``changes`` (href → deleted), with tombstones older than ``max_age`` seconds
    (None: none) forgotten (tokens from before them are refused from then on); the collection's row as it is now, locked
    until this transaction ends. One statement: a scheduling write changes two collections, and each
    statement is a round trip to the database."""
    hrefs, deleted = list(changes), list(changes.values())
    row = conn.execute(
        # The hrefs written now are not pruned: their rows are replaced below, and one statement must not
        # change a row twice.
        "WITH pruned AS (DELETE FROM dav_change WHERE collection_id = %(id)s AND deleted "
        "  AND changed_at < now() - make_interval(secs => %(age)s) AND NOT (href = ANY(%(hrefs)s::text[])) "
        "  RETURNING revision), "
        "bumped AS (UPDATE dav_collection SET revision = revision + 1, modified = now(), "
        "  history_floor = greatest(history_floor, (SELECT max(revision) FROM pruned)) "
        f"  WHERE id = %(id)s RETURNING {collections.COLUMNS}), "
        "logged AS (INSERT INTO dav_change (collection_id, href, revision, deleted) "
        "  SELECT %(id)s, href, bumped.revision, gone FROM bumped, unnest(%(hrefs)s::text[], %(deleted)s::bool[]) "
        "  AS changed(href, gone) "
        "  ON CONFLICT (collection_id, href) DO UPDATE SET revision = excluded.revision, "
        "  deleted = excluded.deleted, changed_at = now()) "
        "SELECT * FROM bumped", {"id": collection_id, "age": max_age, "hrefs": hrefs, "deleted": deleted}).fetchone()
    assert row is not None, "the collection vanished inside its own write lock"
    return CollectionRow(*row)


def changed_since(conn: psycopg.Connection, collection_id: int, revision: int) -> Iterable[str]:
    rows = conn.execute("SELECT href FROM dav_change WHERE collection_id = %s AND revision > %s ORDER BY href",
                        (collection_id, revision)).fetchall()
    return [href for (href,) in rows]
