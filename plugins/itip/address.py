# SPDX-License-Identifier: GPL-3.0-or-later
"""Calendar user addresses in one canonical form, so that lookups and comparisons are plain string equality.

Clients write the same person as ``MAILTO:Bob@X.com``, ``mailto:bob@x.com`` or a bare ``bob@x.com``;
e-mail addresses are compared case-insensitively in practice, so the whole ``mailto:`` URI is lower-cased.
Other URIs (``urn:uuid:…``, ``http://…``) may be case-sensitive after the scheme and are kept as written.
"""
from __future__ import annotations

import functools
import re

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", re.DOTALL)


@functools.lru_cache(maxsize=4096)  # pure, and called for every attendee line of every comparison
def normalize(value: str) -> str:
    """``"MAILTO:Bob@X.com"``, ``" <bob@x.com>"``, ``"bob@x.com"`` → ``"mailto:bob@x.com"``."""
    text = value.strip()
    if not text:
        return ""
    if text.endswith(">") and "<" in text:  # "Bob <bob@x.com>" as some mail headers write it
        text = text[text.rindex("<") + 1:-1].strip()
    match = _SCHEME.match(text)
    if match is None or "@" in match.group(1):
        return "mailto:" + text.lower()
    scheme, rest = match.group(1).lower(), match.group(2).strip()
    if scheme == "mailto":
        return "mailto:" + rest.lower()
    return f"{scheme}:{rest}"
