# SPDX-License-Identifier: GPL-3.0-or-later
"""Copying the data folder's reply tokens and their signing secret into the database.

Links already mailed carry tokens and signatures made with the folder's secret, so the database's secret
must become the folder's. That is safe while the database holds no token of its own; a database that
already signs with another secret and has tokens would break its own links, so the copy is refused
(``SecretConflict``) and the admin decides.
"""
from __future__ import annotations

import os

import psycopg

from invito.plugins.imip.spool import stems
from invito.plugins.imip.tokens import ReplyToken, ReplyTokens
from invito.storage.pg.tokens import SECRET

SECRET_FILE = "secret"  # plugins.imip.tokens keeps the secret beside the tokens under this name


class SecretConflict(RuntimeError):
    """The database signs with another secret and already has reply tokens."""


def folder_secret(folder: str) -> bytes | None:
    """The folder's signing secret; None when it never made one (then it has no tokens either)."""
    try:
        with open(os.path.join(folder, SECRET_FILE), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def folder_tokens(folder: str) -> list[ReplyToken]:
    """Every token recorded in the folder, read through ``ReplyTokens.lookup`` (which never writes)."""
    tokens = ReplyTokens(folder)
    return [token for token in map(tokens.lookup, sorted(stems(folder, ".json"))) if token is not None]


def copy_secret(conn: psycopg.Connection, secret: bytes) -> bool:
    """Make ``secret`` the database's; whether it changed anything. Raises ``SecretConflict`` (nothing
    written) when the database has another secret and tokens made with it."""
    row = conn.execute("SELECT value FROM invito_setting WHERE name = %s FOR UPDATE", (SECRET,)).fetchone()
    if row is not None and bytes(row[0]) == secret:
        return False
    if row is not None and conn.execute("SELECT EXISTS (SELECT 1 FROM invito_reply_token)").fetchone()[0]:
        raise SecretConflict("the database already signs reply links with another secret and has reply "
                             "tokens of its own: copying the folder's secret would break the links it has "
                             "mailed, and keeping its own would break the folder's")
    conn.execute("INSERT INTO invito_setting (name, value) VALUES (%s, %s) ON CONFLICT (name) "
                 "DO UPDATE SET value = excluded.value", (SECRET, secret))
    return True


def copy_tokens(conn: psycopg.Connection, tokens: list[ReplyToken]) -> int:
    """``tokens`` into the database (each written once); how many were new."""
    return conn.execute(
        "INSERT INTO invito_reply_token (token, organizer, uid, guest) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) ON CONFLICT (token) DO NOTHING",
        ([t.token for t in tokens], [t.organizer for t in tokens], [t.uid for t in tokens],
         [t.guest for t in tokens])).rowcount
