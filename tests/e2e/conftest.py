# SPDX-License-Identifier: GPL-3.0-or-later
"""A real Invito server for end-to-end tests: `invito serve` on 127.0.0.1, real files, real users."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import caldav
import pytest

from tests.conftest import TEMPLATE, free_port  # noqa: F401  (the e2e tests import free_port from here)

if TYPE_CHECKING:
    from tests.e2e.ldap_server import LdapServer
    from tests.e2e.mailsink import MailSink
    from invito.plugins.imip.inbound_spool import QuarantinedEntry
    from invito.plugins.imip.spool import SpoolEntry
    from invito.server.queue_admin import Spools
    from tests.pg_server import PostgresServer

# pytest imports this file as the module "conftest", the tests as ``tests.e2e.conftest``: without one module
# for both, the tests' copy of ``_postgres`` stays empty and their ``start``/``write_config`` never give a
# server its database, so every "postgresql" run of them would quietly run on the data folder.
sys.modules.setdefault("tests.e2e.conftest", sys.modules[__name__])

INVITO = [str(Path(sys.executable).parent / "invito")]  # the console script a user runs
USERS = ("alice", "bob", "carol")
PASSWORD = "secret-pw-123"


@dataclass
class Server:
    url: str
    data: Path
    config: Path
    log: Path

    principals: dict[str, caldav.Principal] = field(default_factory=dict, repr=False, compare=False)

    def client(self, user: str) -> caldav.DAVClient:
        return caldav.DAVClient(url=self.url, username=user, password=PASSWORD)

    def principal(self, user: str) -> caldav.Principal:
        """One client per user: a new one first asks without credentials, and the server delays each
        refusal by about a second."""
        if user not in self.principals:
            self.principals[user] = self.client(user).principal()
        return self.principals[user]


BACKENDS = ("files", "postgresql")
_postgres: list["PostgresServer"] = []  # the session's server while a module runs on the database backend


@pytest.fixture(scope="module", params=BACKENDS, autouse=True)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every end-to-end module runs on both storage backends: each server a test starts gets the data
    folder ("files") or a fresh database of its own from the session's PostgreSQL ("postgresql"). A
    module-scoped fixture that starts a server asks for ``backend`` (unused otherwise): that makes pytest
    start it again for the second backend instead of handing the first backend's server to its tests."""
    if request.param == "postgresql":
        _postgres.append(request.getfixturevalue("postgres"))
    try:
        yield request.param
    finally:
        _postgres.clear()


@pytest.fixture(autouse=True)
def only_on_its_backend(request: pytest.FixtureRequest, backend: str) -> None:
    """``@pytest.mark.only_backend(name)`` (on a test or a module): about that backend's own mechanics."""
    only = request.node.get_closest_marker("only_backend")
    if only is not None and backend not in only.args:
        pytest.skip(f"about the {only.args[0]} backend's own mechanics")


@pytest.fixture(autouse=True)
def shared_pools_closed() -> Iterator[None]:
    """Database pools a test opened in this process (through ``invito.storage.backend``) closed after it, so
    the session's PostgreSQL is not left a pool per test."""
    yield
    from invito.storage.pg import db

    db.close_shared()


def write_config(tmp: Path, port: int, settings: dict[str, dict[str, str]] | None = None) -> Path:
    """The test server's config file: data under ``tmp`` (and, on the database backend, a fresh database),
    CalDAV on ``port``, plus ``settings``."""
    database = _postgres[0].create_database(TEMPLATE) if _postgres else ""
    sections: dict[str, dict[str, str]] = {
        "invito": {"data_folder": str(tmp / "data"), "database": database},
        "server": {"hosts": f"127.0.0.1:{port}"},
        "scheduling": {"domain": "example.com"},
        "logging": {"level": "info"},
    }
    for section, values in (settings or {}).items():
        sections.setdefault(section, {}).update(values)
    config = tmp / "invito.conf"
    config.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) + "\n"
                              for name, values in sections.items()))
    return config


def start(tmp: Path, settings: dict[str, dict[str, str]] | None = None,
          port: int | None = None) -> tuple[subprocess.Popen, Server]:
    """`invito serve` with ``settings``, CalDAV on ``port`` (default: a free one), users alice, bob, carol."""
    port = port or free_port()
    config = write_config(tmp, port, settings)
    add_users(tmp, config)
    srv = Server(url=f"http://127.0.0.1:{port}/", data=tmp / "data", config=config, log=tmp / "server.log")
    return restart(srv), srv


_users_file: list[bytes] = []  # what `invito user add` wrote for USERS, the first time this session


