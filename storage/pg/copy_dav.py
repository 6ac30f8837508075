# SPDX-License-Identifier: GPL-3.0-or-later
"""Copying Radicale's filesystem collections (``collection-root/``) into ``dav_collection``/``dav_item``.

The folder is only read: no cache, history or lock file is written, so it stays a faithful backup. Each
collection is read from its own folder (``.Radicale.props`` for its properties, every file with a name
Radicale would serve for its items) and written in one transaction, through the same ``items.store`` the
database storage uses: the text is kept byte for byte, and UID, component and time range are computed as
on any PUT. Copying again finds what is already there and writes nothing: an item whose href is taken is
left as the database has it (counted as skipped; a different text is reported, never overwritten).

Filesystem sync tokens are not carried over: ``sync.revision_of`` refuses them as malformed, so a client
that presents one gets 403 ``valid-sync-token`` and syncs from scratch, which loses nothing.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Iterator

import psycopg
import radicale.item as radicale_item
from psycopg.types.json import Jsonb
from radicale import pathutils

from invito.storage import side_records
from invito.storage.pg import collections, items, sync

@dataclass(frozen=True)
class FolderCollection:
    """One collection as its folder holds it: the path without slashes, its properties, its item files."""
    path: str
    folder: str
    props: dict[str, str]
    hrefs: tuple[str, ...]


@dataclass
class Copied:
    """What copying one collection did."""
    new: bool                                   # the collection was not in the database before
    items: int = 0                              # items written now
    skipped: int = 0                            # items already there
    differing: list[str] = field(default_factory=list)  # hrefs the database holds with another text
    unreadable: list[str] = field(default_factory=list)  # hrefs whose file is no calendar object or contact


def walk(collection_root: str) -> Iterator[FolderCollection]:
    """Every collection under ``collection_root``, parents before their children (the principal
    collections first), in a stable order."""
    if not os.path.isdir(collection_root):
        return
    pending = [("", collection_root)]
    while pending:
        path, folder = pending.pop(0)
        hrefs, children = [], []
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if not pathutils.is_safe_filesystem_path_component(entry.name):
                continue  # .Radicale.props, .Radicale.cache, .Radicale.invito, …: not served
            if entry.is_dir(follow_symlinks=False):
                children.append((f"{path}/{entry.name}" if path else entry.name, entry.path))
            elif entry.is_file(follow_symlinks=False):
                hrefs.append(entry.name)
        if path:  # the root itself is the database's own row
            yield FolderCollection(path, folder, _props(folder), tuple(hrefs))
        pending.extend(children)


def copy(conn: psycopg.Connection, collection: FolderCollection, encoding: str = "utf-8") -> Copied:
    """``collection`` and its items into the database, in the caller's transaction."""
    new = collections.load(conn, collection.path) is None
    row = collections.ensure(conn, collection.path)
    if new or (not row.props and collection.props):  # ``ensure`` made it empty, as a parent of another
        collections.set_props(conn, row.id, collection.props)
    copied = Copied(new)
    present = items.get_many(conn, row.id, collection.hrefs)
    written: dict[str, bool] = {}
    owner = collections.owner_of(collection.path)
    for href in collection.hrefs:
        try:
            with open(os.path.join(collection.folder, href), "rb") as f:
                text = f.read().decode(encoding)
            item = radicale_item.Item(collection_path=collection.path, text=text)
            item.prepare()  # UID, component and time range now: an unparsable file fails here, not mid-write
        except (UnicodeDecodeError, RuntimeError, ValueError):
            copied.unreadable.append(href)
            continue
        if href in present:
            copied.skipped += 1
            if present[href].etag != item.etag:
                copied.differing.append(href)
            continue
        items.store(conn, row.id, owner, href, item)
        written[href] = False
        copied.items += 1
    if written or new:
        sync.record(conn, row.id, written)  # a new revision: the etag and any database sync token move on
    return copied


def _props(folder: str) -> dict[str, str]:
    try:
        with open(os.path.join(folder, ".Radicale.props"), encoding="utf-8") as f:
            props = json.load(f)
    except FileNotFoundError:
        return {}
    return {str(key): str(value) for key, value in props.items()}


def copy_side_records(conn: psycopg.Connection, home: str, home_folder: str) -> tuple[int, int]:
    """The side records of ``home`` (``<home>/.Radicale.invito/``) into ``invito_side_record``, each for
    the version of its event the database now holds (a record of no stored version is stale and left);
    returns (copied, already there)."""
    folder = os.path.join(home_folder, side_records.FOLDER)
    copied = skipped = 0
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        if not name.endswith(".json"):
            continue
        with open(os.path.join(folder, name), "rb") as f:
            kept = json.load(f)
        uid, versions = kept.get("uid"), kept.get("versions") or {}
        for _, item in items.find_uid(conn, home, uid) if uid else ():
            version = side_records.digest(item.text)
            if version in versions and versions[version]:
                inserted = conn.execute(
                    "INSERT INTO invito_side_record (home, uid, version, record) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (home, uid) DO NOTHING", (home, uid, version, Jsonb(versions[version]))).rowcount
                copied, skipped = copied + inserted, skipped + 1 - inserted
                break
    return copied, skipped
