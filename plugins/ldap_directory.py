# SPDX-License-Identifier: GPL-3.0-or-later
"""Who is who when users live in the organisation's LDAP / Active Directory (``[auth] type = ldap``).

A person's calendar addresses are their directory mail attributes (``[scheduling] ldap_address_attributes``,
e.g. ``mail, proxyAddresses``; AD's ``smtp:``/``SMTP:`` prefixes are understood), and their groups (for
``[scheduling] external_invites``) are read as Radicale's LDAP login reads them. An address found in the
directory is internal even before its owner's first login. The connection is Radicale's own ``[auth]
ldap_*`` settings; this module is the only one that talks to the directory.

Lookups are cached (``ldap_cache_seconds``) and bounded (``ldap_timeout``), because they run inside a
client's PUT under the storage lock: when the directory cannot be reached, a warning names it, cached
answers are used however old, unknown addresses count as external, and the directory is left alone for
``RETRY_SECONDS`` so one outage costs one timeout, not one per attendee.
"""
from __future__ import annotations

import logging
import math
import re
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn
from radicale import config, pathutils

from invito.plugins.directory import Directory
from invito.plugins.itip.address import normalize

logger = logging.getLogger("invito.directory")

RETRY_SECONDS = 30.0  # while the directory is unreachable, how long lookups use cached answers only

_FILTER_ATTRIBUTE = re.compile(r"\(([A-Za-z][A-Za-z0-9;-]*)=\{0\}\)")
_ADDRESS_PREFIX = re.compile(r"^([A-Za-z0-9]+):(.*)$", re.DOTALL)

T = TypeVar("T")


@dataclass(frozen=True)
class Person:
    """A directory entry as scheduling needs it."""
    name: str                   # the user name Radicale logs them in as
    addresses: frozenset[str]   # normalized ``mailto:`` addresses
    groups: frozenset[str]      # RDN values of their groups, as Radicale's LDAP login returns them


def mail_addresses(values: list[str]) -> frozenset[str]:
    """``mailto:`` addresses from attribute values: plain addresses, and AD's ``SMTP:``/``smtp:`` ones;
    other typed values (``X500:…``, ``SIP:…``) are not mail addresses."""
    found = set()
    for value in values:
        match = _ADDRESS_PREFIX.match(value.strip())
        if match is not None and "@" not in match.group(1):
            if match.group(1).lower() != "smtp":
                continue
            value = match.group(2)
        if "@" in value:
            found.add(normalize(value))
    return frozenset(found)


def _group_names(dns: list[str]) -> frozenset[str]:
    """Group DNs → their first RDN's value (``cn=staff,ou=groups,…`` → ``staff``), as Radicale does."""
    names = set()
    for dn in dns:
        try:
            names.add(parse_dn(dn)[0][1])
        except (LDAPException, IndexError, ValueError):
            names.add(dn)
    return frozenset(names)


def _values(attributes: dict, name: str) -> list[str]:
    """An attribute's values as text (ldap3 gives bytes for values it cannot decode)."""
    value = attributes.get(name) if name else None
    if value is None:
        return []
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            for v in (value if isinstance(value, list) else [value])]


