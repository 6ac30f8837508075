# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``invito`` command: run the server (``serve``), check a configuration against what it names
(``check``), manage the users file (``user add|remove|list``) and look after the mail spools (``queue``)."""
from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import socket
import sys
import threading
from importlib import metadata
from typing import Callable
from unittest import mock

import bcrypt
import radicale.log
import radicale.server
from radicale.config import Configuration

from invito.plugins import durable
from invito.plugins.data_folder import DataFolder
from invito.plugins.directory import user_name_problem
from invito.server import check, db_admin, migrate_to_db, queue_admin, quiet
from invito.server.config import CommandError, ConfigError, load, unconfigured
from invito.storage.pg.db import configured_url, redacted

logger = logging.getLogger("invito")

BackgroundPart = Callable[[Configuration, threading.Event], None]
# Parts that run beside the HTTP server (mail sender, SMTP listener): each is called in its own thread when
# ``serve`` starts and must return soon after the event is set, which happens on shutdown.
background: list[BackgroundPart] = []
BACKGROUND_STOP_SECONDS = 10
BCRYPT_MAX_BYTES = 72  # bcrypt ignores (or refuses) anything longer


def main(argv: list[str] | None = None) -> int:
    # Calendars, spooled mail and reply tokens are private, also when run by hand with a umask of 022
    # (the systemd unit's UMask=0077 is not there): every folder Invito creates is 0700, every file 0600.
    os.umask(0o077)
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except CommandError as e:
        print(f"invito: {e}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    with_config = argparse.ArgumentParser(add_help=False)
    with_config.add_argument(
        "--config", metavar="FILE",
        help="configuration file (annotated example: config/invito.conf); relative paths in it start at "
             "its folder, and the data folder is invito-data beside it unless [invito] data_folder says "
             "otherwise; without it the built-in defaults apply: data in ./invito-data, listening on "
             "127.0.0.1:5232")
    parser = argparse.ArgumentParser(
        prog="invito",
        description="Invito: a CalDAV server with meeting scheduling (RFC 6638), built on Radicale.")
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve", parents=[with_config], help="run the CalDAV server",
        description="Run the CalDAV server until SIGTERM or Ctrl-C. Prints a start-up summary (where it "
                    "listens, where data lives, what is not configured yet), then a line once it accepts "
                    "connections. Exit status: 0 after a clean stop, 2 for configuration errors, 1 otherwise.")
    serve.set_defaults(run=_serve)
    user = commands.add_parser("user", help="manage the users file ([auth] htpasswd_filename)",
                               description="Manage the users of the htpasswd file the server reads.")
    actions = user.add_subparsers(metavar="ACTION", required=True)
    add = actions.add_parser("add", parents=[with_config], help="add a user or change their password",
                             description="Add NAME to the users file with a bcrypt-hashed password, or "
                                         "replace the password of an existing user.")
    add.add_argument("name", metavar="NAME",
                     help="login name; a mail address (alice@example.com, lower case) is also the calendar "
                          "address, a plain name (alice) has the address NAME@[scheduling] domain")
    source = add.add_mutually_exclusive_group()
    source.add_argument("--password-file", metavar="F", help="read the password from the first line of F")
    source.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input; this is also what "
                             "happens without either option when standard input is not a terminal (a pipe, "
                             "a script); on a terminal the password is asked for twice")
    add.set_defaults(run=_user_add)
    remove = actions.add_parser("remove", parents=[with_config], help="remove a user's login",
                                description="Remove NAME from the users file: they can no longer log in. "
                                            "Their calendars stay in the data folder until you delete them.")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(run=_user_remove)
    listing = actions.add_parser("list", parents=[with_config], help="print the user names, one per line")
    listing.set_defaults(run=_user_list)
    queue_admin.add_parser(commands, with_config)
    check.add_parser(commands, with_config)
    db_admin.add_parser(commands, with_config)
    migrate_to_db.add_parser(commands, with_config)
    return parser


# -- serve ---------------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    configuration = load(args.config)
    quiet.install()
    radicale.log.setup()
    radicale.log.set_level(configuration.get("logging", "level"),
                           configuration.get("logging", "backtrace_on_debug"),
                           configuration.get("logging", "trace_filter"))
    logger.setLevel(radicale.log.logger.level)
    users_file = _users_file(configuration) if configuration.get("auth", "type") == "htpasswd" else None
    data = DataFolder.of(configuration)
    database = _database_url(configuration)
    if database:  # every node migrates on start; they wait for one another, the first one does the work
        db_admin.migrate_on_start(database)
    try:
        if not database:  # on the database a node keeps nothing of its own
            os.makedirs(data.root, mode=0o700, exist_ok=True)
            if configuration.get("storage", "type") == "invito.storage":  # else Radicale warns on a first start
                os.makedirs(data.collection_root, mode=0o700, exist_ok=True)
        if users_file and not os.path.exists(users_file):  # Radicale refuses to start without the file
            os.makedirs(os.path.dirname(users_file), mode=0o700, exist_ok=True)
            _write_users(users_file, [])
    except OSError as e:
        raise CommandError(f"cannot create {e.filename}: {e.strerror}; check [invito] data_folder, "
                           "[storage] filesystem_folder and [auth] htpasswd_filename") from e
    print(_summary(configuration, args.config, users_file), flush=True)
    return _run(configuration)


def _summary(configuration: Configuration, config_file: str | None, users_file: str | None) -> str:
    data = DataFolder.of(configuration)
    lines = [f"Invito {metadata.version('invito')} (Radicale {metadata.version('radicale')})",
             f"  config file: {os.path.abspath(config_file) if config_file else 'none, built-in defaults'}"]
    database = _database_url(configuration)
    if database:
        lines.append(f"  database:    {redacted(database)} (collections, queues, tokens)")
    else:
        lines += [f"  data folder: {data.root}", f"  collections: {data.collections}"]
    users = _read_users(users_file) if users_file else None
    notes = unconfigured(configuration, users)
    if users is not None:
        lines.append(f"  users file:  {users_file} ({len(users)} {'user' if len(users) == 1 else 'users'})")
        if not users:
            config_option = f" --config {config_file}" if config_file else ""
            notes.append(f"no users in {users_file}: add one with `invito user add NAME{config_option}`")
    else:
        lines.append(f"  users:       from [auth] type = {configuration.get('auth', 'type')}")
    lines.append(f"  listens on:  {', '.join(_urls(configuration))}")
    if configuration.get("imip", "listen"):
        lines.append(f"  mail in:     {configuration.get('imip', 'protocol')} on {configuration.get('imip', 'listen')}")
    if notes:
        lines += ["Not configured yet:", *(f"  - {note}" for note in notes)]
    return "\n".join(lines)


def _database_url(configuration: Configuration) -> str:
    try:
        return configured_url(configuration)
    except (OSError, ValueError) as e:
        raise CommandError(f"[invito] database_file: {e}") from e


def _urls(configuration: Configuration) -> list[str]:
    scheme = "https" if configuration.get("server", "ssl") else "http"
    return [f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/"
            for host, port in configuration.get("server", "hosts")]


def _run(configuration: Configuration) -> int:
    """Radicale's own server loop with our application until SIGTERM/SIGINT, background parts beside it."""
    stop_request, stop_notice = socket.socketpair()

    def on_signal(signum: int, frame: object) -> None:
        stop_request.close()  # Radicale's loop stops, after finishing open requests, when this end closes

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    stopping = threading.Event()
    threads = [_start(part, configuration, stopping) for part in (*_own_parts(), *background)]
    try:
        # radicale.server.serve() instantiates its module-global `Application`, with no parameter to pass
        # another class; replacing that name for the call runs our application in Radicale's own loop
        # (TLS, connection limits, graceful shutdown) instead of a copy of it.
        with mock.patch.object(radicale.server, "Application", _application_class()):
            radicale.server.serve(configuration, _ReadyAnnouncer(stop_notice, _urls(configuration)))
    except (RuntimeError, OSError) as e:
        raise CommandError(f"cannot serve: {e}") from e
    finally:
        stop_request.close()
        stopping.set()
        for thread in threads:
            thread.join(BACKGROUND_STOP_SECONDS)
            if thread.is_alive():
                logger.warning("%s did not stop within %d s", thread.name, BACKGROUND_STOP_SECONDS)
    return 0


