# SPDX-License-Identifier: GPL-3.0-or-later
"""Radicale's storage on PostgreSQL: ``[storage] type = invito.storage.pg.dav`` with ``[invito] database``.

Every node of a cluster serves from the same rows and keeps no state of its own. Instead of Radicale's one
global file lock:

- ``acquire_lock("r")`` is one ``REPEATABLE READ READ ONLY`` snapshot for the whole request: it never waits
  for writers, and everything it reads is of one moment.
- ``acquire_lock("w", path=…, to_path=…)`` is one transaction that first takes advisory locks on the homes
  of both paths (sorted, so two writers never wait on each other in a circle), on any node.

Every collection and item method runs on the calling thread's open transaction, so a request's writes
(and the scheduling they cause) commit together or not at all. Items are built from stored columns: a read
never parses iCalendar. Radicale's ``[storage] hook`` and group collections are filesystem features and
are not run here.
"""
from __future__ import annotations

import contextlib
import logging
import posixpath
from datetime import timezone
from email.utils import format_datetime
from typing import Callable, ContextManager, Iterable, Iterator, Mapping, Optional, Sequence

import xml.etree.ElementTree as ET

import psycopg
import radicale.item as radicale_item
from radicale import config, pathutils, storage, types
from radicale.item import filter as radicale_filter

from invito.storage.pg import collections, db, items, migrations, sync
from invito.storage.pg.collections import CollectionRow
from invito.storage.pg.items import ItemRow

logger = logging.getLogger("invito.storage")

_SUFFIX = {"VCALENDAR": ".ics", "VADDRESSBOOK": ".vcf"}


class Collection(storage.BaseCollection):
    """One collection as of the current transaction; its row is re-read after each of its own writes."""

    def __init__(self, storage_: "Storage", row: CollectionRow) -> None:
        self._storage = storage_
        self._row = row

    @property
    def path(self) -> str:
        return self._row.path

    @property
    def id(self) -> int:
        return self._row.id

    @property
    def etag(self) -> str:
        """From the revision every write (props included) bumps: O(1), no item read."""
        return '"%d-%d"' % (self._row.id, self._row.revision)

    @property
    def last_modified(self) -> str:
        return _http_date(self._row.modified)

    # -- reads ---------------------------------------------------------------------------------------

    def get_meta(self, key: str | None = None):  # type: ignore[override]
        return dict(self._row.props) if key is None else self._row.props.get(key)

    def get_multi(self, hrefs: Iterable[str]) -> Iterable[tuple[str, radicale_item.Item | None]]:
        wanted = list(dict.fromkeys(hrefs))
        found = items.get_many(self._conn(), self.id, wanted)
        return [(href, self._item(found[href]) if href in found else None) for href in wanted]

    def get_all(self) -> Iterable[radicale_item.Item]:
        return [self._item(row) for row in items.all_of(self._conn(), self.id)]

    def get_filtered(self, filters: Iterable[ET.Element]) -> Iterable[tuple[radicale_item.Item, bool]]:
        """Time ranges and the component come from indexed columns; an item is reported as fully matched
        exactly when Radicale's own ``BaseCollection.get_filtered`` would, else Radicale filters it."""
        if not self.tag:
            return
        tag, start, end, simple = radicale_filter.simplify_prefilters(filters, self.tag)
        for row in items.overlapping(self._conn(), self.id, tag, start, end):
            yield self._item(row), simple and (start <= row.starts or row.ends <= end)

    def has_uid(self, uid: str) -> bool:
        return self.href_for_uid(uid) is not None

    def href_for_uid(self, uid: str) -> str | None:
        """The href of the item with ``uid`` here, as the filesystem's UID index answers it (a COPY's
        no-UID-conflict precondition names it)."""
        return items.href_for_uid(self._conn(), self.owner, self.id, uid)

    def sync(self, old_token: str = "") -> tuple[str, Iterable[str]]:
        row = self._row
        current = sync.token(row.id, row.revision)
        if not old_token:
            return current, self._every_href()
        since = sync.revision_of(old_token, row.id, row.revision, row.history_floor)
        return current, sync.changed_since(self._conn(), row.id, since)

    # -- writes --------------------------------------------------------------------------------------

    def upload(self, href: str, item: radicale_item.Item
               ) -> tuple[radicale_item.Item, radicale_item.Item | None]:
        if not pathutils.is_safe_filesystem_path_component(href):
            raise pathutils.UnsafePathError(href)
        conn = self._conn()
        new, old = items.store(conn, self.id, self.owner, href, item)
        self._changed({href: False})
        logger.debug("stored %r in %r (UID %s)", href, self.path, new.uid)
        return self._item(new), self._item(old) if old else None

    def delete(self, href: str | None = None) -> None:
        conn = self._conn()
        if href is None:
            collections.remove(conn, self.path)
            logger.info("deleted collection %r", self.path)
            return
        if not items.remove(conn, self.id, href):
            raise storage.ComponentNotFoundError(href)
        self._changed({href: True})

    def set_meta(self, props: Mapping[str, str]) -> None:
        collections.set_props(self._conn(), self.id, props)
        self._changed({})

    # -- helpers -------------------------------------------------------------------------------------

    def _conn(self) -> psycopg.Connection:
        return self._storage.connection()

    def _item(self, row: ItemRow) -> radicale_item.Item:
        return radicale_item.Item(
            collection_path=self.path, collection=self, href=row.href, last_modified=_http_date(row.modified),
            text=row.text, etag=row.etag, uid=row.uid, name=row.name, component_name=row.component,
            time_range=(row.starts, row.ends))

    def _every_href(self) -> Iterator[str]:
        yield from items.hrefs(self._conn(), self.id)  # only when asked: PROPFIND wants just the token

    def _changed(self, changes: Mapping[str, bool]) -> None:
        """A new revision for ``changes`` (href → deleted), expired tombstones pruned; the row as the
        revision left it."""
        self._row = sync.record(self._conn(), self.id, changes, self._storage.max_sync_token_age)

    def _reload(self) -> None:
        row = collections.load(self._conn(), self.path)
        assert row is not None, "a collection vanished inside its own write lock"
        self._row = row

    def _replace_items(self, new_items: Sequence[radicale_item.Item]
                       ) -> tuple[dict[str, radicale_item.Item], list[str]]:
        """The collection's items become ``new_items`` (a whole-collection PUT); returns the replaced items
        by href and the hrefs that are new."""
        conn = self._conn()
        suffix = _SUFFIX.get(self.tag, "")
        chosen: dict[str, radicale_item.Item] = {}
        for item in new_items:
            chosen[_free_href(item.uid, suffix, chosen)] = item
        old = {row.href: row for row in items.all_of(conn, self.id)}
        deleted = items.remove_all(conn, self.id, keep=chosen)
        for href, item in chosen.items():
            items.store(conn, self.id, self.owner, href, item)
        self._changed({**{href: True for href in deleted}, **{href: False for href in chosen}})
        return ({href: self._item(old[href]) for href in chosen if href in old},
                [href for href in chosen if href not in old])


