# SPDX-License-Identifier: GPL-3.0-or-later
"""Invito's configuration: one schema (Radicale's plus ours), checked precisely, loaded into Radicale's class.

The result is a ``radicale.config.Configuration``, so ``Application(configuration)`` and every Radicale
plugin read it unchanged. We validate the INI file ourselves first because Radicale stops at the first
problem and does not say what would have been accepted; admins get every problem at once, each naming the
file, section, key, the value and what is allowed.

To add a section or key, add schema entries to ``INVITO_SCHEMA`` (each with "value", "help", "type" like
Radicale's); a type may carry an ``expected`` attribute that error messages show (see ``one_of``).
"""
from __future__ import annotations

import configparser
import importlib.util
import ipaddress
import os
import re
import urllib.parse
from collections import OrderedDict
from typing import Any, Callable

from radicale import config as radicale_config
from radicale import log, types
from radicale import storage as radicale_storage

from invito.plugins.directory import AddressesError, load_addresses, user_name_problem

DEFAULT_DATA_FOLDER = "./invito-data"
DATA_FOLDER_NAME = "invito-data"  # beside the config file when one is given and data_folder is not set


class ConfigError(Exception):
    """Configuration problems, one line each, ready to show to the admin."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class CommandError(Exception):
    """A problem with what a command was asked to do; the message says how to fix it. ``invito`` prints
    it and exits 1 (configuration problems: ``ConfigError``, exit 2)."""


def one_of(*choices: str) -> Callable[[Any], str]:
    """A schema type accepting exactly ``choices``."""
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError("not one of the allowed values")
        return value
    check.expected = "one of: " + ", ".join(choices)  # type: ignore[attr-defined]
    return check


def reply_address(value: Any) -> str:
    """``local+{token}@domain``: where guests' replies come back; empty keeps the organizer's address."""
    value = str(value).strip()
    if value and (value.count("{token}") != 1 or not re.fullmatch(r"[^@\s]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", value)
                  or "{token}" not in value.split("@")[0]):
        raise ValueError("not an address with {token} in its local part")
    return value


reply_address.expected = (  # type: ignore[attr-defined]
    "an address with {token} in its local part, e.g. invito+{token}@cal.example.com, or empty")


def listen_address(value: Any) -> str:
    """``host:port`` for the inbound listener, or empty."""
    value = str(value).strip()
    if value:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("not host:port")
    return value


listen_address.expected = "host:port, e.g. 127.0.0.1:8025, or empty"  # type: ignore[attr-defined]


def invite_policy(value: Any) -> list[str]:
    """Who may invite external guests: ``*``, user names and ``@group``s, comma separated; empty: nobody."""
    entries = [v.strip() for v in str(value).split(",") if v.strip()]
    for entry in entries:
        name = entry[1:] if entry.startswith("@") else entry
        if entry != "*" and (not name or user_name_problem(name)):
            raise ValueError("%r is not *, a user name or @group" % entry)
    return entries


invite_policy.expected = "*, or user names and @groups separated by commas, or empty for nobody"  # type: ignore[attr-defined]


def attribute_names(value: Any) -> list[str]:
    """LDAP attribute names, comma separated; at least one."""
    names = [v.strip() for v in str(value).split(",") if v.strip()]
    if not names or not all(re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", n) for n in names):
        raise ValueError("not LDAP attribute names")
    return names


attribute_names.expected = "LDAP attribute names separated by commas, e.g. mail, proxyAddresses"  # type: ignore[attr-defined]


def mail_domain(value: Any) -> str:
    """A mail domain (``example.com``), lower-cased; empty means not configured."""
    value = str(value).strip().lower()
    if value and not all(re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", label) for label in value.split(".")):
        raise ValueError("not a mail domain")
    return value


mail_domain.expected = (  # type: ignore[attr-defined]
    "a mail domain such as example.com (no user part, no '@'), or empty")

def database_url(value: Any) -> str:
    """A PostgreSQL connection URL, or empty (the data folder holds everything)."""
    value = str(value).strip()
    if value and not re.match(r"postgres(ql)?://", value):
        raise ValueError("not a PostgreSQL URL")
    return value


database_url.expected = (  # type: ignore[attr-defined]
    "a URL such as postgresql://invito@db.example.com/invito, or empty")


def public_url(value: Any) -> str:
    """Where guests reach this server from outside: ``https://host[:port][/prefix]``, no trailing slash."""
    value = str(value).strip().rstrip("/")
    if value:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("not an http(s) URL without query or fragment")
    return value


