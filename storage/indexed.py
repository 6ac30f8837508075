# SPDX-License-Identifier: GPL-3.0-or-later
"""Radicale's multifilesystem storage whose PUT cost does not grow with the calendar.

Plain Radicale does two O(n) things per write: ``has_uid`` reads every item, and ``_clean_history``
stats the whole history folder. Here ``has_uid``/``href_for_uid``/``find_uid`` use the cached index of
:mod:`invito.storage.uid_index` (kept in ``.Radicale.cache/invito-uid`` of each collection, plus a copy in
memory per storage object), and history cleaning plus a full index verification run at most once per
``housekeeping_interval`` per collection and process (the first time a process touches a collection, then
periodically), so expired history is still cleaned and missed edits (see the limits in ``uid_index``) are
still found, just not on every request.

The folder stays plain Radicale's: another Radicale process, or a person, may change it; every lookup
first proves the index matches the folder (one ``stat`` of the directory) and reconciles when not.
"""
from __future__ import annotations

import functools
import logging
import os
import posixpath
import threading
import time
from typing import ClassVar

import radicale.item as radicale_item
from radicale import config, pathutils, storage
from radicale.storage import multifilesystem

from invito.plugins.progress import progress
from invito.storage.uid_index import (Entry, IndexStore, Record, UidIndex, dir_stamp, file_sig,
                                      scan)

logger = logging.getLogger("invito.storage")
LARGE_REBUILD = 500  # items re-read in one go that make an INFO line

INDEX_SUBFOLDER = "invito-uid"


class IndexedCollection(multifilesystem.Collection):
    _storage: "IndexedStorage"

    def has_uid(self, uid: str) -> bool:
        return bool(self.hrefs_for_uid(uid))

    def href_for_uid(self, uid: str) -> str | None:
        """The href of the item with ``uid`` in this collection (the first by name if several)."""
        hrefs = self.hrefs_for_uid(uid)
        return hrefs[0] if hrefs else None

    def hrefs_for_uid(self, uid: str) -> list[str]:
        """Every href with ``uid``; each checked against its file's current signature."""
        with self._storage._uid_lock:
            for force in (False, True):
                found = self._confirmed(self._uid_index(force), uid)
                if found is not None:
                    return found
        return []

    def upload(self, href: str, item: radicale_item.Item
               ) -> tuple[radicale_item.Item, radicale_item.Item | None]:
        with self._storage._uid_lock:
            index = self._uid_index()
            uploaded, replaced = super().upload(href, item)
            self._commit(index, href, Entry(uploaded.uid, file_sig(self._item_path(href))))
        return uploaded, replaced

    def delete(self, href: str | None = None) -> None:
        with self._storage._uid_lock:
            if href is None:
                super().delete()
                self._storage._uid_indexes.pop(self._filesystem_path, None)
                return
            index = self._uid_index()
            super().delete(href)
            self._commit(index, href, None)

    def _clean_history(self) -> None:
        # Radicale calls this on every write and it stats every history entry; expiry is in days.
        if self._storage._due("history", self._filesystem_path):
            super()._clean_history()

    # -- the index ----------------------------------------------------------------------------------

    def _item_path(self, href: str) -> str:
        return os.path.join(self._filesystem_path, href)

    def _index_store(self) -> IndexStore:
        return IndexStore(self._storage._get_collection_cache_subfolder(
            self._filesystem_path, ".Radicale.cache", INDEX_SUBFOLDER))

    def _uid_index(self, force: bool = False) -> UidIndex:
        """This collection's index, shown to describe the folder as it is now. Holds ``_uid_lock``."""
        path = self._filesystem_path
        store = self._index_store()
        stamp = dir_stamp(path)
        index = self._storage._uid_indexes.get(path)
        if index is not None and index.stamp != stamp:
            store.catch_up(index)  # another process of ours may have written since
        if index is None or index.stamp != stamp:
            index = store.load() or index
        if force or self._storage._due("verify", path) or index is None or index.stamp != stamp:
            index = self._reconcile(index or UidIndex(), store)
        self._storage._uid_indexes[path] = index
        return index

    def _reconcile(self, index: UidIndex, store: IndexStore) -> UidIndex:
        try:
            # Before taking the stamp: creating .Radicale.cache changes the collection folder.
            self._storage._makedirs_synced(store.folder)
        except OSError as e:
            logger.warning("Cannot create UID index folder %r: %s", store.folder, e)
        stamp = dir_stamp(self._filesystem_path)
        old_stamp = index.stamp
        started = time.monotonic()
        listing = scan(self._filesystem_path, pathutils.is_safe_filesystem_path_component)
        # From scratch (first use, index files deleted or unreadable) every item is read: the one long step
        # here, so it shows a bar on a terminal and its count in the log.
        rebuilt = old_stamp is None and bool(listing)
        track = functools.partial(progress, label=f"UID index of {self.path}", total=len(listing),
                                  unit="item") if rebuilt else None
        changed = index.reconcile(listing, self._read_uid, stamp, track)
        elapsed = time.monotonic() - started
        if rebuilt:
            logger.info("rebuilt the UID index of %r: %d items in %.1f s", self.path, len(index), elapsed)
        else:  # a bulk import beside the server is long too
            logger.log(logging.INFO if changed >= LARGE_REBUILD else logging.DEBUG,
                       "UID index of %r: %d of %d items (re)read in %.1f s", self.path, changed, len(index),
                       elapsed)
        if changed or old_stamp != stamp:
            try:
                store.save(index)
            except OSError as e:
                logger.warning("Cannot save UID index %r: %s", store.folder, e)
        return index

    def _read_uid(self, href: str) -> str | None:
        try:
            item = self._get(href, verify_href=False)  # Radicale's item cache: parses only new files
        except (RuntimeError, OSError) as e:
            logger.warning("UID index skips unreadable item %r in %r: %s", href, self.path, e)
            return None
        return item.uid if item is not None else None

    def _confirmed(self, index: UidIndex, uid: str) -> list[str] | None:
        """Hrefs of ``uid`` whose file is still that UID's; None if a file vanished (index wrong)."""
        assert index.stamp is not None
        found = []
        for href in index.hrefs(uid):
            try:
                sig = file_sig(self._item_path(href))
            except FileNotFoundError:
                return None
            if sig != index.entries[href].sig:
                # Rewritten in place: re-read this one file. Memory only, the journal is for writers.
                index.apply(Record(href, Entry(self._read_uid(href), sig), index.stamp))
                if index.entries[href].uid != uid:
                    continue
            found.append(href)
        return found

    def _commit(self, index: UidIndex, href: str, entry: Entry | None) -> None:
        """Record our own finished write in ``index``, which described the folder just before it."""
        record = Record(href, entry, dir_stamp(self._filesystem_path))
        index.apply(record)
        try:
            self._index_store().append(index, record)
        except OSError as e:  # the index is a cache: the folder stays right, the next reader rebuilds
            logger.warning("Cannot update UID index of %r: %s", self.path, e)


class IndexedStorage(multifilesystem.Storage):
    _collection_class: ClassVar[type[IndexedCollection]] = IndexedCollection
    housekeeping_interval: float = 300.0

    def __init__(self, configuration: config.Configuration) -> None:
        super().__init__(configuration)
        self._uid_lock = threading.RLock()
        self._uid_indexes: dict[str, UidIndex] = {}
        self._last_run: dict[tuple[str, str], float] = {}

    def _due(self, job: str, filesystem_path: str) -> bool:
        """True at most once per ``housekeeping_interval`` for each (job, collection)."""
        now = time.monotonic()
        with self._uid_lock:
            last = self._last_run.get((job, filesystem_path))
            if last is not None and now - last < self.housekeeping_interval:
                return False
            self._last_run[(job, filesystem_path)] = now
            return True

    def find_uid(self, principal_path: str, uid: str) -> list[tuple[str, str]]:
        """(collection path like "/alice/calendar/", href) of each item with ``uid`` in the calendars
        directly under ``principal_path``. The caller holds the storage lock."""
        return [(pathutils.unstrip_path(collection.path, True), href)
                for collection, href in self._hrefs_for_uid(principal_path, uid)]

    def items_with_uid(self, principal_path: str, uid: str
                       ) -> list[tuple[IndexedCollection, str, radicale_item.Item]]:
        """Each item with ``uid`` in the calendars directly under ``principal_path``, with its collection
        and href (the database answers it in one query)."""
        return [(collection, href, item) for collection, href in self._hrefs_for_uid(principal_path, uid)
                if (item := collection._get(href)) is not None]

    def _hrefs_for_uid(self, principal_path: str, uid: str) -> list[tuple[IndexedCollection, str]]:
        principal = pathutils.strip_path(pathutils.sanitize_path(principal_path))
        try:
            folder = pathutils.path_to_filesystem(self._get_collection_root_folder(), principal,
                                                  self._is_collision_free)
            with os.scandir(folder) as entries:
                names = sorted(e.name for e in entries
                               if pathutils.is_safe_filesystem_path_component(e.name) and e.is_dir())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return []
        found = []
        for name in names:
            collection = self._collection_class(self, pathutils.unstrip_path(posixpath.join(principal, name), True))
            if collection.tag == "VCALENDAR":
                found.extend((collection, href) for href in collection.hrefs_for_uid(uid))
        return found

    def move(self, item: radicale_item.Item, to_collection: storage.BaseCollection,
             to_href: str) -> None:
        source = item.collection
        assert isinstance(source, IndexedCollection) and isinstance(to_collection, IndexedCollection)
        assert item.href
        with self._uid_lock:
            source_index = source._uid_index()
            target_index = to_collection._uid_index()  # the same object when moving within a folder
            super().move(item, to_collection, to_href)
            source._commit(source_index, item.href, None)
            to_collection._commit(target_index, to_href,
                                  Entry(item.uid, file_sig(to_collection._item_path(to_href))))


Storage = IndexedStorage  # what Radicale's loader looks up for ``[storage] type = invito.storage.indexed``
