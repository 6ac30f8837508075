# SPDX-License-Identifier: GPL-3.0-or-later
"""The database schema, created and upgraded by numbered migrations.

Each migration is a file ``schema/NNNN_name.sql`` run in one transaction with its row in
``invito_schema``; a database is at the version of its highest row. ``migrate`` holds a session-level
advisory lock while it works, so nodes started together migrate once, one after the other finding
nothing left to do. Migrations only ever add files: a released one is never edited.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

logger = logging.getLogger("invito.storage")

_MIGRATION_LOCK = 0x696E7669746F  # "invito": one key for every database, migrations of one run at a time
_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped with this version, in order."""
    found = []
    for entry in resources.files("invito.storage.pg").joinpath("schema").iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError("migrations are not numbered 1, 2, 3…: %s" % [m.version for m in found])
    return found


def latest() -> int:
    """The schema version this code needs."""
    return len(available())


def version(conn: psycopg.Connection) -> int:
    """The database's schema version; 0 for a database Invito has never migrated."""
    exists = conn.execute("SELECT to_regclass('invito_schema') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM invito_schema").fetchone()
    return int(row[0]) if row else 0


def migrate(url: str) -> list[Migration]:
    """Bring the database at ``url`` to ``latest()``; returns the migrations applied now. A database newer
    than this code is refused (an older node must not write a schema it does not know)."""
    applied = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS invito_schema (version integer PRIMARY KEY, "
                         "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
            current = version(conn)
            if current > latest():
                raise RuntimeError(f"the database's schema is version {current}, newer than this Invito "
                                   f"({latest()}): upgrade Invito on this node")
            for migration in available()[current:]:
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute("INSERT INTO invito_schema (version, name) VALUES (%s, %s)",
                                 (migration.version, migration.name))
                logger.info("database schema migrated to %d (%s)", migration.version, migration.name)
                applied.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied
