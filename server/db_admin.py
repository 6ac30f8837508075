# SPDX-License-Identifier: GPL-3.0-or-later
"""``invito db``: the database's schema by hand (``invito serve`` also migrates it on start).

``invito db migrate`` brings the database named by ``[invito] database`` (or ``database_file``) to the
schema this version needs and says what it did; ``invito db status`` only says where it stands. Both
speak the words of ``invito check``'s database line, which reuses ``describe``.
"""
from __future__ import annotations

import argparse

import psycopg

from invito.server.config import CommandError, load
from invito.storage.pg import migrations
from invito.storage.pg.db import configured_url

CONNECT_TIMEOUT = 5  # seconds: a wrong host must not hang an admin command


def add_parser(commands: argparse._SubParsersAction, with_config: argparse.ArgumentParser) -> None:
    db = commands.add_parser("db", help="the PostgreSQL database ([invito] database)",
                             description="Manage the schema of the database named by [invito] database.")
    actions = db.add_subparsers(metavar="ACTION", required=True)
    migrate = actions.add_parser("migrate", parents=[with_config], help="create or upgrade the schema",
                                 description="Apply the numbered migrations this version has and the "
                                             "database lacks, each in its own transaction. Safe to run "
                                             "while other nodes start: they wait for one another.")
    migrate.set_defaults(run=_migrate)
    status = actions.add_parser("status", parents=[with_config], help="print the schema version")
    status.set_defaults(run=_status)


def url_of(config_file: str | None) -> str:
    url = configured_url(load(config_file))
    if not url:
        raise CommandError("no database is configured: set [invito] database (or database_file)")
    return url


def describe(url: str) -> tuple[int, str]:
    """(schema version, one line on where it stands); raises ``psycopg.Error`` when it cannot connect."""
    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT) as conn:
        found = migrations.version(conn)
    needed = migrations.latest()
    if found == needed:
        return found, f"schema version {found}, as this Invito needs"
    if found > needed:
        return found, f"schema version {found} is newer than this Invito ({needed}): upgrade Invito"
    return found, (f"schema version {found}, this Invito needs {needed}: invito serve migrates it on start, "
                   "or run invito db migrate")


def _migrate(args: argparse.Namespace) -> int:
    applied = _migrated(url_of(args.config), "cannot migrate the database")
    for migration in applied:
        print(f"applied {migration.version:04d} {migration.name}")
    print(f"schema version {migrations.latest()}" + ("" if applied else ": nothing to do"))
    return 0


def migrate_on_start(url: str) -> None:
    """`invito serve` on the database: the schema brought up to date first, or a clear refusal."""
    for migration in _migrated(url, "cannot use the database ([invito] database)"):
        print(f"database: applied migration {migration.version:04d} {migration.name}", flush=True)


def _migrated(url: str, failure: str) -> list[migrations.Migration]:
    try:
        return migrations.migrate(url)
    except psycopg.Error as e:
        raise CommandError(f"{failure}: {first_line(e)}") from e
    except RuntimeError as e:  # newer than this code
        raise CommandError(str(e)) from e


def _status(args: argparse.Namespace) -> int:
    try:
        found, line = describe(url_of(args.config))
    except psycopg.Error as e:
        raise CommandError(f"cannot reach the database: {first_line(e)}") from e
    print(line)
    return 0 if found == migrations.latest() else 1


def first_line(error: BaseException) -> str:
    """psycopg's message without its multi-line detail (which may quote the URL's password)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
