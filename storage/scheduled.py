# SPDX-License-Identifier: GPL-3.0-or-later
"""Implicit scheduling on top of either backend: what a client's write and a change from outside HTTP do
to stored events, written once for the filesystem (``storage.files``) and the database
(``storage.pg.scheduled``).

Radicale calls ``Collection.upload``/``delete`` for a client's PUT/DELETE inside its write lock (the
filesystem's global lock, or the database's write transaction); that is where scheduling runs
(``scheduling.Scheduler``), so the event change and every delivery it causes happen in one unit.
Everything from outside HTTP (inbound mail, the RSVP page, mail delivery status, an outbox POST) enters
by ``Storage.schedule`` with one of ``changes``' requests; ``Storage.read_event`` is its read. Scheduling
writes through the transaction ``Storage.transaction`` hands out, whose ``store``/``remove`` use
``Collection.store``/``remove``: they bypass scheduling.

A backend supplies the unit of work (``schedule``'s lock or transaction, ``transaction``, ``hold``), the
outbound queue and the side records (``_scheduling_parts``), and how an item is read and listed
(``get_item``, ``item_hrefs``); nothing scheduling decides is written twice.
"""
from __future__ import annotations

import contextlib
import logging
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

import icalendar
import radicale.item as radicale_item
from radicale import config, pathutils
from radicale.item import filter as radicale_filter

from invito.plugins.directory import Directory, HtpasswdUsers, load_addresses
from invito.plugins.ldap_directory import LdapDirectory
from invito.storage import bookkeeping, layout, request, verbatim, walks
from invito.storage.changes import Change, Outcome
from invito.storage.scheduling import Scheduler
from invito.storage.side_records import digest
from invito.storage.transaction import SchedulingTransaction

logger = logging.getLogger("invito.storage")


class Collection:
    """A collection of either backend, scheduling its owner's writes."""
    _storage: "Storage"
    path: str
    tag: str
    owner: str

    def get_item(self, href: str) -> radicale_item.Item | None:
        """The item at ``href``, or None (the backend's own read, without REPORT filtering)."""
        raise NotImplementedError

    def item_hrefs(self) -> list[str]:
        """Every item's href, without reading the items."""
        raise NotImplementedError

    def store(self, href: str, item: radicale_item.Item
              ) -> tuple[radicale_item.Item, radicale_item.Item | None]:
        """Write without scheduling (deliveries, undo)."""
        return super().upload(href, item)  # type: ignore[misc]

    def remove(self, href: str) -> None:
        """Delete without scheduling."""
        super().delete(href)  # type: ignore[misc]

    def get_filtered(self, filters: Iterable[ET.Element]) -> Iterator[tuple[radicale_item.Item, bool]]:
        """Radicale's, except for series too costly to walk up to the queried range (a SECONDLY rule
        begun long ago): Radicale's own check would walk them from DTSTART for hours, starving every
        other request of the interpreter. A plain time-range query counts them as matching (the client,
        which expands series itself, gets one object too many); a REPORT that has Radicale expand them or
        read their free-busy time (``walks.walking_until``) leaves them out."""
        _, _, end, _ = radicale_filter.simplify_prefilters(filters, self.tag)
        until = datetime.fromtimestamp(min(end, radicale_filter.TIMESTAMP_MAX - 86400), timezone.utc)
        for item, matched in super().get_filtered(filters):  # type: ignore[misc]
            if not self._too_costly_to_walk(item):
                yield item, matched or (end < radicale_filter.TIMESTAMP_MAX and walks.costly(item, until))

    def get_multi(self, hrefs: Iterable[str]) -> Iterator[tuple[str, radicale_item.Item | None]]:
        """Radicale's; in an expand REPORT (calendar-multiget), a series too costly to expand is left out
        of the answer, as Radicale leaves out an object with no instance in the window."""
        for href, item in super().get_multi(hrefs):  # type: ignore[misc]
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
        storage = self._storage
        write = request.current()
        client_text = write.take_client_text() if write is not None else None
        if client_text is not None:
            item = verbatim.as_sent(self.path, item, client_text)
        if not storage.schedules(self):
            return self.store(href, item)
        return storage.scheduler.put(self, href, item, write)

    def delete(self, href: str | None = None) -> None:
        """Deleting an event, or a whole calendar of them, cancels (organizer) or declines (attendee)."""
        storage = self._storage
        if not storage.schedules(self):
            super().delete(href)  # type: ignore[misc]
        elif href is not None:
            storage.scheduler.delete(self, href)
        else:
            for item_href in self.item_hrefs():
                storage.scheduler.delete(self, item_href)
            super().delete()  # type: ignore[misc]


