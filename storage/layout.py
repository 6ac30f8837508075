# SPDX-License-Identifier: GPL-3.0-or-later
"""Where scheduling collections live in a user's home.

Each user ``/NAME/`` gets ``/NAME/schedule-inbox/`` (RFC 6638 §2.2: a calendar-tagged collection so
Radicale can store and serve its items; the HTTP layer reports it as ``schedule-inbox``) and
``/NAME/schedule-outbox/`` (untagged: nothing is stored there, clients POST to it). The default calendar
that receives invitations is the user's first VEVENT calendar, or ``/NAME/calendar/`` created on demand.
"""
from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from radicale import pathutils

from invito.storage.request import SchedulingRefused

if TYPE_CHECKING:
    from invito.storage import Collection, Storage

INBOX = "schedule-inbox"
OUTBOX = "schedule-outbox"
DEFAULT_CALENDAR = "calendar"

INBOX_PROPS = {"tag": "VCALENDAR", "D:displayname": "Scheduling inbox",
               "C:supported-calendar-component-set": "VEVENT,VTODO,VFREEBUSY"}
CALENDAR_PROPS = {"tag": "VCALENDAR", "D:displayname": "Calendar",
                  "C:supported-calendar-component-set": "VEVENT,VTODO"}


def _parts(path: str) -> list[str]:
    """Path segments; accepts Radicale's two spellings ("/alice/cal/" for URLs, "alice/cal" for collections)."""
    stripped = path.strip("/")
    return stripped.split("/") if stripped else []


def is_inbox(path: str) -> bool:
    parts = _parts(path)
    return len(parts) >= 2 and parts[1] == INBOX


def is_outbox(path: str) -> bool:
    parts = _parts(path)
    return len(parts) >= 2 and parts[1] == OUTBOX


def scheduling_collection(path: str) -> str | None:
    """'inbox' or 'outbox' when ``path`` is one of those collections themselves (not an item in them)."""
    parts = _parts(path)
    if len(parts) == 2:
        return {INBOX: "inbox", OUTBOX: "outbox"}.get(parts[1])
    return None


def inbox_path(user: str) -> str:
    return "/%s/%s/" % (user, INBOX)


def outbox_path(user: str) -> str:
    return "/%s/%s/" % (user, OUTBOX)


def collection(storage: "Storage", path: str) -> "Collection | None":
    found = next(iter(storage.discover(path)), None)
    return found if isinstance(found, storage._collection_class) else None


def ensure_inbox(storage: "Storage", user: str) -> "Collection":
    """The user's inbox, created (with the rest of their scheduling collections) if missing. Caller holds
    the write lock."""
    inbox = collection(storage, inbox_path(user))
    if inbox is None:
        ensure_collections(storage, user)
        inbox = collection(storage, inbox_path(user))
    assert inbox is not None
    return inbox


def ensure_collections(storage: "Storage", user: str) -> bool:
    """Create the principal, inbox and outbox that are missing; True if anything was created.

    Caller holds the write lock.
    """
    created = False
    if collection(storage, "/%s/" % user) is None:
        storage.create_collection("/%s/" % user)
        created = True
    if collection(storage, inbox_path(user)) is None:
        storage.create_collection(inbox_path(user), props=dict(INBOX_PROPS))
        created = True
    if collection(storage, outbox_path(user)) is None:
        storage.create_collection(outbox_path(user))
        created = True
    return created


def find_default_calendar(storage: "Storage", user: str) -> "Collection | None":
    candidates = []
    for child in storage.discover("/%s/" % user, depth="1"):
        if not isinstance(child, storage._collection_class) or child.tag != "VCALENDAR":
            continue
        if scheduling_collection(child.path) or len(_parts(child.path)) != 2:
            continue
        components = child.get_meta("C:supported-calendar-component-set") or "VEVENT"
        if "VEVENT" in components.split(","):
            candidates.append(child)
    return min(candidates, key=lambda c: c.path) if candidates else None


def default_calendar(storage: "Storage", user: str) -> "Collection":
    """Where a new invitation is stored; created if the user has no event calendar. Lock held."""
    found = find_default_calendar(storage, user)
    if found is not None:
        return found
    path = "/%s/%s/" % (user, DEFAULT_CALENDAR)
    if collection(storage, path) is not None:
        raise SchedulingRefused(403, "default-calendar-needed",
                                "%s exists but is not an event calendar" % path)
    storage.create_collection(path, props=dict(CALENDAR_PROPS))
    created = collection(storage, path)
    assert created is not None
    return created


def href_for_uid(target: "Collection", uid: str) -> str:
    """A file name for a new item: the UID when it is a safe name, else a fresh one."""
    candidate = uid + ".ics"
    if (pathutils.is_safe_filesystem_path_component(candidate) and "/" not in candidate
            and target.get_item(candidate) is None):
        return candidate
    return uuid.uuid4().hex + ".ics"


def owner_of(path: str) -> str:
    parts = _parts(path)
    return parts[0] if parts else ""