class LdapDirectory:
    """``Directory``'s interface plus ``groups_of``, answered from LDAP; ``[scheduling] domain`` and
    ``addresses`` entries still count, through a plain ``Directory`` whose users are the directory's."""

    def __init__(self, configuration: config.Configuration, domain: str, aliases: dict[str, list[str]],
                 is_home: Callable[[str], bool]) -> None:
        get = configuration.get
        self.uri: str = get("auth", "ldap_uri")
        self._base: str = get("auth", "ldap_base")
        self._reader_dn: str = get("auth", "ldap_reader_dn")
        secret_file = get("auth", "ldap_secret_file")
        if secret_file:
            with open(secret_file, encoding="utf-8") as f:
                self._secret: str = f.read().rstrip("\n")
        else:
            self._secret = get("auth", "ldap_secret")
        security = get("auth", "ldap_security")
        self._starttls = security == "starttls"
        verify = {"NONE": ssl.CERT_NONE, "OPTIONAL": ssl.CERT_OPTIONAL,
                  "REQUIRED": ssl.CERT_REQUIRED}[get("auth", "ldap_ssl_verify_mode")]
        use_ssl = security == "tls" or self.uri.lower().startswith("ldaps://")
        self._timeout: float = get("scheduling", "ldap_timeout")
        self._server = ldap3.Server(
            self.uri, use_ssl=use_ssl, get_info=ldap3.NONE, connect_timeout=self._timeout,
            tls=ldap3.Tls(validate=verify, ca_certs_file=get("auth", "ldap_ssl_ca_file") or None)
            if use_ssl or self._starttls else None)
        self._filter: str = get("auth", "ldap_filter")
        self._user_attribute: str = get("auth", "ldap_user_attribute")
        match = _FILTER_ATTRIBUTE.search(self._filter)
        # The attribute whose value is the user name: Radicale's ldap_user_attribute, else what the
        # login filter matches the typed name against.
        self._name_attribute = self._user_attribute or (match.group(1) if match else "")
        self._lowercase: bool = get("auth", "lc_username")
        self._groups_attribute: str = get("auth", "ldap_groups_attribute")
        self._members_attribute: str = get("auth", "ldap_group_members_attribute")
        self._group_base: str = get("auth", "ldap_group_base") or self._base
        self._group_filter: str = get("auth", "ldap_group_filter")
        self._address_attributes: list[str] = get("scheduling", "ldap_address_attributes")
        self._ttl: float = get("scheduling", "ldap_cache_seconds")
        self._lock = threading.Lock()
        self._people: dict[str, tuple[float, Person | None]] = {}
        self._owners: dict[str, tuple[float, str | None]] = {}
        self._down_until = 0.0
        self._is_home = is_home  # the storage's: a name with a home here
        self._plain = Directory(domain, aliases, self._is_user)
        if not self._name_attribute:
            logger.warning("directory %s: neither [auth] ldap_user_attribute nor an (attribute={0}) in "
                           "ldap_filter %r says which attribute holds user names; only users who have "
                           "logged in are found", self.uri, self._filter)

    # -- Directory's interface -------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        """Directory users have addresses: scheduling works without ``[scheduling] domain``."""
        return True

    def addresses_of(self, user: str) -> frozenset[str]:
        person = self._person(user)
        return self._plain.addresses_of(user) | (person.addresses if person is not None else frozenset())

    def user_for(self, address: str) -> str | None:
        """The user owning ``address``: from ``domain``/``addresses``, else the directory's entry with
        that mail address; None for an external address (or one the directory cannot be asked about)."""
        user = self._plain.user_for(address)
        if user is not None:
            return user
        addr = normalize(address)
        if not addr.startswith("mailto:") or "@" not in addr:
            return None
        return self._cached(self._owners, addr, lambda: self._fetch_owner(addr))

    def users_for(self, addresses: Iterable[str]) -> dict[str, str | None]:
        """``user_for`` of each address (the directory is asked, and cached, address by address)."""
        return {address: self.user_for(address) for address in addresses}

    def groups_of(self, user: str) -> frozenset[str]:
        person = self._person(user)
        return person.groups if person is not None else frozenset()

    # -- cache -----------------------------------------------------------------------------------

    def _is_user(self, name: str) -> bool:
        """A user of this server: in the directory, or known by a home already."""
        return self._person(name) is not None or self._is_home(name)

    def _person(self, user: str) -> Person | None:
        if not user or not self._name_attribute:
            return None
        return self._cached(self._people, user, lambda: self._fetch_person(user))

    def _cached(self, cache: dict[str, tuple[float, T | None]], key: str, fetch: Callable[[], T | None]
                ) -> T | None:
        """A fresh cached answer, else the directory's; the last known one while it cannot be reached."""
        now = time.monotonic()
        with self._lock:
            hit = cache.get(key)
            down = now < self._down_until
        if hit is not None and (now - hit[0] < self._ttl or down):
            return hit[1]
        if down:
            return None
        try:
            value = fetch()
        except (LDAPException, OSError) as e:
            self._went_down(e)
            return hit[1] if hit is not None else None
        with self._lock:
            cache[key] = (time.monotonic(), value)
            if self._down_until:
                self._down_until = 0.0
                logger.info("directory %s answers again", self.uri)
        return value

    def _went_down(self, error: Exception) -> None:
        with self._lock:
            first = not self._down_until
            self._down_until = time.monotonic() + RETRY_SECONDS
        if first:
            logger.warning("directory %s unreachable (%s: %s); cached entries are used, unknown addresses "
                           "count as external; next try in %d s", self.uri, type(error).__name__, error,
                           RETRY_SECONDS)

    # -- LDAP I/O --------------------------------------------------------------------------------

    def _fetch_person(self, user: str) -> Person | None:
        if self._user_attribute:
            query = "(%s=%s)" % (self._user_attribute, escape_filter_chars(user))
        else:
            query = self._filter.format(escape_filter_chars(user))
        return self._search_person(query, "user=%s" % user)

    def _fetch_owner(self, address: str) -> str | None:
        mailbox = escape_filter_chars(address[len("mailto:"):])
        query = "(|%s)" % "".join("(%s=%s)(%s=smtp:%s)" % (a, mailbox, a, mailbox)
                                  for a in self._address_attributes)
        person = self._search_person(query, "address=%s" % address, address)
        if person is not None:
            with self._lock:
                self._people[person.name] = (time.monotonic(), person)
        return person.name if person is not None else None

    def _search_person(self, query: str, what: str, address: str | None = None) -> Person | None:
        """The one entry ``query`` finds (none, or several: None), with its groups. Raises LDAPException
        or OSError when the directory cannot be asked."""
        attributes = [a for a in {self._name_attribute, *self._address_attributes, self._groups_attribute} if a]
        conn = ldap3.Connection(self._server, user=self._reader_dn or None, password=self._secret or None,
                                receive_timeout=max(1, math.ceil(self._timeout)),  # ldap3: whole seconds
                                raise_exceptions=True, read_only=True)
        try:
            conn.open()
            if self._starttls:
                conn.start_tls()
            conn.bind()
            entries = self._search(conn, self._base, query, attributes)
            if len(entries) != 1:
                if len(entries) > 1:
                    logger.warning("directory %s: %d entries for %s; treated as unknown", self.uri,
                                   len(entries), what)
                return None
            dn, found = entries[0]
            names = _values(found, self._name_attribute)
            name = names[0] if names else ""
            if self._lowercase and not self._user_attribute:  # Radicale lower-cases the typed name only
                name = name.lower()
            addresses = mail_addresses([v for a in self._address_attributes for v in _values(found, a)])
            if not name or not pathutils.is_safe_path_component(name) or (address and address not in addresses):
                return None
            groups = _values(found, self._groups_attribute)
            if self._members_attribute:
                groups = [g for g, _ in self._search(
                    conn, self._group_base, "(&%s(%s=%s))" % (self._group_filter, self._members_attribute,
                                                              escape_filter_chars(dn)), ["1.1"])]
        finally:
            if not conn.closed:
                conn.unbind()
        return Person(name, addresses, _group_names(groups))

    def _search(self, conn: ldap3.Connection, base: str, query: str, attributes: list[str]
                ) -> list[tuple[str, dict]]:
        conn.search(base, query, ldap3.SUBTREE, attributes=attributes,
                    time_limit=max(1, math.ceil(self._timeout)))
        return [(e["dn"], e.get("attributes", {})) for e in conn.response or () if e.get("type") == "searchResEntry"]