class Storage:
    """Invito's storage: ``[storage] type = invito.storage``. Constructing it gives the filesystem's
    (``[invito] database`` empty) or the database's; both are instances of this class."""
    _collection_class: type
    scheduler: Scheduler

    def __new__(cls, configuration: config.Configuration) -> "Storage":
        if cls is Storage:
            from invito.storage.pg.db import configured_url
            if configured_url(configuration):
                from invito.storage.pg.scheduled import DatabaseStorage
                cls = DatabaseStorage
            else:
                from invito.storage.files import FileStorage
                cls = FileStorage
        return object.__new__(cls)

    def __init__(self, configuration: config.Configuration) -> None:
        super().__init__(configuration)  # type: ignore[call-arg]  (the backend's Radicale storage)
        outbound, records = self._scheduling_parts(configuration)
        self.scheduler = Scheduler(self, _directory(configuration, self._has_home, self._homes_among), outbound,
                                   _get(configuration, "scheduling", "external_invites", ["*"]), records,
                                   bool(_get(configuration, "smtp", "host") and _get(configuration, "smtp", "sender")))
        self._ready_users: set[str] = set()

    # -- what a backend supplies ---------------------------------------------------------------------

    def _scheduling_parts(self, configuration: config.Configuration) -> tuple[Any, Any]:
        """The outbound queue and the side records."""
        raise NotImplementedError

    def _has_home(self, name: str) -> bool:
        """Whether ``name`` has a home here (without a users file, that makes it a user)."""
        raise NotImplementedError

    def _homes_among(self, names: set[str]) -> set[str]:
        """Which of ``names`` have a home here (a backend may answer it at once)."""
        return {name for name in names if self._has_home(name)}

    def schedule(self, user: str, change: Change) -> Outcome:
        """The one way into stored events from outside HTTP (inbound mail, the RSVP page, mail delivery
        status, an outbox POST): one unit of work in which the Scheduler carries ``change`` out on
        ``user``'s events (found by UID). ``user``: whose events; "" for a change that only queues mail
        (a ``Forward`` to an organizer who is no user here)."""
        raise NotImplementedError

    def transaction(self) -> SchedulingTransaction:
        """The all-or-nothing unit each scheduling write goes through, inside the write's lock."""
        raise NotImplementedError

    def hold(self, uid: str | None, *homes: str) -> None:
        """The write under way goes on to meeting ``uid`` and ``homes``: it waits for other writers of
        them, until it ends (a no-op where one lock covers everything)."""

    # -- shared ----------------------------------------------------------------------------------------

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
        return super().create_collection(href, items, props)  # type: ignore[misc]

    def schedules(self, collection: Collection) -> bool:
        """Only users' own calendars schedule; inbox items and users without an address do not."""
        return (collection.tag == "VCALENDAR"
                and not layout.is_inbox(collection.path)
                and bool(self.directory.addresses_of(collection.owner)))

    def read_event(self, user: str, uid: str) -> icalendar.Calendar | None:
        """``user``'s copy of event ``uid`` as it is stored now (the RSVP page shows the organizer's)."""
        with self.acquire_lock("r", user):
            item = self.scheduler.find_copy(user, uid)[2]
            text = item.serialize() if item is not None else None
            record = self.scheduler.records.get(user, uid, digest(text)) if text is not None else {}
        # parsed after the lock; with Invito's bookkeeping (the page checks whether the event moved)
        return bookkeeping.merge(icalendar.Calendar.from_ical(text), record) if text is not None else None

    def ensure_scheduling_collections(self, user: str) -> None:
        """Inbox and outbox for users who existed before Invito, once per process. No lock held."""
        if not user or user in self._ready_users:
            return
        with self.acquire_lock("r", user):
            present = all(layout.collection(self, p) is not None  # type: ignore[arg-type]
                          for p in (layout.inbox_path(user), layout.outbox_path(user)))
        if not present:
            with self.acquire_lock("w", user):
                layout.ensure_collections(self, user)  # type: ignore[arg-type]
        self._ready_users.add(user)


def _get(configuration: config.Configuration, section: str, option: str, default: Any = "") -> Any:
    with contextlib.suppress(KeyError):
        return configuration.get(section, option)
    return default


def _directory(configuration: config.Configuration, is_home: Callable[[str], bool],
               homes_among: Callable[[set[str]], set[str]]) -> Directory | LdapDirectory:
    addresses_file = _get(configuration, "scheduling", "addresses")
    aliases = load_addresses(addresses_file) if addresses_file else {}
    if configuration.get("auth", "type") == "ldap":
        return LdapDirectory(configuration, _get(configuration, "scheduling", "domain"), aliases, is_home)
    if configuration.get("auth", "type") == "htpasswd":
        return Directory(_get(configuration, "scheduling", "domain"), aliases,
                         HtpasswdUsers(configuration.get("auth", "htpasswd_filename")))
    # Without a users file a user is known once they have a home.
    return Directory(_get(configuration, "scheduling", "domain"), aliases, is_home, homes_among)

