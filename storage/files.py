# SPDX-License-Identifier: GPL-3.0-or-later
"""The filesystem backend (the embedded default): Radicale's multifilesystem with a UID index
(``indexed``), the client's own text in the item cache (``verbatim``), and scheduling (``scheduled``)
under Radicale's one global write lock. Its transaction is an undo log plus a crash journal
(``transaction``); the outbound queue is the spool folder and side records are files beside each home.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import radicale.item as radicale_item
from radicale import config

from invito.plugins.imip.spool import OutboundSpool
from invito.storage import backend, scheduled, verbatim
from invito.storage.changes import Change, Outcome
from invito.storage.indexed import IndexedCollection, IndexedStorage
from invito.storage.side_records import SideRecords
from invito.storage.transaction import SchedulingTransaction, Transaction


class FileCollection(scheduled.Collection, verbatim.VerbatimCacheCollection, IndexedCollection):

    def get_item(self, href: str) -> radicale_item.Item | None:
        return self._get(href)

    def item_hrefs(self) -> list[str]:
        return list(self._list())


class FileStorage(scheduled.Storage, IndexedStorage):
    _collection_class = FileCollection

    def _scheduling_parts(self, configuration: config.Configuration) -> tuple[OutboundSpool, SideRecords]:
        return (backend.outbound(configuration),  # type: ignore[return-value]  (the data folder's spool)
                SideRecords(self._get_collection_root_folder(), lambda: self._filesystem_fsync))

    def _has_home(self, name: str) -> bool:
        return os.path.isdir(os.path.join(self._get_collection_root_folder(), name))

    def schedule(self, user: str, change: Change) -> Outcome:
        """Under the global write lock, taken once here."""
        with self.acquire_lock("w", user):
            return self.scheduler.schedule(user, change)

    def transaction(self) -> SchedulingTransaction:
        """The caller holds the write lock."""
        return Transaction(self.scheduler.spool, self.scheduler.records)

    @contextlib.contextmanager
    def deferred_sync(self) -> Iterator[None]:
        """Writes inside (events, inbox items, mail spool files) are not fsynced one by one; everything is
        flushed to disk once at the end.

        For a caller that keeps its input until then and whose work is idempotent (the inbound mail
        processor: a message leaves its spool only after this, and a reply applied twice changes nothing),
        and only on a Storage instance of its own: the flag is per instance.
        """
        durable = self._filesystem_fsync
        self._filesystem_fsync = self.scheduler.spool.durable = False
        try:
            yield
        finally:
            self._filesystem_fsync = self.scheduler.spool.durable = durable
            if durable:
                os.sync()
