# SPDX-License-Identifier: GPL-3.0-or-later
"""A real Invito storage on disk (no HTTP): users alice, bob, carol at example.com, each with a calendar."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import icalendar
import pytest
import radicale.storage
from radicale.config import Configuration

from invito.server import config as invito_config
from invito.storage import Storage
from invito.storage.pg import db


BACKENDS = ("files", "postgresql")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each storage test runs on both backends: "files" (the data folder) and "postgresql" (a database
    of the test's own). A test about one backend's own mechanics marks itself ``only_backend(name)``."""
    only = request.node.get_closest_marker("only_backend")
    if only is not None and request.param not in only.args:
        pytest.skip(f"about the {only.args[0]} backend's own mechanics")
    if request.param == "files":
        yield ""
        return
    url = request.getfixturevalue("database")
    yield url
    db.close_shared()  # before the test's database is dropped


@pytest.fixture
def configuration(tmp_path: Path, backend: str) -> Configuration:
    """Invito's defaults, data in ``tmp_path`` (or the ``backend`` database), no login, users' addresses
    at example.com."""
    loaded = invito_config.load(None)
    loaded.update({"invito": {"data_folder": str(tmp_path), "database": backend}, "auth": {"type": "none"},
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
