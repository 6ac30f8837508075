# SPDX-License-Identifier: GPL-3.0-or-later
"""The `invito` command as an admin runs it: real processes, real files, HTTP on 127.0.0.1."""
from __future__ import annotations

import base64
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from tests.e2e.conftest import INVITO, free_port, write_config


def invito(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INVITO, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, free_port())


def add_user(config: Path, name: str, password: str) -> subprocess.CompletedProcess[str]:
    password_file = config.parent / "password"
    password_file.write_text(password + "\n")
    return invito("user", "add", name, "--password-file", str(password_file), "--config", str(config))


def users_file(config: Path) -> Path:
    return config.parent / "data" / "users"  # write_config puts the data folder next to the config


# -- invito user ---------------------------------------------------------------------------------------


def test_user_add_then_list(config: Path) -> None:
    added = add_user(config, "alice", "correct horse")
    assert added.returncode == 0, added.stderr
    assert "alice" in added.stdout
    listed = invito("user", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["alice"]
    [line] = users_file(config).read_text().splitlines()
    name, digest = line.split(":", 1)
    assert name == "alice" and digest.startswith("$2")
    assert bcrypt.checkpw(b"correct horse", digest.encode())
    assert stat.S_IMODE(users_file(config).stat().st_mode) == 0o600


def test_user_add_again_changes_the_password(config: Path) -> None:
    assert add_user(config, "alice", "first").returncode == 0
    assert add_user(config, "bob", "other").returncode == 0
    assert add_user(config, "alice", "second").returncode == 0
    lines = users_file(config).read_text().splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["alice", "bob"]
    assert bcrypt.checkpw(b"second", lines[0].split(":", 1)[1].encode())


def test_user_remove(config: Path) -> None:
    assert add_user(config, "alice", "first").returncode == 0
    assert add_user(config, "bob", "other").returncode == 0
    removed = invito("user", "remove", "alice", "--config", str(config))
    assert removed.returncode == 0, removed.stderr
    assert "removed user alice" in removed.stdout and "calendars are still in" in removed.stdout
    assert invito("user", "list", "--config", str(config)).stdout.splitlines() == ["bob"]
    again = invito("user", "remove", "alice", "--config", str(config))
    assert again.returncode == 1
    assert "there is no user 'alice'" in again.stderr and "invito user list" in again.stderr


@pytest.mark.parametrize("name", ["a:b", "../alice", ".alice", "al ice", "#alice", "Alice@Example.com"])
def test_user_add_refuses_names_radicale_would_refuse(config: Path, name: str) -> None:
    refused = add_user(config, name, "pw")
    assert refused.returncode != 0
    assert repr(name) in refused.stderr and "cannot be a user name" in refused.stderr
    assert not users_file(config).exists()


def test_user_add_without_a_password_says_how_to_give_one(config: Path) -> None:
    refused = subprocess.run([*INVITO, "user", "add", "alice", "--config", str(config)],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    assert refused.returncode != 0
    assert "--password-file" in refused.stderr
    assert not users_file(config).exists()


# -- invito serve --------------------------------------------------------------------------------------


def wait_ready(proc: subprocess.Popen[str]) -> list[str]:
    """stdout lines up to the ready line (a thread-free read: the ready line ends the summary)."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("invito serve stopped before it was ready:\n" + "".join(lines))
        lines.append(line)
        if "ready" in line:
            return lines
    raise AssertionError("invito serve is not ready:\n" + "".join(lines))


def request(url: str, method: str, user: str, password: str) -> tuple[int, dict[str, str]]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def test_serve_answers_then_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    assert add_user(config, "alice", "pw-alice").returncode == 0
    proc = subprocess.Popen([*INVITO, "serve", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        summary = "".join(wait_ready(proc))
        url = f"http://127.0.0.1:{port}/"
        assert url in summary
        assert str(tmp_path / "data") in summary
        assert str(users_file(config)) in summary
        status, headers = request(url, "OPTIONS", "alice", "pw-alice")
        assert status == 200
        assert "calendar-access" in headers["DAV"]
        assert request(url + "alice/", "PROPFIND", "alice", "wrong")[0] == 401
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_summary_says_what_is_not_configured(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "invito.conf"
    config.write_text(f"[invito]\ndata_folder = {tmp_path / 'data'}\n[server]\nhosts = 127.0.0.1:{port}\n")
    proc = subprocess.Popen([*INVITO, "serve", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        summary = "".join(wait_ready(proc))
        assert "[scheduling] domain is empty" in summary
        assert "invito user add NAME" in summary  # no users yet, and how to add one
        assert (tmp_path / "data").is_dir()
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_with_a_bad_config_exits_2_with_the_precise_problem(tmp_path: Path) -> None:
    config = tmp_path / "invito.conf"
    config.write_text("[server]\nhosts = 127.0.0.1:99999\n[scheduling]\ndomian = example.com\n")
    result = invito("serve", "--config", str(config))
    assert result.returncode == 2
    assert "ready" not in result.stdout
    assert result.stderr.splitlines() == [
        f"{config}: [server] hosts = '127.0.0.1:99999' is invalid (malformed IP address (or port out-of-range): "
        "'127.0.0.1:99999'); expected comma-separated address:port pairs, e.g. 127.0.0.1:5232 "
        "(option: set server hostnames including ports)",
        f"{config}: unknown key 'domian' in [scheduling]; allowed keys: domain, addresses, external_invites, hide_attendees, language, "
        "ldap_address_attributes, ldap_cache_seconds, ldap_timeout",
    ]


def test_background_parts_start_with_serve_and_stop_on_shutdown(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    part = ("import sys; from invito.server import cli\n"
            "def part(configuration, stopping):\n"
            "    print('part sees', configuration.get('scheduling', 'domain'), flush=True)\n"
            "    stopping.wait()\n"
            "    print('part stopped', flush=True)\n"
            "cli.background.append(part)\n"
            f"sys.exit(cli.main(['serve', '--config', {str(config)!r}]))\n")
    proc = subprocess.Popen([sys.executable, "-c", part], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        started = "".join(wait_ready(proc))
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert proc.stdout is not None
        output = started + proc.stdout.read()
        assert "part sees example.com\n" in output
        assert output.endswith("part stopped\n")  # asked to stop, and waited for, at shutdown
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_on_a_busy_port_fails_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = write_config(tmp_path, busy.getsockname()[1])
        result = invito("serve", "--config", str(config))
    assert result.returncode == 1
    assert "ready" not in result.stdout
    assert "invito: cannot serve: No servers started" in result.stderr