public_url.expected = "an https:// URL such as https://cal.example.com, or empty"  # type: ignore[attr-defined]


def ip_addresses(value: Any) -> list[str]:
    """Comma-separated IP addresses, each written as Python writes it (so they compare with REMOTE_ADDR)."""
    found = []
    for entry in (v.strip() for v in str(value).split(",")):
        if entry:
            try:
                found.append(str(ipaddress.ip_address(entry)))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address") from None
    return found


ip_addresses.expected = "IP addresses separated by commas, e.g. 127.0.0.1, ::1, or empty"  # type: ignore[attr-defined]

# Error-message wording for Radicale's own types; ours carry an ``expected`` attribute instead.
_RADICALE_EXPECTED: dict[Any, str] = {
    bool: "a boolean: true/false, yes/no, on/off or 1/0",
    int: "a whole number",
    str: "text",
    radicale_config.positive_int: "a whole number, 0 or more",
    radicale_config.positive_float: "a number, 0 or more",
    radicale_config.port_int: "a port number (1-65534)",
    radicale_config.filepath: "a file path",
    radicale_config.list_of_ip_address: "comma-separated address:port pairs, e.g. 127.0.0.1:5232",
    radicale_config.logging_level: "one of: " + ", ".join(log.LOG_LEVEL_OPTIONS),
    radicale_config.validate_types: "one of: " + ", ".join(radicale_config.VALIDATE_TYPES),
    radicale_config.profiling: "one of: " + ", ".join(radicale_config.PROFILING),
    radicale_config.server_types: "one of: " + ", ".join(radicale_config.SERVER_TYPES),
    radicale_config.imap_address: "address, address:port or [address]:port",
    radicale_config.imap_security: "one of: tls, starttls, none",
    radicale_config.json_str: "a JSON object",
    radicale_config.json_str_condition: "a JSON object",
    radicale_config.rights_permission: "permission letters",
}

