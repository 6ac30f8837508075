# SPDX-License-Identifier: GPL-3.0-or-later
"""``invito check``: validate the configuration, then try what it points at before users depend on it.

`invito serve` meets an unwritable folder, a wrong relay password or a taken port only when it needs
them, and says so in a log. The check tries each one now: it writes a scratch file in each folder, logs in
at the relay (``--send-test`` also mails a real invitation), binds the CalDAV and inbound mail ports
(a taken one is asked whether it is Invito, already running: :mod:`invito.server.identity`) and loads
the TLS files. Each problem is one line naming the setting to change. Nothing secret is printed: the relay
password is read only by the SMTP client, which never shows it, and a database URL is shown without its
password.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import functools
import os
import smtplib
import ssl
import tempfile
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Callable

import icalendar
import psycopg
from radicale.config import Configuration

from invito.plugins.imip import mime, smtp
from invito.plugins.imip.smtp import Delivery, SmtpSettings, SmtpTransport, Stage
from invito.server import db_admin, identity
from invito.server.config import ConfigError, load
from invito.server.mail import smtp_settings
from invito.storage.pg import migrations
from invito.storage.pg.db import configured_url, redacted

EXIT_PROBLEMS = 1
EXIT_CONFIG_INVALID = 2


def add_parser(commands: argparse._SubParsersAction, with_config: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "check", parents=[with_config], help="check the configuration and what it points at",
        description="Validate the configuration, then try what it points at: the data folders are writable, "
                    "the users file is readable, the SMTP relay accepts the login, the CalDAV and inbound "
                    "mail ports are free (or held by `invito serve`, already running), the TLS files load. "
                    "Prints one line per check (ok, warn, FAIL with the setting to change), then a summary. "
                    "Exit status: 0 when nothing failed (warnings allowed), 1 when a check failed, 2 when the "
                    "configuration is invalid.")
    p.add_argument("--send-test", metavar="ADDRESS",
                   help="also send a real test invitation (an event tomorrow, from [smtp] sender) to ADDRESS "
                        "through the relay, to see it arrive in a mail program")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    report = Report()
    try:
        configuration = load(args.config)
    except ConfigError as e:
        for problem in e.problems:
            _line("FAIL", problem)
        print("the configuration is invalid; fix it, then run the check again", flush=True)
        return EXIT_CONFIG_INVALID
    report.ok(f"config file {os.path.abspath(args.config)}: valid" if args.config
              else "config file: none given, the built-in defaults apply")
    _folders(configuration, report, f"invito user add NAME{f' --config {args.config}' if args.config else ''}")
    _database(configuration, report)
    _scheduling(configuration, report)
    _caldav(configuration, report)
    _smtp(smtp_settings(configuration), report, args.send_test)
    _inbound(configuration, report)
    _rsvp(configuration, report)
    print(report.summary(), flush=True)
    return EXIT_PROBLEMS if report.failures else 0


@dataclass
class Report:
    """The check's lines, printed as they come (a relay may take a while to answer), and their tally."""
    failures: int = 0
    warnings: int = 0

    def ok(self, what: str) -> None:
        _line("ok  ", what)

    def fail(self, what: str, why: str, setting: str | None) -> None:
        self.failures += 1
        _line("FAIL", what, why, setting)

    def warn(self, what: str, why: str, setting: str | None) -> None:
        self.warnings += 1
        _line("warn", what, why, setting)

    def skip(self, what: str, why: str) -> None:
        _line("skip", what, why)

    def summary(self) -> str:
        warnings = f"{self.warnings} {'warning' if self.warnings == 1 else 'warnings'}"
        if self.failures:
            problems = f"{self.failures} {'problem' if self.failures == 1 else 'problems'}"
            return f"{problems}, {warnings}: change the settings named above, then run the check again"
        return f"no problems, {warnings}" if self.warnings else "no problems"


def _line(tag: str, what: str, why: str | None = None, setting: str | None = None) -> None:
    print(f"{tag} {what}" + (f": {why}" if why else "") + (f" (set {setting})" if setting else ""), flush=True)


# -- folders and the users file ------------------------------------------------------------------------


def _folders(configuration: Configuration, report: Report, add_user: str) -> None:
    """The data folder, then what lives in it by default: the collections and the users file. Those
    inside a data folder that cannot be made are not checked again: fixing the data folder comes first.
    With ``[invito] database`` the collections are the database's (``_database`` checks it): their folder
    is never made or used, and naming it would send the admin to the wrong place."""
    data = configuration.get("invito", "data_folder")
    data_problem = _folder_problem(data)
    _report_folder(report, "data folder", data, data_problem, "[invito] data_folder")

    def covered(path: str) -> bool:
        return data_problem is not None and _inside(path, data)

    collections = configuration.get("storage", "filesystem_folder")
    on_database = bool(configuration.get("invito", "database") or configuration.get("invito", "database_file"))
    if not on_database and not covered(collections):
        _report_folder(report, "collections folder", collections, _folder_problem(collections),
                       "[storage] filesystem_folder")
    if configuration.get("auth", "type") == "htpasswd":
        users = configuration.get("auth", "htpasswd_filename")
        if not covered(users):
            _users_file(users, report, add_user)


