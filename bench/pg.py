# SPDX-License-Identifier: GPL-3.0-or-later
"""A PostgreSQL server for the benchmarks: the one ``--database-server`` names (a URL of a database the
bench may create databases from), or a throwaway cluster started like the tests' (Debian's
``postgresql`` package, a temporary folder, a free loopback port, fsync on as in production)."""
from __future__ import annotations

import contextlib
import socket
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests/pg_server.py
from tests.pg_server import start_postgres, stop_postgres  # noqa: E402

from invito.storage.pg import migrations  # noqa: E402


class Databases:
    """Fresh, migrated databases on one server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    def create(self) -> str:
        name = "bench_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.admin_url.rsplit("/", 1)[0] + "/" + name
        migrations.migrate(url)
        return url


@contextlib.contextmanager
def databases(server_url: str | None) -> Iterator[Databases]:
    """``server_url``'s databases, or a throwaway cluster's; "none": no database is needed."""
    if server_url:
        yield Databases(server_url)
        return
    with tempfile.TemporaryDirectory(prefix="invito-bench-pg-") as tmp, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        server = start_postgres(Path(tmp), port, durable=True)
        try:
            yield Databases(server.url())
        finally:
            stop_postgres(server)