INVITO_SCHEMA: types.CONFIG_SCHEMA = OrderedDict([
    ("invito", OrderedDict([
        ("data_folder", {
            "value": DEFAULT_DATA_FOLDER,
            "help": "folder for all of Invito's data (collections, users file, mail spool); unset: "
                    "invito-data beside the config file (without a config file: in the current directory); "
                    "like every relative path in a config file, a relative path starts at the file's folder",
            "type": radicale_config.filepath}),
        ("database", {
            "value": "",
            "help": "empty: everything lives in the data folder (one node); a PostgreSQL URL "
                    "(postgresql://user@host/db, PostgreSQL 13 or later): collections, mail queues and reply "
                    "tokens live in that database, shared by every invito serve node that names it",
            "type": database_url}),
        ("database_file", {
            "value": "",
            "help": "a file whose first line is the database URL, to keep its password out of this file; "
                    "used when database is empty",
            "type": radicale_config.filepath})])),
    ("scheduling", OrderedDict([
        ("domain", {
            "value": "",
            "help": "mail domain of the users: user NAME has the calendar address NAME@domain; a user "
                    "named by a mail address (alice@example.com) has that address with or without it",
            "type": mail_domain}),
        ("addresses", {
            "value": "",
            "help": "optional file giving users more addresses, lines 'user: addr1, addr2'",
            "type": radicale_config.filepath}),
        ("external_invites", {
            "value": "*",
            "help": "who may invite external guests by email: * (everybody), user names and @groups "
                    "separated by commas; empty: nobody (refused guests get SCHEDULE-STATUS 3.8, no mail)",
            "type": invite_policy}),
        ("hide_attendees", {
            "value": "false",
            "help": "each external guest's invitation lists only the organizer and that guest",
            "type": bool}),
        ("language", {
            "value": "en",
            "help": "language of emails when the guest's ATTENDEE has no LANGUAGE parameter",
            "type": one_of("en", "it")}),
        ("ldap_address_attributes", {
            "value": "mail",
            "help": "with [auth] type = ldap: the directory attributes holding a user's calendar (mail) "
                    "addresses, comma separated, e.g. mail, proxyAddresses, mailAlternateAddress; "
                    "smtp:/SMTP: prefixes are understood",
            "type": attribute_names}),
        ("ldap_cache_seconds", {
            "value": "300",
            "help": "with [auth] type = ldap: how long a directory answer is reused before asking again",
            "type": radicale_config.positive_float}),
        ("ldap_timeout", {
            "value": "5",
            "help": "with [auth] type = ldap: seconds to wait for the directory; unreachable, cached answers "
                    "are used and unknown addresses count as external",
            "type": radicale_config.positive_float})])),
    ("smtp", OrderedDict([
        ("host", {
            "value": "",
            "help": "relay for outgoing invitations; empty: messages wait in the spool until it is set",
            "type": str}),
        ("port", {
            "value": "587",
            "help": "relay port (587 submission with starttls, 465 with tls, 25 without)",
            "type": radicale_config.port_int}),
        ("security", {
            "value": "starttls",
            "help": "connection security; certificates are verified",
            "type": one_of("none", "starttls", "tls")}),
        ("cafile", {
            "value": "",
            "help": "CA bundle to verify the relay's certificate with (empty: the system's)",
            "type": radicale_config.filepath}),
        ("username", {
            "value": "",
            "help": "login at the relay (empty: no login)",
            "type": str}),
        ("password_file", {
            "value": "",
            "help": "file whose first line is the relay password (kept out of this file and of logs)",
            "type": radicale_config.filepath}),
        ("sender", {
            "value": "",
            "help": "envelope and From address of invitations, e.g. invito@cal.example.com",
            "type": str}),
        ("timeout", {
            "value": "30",
            "help": "seconds to wait for the relay",
            "type": radicale_config.positive_float}),
        ("retry_seconds", {
            "value": "60",
            "help": "first retry after a guest's or a message's temporary failure (4xx), in seconds; "
                    "doubled each time up to one hour",
            "type": radicale_config.positive_float}),
        ("probe_seconds", {
            "value": "15",
            "help": "while the relay cannot be reached (down, TLS, login), try it this often, in seconds; "
                    "once it answers, everything waiting goes at once",
            "type": radicale_config.positive_float}),
        ("lease_seconds", {
            "value": "120",
            "help": "with [invito] database: a node that takes deliveries to send holds them this long without "
                    "an outcome; if it dies meanwhile, another node sends them once this has passed",
            "type": radicale_config.positive_float}),
        ("give_up_days", {
            "value": "4",
            "help": "days to keep retrying a temporary failure before reporting it as failed",
            "type": radicale_config.positive_float})])),
    ("imip", OrderedDict([
        ("reply_address", {
            "value": "",
            "help": "ORGANIZER address in outgoing invitations, with a per-guest token, e.g. "
                    "invito+{token}@cal.example.com, so any mail client's reply returns to Invito; "
                    "empty: the organizer's own address (the site's mail server must hand replies to Invito)",
            "type": reply_address}),
        ("listen", {
            "value": "",
            "help": "host:port where Invito receives guests' replies by SMTP or LMTP, e.g. 127.0.0.1:8025; "
                    "empty: no listener",
            "type": listen_address}),
        ("protocol", {
            "value": "smtp",
            "help": "smtp (the site's MX or a relay forwards to it) or lmtp (behind Postfix or another MTA)",
            "type": one_of("smtp", "lmtp")}),
        ("direct", {
            "value": "auto",
            "help": "also accept mail addressed to the users themselves (replies to their own address, "
                    "invitations from outside): on, off, or auto (on when reply_address is empty)",
            "type": one_of("auto", "on", "off")}),
        ("tls_certificate", {
            "value": "",
            "help": "certificate (PEM) to offer STARTTLS with; empty: no STARTTLS",
            "type": radicale_config.filepath}),
        ("tls_key", {
            "value": "",
            "help": "private key (PEM) of tls_certificate",
            "type": radicale_config.filepath}),
        ("max_size", {
            "value": "2000000",
            "help": "largest message accepted, in bytes",
            "type": radicale_config.positive_int}),
        ("max_connections", {
            "value": "50",
            "help": "simultaneous SMTP connections; more are told to come back later",
            "type": radicale_config.positive_int}),
        ("max_connections_per_client", {
            "value": "10",
            "help": "simultaneous SMTP connections from one client address, so that no one sender takes "
                    "every slot (not for lmtp, where every connection is the MTA's)",
            "type": radicale_config.positive_int}),
        ("command_timeout", {
            "value": "60",
            "help": "seconds a client may stay silent before each command or message line; then it is cut off",
            "type": radicale_config.positive_float}),
        ("transaction_timeout", {
            "value": "60",
            "help": "seconds a connection has, from its greeting or its previous message, to start sending "
                    "the next message (DATA); connections that only hold a slot are cut off",
            "type": radicale_config.positive_float}),
        ("min_data_rate", {
            "value": "500",
            "help": "bytes per second a message must arrive at on average (after command_timeout's grace); "
                    "slower senders are cut off (0: no limit)",
            "type": radicale_config.positive_float}),
        ("from_mismatch", {
            "value": "flag",
            "help": "a reply whose From is not the guest's address (people answer from aliases): flag "
                    "(applied, and the organizer is told who sent it) or quarantine (not applied)",
            "type": one_of("flag", "quarantine")}),
        ("authentication", {
            "value": "off",
            "help": "check that replies really come from their sender's domain (DKIM aligned with From, or "
                    "the fronting mail server's verdict): off, flag (applied; the organizer is told when "
                    "it fails) or require (only authenticated replies are applied)",
            "type": one_of("off", "flag", "require")}),
        ("authserv_id", {
            "value": "",
            "help": "authserv-id of the mail server in front of Invito whose Authentication-Results "
                    "headers are trusted (it must remove such headers from incoming mail); empty: Invito "
                    "verifies DKIM signatures itself",
            "type": str}),
        ("processing_timeout", {
            "value": "10",
            "help": "seconds the recurrence checks of one inbound message may take; a message needing more "
                    "is quarantined with the reason instead of holding up the server",
            "type": radicale_config.positive_float}),
        ("processors", {
            "value": "2",
            "help": "inbound messages applied at the same time on the database backend, each by a thread "
                    "of its own (messages of one meeting or one organizer still wait for each other); the "
                    "filesystem backend applies one at a time",
            "type": radicale_config.positive_int}),
        ("notify_organizer", {
            "value": "true",
            "help": "email the organizer when a guest answers or proposes a new time",
            "type": bool}),
        ("forwards_per_hour", {
            "value": "10",
            "help": "a guest's plain reply (no calendar) to their reply address is forwarded to the "
                    "organizer, at most this many per guest and event an hour; more, and auto-replies, are "
                    "kept in the quarantine (0: never forwarded)",
            "type": radicale_config.positive_int})])),
    ("rsvp", OrderedDict([
        ("public_url", {
            "value": "",
            "help": "address guests' browsers reach this server at, e.g. https://cal.example.com: invitations "
                    "then carry Accept / Maybe / Decline links to a page under /.invito/rsvp/; empty: no links",
            "type": public_url}),
        ("requests_per_minute", {
            "value": "30",
            "help": "requests one client address may make to the answer pages per minute (0: no limit)",
            "type": radicale_config.positive_int}),
        ("trusted_proxies", {
            "value": "",
            "help": "addresses of reverse proxies whose X-Forwarded-For names the real client (for the "
                    "per-client limit), comma separated; empty: the connecting address is the client",
            "type": ip_addresses})])),
])