def _report_folder(report: Report, what: str, path: str, problem: str | None, setting: str) -> None:
    if problem:
        report.fail(f"{what} {path}", problem, setting)
    elif os.path.isdir(path):
        report.ok(f"{what} {path}: writable")
    else:
        report.ok(f"{what} {path}: does not exist yet, `invito serve` will create it")


def _folder_problem(path: str) -> str | None:
    """Why ``path`` cannot be made or written as a folder; None if it can. Writing a scratch file is the
    only sure test: permission bits say nothing of read-only mounts, ACLs or root."""
    path = os.path.abspath(path)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder" if existing == path else \
            f"cannot create it: {existing} is a file, not a folder"
    try:
        fd, scratch = tempfile.mkstemp(dir=existing, prefix=".invito-check-")
    except OSError as e:
        return f"cannot write in {existing}: {e.strerror}"
    os.close(fd)
    os.unlink(scratch)
    return None


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return os.path.commonpath([path, folder]) == folder


def _database(configuration: Configuration, report: Report) -> None:
    """With ``[invito] database``: it answers, and its schema is the one this version needs (older is a
    warning: serve migrates it; newer is a failure: this node must not write a schema it does not know)."""
    setting = "[invito] database"
    try:
        url = configured_url(configuration)
    except (OSError, ValueError) as e:
        report.fail("database URL file", _why(e) if isinstance(e, OSError) else str(e), "[invito] database_file")
        return
    if not url:
        return
    where = redacted(url)
    try:
        found, line = db_admin.describe(url)
    except psycopg.Error as e:
        report.fail(f"database {where}", db_admin.first_line(e), setting)
        return
    if found == migrations.latest():
        report.ok(f"database {where}: {line}")
    elif found < migrations.latest():
        report.warn(f"database {where}", line, None)
    else:
        report.fail(f"database {where}", line, None)


def _users_file(path: str, report: Report, add_user: str) -> None:
    """``add_user``: the command that adds a user, for an empty file."""
    what = f"users file {path}"
    if not os.path.exists(path):
        problem = _folder_problem(os.path.dirname(path) or ".")
        if problem:
            report.fail(what, problem, "[auth] htpasswd_filename")
        else:
            report.warn(what, f"does not exist yet, so nobody can log in; add users with `{add_user}`", None)
        return
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        report.fail(what, f"cannot read it: {getattr(e, 'strerror', None) or e}", "[auth] htpasswd_filename")
        return
    # Radicale's reading of an htpasswd file: "name:hash" lines, '#' comments.
    count = sum(1 for line in lines if ":" in line and line.strip() and not line.lstrip().startswith("#"))
    if count:
        report.ok(f"{what}: {count} {'user' if count == 1 else 'users'}")
    else:
        report.warn(what, f"no users, so nobody can log in; add users with `{add_user}`", None)


def _scheduling(configuration: Configuration, report: Report) -> None:
    domain = configuration.get("scheduling", "domain")
    if domain:
        report.ok(f"scheduling domain {domain}: user NAME has the calendar address NAME@{domain}")
        return
    addresses = configuration.get("scheduling", "addresses")
    report.warn("scheduling domain", f"empty, so only the users listed in {addresses} have a calendar address"
                if addresses else "empty, so users have no calendar address and nothing is scheduled",
                "[scheduling] domain")


# -- outgoing mail -------------------------------------------------------------------------------------


def _smtp(settings: SmtpSettings, report: Report, send_test: str | None) -> None:
    if not settings.host:
        report.warn("smtp relay", "none set, so invitations to external guests wait in the spool", "[smtp] host")
        if send_test:
            report.fail(f"test invitation to {send_test}", "not sent: there is no relay", "[smtp] host")
        return
    sender_ok = _sender(settings, report)
    if not _relay_files(settings, report):
        report.skip("smtp relay", "not tried until the files above are fixed")
        if send_test:
            report.skip(f"test invitation to {send_test}", "not sent because of the problems above")
        return
    transport = SmtpTransport(settings)
    try:
        relay_ok = _relay(transport, report)
        if send_test and not (relay_ok and sender_ok):
            report.skip(f"test invitation to {send_test}", "not sent because of the problems above")
        elif send_test:
            _send_test(transport, send_test, report)
    finally:
        transport.close()


