# SPDX-License-Identifier: GPL-3.0-or-later
"""Invito's storage: Radicale's multifilesystem with a UID index and implicit scheduling.

Radicale calls ``Collection.upload``/``delete`` for a client's PUT/DELETE with its single write lock held;
that is where scheduling runs (``scheduling.Scheduler``), so the event change and every delivery it
causes happen under one lock. Everything from outside HTTP (inbound mail, the RSVP page, mail delivery
status, an outbox POST) enters by ``Storage.schedule`` with one of ``changes``' requests, under the same
lock; ``Storage.read_event`` is its read. Scheduling writes through the transaction
``Storage.transaction`` hands out, whose ``store``/``remove`` use ``Collection.store``/``remove``: they
bypass scheduling. Radicale loads this module by ``[storage] type = invito.storage`` and uses ``Storage``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

import icalendar
import radicale.item as radicale_item
from radicale import config, pathutils
from radicale.item import filter as radicale_filter

from invito.plugins.data_folder import DataFolder
from invito.plugins.directory import Directory, HtpasswdUsers, load_addresses
from invito.plugins.ldap_directory import LdapDirectory
from invito.plugins.imip.spool import OutboundSpool
from invito.storage import bookkeeping, layout, request, verbatim, walks
from invito.storage import vobject_base64  # noqa: F401  (fixes vobject when imported)
from invito.storage.indexed import IndexedCollection, IndexedStorage
from invito.storage.changes import Change, Outcome
from invito.storage.scheduling import Scheduler
from invito.storage.side_records import SideRecords, digest
from invito.storage.transaction import SchedulingTransaction, Transaction

logger = logging.getLogger("invito.storage")


class Collection(verbatim.VerbatimCacheCollection, IndexedCollection):

    def get_item(self, href: str) -> radicale_item.Item | None:
        return self._get(href)

    def store(self, href: str, item: radicale_item.Item
              ) -> tuple[radicale_item.Item, radicale_item.Item | None]:
        """Write without scheduling (deliveries, undo)."""
        return super().upload(href, item)

    def remove(self, href: str) -> None:
        """Delete without scheduling."""
        super().delete(href)

    def get_filtered(self, filters: Iterable[ET.Element]) -> Iterator[tuple[radicale_item.Item, bool]]:
        """Radicale's, except for series too costly to walk up to the queried range (a SECONDLY rule
        begun long ago): Radicale's own check would walk them from DTSTART for hours, starving every
        other request of the interpreter. A plain time-range query counts them as matching (the client,
        which expands series itself, gets one object too many); a REPORT that has Radicale expand them or
        read their free-busy time (``walks.walking_until``) leaves them out."""
        _, _, end, _ = radicale_filter.simplify_prefilters(filters, self.tag)
        until = datetime.fromtimestamp(min(end, radicale_filter.TIMESTAMP_MAX - 86400), timezone.utc)
        for item, matched in super().get_filtered(filters):
            if not self._too_costly_to_walk(item):
                yield item, matched or (end < radicale_filter.TIMESTAMP_MAX and walks.costly(item, until))

    def get_multi(self, hrefs: Iterable[str]) -> Iterator[tuple[str, radicale_item.Item | None]]:
        """Radicale's; in an expand REPORT (calendar-multiget), a series too costly to expand is left out
        of the answer, as Radicale leaves out an object with no instance in the window."""
        for href, item in super().get_multi(hrefs):
            if item is None or not self._too_costly_to_walk(item):
                yield href, item

    def _too_costly_to_walk(self, item: radicale_item.Item) -> bool:
        """Whether the current REPORT would make Radicale walk ``item``'s series too far (logged)."""
        until = walks.walked_until()
        if until is None or not walks.costly(item, until):
            return False
        logger.warning("uid=%s in %s: series too costly to walk up to %s; left out of the REPORT",
                       item.uid, self.path, until.isoformat())
        return True

    def upload(self, href: str, item: radicale_item.Item
               ) -> tuple[radicale_item.Item, radicale_item.Item | None]:
        """A client's PUT: what is stored starts from the client's own text, not Radicale's parse of it."""
        storage: Storage = self._storage  # type: ignore[assignment]
        write = request.current()
        client_text = write.take_client_text() if write is not None else None
        if client_text is not None:
            item = verbatim.as_sent(self.path, item, client_text)
        if not storage.schedules(self):
            return self.store(href, item)
        return storage.scheduler.put(self, href, item, write)

    def delete(self, href: str | None = None) -> None:
        """Deleting an event, or a whole calendar of them, cancels (organizer) or declines (attendee)."""
        storage: Storage = self._storage  # type: ignore[assignment]
        if not storage.schedules(self):
            super().delete(href)
        elif href is not None:
            storage.scheduler.delete(self, href)
        else:
            for item_href in list(self._list()):
                storage.scheduler.delete(self, item_href)
            super().delete()