def _in_data_folder(name: str) -> dict[str, Any]:
    """A Radicale path that, unless the admin sets it, lives in ``[invito] data_folder``."""
    return {"value": os.path.join(DEFAULT_DATA_FOLDER, name), "in_data_folder": name}


# Where Invito's defaults differ from Radicale's.
_RADICALE_OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    ("server", "hosts"): {"value": "127.0.0.1:5232"},
    ("storage", "type"): {"value": "invito.storage",
                          "internal": (*radicale_storage.INTERNAL_TYPES, "invito.storage", "invito.storage.pg.dav")},
    ("storage", "filesystem_folder"): _in_data_folder("collections"),
    # Without it Radicale learns the umask by setting 0022 for a moment in each Storage it makes; `invito
    # serve` makes several at once (HTTP, sender, listener), and a folder another thread made then was 0755.
    ("storage", "folder_umask"): {"value": "0077"},
    ("auth", "type"): {"value": "htpasswd"},
    # CalDAV clients send many requests; re-checking a bcrypt hash on each costs ~0.25 s of CPU.
    ("auth", "cache_logins"): {"value": "true"},
    ("auth", "htpasswd_filename"): _in_data_folder("users"),
    ("auth", "htpasswd_encryption"): {
        "value": "bcrypt",
        "type": one_of("bcrypt", "autodetect", "argon2", "sha512", "sha256", "md5", "plain")},
    ("rights", "type"): {"value": "owner_only"},
}