def add_users(tmp: Path, config: Path) -> None:
    """alice, bob and carol with PASSWORD in ``config``'s users file. `invito user add` writes it for the
    session's first server; later servers get a copy of that file, mode 0600 in a 0700 folder as the command
    leaves it (three runs of the command took four of a server's five seconds of start-up)."""
    from invito.plugins import durable
    from invito.server import cli
    from invito.server.config import load

    path = cli._users_file(load(str(config)))
    if _users_file:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        durable.write_atomically(path, _users_file[0], sync=False)
        return
    password_file = tmp / "password"
    password_file.write_text(PASSWORD + "\n")
    for user in USERS:
        subprocess.run([*INVITO, "user", "add", user, "--password-file", str(password_file),
                        "--config", str(config)], check=True, capture_output=True)
    _users_file.append(Path(path).read_bytes())


def restart(srv: Server) -> subprocess.Popen:
    """`invito serve` again on ``srv``'s config and data (after a stop or a kill); returns once ready."""
    log = srv.log
    start_of_run = log.stat().st_size if log.exists() else 0  # "ready" of this run, not of an earlier one
    with open(log, "ab") as out:
        proc = subprocess.Popen([*INVITO, "serve", "--config", str(srv.config)], stdout=out,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "ready" in log.read_bytes()[start_of_run:].decode(errors="replace").lower():
            break
        if proc.poll() is not None:
            raise RuntimeError("invito serve exited:\n" + log.read_text(errors="replace"))
        time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("invito serve did not become ready:\n" + log.read_text(errors="replace"))
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def queues(srv: Server) -> Iterator["Spools"]:
    """``srv``'s mail queues as `invito queue` sees them, on either backend (the spool folders or the
    database's tables), through the admin interface."""
    from invito.server.queue_admin import Spools

    spools = Spools.of(str(srv.config))
    try:
        yield spools
    finally:
        spools.close()


def outbound_entries(srv: Server) -> list["SpoolEntry"]:
    """Each (message, recipient) waiting in ``srv``'s outbound queue, oldest message first."""
    with queues(srv) as spools:
        return spools.outbound.queued()


def quarantined_entries(srv: Server) -> list["QuarantinedEntry"]:
    """What ``srv``'s inbound processing set aside, with the reasons."""
    with queues(srv) as spools:
        return spools.inbound.quarantined_entries()


def inbound_pending(srv: Server) -> list[str]:
    """The ids of what waits in ``srv``'s inbound queue to be applied (neither applied nor quarantined)."""
    with queues(srv) as spools:
        return [mail.id for mail in spools.inbound.pending()]  # type: ignore[attr-defined]


def database_of(srv: Server) -> str:
    """``srv``'s database URL; "" on the filesystem backend."""
    for line in srv.config.read_text().splitlines():
        if line.startswith("database = "):
            return line[len("database = "):].strip()
    return ""


def has_home(srv: Server, name: str) -> bool:
    """Whether ``name`` has a home (a principal collection) on ``srv``, on either backend."""
    url = database_of(srv)
    if not url:
        return (srv.data / "collections" / "collection-root" / name).exists()
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT 1 FROM dav_collection WHERE path = %s", (name,)).fetchone() is not None


def side_records(srv: Server) -> list[str]:
    """Every side record ``srv`` keeps beside its events, as text: its files, or its database rows."""
    url = database_of(srv)
    if not url:
        return [path.read_text() for path in sorted(srv.data.rglob(".Radicale.invito/*.json"))]
    import psycopg

    with psycopg.connect(url) as conn:
        return [f"{home} {uid} {record}" for home, uid, record in
                conn.execute("SELECT home, uid, record::text FROM invito_side_record ORDER BY home, uid")]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    proc, srv = start(tmp_path)
    try:
        yield srv
    finally:
        stop(proc)


@pytest.fixture
def relay() -> Iterator[tuple[int, "MailSink"]]:
    """A real SMTP relay (aiosmtpd) on a free 127.0.0.1 port, keeping what it receives."""
    from tests.e2e.mailsink import start_sink

    port = free_port()
    controller, sink = start_sink(port)
    try:
        yield port, sink
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def ldap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator["LdapServer"]:
    """One real OpenLDAP directory (slapd) for the whole session; see tests/e2e/ldap_server.py."""
    from tests.e2e.ldap_server import start_slapd, stop_slapd

    directory = start_slapd(tmp_path_factory.mktemp("slapd"), free_port(), PASSWORD)
    try:
        yield directory
    finally:
        stop_slapd(directory)
