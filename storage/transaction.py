# SPDX-License-Identifier: GPL-3.0-or-later
"""Undo log for the several files one scheduling write touches.

A PUT that invites three people writes the organizer's copy, three inboxes, three calendars and maybe
spool entries. Radicale writes each file atomically but not the set; if any step fails we put every
touched item back as it was, so the client's error means "nothing happened".
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

import radicale.item as radicale_item

from invito.plugins.imip.spool import OutboundSpool

if TYPE_CHECKING:
    from invito.storage import Collection

logger = logging.getLogger("invito.storage")


class Transaction:
    def __init__(self, spool: OutboundSpool) -> None:
        self._spool = spool
        self._undo: list[Callable[[], None]] = []
        self._spooled: list[str] = []

    def store(self, collection: "Collection", href: str, item: radicale_item.Item) -> radicale_item.Item:
        uploaded, replaced = collection.store(href, item)
        if replaced is None:
            self._undo.append(lambda: collection.remove(href))
        else:
            self._undo.append(lambda: collection.store(href, replaced))
        return uploaded

    def remove(self, collection: "Collection", href: str, old: radicale_item.Item) -> None:
        collection.remove(href)
        self._undo.append(lambda: collection.store(href, old))

    def spool(self, entry_id: str) -> None:
        self._spooled.append(entry_id)

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """All or nothing: commit when the block finished, undo everything when it raised."""
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def commit(self) -> None:
        self._spool.commit(self._spooled)
        self._undo.clear()
        self._spooled.clear()

    def rollback(self) -> None:
        self._spool.discard(self._spooled)
        for undo in reversed(self._undo):
            try:
                undo()
            except Exception:  # keep undoing the rest; the log tells the admin what could not be restored
                logger.exception("could not undo a partial scheduling write")
        self._undo.clear()
        self._spooled.clear()
