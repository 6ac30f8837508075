# SPDX-License-Identifier: GPL-3.0-or-later
"""Who is who: calendar user addresses ↔ local users.

An address is internal when it maps to a user of this server: ``user@<[scheduling] domain>`` or an alias
from the ``[scheduling] addresses`` file. Everything else is external and never becomes a principal.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, Mapping

from invito.plugins.itip.address import normalize


class HtpasswdUsers:
    """Names in an htpasswd file, re-read only when the file changes (users are added while running)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._names: frozenset[str] = frozenset()

    def __call__(self, name: str) -> bool:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            with open(self._path, encoding="utf-8") as f:
                self._names = frozenset(line.split(":", 1)[0].strip() for line in f
                                        if ":" in line and not line.lstrip().startswith("#"))
            self._stamp = stamp
        return name in self._names


class Directory:
    """Maps addresses to users and back; ``is_user`` decides whether a name is a real account."""

    def __init__(self, domain: str, aliases: Mapping[str, Iterable[str]],
                 is_user: Callable[[str], bool]) -> None:
        self.domain = domain.strip().lower()
        self._is_user = is_user
        self._aliases = {user: frozenset(normalize(a) for a in addrs) for user, addrs in aliases.items()}
        self._alias_owner = {addr: user for user, addrs in self._aliases.items() for addr in addrs}

    @property
    def configured(self) -> bool:
        """Without a domain or aliases nobody has an address, so nothing can be scheduled."""
        return bool(self.domain or self._aliases)

    def addresses_of(self, user: str) -> frozenset[str]:
        own = {normalize(f"{user}@{self.domain}")} if self.domain else set()
        return frozenset(own | self._aliases.get(user, frozenset()))

    def user_for(self, address: str) -> str | None:
        """The local user owning ``address`` (case-insensitive), or None for an external address."""
        addr = normalize(address)
        user = self._alias_owner.get(addr)
        if user is None and self.domain and addr.startswith("mailto:"):
            local, _, domain = addr[len("mailto:"):].rpartition("@")
            if domain == self.domain and local:
                user = local
        if user is not None and self._is_user(user):
            return user
        return None
