# SPDX-License-Identifier: GPL-3.0-or-later
"""`invito db migrate` / `invito db status` and `invito check`'s database line, as an admin runs them."""
from __future__ import annotations

import pytest

import subprocess
from pathlib import Path

import psycopg

from invito.storage.pg import migrations
from tests.e2e.conftest import INVITO

pytestmark = pytest.mark.only_backend("postgresql")  # these tests set up their own database


def _run(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*INVITO, *args, "--config", str(config)], capture_output=True, text=True, timeout=60)


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "invito.conf"
    path.write_text(body)
    return path


def test_migrate_creates_the_schema_once_and_status_and_check_agree(postgres, tmp_path):
    url = postgres.create_database()  # empty: never migrated
    try:
        config = _config(tmp_path, f"[invito]\ndatabase = {url}\n")
        before = _run(config, "db", "status")
        assert before.returncode == 1 and "schema version 0" in before.stdout and "invito db migrate" in before.stdout
        warned = _run(config, "check")
        assert "warn database" in warned.stdout and "invito db migrate" in warned.stdout

        first = _run(config, "db", "migrate")
        assert first.returncode == 0, first.stderr
        assert f"schema version {migrations.latest()}" in first.stdout and "applied 0001" in first.stdout
        again = _run(config, "db", "migrate")
        assert again.returncode == 0 and "nothing to do" in again.stdout

        assert _run(config, "db", "status").returncode == 0
        checked = _run(config, "check")
        assert f"ok   database {url}: schema version {migrations.latest()}" in checked.stdout
    finally:
        postgres.drop_database(url)


def test_the_url_may_live_in_a_file_and_its_password_is_never_printed(database, tmp_path):
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("ALTER USER postgres PASSWORD 'db-secret-77'")  # trust auth ignores it; the URL carries it
    secret_url = database.replace("postgres@", "postgres:db-secret-77@")
    (tmp_path / "db-url").write_text(secret_url + "\n")
    config = _config(tmp_path, "[invito]\ndatabase_file = db-url\n")
    checked = _run(config, "check")
    assert "ok   database postgresql://postgres:***@" in checked.stdout
    assert "db-secret-77" not in checked.stdout + checked.stderr


def test_an_unreachable_database_fails_the_check_and_the_commands(tmp_path):
    from tests.conftest import free_port

    config = _config(tmp_path, f"[invito]\ndatabase = postgresql://invito@127.0.0.1:{free_port()}/invito\n")
    checked = _run(config, "check")
    assert checked.returncode == 1 and "FAIL database" in checked.stdout and "(set [invito] database)" in checked.stdout
    status = _run(config, "db", "status")
    assert status.returncode == 1 and "cannot reach the database" in status.stderr


def test_db_commands_without_a_database_say_what_to_set(tmp_path):
    result = _run(_config(tmp_path, "[invito]\n"), "db", "migrate")
    assert result.returncode == 1 and "set [invito] database" in result.stderr
