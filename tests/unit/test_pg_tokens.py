# SPDX-License-Identifier: GPL-3.0-or-later
"""Reply tokens on a real PostgreSQL: issued on one node, found and verified on another."""
from __future__ import annotations

import threading
from typing import Iterator

import psycopg
import pytest

from invito.plugins.imip.tokens import ReplyTokens
from invito.plugins.rsvp import links
from invito.storage.pg.db import Database
from invito.storage.pg.tokens import SECRET, DatabaseReplyTokens

ORG, GUEST = "mailto:alice@example.com", "mailto:guest@partner.org"


@pytest.fixture
def nodes(database: str) -> Iterator[tuple[Database, Database]]:
    """Two nodes' connection pools on one database."""
    a, b = Database(database, max_size=4), Database(database, max_size=4)
    yield a, b
    a.close()
    b.close()


def test_a_token_issued_on_one_node_is_found_on_the_other(nodes) -> None:
    a, b = nodes
    issued = DatabaseReplyTokens(a).issue(ORG, "uid-1", GUEST)
    assert len(issued.token) == 32 and issued.token.islower()
    assert DatabaseReplyTokens(b).lookup(issued.token.upper()) == issued
    assert DatabaseReplyTokens(b).issue(ORG, "uid-1", GUEST) == issued  # the same guest, the same token


def test_issuing_again_writes_nothing_new(nodes, database) -> None:
    a, b = nodes
    DatabaseReplyTokens(a).issue(ORG, "uid-1", GUEST)
    DatabaseReplyTokens(b).issue(ORG, "uid-1", GUEST)  # write-once: the conflict is no error
    DatabaseReplyTokens(a).issue(ORG, "uid-2", GUEST)
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM invito_reply_token").fetchone()[0] == 2


def test_a_preview_records_nothing_and_a_forgery_maps_to_nothing(nodes) -> None:
    a, _ = nodes
    tokens = DatabaseReplyTokens(a)
    preview = tokens.issue(ORG, "uid-1", GUEST, record=False)
    assert tokens.lookup(preview.token) is None
    assert tokens.lookup("a" * 32) is None and tokens.lookup("not a token") is None and tokens.lookup("") is None


def test_a_token_issued_in_a_write_that_rolls_back_is_not_kept(nodes) -> None:
    a, _ = nodes
    tokens = DatabaseReplyTokens(a)
    with pytest.raises(ValueError):
        with a.write():
            issued = tokens.issue(ORG, "uid-1", GUEST)
            raise ValueError("the write that sent it failed")
    assert tokens.lookup(issued.token) is None


def test_two_nodes_starting_at_once_agree_on_one_secret(nodes, database) -> None:
    """Both ask for the secret at the same moment on an empty database: one creates it, both use it, so
    an RSVP link signed on node A is valid on node B."""
    a, b = nodes
    first, second = DatabaseReplyTokens(a), DatabaseReplyTokens(b)
    barrier = threading.Barrier(2)
    signed: dict[str, str] = {}

    def sign(name: str, tokens: DatabaseReplyTokens) -> None:
        barrier.wait()
        signed[name] = tokens.sign("occurrence", "20300101T090000Z")

    threads = [threading.Thread(target=sign, args=("a", first)), threading.Thread(target=sign, args=("b", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert signed["a"] == signed["b"]
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM invito_setting WHERE name = %s", (SECRET,)).fetchone()[0] == 1
    token = first.issue(ORG, "uid-1", GUEST)
    path = links.path_of(links.Link(token.token, "20300101T090000Z"), first.sign)
    assert links.parse(path, second.sign) == links.Link(token.token, "20300101T090000Z")


def test_tokens_match_the_filesystem_ones_under_the_same_secret(nodes, database, tmp_path) -> None:
    """The same MAC on both backends: a data folder moved into the database (its secret copied) keeps
    every guest's reply address and RSVP link."""
    a, _ = nodes
    files = ReplyTokens(str(tmp_path))
    on_disk = files.issue(ORG, "uid-1", GUEST)
    with psycopg.connect(database) as conn:
        conn.execute("INSERT INTO invito_setting (name, value) VALUES (%s, %s)",
                     (SECRET, (tmp_path / "secret").read_bytes()))
    tokens = DatabaseReplyTokens(a)
    assert tokens.issue(ORG, "uid-1", GUEST) == on_disk
    assert tokens.sign("x") == files.sign("x")