class Storage(storage.BaseStorage):
    _supports_unicode = True  # paths are text columns, not file names
    _collection_class: type[Collection] = Collection  # Invito's scheduling storage has its own

    def __init__(self, configuration: config.Configuration) -> None:
        super().__init__(configuration)
        url = db.configured_url(configuration)
        if not url:
            raise RuntimeError("[storage] type = invito.storage.pg.dav needs [invito] database (or "
                               "database_file)")
        self.db = db.shared(url)
        self.max_sync_token_age: int = configuration.get("storage", "max_sync_token_age")

    def connection(self) -> psycopg.Connection:
        """The transaction of the lock this thread holds."""
        conn = db.current()
        if conn is None:
            raise RuntimeError("storage used outside acquire_lock")
        return conn

    @types.contextmanager
    def acquire_lock(self, mode: str, user: str = "", *args, path: str = "", to_path: str = "",
                     **kwargs) -> Iterator[None]:
        if mode == "r":
            with self.db.read():
                yield
            return
        homes = {collections.owner_of(_stripped(p)) for p in (path, to_path) if p} or {user}
        with db.rerun_on_conflict(), self.db.write() as conn:
            db.lock(conn, *self._meetings_written(), *(f"home:{home}" for home in homes))
            yield

    def _meetings_written(self) -> list[str]:
        """Lock keys of the meetings a write is known to change before it starts (see ``db.lock``)."""
        return []

    def discover(self, path: str, depth: str = "0",
                 child_context_manager: Optional[Callable[[str, Optional[str]], ContextManager[None]]] = None,
                 user_groups: set[str] = set()) -> Iterator[types.CollectionOrItem]:
        each_child = child_context_manager or _no_context
        conn = self.connection()
        sane = _stripped(path)
        row = collections.load(conn, sane)
        if row is None:
            parent_path, href = posixpath.split(sane)
            parent = collections.load(conn, parent_path) if sane else None
            item = items.get(conn, parent.id, href) if parent else None
            if parent and item:
                yield self._collection_class(self, parent)._item(item)
            return
        collection = self._collection_class(self, row)
        yield collection
        if depth == "0":
            return
        for item in items.all_of(conn, row.id):
            with each_child(sane, item.href):
                yield collection._item(item)
        for child in collections.children(conn, sane):
            with each_child(child.path, None):
                yield self._collection_class(self, child)

    def create_collection(self, href: str, items: Optional[Iterable[radicale_item.Item]] = None,
                          props: Optional[Mapping[str, str]] = None
                          ) -> tuple[Collection, dict[str, radicale_item.Item], list[str]]:
        """Without props: make sure the collection exists (parents too). With props: the collection is
        replaced, items and children included (a whole-collection PUT or MKCALENDAR) — in place, so sync
        clients see the difference as changes, not a lost collection."""
        conn = self.connection()
        sane = _stripped(href)
        collection = self._collection_class(self, collections.ensure(conn, sane))
        if not props:
            return collection, {}, []
        collections.remove_children(conn, sane)
        collections.set_props(conn, collection.id, props)
        collection._reload()
        # ``items`` is Radicale's parameter, not the module; without a tag Radicale's contract ignores it.
        new_items = list(items or ()) if props.get("tag") in _SUFFIX else []
        replaced, new_hrefs = collection._replace_items(new_items)
        logger.info("collection %r written whole: %d items (%d new)", sane, len(new_items), len(new_hrefs))
        return collection, replaced, new_hrefs

    def move(self, item: radicale_item.Item, to_collection: storage.BaseCollection, to_href: str) -> None:
        if not pathutils.is_safe_filesystem_path_component(to_href):
            raise pathutils.UnsafePathError(to_href)
        source = item.collection
        assert isinstance(source, Collection) and isinstance(to_collection, Collection) and item.href
        items.rename(self.connection(), source.id, item.href, to_collection.id, to_collection.owner, to_href)
        if source.id == to_collection.id:
            source._changed({item.href: True, to_href: False})
            to_collection._reload()
            return
        # Counters in id order, like every writer that touches two collections.
        for collection, changes in sorted([(source, {item.href: True}), (to_collection, {to_href: False})],
                                          key=lambda pair: pair[0].id):
            collection._changed(changes)
        logger.info("moved %r (UID %s) from %r to %r as %r", item.href, item.uid, source.path,
                    to_collection.path, to_href)

    def verify(self) -> bool:
        with self.db.read() as conn:
            found, needed = migrations.version(conn), migrations.latest()
        if found != needed:
            logger.error("the database's schema is version %d, this Invito needs %d", found, needed)
        return found == needed

    def find_uid(self, principal_path: str, uid: str) -> list[tuple[str, str]]:
        """(collection path like "/alice/calendar/", href) of each item with ``uid`` in the calendars
        directly under ``principal_path``, by a database index. The caller holds the storage lock."""
        return [(pathutils.unstrip_path(collection.path, True), href) for collection, href, _ in
                self.items_with_uid(principal_path, uid)]

    def items_with_uid(self, principal_path: str, uid: str
                       ) -> list[tuple[Collection, str, radicale_item.Item]]:
        """Each item with ``uid`` in the calendars directly under ``principal_path``, with its collection
        and href, in one query."""
        found = []
        for collection_row, item_row in items.find_uid(self.connection(), _stripped(principal_path), uid):
            collection = self._collection_class(self, collection_row)
            found.append((collection, item_row.href, collection._item(item_row)))
        return found


def _stripped(path: str) -> str:
    return pathutils.strip_path(pathutils.sanitize_path(path))


def _http_date(moment) -> str:
    return format_datetime(moment.astimezone(timezone.utc), usegmt=True)


def _free_href(uid: str, suffix: str, taken: Mapping[str, object]) -> str:
    """Radicale's choice of a name for an item of a whole-collection PUT: its UID, else a hash of it, else
    a random name; never one already given in this PUT."""
    for href in (uid if uid.lower().endswith(suffix.lower()) else uid + suffix,
                 radicale_item.get_etag(uid).strip('"') + suffix):
        if pathutils.is_safe_filesystem_path_component(href) and href not in taken:
            return href
    return radicale_item.find_available_uid(lambda href: href in taken, suffix)


@contextlib.contextmanager
def _no_context(path: str, href: str | None) -> Iterator[None]:
    yield
