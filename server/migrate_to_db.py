# SPDX-License-Identifier: GPL-3.0-or-later
"""``invito migrate-to-db``: copy a data folder into the database the configuration names.

Run with the filesystem server stopped. It migrates the schema first, then copies, in this order: the
reply tokens' signing secret and the tokens (refused before anything else is written when the database
already signs with another secret), every collection with its items (one transaction each), the side
records, the outbound spool (waiting and failed) and the inbound spool (pending and quarantined). Every
row keeps the folder's own key (path and href, message id, token), so a second run, or a run after one
that was killed, copies only what is missing and says so. The folder is never changed: it stays the
backup, and the filesystem server can go on from it should the switch be called off.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields

import psycopg

from invito.plugins.data_folder import DataFolder
from invito.plugins.imip.inbound_spool import InboundSpool
from invito.plugins.imip.spool import OutboundSpool
from invito.plugins.progress import progress, say
from invito.server.config import CommandError, load
from invito.server.db_admin import first_line
from invito.storage.pg import copy_dav, copy_queues, copy_tokens, migrations
from invito.storage.pg.db import Database, configured_url


@dataclass
class Tally:
    """What this run copied, and what it found already there (``skipped``)."""
    collections: int = 0
    items: int = 0
    side_records: int = 0
    waiting: int = 0
    failed: int = 0
    pending: int = 0
    quarantined: int = 0
    tokens: int = 0
    skipped: int = 0

    def copied_anything(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name != "skipped")

    def summary(self) -> str:
        return (f"copied {self.collections} collections, {self.items} items, {self.side_records} side records, "
                f"{self.waiting} messages waiting, {self.failed} failed, {self.pending} inbound pending, "
                f"{self.quarantined} quarantined, {self.tokens} reply tokens; "
                f"skipped {self.skipped} already there")


def add_parser(commands: argparse._SubParsersAction, with_config: argparse.ArgumentParser) -> None:
    command = commands.add_parser(
        "migrate-to-db", parents=[with_config], help="copy the data folder into the database",
        description="Copy the data folder the configuration names (collections, items, side records, the "
                    "mail spools and quarantine, reply tokens and their secret) into the database of "
                    "[invito] database, after migrating its schema. Run it with the server stopped. Safe to "
                    "run again: what is already there is skipped. The folder is never changed.")
    command.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    configuration = load(args.config)
    url = configured_url(configuration)
    if not url:
        raise CommandError("no database is configured: set [invito] database (or database_file) to the "
                           "database to copy into")
    data = DataFolder.of(configuration)
    if not os.path.isdir(data.root):
        raise CommandError(f"there is no data folder at {data.root}: check [invito] data_folder")
    try:
        for migration in migrations.migrate(url):
            say(f"schema: applied {migration.version:04d} {migration.name}")
        database = Database(url, max_size=1)
    except psycopg.Error as e:
        raise CommandError(f"cannot use the database: {first_line(e)}") from e
    except RuntimeError as e:  # a schema newer than this code
        raise CommandError(str(e)) from e
    tally = Tally()
    try:
        _tokens(database, data, tally)
        _collections(database, data, configuration.get("encoding", "stock"), tally)
        _outbound(database, OutboundSpool(data.outbound_spool), tally)
        _inbound(database, InboundSpool(data.inbound_spool), tally)
    except copy_tokens.SecretConflict as e:
        raise CommandError(f"{e}. Nothing was copied. Copy into a new database, or drop this one's tokens "
                           "and secret (DELETE FROM invito_reply_token; DELETE FROM invito_setting "
                           "WHERE name = 'reply_secret') if none of its links matter") from e
    except psycopg.Error as e:
        raise CommandError(f"the copy stopped: {first_line(e)}; what was copied is kept, run the command "
                           "again to copy the rest") from e
    except OSError as e:
        raise CommandError(f"the copy stopped: cannot read {e.filename}: {e.strerror}; what was copied is "
                           "kept, run the command again (as the user invito serve runs as)") from e
    finally:
        database.close()
    say(tally.summary())
    if not tally.copied_anything():
        say("nothing new: the database already holds everything in the data folder")
    say(f"Next: set [invito] database in the configuration (if it is not set there yet) and restart invito serve; "
        f"keep {data.root} as a backup, it was not changed.")
    return 0


def _tokens(database: Database, data: DataFolder, tally: Tally) -> None:
    secret = copy_tokens.folder_secret(data.tokens)
    if secret is None:
        return
    tokens = copy_tokens.folder_tokens(data.tokens)
    with database.write() as conn:
        if copy_tokens.copy_secret(conn, secret):
            say("reply links: the database now signs with the data folder's secret")
        new = copy_tokens.copy_tokens(conn, tokens)
    tally.tokens += new
    tally.skipped += len(tokens) - new


def _collections(database: Database, data: DataFolder, encoding: str, tally: Tally) -> None:
    found = list(copy_dav.walk(data.collection_root))
    for collection in progress(found, "collections", total=len(found), unit="collection"):
        with database.write() as conn:
            copied = copy_dav.copy(conn, collection, encoding)
        tally.collections += copied.new
        tally.skipped += (not copied.new) + copied.skipped
        tally.items += copied.items
        for href in copied.differing:
            say(f"kept the database's {collection.path}/{href}: it differs from the folder's")
        for href in copied.unreadable:
            say(f"not copied: {collection.folder}/{href} is no calendar object or contact Radicale can read")
    for home in (c for c in found if "/" not in c.path):  # once every calendar of the home is in
        with database.write() as conn:
            copied, skipped = copy_dav.copy_side_records(conn, home.path, home.folder)
        tally.side_records += copied
        tally.skipped += skipped


def _outbound(database: Database, spool: OutboundSpool, tally: Tally) -> None:
    if spool.prepared():
        say(f"not copied: {len(spool.prepared())} messages a killed server left half-written in {spool.folder}/tmp; "
            "start and stop invito serve on the folder once (it finishes or discards them), then run this again")
    messages = copy_queues.waiting(spool)
    for recipients in progress(messages, "outbound", total=len(messages), unit="message"):
        with database.write() as conn:
            new = sum(copy_queues.copy_delivery(conn, entry) for entry in recipients)
        tally.waiting += bool(new)
        tally.skipped += not new
    given_up = copy_queues.failed(spool)
    with database.write() as conn:
        new = sum(copy_queues.copy_delivery(conn, entry, reason) for entry, reason in given_up)
    tally.failed += new
    tally.skipped += len(given_up) - new


def _inbound(database: Database, spool: InboundSpool, tally: Tally) -> None:
    pending, quarantined = copy_queues.pending(spool), copy_queues.quarantined(spool)
    with database.write() as conn:
        new = sum(copy_queues.copy_mail(conn, entry) for entry in pending)
        kept = sum(copy_queues.copy_mail(conn, entry, reason) for entry, reason in quarantined)
    tally.pending += new
    tally.quarantined += kept
    tally.skipped += len(pending) + len(quarantined) - new - kept