def _build_schema() -> types.CONFIG_SCHEMA:
    schema: types.CONFIG_SCHEMA = OrderedDict(
        (section, OrderedDict(options)) for section, options in radicale_config.DEFAULT_CONFIG_SCHEMA.items())
    for (section, option), override in _RADICALE_OVERRIDES.items():
        schema[section][option] = {**schema[section][option], **override}  # type: ignore[index]
    schema.update(INVITO_SCHEMA)
    return schema


SCHEMA: types.CONFIG_SCHEMA = _build_schema()


def load(path: str | None = None) -> radicale_config.Configuration:
    """The configuration from ``path`` (None: defaults only); raises ``ConfigError`` listing every problem."""
    configuration = radicale_config.Configuration(SCHEMA)
    given: dict[str, dict[str, str]] = {}
    if path is not None:
        given = _read(path)
        problems = _problems(given, path)
        if problems:
            raise ConfigError(problems)
        # Every command finds the same files whatever folder it runs in: paths start at the file's folder.
        folder = os.path.dirname(os.path.abspath(path))
        configuration.update({"invito": {"data_folder": os.path.join(folder, DATA_FOLDER_NAME)}},
                             "the config file's folder")
        given = _resolved(given, folder)
        configuration.update(given, "config file %r" % path)
    data_folder = configuration.get("invito", "data_folder")
    derived = {section: {option: os.path.join(data_folder, spec["in_data_folder"])
                         for option, spec in options.items()
                         if isinstance(spec, dict) and "in_data_folder" in spec
                         and option not in given.get(section, {})}
               for section, options in SCHEMA.items()}
    configuration.update({s: o for s, o in derived.items() if o}, "[invito] data_folder")
    addresses = configuration.get("scheduling", "addresses")
    if addresses:
        _addresses(addresses)
    return configuration


def _addresses(path: str) -> dict[str, list[str]]:
    """The addresses file, read by the directory's own parser; its problems are configuration problems."""
    try:
        return load_addresses(path)
    except AddressesError as e:
        raise ConfigError(e.problems) from e


def _resolved(given: dict[str, dict[str, str]], folder: str) -> dict[str, dict[str, str]]:
    """``given`` with each relative file path (a ``filepath`` option) made absolute under ``folder``."""
    def resolve(section: str, option: str, value: str) -> str:
        spec = SCHEMA[section].get(option)
        if not (isinstance(spec, dict) and spec["type"] is radicale_config.filepath and value.strip()):
            return value
        return os.path.join(folder, os.path.expanduser(value.strip()))  # join keeps an absolute path as is

    return {section: {option: resolve(section, option, value) for option, value in options.items()}
            for section, options in given.items()}


def unconfigured(configuration: radicale_config.Configuration, users: list[str] | None = None) -> list[str]:
    """What the admin has not set up yet, as sentences for the start-up summary; ``users``: the user names
    when they can be listed (htpasswd), so that the note on the domain names whom it concerns."""
    notes = []
    if not configuration.get("scheduling", "domain") and configuration.get("auth", "type") != "ldap":
        note = _without_domain(configuration.get("scheduling", "addresses"), users)
        if note:
            notes.append(note)
    if not configuration.get("smtp", "host"):
        notes.append("[smtp] host is empty: invitations to external guests wait in the spool; "
                     "set [smtp] host, port, security, sender (and username, password_file) to send them")
    elif not configuration.get("smtp", "sender"):
        notes.append("[smtp] sender is empty: set the address invitations are sent from")
    if not configuration.get("imip", "reply_address"):
        notes.append("[imip] reply_address is empty: guests reply to the organizer's own address, so your "
                     "mail server must hand those replies to Invito")
    if configuration.get("smtp", "host") and not configuration.get("rsvp", "public_url"):
        notes.append("[rsvp] public_url is empty: invitations carry no Accept / Maybe / Decline links for guests "
                     "whose mail program shows no buttons; set it to the https:// address guests reach Invito at")
    return notes


