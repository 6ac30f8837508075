# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared pieces of the PostgreSQL storage tests: a storage on a test's database, events to store."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest
import radicale.item as radicale_item
from radicale.config import Configuration

from invito.server import config as invito_config
from invito.storage.pg import db
from invito.storage.pg.dav import Storage


@pytest.fixture(autouse=True)
def closed_pools(database: str) -> Iterator[None]:
    """Each test's pools end with it, before its database is dropped; import it to use it."""
    yield
    db.close_shared()


def pg_configuration(database: str, **storage: str) -> Configuration:
    loaded = invito_config.load(None)
    loaded.update({"invito": {"database": database}, "auth": {"type": "none"},
                   "storage": {"type": "invito.storage.pg.dav", **storage}}, "test", privileged=True)
    return loaded


def pg_storage(database: str, **storage: str) -> Storage:
    """A storage with homes alice and bob, each with a calendar."""
    made = Storage(pg_configuration(database, **storage))
    with made.acquire_lock("w"):
        for user in ("alice", "bob"):
            made.create_collection(f"/{user}/")
            made.create_collection(f"/{user}/calendar/", props={"tag": "VCALENDAR"})
    return made


def event_text(uid: str, start: datetime, hours: int = 1, summary: str = "Meeting") -> str:
    stamp = "%Y%m%dT%H%M%SZ"
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{start.strftime(stamp)}\r\n"
            f"DTEND:{(start + timedelta(hours=hours)).strftime(stamp)}\r\nSUMMARY:{summary}\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n")


def event(uid: str, start: datetime | None = None, **kwargs) -> radicale_item.Item:
    """A prepared item, as Radicale's PUT hands it to the storage."""
    start = start or datetime(2026, 5, 1, 9, tzinfo=timezone.utc)
    item = radicale_item.Item(collection_path="alice/calendar", text=event_text(uid, start, **kwargs))
    item.prepare()
    return item