def _sender(settings: SmtpSettings, report: Report) -> bool:
    if not settings.sender:
        report.fail("smtp sender", "empty, so invitations wait in the spool", "[smtp] sender")
        return False
    try:  # the composer's judgement is the one that counts: it refuses every message from a bad sender
        _invitation(settings.sender, settings.sender)
    except ValueError:
        report.fail(f"smtp sender {settings.sender!r}", "not a mail address such as invito@cal.example.com",
                    "[smtp] sender")
        return False
    report.ok(f"smtp sender {settings.sender}")
    return True


def _relay_files(settings: SmtpSettings, report: Report) -> bool:
    """The CA bundle and the password file, each named by its own key (the relay's answer would not)."""
    ok = True
    if settings.security != "none" and settings.cafile:
        try:
            ssl.create_default_context(cafile=settings.cafile)
        except OSError as e:
            report.fail(f"smtp cafile {settings.cafile}", f"cannot load it: {_why(e)}", "[smtp] cafile")
            ok = False
    if settings.username and not settings.password_file:
        report.fail("smtp login", f"username {settings.username} is set but password_file is empty",
                    "[smtp] password_file")
        ok = False
    elif settings.username:
        try:
            open(settings.password_file, "rb").close()  # readable is all: its content is the secret
        except OSError as e:
            report.fail(f"smtp password_file {settings.password_file}", f"cannot read it: {_why(e)}",
                        "[smtp] password_file")
            ok = False
    return ok


def _relay(transport: SmtpTransport, report: Report) -> bool:
    """Connect, secure and log in as `invito serve` does, with its code and its [smtp] timeout."""
    settings = transport.settings
    try:
        transport.connect()
    except (OSError, smtp.ConfigProblem) as e:  # smtplib's and ssl's errors are OSErrors
        report.fail("smtp relay", transport.describe(e), _relay_setting(e))
        return False
    security = "without TLS" if settings.security == "none" else f"with {settings.security}"
    login = f", logged in as {settings.username}" if settings.username else ", no login"
    report.ok(f"smtp relay {settings.relay}: connected {security}{login}")
    return True


def _relay_setting(e: BaseException) -> str:
    if isinstance(e, smtplib.SMTPAuthenticationError):
        return "[smtp] username or password_file"
    if isinstance(e, smtplib.SMTPNotSupportedError):  # smtplib's words for the two extensions it needs
        return "[smtp] username or security" if "AUTH" in str(e) else "[smtp] security or port"
    if isinstance(e, ssl.SSLCertVerificationError):
        return "[smtp] cafile or host"
    if isinstance(e, ssl.SSLError):
        return "[smtp] security or port"
    if isinstance(e, smtp.ConfigProblem):
        return "[smtp] cafile or password_file"
    if isinstance(e, TimeoutError) or isinstance(e.__context__, TimeoutError):  # smtplib rewraps timed-out reads
        return "[smtp] host, port or timeout"
    return "[smtp] host or port"


def _send_test(transport: SmtpTransport, address: str, report: Report) -> None:
    what = f"test invitation to {address}"
    sender = transport.settings.sender
    try:
        message = _invitation(sender, address)
    except ValueError:
        report.fail(what, f"{address!r} is not a mail address", None)
        return
    outcome = transport.send(message, sender, address)
    if outcome.delivery is Delivery.SENT:
        report.ok(f"{what}: sent, {outcome.detail}")
    elif outcome.stage is Stage.RELAY:
        report.fail(what, outcome.detail, "[smtp] sender")  # it just logged in: MAIL FROM is what failed
    else:  # the relay refused this address or this message, which no setting changes
        report.fail(what, outcome.detail, None)