def _without_domain(addresses: str, users: list[str] | None) -> str | None:
    """Who has no calendar address without a domain: plain names not in the addresses file (a name that is
    a mail address is its own address). None when every user has one."""
    if users:
        listed = _addresses(addresses) if addresses else {}
        without = [user for user in users if "@" not in user and user not in listed]
        if not without:
            return None
        shown = ", ".join(without[:3]) + (f" and {len(without) - 3} more" if len(without) > 3 else "")
        return (f"[scheduling] domain is empty: {shown} {'has' if len(without) == 1 else 'have'} no calendar "
                "address, so cannot schedule or be invited; set it to your mail domain, or name users by "
                "their mail address (invito user add alice@example.com)")
    also = f" and users listed in {addresses}" if addresses else ""
    return ("[scheduling] domain is empty: only users named by their mail address (invito user add "
            f"alice@example.com){also} have a calendar address; set it to your mail domain to give plain "
            "names (alice) one")


def _read(path: str) -> dict[str, dict[str, str]]:
    # No DEFAULT section: configparser would copy its keys into every section, which Radicale never meant.
    parser = configparser.RawConfigParser(default_section="\0")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason})") from e
    try:
        parser.read_string(text, source=path)
    except configparser.DuplicateSectionError as e:
        raise ConfigError(f"{path}, line {e.lineno}: section [{e.section}] appears twice") from e
    except configparser.DuplicateOptionError as e:
        raise ConfigError(f"{path}, line {e.lineno}: [{e.section}] {e.option} is set twice") from e
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError(f"{path}, line {e.lineno}: {e.line.strip()!r} comes before any [section]") from e
    except configparser.ParsingError as e:
        lines = text.splitlines()
        raise ConfigError([f"{path}, line {lineno}: cannot parse {lines[lineno - 1].strip()!r}; "
                           "expected 'key = value'" for lineno, _ in e.errors]) from e
    return {section: dict(parser.items(section)) for section in parser.sections()}


def _problems(given: dict[str, dict[str, str]], source: str) -> list[str]:
    """Mirrors what ``Configuration.update`` accepts, but says what is allowed."""
    problems = []
    for section, options in given.items():
        spec = SCHEMA.get(section)
        if spec is None:
            problems.append(f"{source}: unknown section [{section}]; allowed sections: {', '.join(SCHEMA)}")
            continue
        for key, raw in options.items():
            option = spec.get(key) if not key.startswith("_") else None
            if isinstance(option, dict):
                problem = _value_problem(option, raw)
                if problem:
                    problems.append(f"{source}: [{section}] {key} = {raw!r} is invalid ({problem}); "
                                    f"expected {_expected(option)} (option: {option['help']})")
            elif key.startswith("_") or not _takes_extra_keys(spec, options):
                allowed = ", ".join(k for k in spec if not k.startswith("_"))
                problems.append(f"{source}: unknown key {key!r} in [{section}]; allowed keys: {allowed}")
    return problems


def _takes_extra_keys(spec: Any, options: dict[str, str]) -> bool:
    """Radicale's rule: free-form sections, and plugin options when ``type`` names an external module."""
    if "_allow_extra" in spec:
        return True
    return "type" in spec and options.get("type", spec["type"]["value"]) not in spec["type"]["internal"]


def _value_problem(option: dict[str, Any], raw: str) -> str | None:
    type_ = option["type"]
    try:
        value = _boolean(raw) if type_ is bool else type_(raw)
    except Exception as e:  # the schema's type functions raise whatever their parsing raises
        return str(e) or type(e).__name__
    if "internal" in option and value not in option["internal"] and not _importable(value):
        return f"no module named {value!r}"
    return None


def _boolean(raw: str) -> bool:
    """Radicale's reading of booleans (configparser's words)."""
    try:
        return configparser.RawConfigParser.BOOLEAN_STATES[raw.lower()]
    except KeyError:
        raise ValueError("not a boolean") from None


def _expected(option: dict[str, Any]) -> str:
    if "internal" in option:
        return "one of: " + ", ".join(option["internal"]) + ", or an importable Python module"
    type_ = option["type"]
    return getattr(type_, "expected", None) or _RADICALE_EXPECTED.get(type_) or type_.__name__


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