def _own_parts() -> list[BackgroundPart]:
    from invito.server.inbound import receive_inbound  # late: only `serve` needs the mail stack
    from invito.server.mail import send_outbound
    return [send_outbound, receive_inbound]


def _application_class() -> type:
    from invito.server.app import InvitoApplication  # late: only `serve` needs the scheduling stack
    return InvitoApplication


class _ReadyAnnouncer:
    """The shutdown socket as Radicale's loop sees it; the first time the loop uses it, says we are ready.

    ``radicale.server.serve`` opens every listening socket before its loop first asks this socket for its
    ``fileno()`` to wait on it (hypercorn: calls ``recv``), so that moment is when clients can connect.
    Radicale's own "ready" is a log record, hidden whenever ``[logging] level`` is above info.
    """

    def __init__(self, sock: socket.socket, urls: list[str]) -> None:
        self._sock = sock
        self._urls = urls
        self._announced = False

    def _announce(self) -> None:
        if not self._announced:
            self._announced = True
            print(f"Invito is ready on {', '.join(self._urls)} (stop with Ctrl-C or SIGTERM)", flush=True)

    def fileno(self) -> int:
        self._announce()
        return self._sock.fileno()

    def recv(self, size: int) -> bytes:
        self._announce()
        return self._sock.recv(size)

    def close(self) -> None:
        self._sock.close()


