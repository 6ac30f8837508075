# SPDX-License-Identifier: GPL-3.0-or-later
"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, a cluster of its own in a
temporary folder, owned by the package's ``postgres`` user (``initdb`` refuses root), listening on a free
127.0.0.1 port and a socket in that folder. Each test gets a fresh database cloned from a migrated
template (``CREATE DATABASE … TEMPLATE``: a file copy, milliseconds), so no test sees another's rows.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

USER = "postgres"


def _bin(name: str) -> str:
    """A server program of the newest installed major version (``/usr/lib/postgresql/N/bin``)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    return found[-1]


def _as_postgres(*command: str) -> list[str]:
    """Run as the package's user when we are root (CI); as ourselves otherwise."""
    return ["runuser", "-u", USER, "--", *command] if os.geteuid() == 0 else list(command)


@dataclass
class PostgresServer:
    folder: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, template: str | None = None) -> str:
        """A new empty database (or a copy of ``template``); returns its URL."""
        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_postgres(folder: Path, port: int, durable: bool = False) -> PostgresServer:
    """initdb (trust on loopback only) and pg_ctl start, waiting until it serves. Without fsync (a test
    cluster) unless ``durable`` (a benchmark that compares with a filesystem that fsyncs)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(USER)
        for path in (folder, *folder.parents):
            if path == Path("/"):
                break
            os.chmod(path, os.stat(path).st_mode | 0o011)  # let postgres walk into the test's folder
        shutil.chown(folder, entry.pw_uid, entry.pw_gid)
    data = folder / "data"
    subprocess.run(_as_postgres(_bin("initdb"), "-A", "trust", "--no-sync", "-U", USER, "-E", "UTF8",
                                "--locale=C", "-D", str(data)), check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run(_as_postgres(_bin("pg_ctl"), "-D", str(data), "-l", str(folder / "postgres.log"), "-w",
                                "-t", "30", "-o", options, "start"), check=True, capture_output=True)
    return PostgresServer(folder, port)


def stop_postgres(server: PostgresServer) -> None:
    """pg_ctl stop (fast: open sessions are ended), by the cluster's own postmaster PID file."""
    subprocess.run(_as_postgres(_bin("pg_ctl"), "-D", str(server.folder / "data"), "-m", "fast", "-w", "stop"),
                   check=False, capture_output=True)
