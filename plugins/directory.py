# SPDX-License-Identifier: GPL-3.0-or-later
"""Who is who: calendar user addresses ↔ local users.

An address is internal when it maps to a user of this server: a user named by a mail address
(``alice@example.com``) has that address, with or without a domain, so scheduling works out of the box; a
plain name is ``user@<[scheduling] domain>``; any user may have aliases from the ``[scheduling] addresses``
file. Everything else is external and never becomes a principal.
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
        """Whether the configuration gives addresses (a domain or aliases); users named by a mail address
        have theirs without it, so this alone does not decide whether anything can be scheduled."""
        return bool(self.domain or self._aliases)

    def addresses_of(self, user: str) -> frozenset[str]:
        if "@" in user:  # the name is the address (user_name_problem allows one '@', not at either end)
            own = {normalize(user)}
        else:
            own = {normalize(f"{user}@{self.domain}")} if self.domain else set()
        return frozenset(own | self._aliases.get(user, frozenset()))

    def user_for(self, address: str) -> str | None:
        """The local user owning ``address`` (case-insensitive), or None for an external address."""
        addr = normalize(address)
        candidates = [self._alias_owner.get(addr)]
        if addr.startswith("mailto:"):
            mail = addr[len("mailto:"):]
            local, _, domain = mail.rpartition("@")
            if self.domain and domain == self.domain and local:
                candidates.append(local)
            candidates.append(mail)  # a user named by this mail address
        return next((user for user in candidates if user is not None and self._is_user(user)), None)

    def groups_of(self, user: str) -> frozenset[str]:
        """Groups for ``@group`` entries of ``[scheduling] external_invites`` beyond the login's own: a
        users file knows none (the directory-backed ``LdapDirectory`` does)."""
        return frozenset()
