# SPDX-License-Identifier: GPL-3.0-or-later
"""Who is who: calendar user addresses ↔ local users.

An address is internal when it maps to a user of this server: a user named by a mail address
(``alice@example.com``) has that address, with or without a domain, so scheduling works out of the box; a
plain name is ``user@<[scheduling] domain>``; any user may have aliases from the ``[scheduling] addresses``
file. Everything else is external and never becomes a principal.

The addresses file is parsed here, where it is used; the configuration checks it at load with the same
parser (``server.config``), so ``invito check`` and the running server never read it differently.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Iterable, Mapping

from radicale import pathutils
from radicale.app.base import USER_BLACKLIST_MINIMAL

from invito.plugins.itip.address import normalize


class AddressesError(ValueError):
    """Problems in the ``[scheduling] addresses`` file, one line each, naming the file and line."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


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
    """Maps addresses to users and back; ``is_user`` decides whether a name is a real account, and
    ``users_among`` (when given) answers it for many names at once."""

    def __init__(self, domain: str, aliases: Mapping[str, Iterable[str]],
                 is_user: Callable[[str], bool],
                 users_among: Callable[[set[str]], set[str]] | None = None) -> None:
        self.domain = domain.strip().lower()
        self._is_user = is_user
        self._users_among = users_among or (lambda names: {name for name in names if is_user(name)})
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
        return next((user for user in self._candidates(address) if self._is_user(user)), None)

    def users_for(self, addresses: Iterable[str]) -> dict[str, str | None]:
        """``user_for`` of each address, with one ``users_among`` question for all of them (a 500-guest
        invitation asks the database once, not 500 times)."""
        candidates = {address: self._candidates(address) for address in addresses}
        users = self._users_among({name for names in candidates.values() for name in names})
        return {address: next((n for n in names if n in users), None) for address, names in candidates.items()}

    def _candidates(self, address: str) -> list[str]:
        """The user names ``address`` could belong to, most specific first."""
        addr = normalize(address)
        candidates = [self._alias_owner.get(addr)]
        if addr.startswith("mailto:"):
            mail = addr[len("mailto:"):]
            local, _, domain = mail.rpartition("@")
            if self.domain and domain == self.domain and local:
                candidates.append(local)
            candidates.append(mail)  # a user named by this mail address
        return [name for name in candidates if name is not None]

    def groups_of(self, user: str) -> frozenset[str]:
        """Groups for ``@group`` entries of ``[scheduling] external_invites`` beyond the login's own: a
        users file knows none (the directory-backed ``LdapDirectory`` does)."""
        return frozenset()


def user_name_problem(name: str) -> str | None:
    """Why Radicale would refuse ``name`` as a user (or the htpasswd file could not hold it); None if fine."""
    if not pathutils.is_safe_filesystem_path_component(name):
        return "it must be one path component: not empty, no '/', not starting with '.' or ending with '~'"
    bad = sorted({c for c in name if c in USER_BLACKLIST_MINIMAL or not c.isprintable() or c.isspace()})
    if bad:
        return "it contains characters a user name cannot have: " + " ".join(repr(c) for c in bad)
    if name.startswith("#") or name.startswith("@") or name.endswith("@") or name.count("@") > 1:
        return "it cannot start with '#' or '@', end with '@', or hold more than one '@'"
    if "@" in name and name != name.lower():  # its calendar address is compared in lower case
        return f"a name that is a mail address is written in lower case ({name.lower()})"
    return None


def load_addresses(path: str) -> dict[str, list[str]]:
    """Parse the ``[scheduling] addresses`` file: lines ``user: addr1, addr2``, ``#`` starts a comment line.

    Returns each user's extra addresses (bare, as written, ``mailto:`` removed); raises ``AddressesError``
    naming the file and line of every problem.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise AddressesError(f"{path}: cannot read the [scheduling] addresses file: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise AddressesError(f"{path}: not UTF-8 text ({e.reason})") from e
    addresses: dict[str, list[str]] = {}
    owners: dict[str, tuple[str, int]] = {}
    problems = []
    for lineno, line in enumerate(lines, 1):
        where = f"{path}, line {lineno}"
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        user, colon, rest = text.partition(":")
        user = user.strip()
        if not colon or not user:
            problems.append(f"{where}: expected 'user: address, address', got {text!r}")
            continue
        problem = user_name_problem(user)
        if problem:
            problems.append(f"{where}: {user!r} is not a valid user name: {problem}")
            continue
        found = [a.strip() for a in rest.split(",") if a.strip()]
        if not found:
            problems.append(f"{where}: no address given for {user!r}")
        for address in found:
            if address.lower().startswith("mailto:"):
                address = address[len("mailto:"):]
            if not re.fullmatch(r"[^@\s]+@[^@\s]+", address):
                problems.append(f"{where}: {address!r} is not a mail address (expected name@domain)")
                continue
            if address.lower() in owners:
                owner, first = owners[address.lower()]
                if owner != user:
                    problems.append(f"{where}: {address!r} is also given to {owner!r} on line {first}")
                continue
            owners[address.lower()] = (user, lineno)
            addresses.setdefault(user, []).append(address)
    if problems:
        raise AddressesError(problems)
    return addresses
