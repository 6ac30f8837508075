# SPDX-License-Identifier: GPL-3.0-or-later
"""Reply tokens in the shared database: a token issued on node A is found by node B's listener and page.

The tokens themselves are made exactly as on the filesystem (``plugins.imip.tokens.ReplyTokens``: the
same MAC, the same signing); only where a token and the secret are kept differs. Each token is a row
written once (``ON CONFLICT DO NOTHING``: the same guest of the same event always gets the same token, so a
second issue is not an error). The secret is the ``invito_setting`` row ``reply_secret``, created by
whichever node needs it first; a node that loses that race reads the winner's, so every node signs and
checks RSVP links with one key.
"""
from __future__ import annotations

import os

from invito.plugins.imip.tokens import _TOKEN, TOKEN_BYTES, ReplyToken, ReplyTokens  # one token format
from invito.storage.pg.db import Database

SECRET = "reply_secret"  # the invito_setting row (``invito migrate-to-db`` copies the folder's secret here)


class DatabaseReplyTokens(ReplyTokens):
    """``ReplyTokens`` whose records and secret live in the database."""

    def __init__(self, db: Database) -> None:  # no folder: nothing of it is on this node's disk
        self.db = db
        self._key: bytes | None = None

    def issue(self, organizer: str, uid: str, guest: str, *, record: bool = True) -> ReplyToken:
        """The guest's token, recorded (in the open transaction, if any) unless ``record`` is False."""
        issued = ReplyToken(self._mac(TOKEN_BYTES, organizer, uid, guest), organizer, uid, guest)
        if record:
            with self.db.write() as conn:
                conn.execute("INSERT INTO invito_reply_token (token, organizer, uid, guest) "
                             "VALUES (%s, %s, %s, %s) ON CONFLICT (token) DO NOTHING",
                             (issued.token, organizer, uid, guest))
        return issued

    def lookup(self, token: str) -> ReplyToken | None:
        token = token.lower()
        if not _TOKEN.fullmatch(token):
            return None
        with self.db.read() as conn:
            row = conn.execute("SELECT token, organizer, uid, guest FROM invito_reply_token WHERE token = %s",
                               (token,)).fetchone()
        return ReplyToken(*row) if row else None

    def _secret(self) -> bytes:
        """The shared secret, created on first use by one node for all. On a connection of its own: it may
        be first needed inside a read-only snapshot (an RSVP page), where it could not be written."""
        if self._key is None:
            with self.db.pool.connection() as conn:
                conn.execute("INSERT INTO invito_setting (name, value) VALUES (%s, %s) ON CONFLICT (name) "
                             "DO NOTHING", (SECRET, os.urandom(32)))
                # A new statement, a new snapshot: a concurrent winner's row is visible once it committed,
                # and our insert waited for that commit.
                (value,) = conn.execute("SELECT value FROM invito_setting WHERE name = %s", (SECRET,)).fetchone()
            self._key = bytes(value)
        return self._key