class Storage(IndexedStorage):
    _collection_class = Collection

    def __init__(self, configuration: config.Configuration) -> None:
        super().__init__(configuration)
        self.scheduler = Scheduler(self, _directory(configuration, self._get_collection_root_folder()),
                                   OutboundSpool(DataFolder.of(configuration).outbound_spool),
                                   _get(configuration, "scheduling", "external_invites", ["*"]),
                                   SideRecords(self._get_collection_root_folder(), lambda: self._filesystem_fsync),
                                   bool(_get(configuration, "smtp", "host") and _get(configuration, "smtp", "sender")))
        self._ready_users: set[str] = set()

    @property
    def directory(self) -> Directory | LdapDirectory:
        return self.scheduler.directory

    def create_collection(self, href: str, items: Iterable[radicale_item.Item] | None = None, props=None):
        """A whole calendar PUT: each object Radicale splits off it is stored as the client's own lines."""
        write = request.current()
        client_text = write.take_client_text() if write is not None and items is not None else None
        if client_text is not None:
            texts = verbatim.objects_by_uid(client_text)
            path = pathutils.strip_path(href)
            items = (verbatim.as_sent(path, item, texts[item.uid]) if item.uid in texts else item
                     for item in items)
        return super().create_collection(href, items, props)

    def schedules(self, collection: Collection) -> bool:
        """Only users' own calendars schedule; inbox items and users without an address do not."""
        return (collection.tag == "VCALENDAR"
                and not layout.is_inbox(collection.path)
                and bool(self.directory.addresses_of(collection.owner)))

    def schedule(self, user: str, change: Change) -> Outcome:
        """The one way into stored events from outside HTTP (inbound mail, the RSVP page, mail delivery
        status, an outbox POST): takes the write lock, once, and has the Scheduler carry ``change`` out
        on ``user``'s events (found by UID through the index). ``user``: whose events; "" for a change
        that only queues mail (a ``Forward`` to an organizer who is no user here)."""
        with self.acquire_lock("w", user):
            return self.scheduler.schedule(user, change)

    def transaction(self) -> SchedulingTransaction:
        """The all-or-nothing unit each scheduling write goes through; the caller holds the write lock."""
        return Transaction(self.scheduler.spool, self.scheduler.records)

    def read_event(self, user: str, uid: str) -> icalendar.Calendar | None:
        """``user``'s copy of event ``uid`` as it is stored now (the RSVP page shows the organizer's)."""
        with self.acquire_lock("r", user):
            item = self.scheduler.find_copy(user, uid)[2]
            text = item.serialize() if item is not None else None
            record = self.scheduler.records.get(user, uid, digest(text)) if text is not None else {}
        # parsed after the lock; with Invito's bookkeeping (the page checks whether the event moved)
        return bookkeeping.merge(icalendar.Calendar.from_ical(text), record) if text is not None else None

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

    def ensure_scheduling_collections(self, user: str) -> None:
        """Inbox and outbox for users who existed before Invito, once per process. No lock held."""
        if not user or user in self._ready_users:
            return
        with self.acquire_lock("r", user):
            present = all(layout.collection(self, p) is not None
                          for p in (layout.inbox_path(user), layout.outbox_path(user)))
        if not present:
            with self.acquire_lock("w", user):
                layout.ensure_collections(self, user)
        self._ready_users.add(user)


def _get(configuration: config.Configuration, section: str, option: str, default: Any = "") -> Any:
    with contextlib.suppress(KeyError):
        return configuration.get(section, option)
    return default


def _directory(configuration: config.Configuration, collection_root: str) -> Directory | LdapDirectory:
    addresses_file = _get(configuration, "scheduling", "addresses")
    aliases = load_addresses(addresses_file) if addresses_file else {}
    if configuration.get("auth", "type") == "ldap":
        return LdapDirectory(configuration, _get(configuration, "scheduling", "domain"), aliases, collection_root)
    if configuration.get("auth", "type") == "htpasswd":
        is_user = HtpasswdUsers(configuration.get("auth", "htpasswd_filename"))
    else:
        def is_user(name: str) -> bool:  # auth cannot list users: known once they have a home
            return os.path.isdir(os.path.join(collection_root, name))
    return Directory(_get(configuration, "scheduling", "domain"), aliases, is_user)
