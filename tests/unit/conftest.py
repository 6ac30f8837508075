# SPDX-License-Identifier: GPL-3.0-or-later
"""A real Invito storage on disk (no HTTP): users alice, bob, carol at example.com, each with a calendar."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import icalendar
import pytest
import radicale.storage
from radicale.config import Configuration

from invito.server import config as invito_config
from invito.storage import Storage


@pytest.fixture
def configuration(tmp_path: Path) -> Configuration:
    """Invito's defaults, data in ``tmp_path``, no login, users' addresses at example.com."""
    loaded = invito_config.load(None)
    loaded.update({"invito": {"data_folder": str(tmp_path)}, "auth": {"type": "none"},
                   "storage": {"filesystem_folder": str(tmp_path / "collections")},
                   "scheduling": {"domain": "example.com"}}, "test", privileged=True)
    return loaded


@pytest.fixture
def storage(configuration: Configuration) -> Storage:
    loaded = radicale.storage.load(configuration)
    assert isinstance(loaded, Storage)
    with loaded.acquire_lock("w"):
        for user in ("alice", "bob", "carol"):
            loaded.create_collection("/%s/" % user)
            loaded.create_collection("/%s/calendar/" % user, props={"tag": "VCALENDAR"})
    return loaded


@pytest.fixture
def rewrite_copy(storage: Storage) -> Callable[[str, str, Callable[[icalendar.Calendar], icalendar.Calendar]], None]:
    """Change a user's stored copy of an event directly, with its bookkeeping, to set up what no client
    or message can (an answer recorded as given in 2099)."""
    def rewrite(user: str, uid: str, change: Callable[[icalendar.Calendar], icalendar.Calendar]) -> None:
        with storage.acquire_lock("w"), storage.transaction() as tx:
            collection, href, item = storage.scheduler.find_copy(user, uid)
            assert collection is not None and href is not None and item is not None
            storage.scheduler.store_copy(tx, collection, href, user, change(storage.scheduler.read_copy(user, item)),
                                         (item.serialize(),), item)
    return rewrite
