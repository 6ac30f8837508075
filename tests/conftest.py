# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures shared by unit and end-to-end tests: one real PostgreSQL server per session (tests/pg_server.py)
and a fresh, migrated database per test that asks for one."""
from __future__ import annotations

import socket
from typing import Iterator

import pytest

from tests.pg_server import PostgresServer, start_postgres, stop_postgres

TEMPLATE = "invito_template"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """The session's PostgreSQL server, with a template database that has Invito's whole schema."""
    from invito.storage.pg import migrations

    server = start_postgres(tmp_path_factory.mktemp("postgres"), free_port())
    try:
        import psycopg

        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        migrations.migrate(server.url(TEMPLATE))
        yield server
    finally:
        stop_postgres(server)


@pytest.fixture
def database(postgres: PostgresServer) -> Iterator[str]:
    """The URL of a database of this test's own, with Invito's schema, dropped afterwards."""
    url = postgres.create_database(TEMPLATE)
    try:
        yield url
    finally:
        postgres.drop_database(url)