def _invitation(sender: str, guest: str) -> EmailMessage:
    """A real invitation from ``sender`` to ``guest``, composed as every invitation is, for an event
    tomorrow that asks for no answer."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    event = icalendar.Event()
    event.add("uid", f"invito-check-{uuid.uuid4()}")
    event.add("dtstamp", now)
    event.add("dtstart", (now + timedelta(days=1)).replace(minute=0, second=0))
    event.add("duration", timedelta(minutes=30))
    event.add("summary", "Invito test invitation")
    event.add("description", "Sent by `invito check --send-test` to test the mail setup. "
                             "No meeting is planned: you can delete it.")
    event.add("organizer", f"mailto:{sender}")
    event.add("attendee", f"mailto:{guest}", parameters={"ROLE": "REQ-PARTICIPANT", "PARTSTAT": "NEEDS-ACTION",
                                                         "RSVP": "FALSE"})
    event.add("sequence", 0)
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//Invito//invito check//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "REQUEST")
    calendar.add_component(event)
    return mime.compose(calendar, f"mailto:{guest}", sender=mime.Sender(sender))


# -- incoming mail -------------------------------------------------------------------------------------


def _inbound(configuration: Configuration, report: Report) -> None:
    reply_address = configuration.get("imip", "reply_address")
    listen = configuration.get("imip", "listen")
    if reply_address:  # its form is valid: the configuration would not have loaded otherwise
        report.ok(f"reply address {reply_address}")
    if not listen:
        report.warn("inbound mail", f"no listener, so guests' replies to {reply_address or 'the organizers'} "
                    "never reach Invito", "[imip] listen")
    else:
        host, _, port = listen.rpartition(":")
        holder = _listen(report, f"inbound mail listener {listen}", host.strip("[]"), int(port), "[imip] listen",
                         identity.mail)
        protocol = configuration.get("imip", "protocol")
        if holder and holder.protocol != protocol:  # the config changed since `invito serve` started
            report.warn(f"inbound mail listener {listen}", f"the running invito serve speaks "
                        f"{holder.protocol.upper()}, not {protocol.upper()}: restart it to apply the config", None)
    _tls("inbound mail TLS", ("imip", "tls_certificate", "tls_key"), configuration, report)


def _caldav(configuration: Configuration, report: Report) -> None:
    """The addresses the CalDAV server will listen on, bound as the listener's are; its TLS files."""
    tls = configuration.get("server", "ssl")
    for host, port in configuration.get("server", "hosts"):
        _listen(report, f"CalDAV on {host}:{port}", host, port, "[server] hosts",
                functools.partial(identity.caldav, tls=tls))
    if tls:
        _tls("CalDAV TLS", ("server", "certificate", "key"), configuration, report)


def _rsvp(configuration: Configuration, report: Report) -> None:
    url = configuration.get("rsvp", "public_url")
    if not url:
        report.skip("RSVP page", "no [rsvp] public_url, so invitations carry no answer links")
        return
    parts = urllib.parse.urlsplit(url)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not local:
        report.warn(f"RSVP page {url}", "guests' links and answers would travel unencrypted; use https:// "
                    "(a reverse proxy doing TLS, see config/mail-and-proxy.md)", "[rsvp] public_url")
    else:
        report.ok(f"RSVP page: invitations link to {url}/.invito/rsvp/…")


def _listen(report: Report, what: str, host: str, port: int, setting: str,
            ask: Callable[[str, int], identity.Holder]) -> identity.Holder | None:
    """Bind ``host:port`` as `invito serve` will; if it is taken, ``ask`` whoever holds it. Returns the
    holder when it is a running Invito."""
    try:
        asyncio.run(_bind(host, port))
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            report.fail(what, _bind_problem(e, host, port), setting)
            return None
        holder = ask(host, port)
        if holder.problem:
            report.fail(what, holder.problem, setting)
            return None
        report.ok(f"{what}: invito serve is running here")
        return holder
    report.ok(f"{what}: the port is free")
    return None


def _bind_problem(e: OSError, host: str, port: int) -> str:
    if e.errno == errno.EACCES:
        return f"not allowed to listen on port {port} (below 1024 needs root or CAP_NET_BIND_SERVICE)"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine"
    return str(e)


async def _bind(host: str, port: int) -> None:
    """As the listener binds: every address the host resolves to, SO_REUSEADDR."""
    server = await asyncio.get_running_loop().create_server(asyncio.Protocol, host, port)
    server.close()
    await server.wait_closed()


def _tls(what: str, keys: tuple[str, str, str], configuration: Configuration, report: Report) -> None:
    """The certificate and key named by ``keys`` (section, certificate key, key key) load together."""
    section, certificate_key, key_key = keys
    certificate, key = configuration.get(section, certificate_key), configuration.get(section, key_key)
    if not certificate and not key:
        return
    if not (certificate and key):
        given, missing = (certificate_key, key_key) if certificate else (key_key, certificate_key)
        report.fail(what, f"{given} is set but {missing} is empty: both or neither", f"[{section}] {missing}")
        return
    for path, setting in ((certificate, certificate_key), (key, key_key)):
        try:
            open(path, "rb").close()
        except OSError as e:
            report.fail(what, f"cannot read {path}: {_why(e)}", f"[{section}] {setting}")
            return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certificate, key)
    except ssl.SSLError as e:
        report.fail(what, f"certificate {certificate} with key {key} does not load: {_why(e)}",
                    f"[{section}] {certificate_key} or {key_key}")
        return
    report.ok(f"{what}: certificate {certificate} with key {key}")


def _why(e: OSError) -> str:
    """An error in a few words: OpenSSL's reason (its message adds the line of C code), or the OS's."""
    return (e.reason if isinstance(e, ssl.SSLError) else None) or e.strerror or str(e)
