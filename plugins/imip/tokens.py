# SPDX-License-Identifier: GPL-3.0-or-later
"""Reply tokens: the ORGANIZER address a guest replies to names the organizer, the event and the guest.

A token is HMAC-SHA256(secret, organizer, UID, guest) cut to 160 bits and written in lower-case base32, so
it survives mail systems that change the case of local parts, and the same guest of the same event always
gets the same token (updates and cancellations keep one reply address). Each issued token is recorded in
its own file (written once, atomically), so the inbound listener can map it back without the secret
and a forged token maps to nothing.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass

import icalendar

from invito.plugins import durable
from invito.plugins.itip.components import values

TOKEN_BYTES = 20  # 160 bits
_TOKEN = re.compile(r"[a-z2-7]{32}")
_TOKEN_IN_TEXT = re.compile(r"(?<![A-Za-z0-9])[A-Za-z2-7]{32}(?![A-Za-z0-9])")


@dataclass(frozen=True)
class ReplyToken:
    token: str
    organizer: str
    uid: str
    guest: str


class ReplyTokens:
    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._key: bytes | None = None  # the secret, read once: it is written once and never changes

    def issue(self, organizer: str, uid: str, guest: str, *, record: bool = True) -> ReplyToken:
        """The guest's token, recorded for the listener; ``record`` False for a preview that leaves no trace
        (the same token is recorded when the message is really sent)."""
        token = self._mac(TOKEN_BYTES, organizer, uid, guest)
        issued = ReplyToken(token, organizer, uid, guest)
        path = self._path(token)
        if record and not os.path.exists(path):
            durable.write_once(path, json.dumps(issued.__dict__).encode())
        return issued

    def sign(self, *parts: str) -> str:
        """A 16-character MAC of ``parts`` under the same secret, for values handed out beside a token (an
        RSVP link's occurrence, its form's timestamp) that must come back unchanged."""
        return self._mac(10, *parts)

    def lookup(self, token: str) -> ReplyToken | None:
        token = token.lower()
        if not _TOKEN.fullmatch(token):
            return None
        try:
            with open(self._path(token), encoding="utf-8") as f:
                return ReplyToken(**json.load(f))
        except FileNotFoundError:
            return None

    def _mac(self, size: int, *parts: str) -> str:
        digest = hmac.new(self._secret(), "\0".join(parts).encode(), hashlib.sha256).digest()
        return base64.b32encode(digest[:size]).decode().lower()

    def _path(self, token: str) -> str:
        return os.path.join(self.folder, token + ".json")

    def _secret(self) -> bytes:
        if self._key is None:
            path = os.path.join(self.folder, "secret")
            if not os.path.exists(path):
                os.makedirs(self.folder, mode=0o700, exist_ok=True)
                durable.write_once(path, os.urandom(32))  # another process may win the race: what is on disk counts
            with open(path, "rb") as f:
                self._key = f.read()
        return self._key


def tag(token: str) -> str:
    """A short name for a token in logs. The token is also the guest's RSVP key, so a log must never
    hold it: this names it for matching log lines up, and cannot be turned back into it."""
    return "tok-" + hashlib.sha256(token.lower().encode("ascii", "replace")).hexdigest()[:10]


def redact(text: str) -> str:
    """``text`` (an address, a log line) with anything shaped like a token replaced by its :func:`tag`."""
    return _TOKEN_IN_TEXT.sub(lambda match: tag(match.group()), text)


def reply_address(template: str, token: str) -> str:
    """``invito+{token}@cal.example.com`` → ``mailto:invito+<token>@cal.example.com``."""
    return "mailto:" + template.replace("{token}", token)


def set_organizer_address(calendar: icalendar.Calendar, address: str) -> None:
    """Make ``address`` the ORGANIZER in every component, display name and parameters kept (in place:
    callers pass their own copy, parsed from the spool)."""
    for component in calendar.subcomponents:
        for organizer in values(component, "ORGANIZER"):
            replaced = icalendar.vCalAddress(address)
            replaced.params.update(organizer.params)
            component["ORGANIZER"] = replaced
