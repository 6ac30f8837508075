# SPDX-License-Identifier: GPL-3.0-or-later
"""Durable side records: Invito's own data about a user's event, by (user, UID), beside the user's home.

One small JSON file per event in ``<home>/.Radicale.invito/`` (Radicale skips ``.Radicale*`` names, so
clients never see it and it adds nothing to any ETag or sync token). A second backend (a table) only
needs :meth:`get`, :meth:`put` and :meth:`delete`.

A record is written before the event file it belongs to and is kept per version of that file (the
SHA-256 of its text): a kill between the two writes leaves the previous file with its own bookkeeping,
so event and record can never be read out of step. Each put keeps the version it replaces and the new one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Callable

from radicale import pathutils

from invito.plugins import durable
from invito.storage.bookkeeping import Record

FOLDER = ".Radicale.invito"


def digest(text: str) -> str:
    """The version of an event file: the SHA-256 of its text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class SideRecords:
    def __init__(self, collection_root: str, durable: Callable[[], bool]) -> None:
        self._root = collection_root
        self._durable = durable  # the storage's fsync setting, read at each write (deferred_sync turns it off)

    def path(self, user: str, uid: str) -> str:
        home = pathutils.path_to_filesystem(self._root, user)
        return os.path.join(home, FOLDER, hashlib.sha256(uid.encode("utf-8")).hexdigest() + ".json")

    def _versions(self, user: str, uid: str) -> dict[str, Record]:
        try:
            with open(self.path(user, uid), "rb") as f:
                return json.load(f).get("versions", {})
        except FileNotFoundError:
            return {}
        except ValueError:  # torn or hand-edited: the bookkeeping is lost, the event is not
            return {}

    def get(self, user: str, uid: str, version: str) -> Record:
        """The bookkeeping of event ``uid`` as stored in the file version ``version``; {} when none."""
        return self._versions(user, uid).get(version, {})

    def read_raw(self, user: str, uid: str) -> bytes | None:
        """The record file's bytes, for a transaction to put back on rollback."""
        with contextlib.suppress(FileNotFoundError):
            with open(self.path(user, uid), "rb") as f:
                return f.read()
        return None

    def put(self, user: str, uid: str, version: str, record: Record, replaces: str | None) -> None:
        """Record ``record`` for file version ``version``, keeping the one for ``replaces`` (the file
        as it is until the new version is written)."""
        versions = self._versions(user, uid)
        kept = {replaces: versions[replaces]} if replaces in versions else {}
        kept[version] = record
        if not any(kept.values()):
            self.delete(user, uid)
            return
        self.write_raw(user, uid, json.dumps({"uid": uid, "versions": kept}, sort_keys=True).encode("utf-8"))

    def delete(self, user: str, uid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path(user, uid))

    def write_raw(self, user: str, uid: str, data: bytes | None) -> None:
        """Replace the record file atomically with ``data`` (None removes it)."""
        if data is None:
            self.delete(user, uid)
            return
        path = self.path(user, uid)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        durable.write_atomically(path, data, sync=self._durable())