def _start(part: BackgroundPart, configuration: Configuration, stopping: threading.Event) -> threading.Thread:
    name = getattr(part, "__qualname__", repr(part))

    def run() -> None:
        try:
            part(configuration, stopping)
        except Exception:
            logger.exception("%s failed", name)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


# -- users ---------------------------------------------------------------------------------------------


def _user_add(args: argparse.Namespace) -> int:
    configuration = load(args.config)
    path = _users_file(configuration)
    encryption = configuration.get("auth", "htpasswd_encryption")
    if encryption not in ("bcrypt", "autodetect"):
        raise CommandError(f"[auth] htpasswd_encryption is {encryption!r}, but `invito user add` writes bcrypt "
                           "hashes; set it to bcrypt (or autodetect)")
    problem = user_name_problem(args.name)
    if problem:
        raise CommandError(f"{args.name!r} cannot be a user name: {problem}; choose another name")
    password = _password(args.password_file, args.password_stdin, args.name)
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()
    existed = args.name in _read_users(path)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        _set_user(path, args.name, digest)
    except OSError as e:
        raise CommandError(f"cannot write {e.filename or path}: {e.strerror}; check [auth] htpasswd_filename "
                           "and the permissions of its folder") from e
    print(f"{'changed the password of' if existed else 'added'} user {args.name} in {path}")
    return 0


def _user_remove(args: argparse.Namespace) -> int:
    configuration = load(args.config)
    path = _users_file(configuration)
    lines = _lines(path)
    kept = [line for line in lines if _login(line) != args.name]
    if len(kept) == len(lines):
        raise CommandError(f"there is no user {args.name!r} in {path}; `invito user list` shows who there is")
    try:
        _write_users(path, kept)
    except OSError as e:
        raise CommandError(f"cannot write {e.filename or path}: {e.strerror}; check the permissions of its "
                           "folder") from e
    home = os.path.join(DataFolder.of(configuration).collection_root, args.name)
    print(f"removed user {args.name} from {path}; their calendars are still in {home}")
    return 0


def _user_list(args: argparse.Namespace) -> int:
    for name in _read_users(_users_file(load(args.config))):
        print(name)
    return 0


def _users_file(configuration: Configuration) -> str:
    auth = configuration.get("auth", "type")
    if auth != "htpasswd":
        raise CommandError(f"[auth] type is {auth!r}, so users are not kept in a file Invito manages; "
                           "set [auth] type = htpasswd to use `invito user`")
    return DataFolder.of(configuration).users_file


def _password(password_file: str | None, from_stdin: bool, name: str) -> str:
    """From the file, from standard input (asked, or not a terminal: admins script ``user add``), or asked
    twice on the terminal."""
    if password_file:
        try:
            with open(password_file, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise CommandError(f"cannot read the password file {password_file}: "
                               f"{getattr(e, 'strerror', None) or e}") from e
    elif from_stdin or not sys.stdin.isatty():
        try:
            password = sys.stdin.readline().rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise CommandError(f"the password on standard input is not UTF-8 text ({e.reason})") from e
        if not password:
            raise CommandError("no password on the first line of standard input: pipe it in "
                               "(--password-stdin), use --password-file F, or run the command in a terminal "
                               "to be asked")
    else:
        password = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("Same password again: ") != password:
            raise CommandError("the two passwords differ; run the command again")
    if not password:
        raise CommandError("the password is empty; give a non-empty password")
    if len(password.encode()) > BCRYPT_MAX_BYTES:
        raise CommandError(f"the password is longer than {BCRYPT_MAX_BYTES} bytes, more than bcrypt can hash; "
                           "choose a shorter one")
    return password


def _login(line: str) -> str | None:
    """The user name on an htpasswd line, read as Radicale reads it; None for comments and blank lines."""
    login, colon, _ = line.partition(":")
    return login if colon and line.strip() and not line.lstrip().startswith("#") else None


def _lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CommandError(f"cannot read the users file {path}: {e.strerror}") from e


def _read_users(path: str) -> list[str]:
    return [login for login in map(_login, _lines(path)) if login]


def _set_user(path: str, name: str, digest: str) -> None:
    """Replace the user's line in place (dropping duplicates Radicale would refuse), or append one."""
    entry = f"{name}:{digest}"
    lines: list[str] = []
    placed = False
    for line in _lines(path):
        if _login(line) != name:
            lines.append(line)
        elif not placed:
            lines.append(entry)
            placed = True
    _write_users(path, lines if placed else [*lines, entry])


def _write_users(path: str, lines: list[str]) -> None:
    """Readers (the running server) see the old file or the new one, never half; the file is mode 0600."""
    durable.write_atomically(path, "".join(line + "\n" for line in lines).encode("utf-8"), sync=True)
