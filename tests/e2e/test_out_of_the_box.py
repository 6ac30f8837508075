# SPDX-License-Identifier: GPL-3.0-or-later
"""The first hour as the README tells it: users named by their mail address schedule with no configuration,
`invito serve` says only what matters, passwords are piped in, and a config file's paths do not depend on
the folder a command runs in.

The servers here use a config file that sets nothing but ``[server] hosts`` (the embedded default would
listen on 5232, which parallel test runs share); everything else is the built-in default.
"""
from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import bcrypt
import pytest
import requests

from tests.e2e.conftest import INVITO, PASSWORD, Server, free_port, restart, stop
from tests.e2e.test_cli import request, wait_ready
from tests.e2e.test_queue_admin import section
from tests.e2e.test_scheduling import attendee, calendar, copy_of, event, inbox_methods

ALICE, BOB, GUEST = "alice@example.com", "bob@example.com", "guest@elsewhere.org"


def invito(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INVITO, *args], capture_output=True, text=True, timeout=30, cwd=cwd,
                          input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)


def hosts_only(folder: Path, port: int, extra: str = "") -> Path:
    """A config file that only moves the server to ``port`` (and adds ``extra`` lines)."""
    config = folder / "invito.conf"
    config.write_text(f"[server]\nhosts = 127.0.0.1:{port}\n{extra}")
    return config


def users(data: Path) -> dict[str, str]:
    return dict(line.split(":", 1) for line in (data / "users").read_text().splitlines())


# -- mail-address user names schedule without [scheduling] domain -------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("out-of-the-box")
    for user in (ALICE, BOB):  # no --config: the built-in defaults, ./invito-data
        added = invito("user", "add", user, cwd=folder, stdin=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr
    port = free_port()
    srv = Server(url=f"http://127.0.0.1:{port}/", data=folder / "invito-data", config=hosts_only(folder, port),
                 log=folder / "server.log")
    proc = restart(srv)
    try:
        yield srv
    finally:
        stop(proc)


def test_a_mail_address_user_name_is_the_calendar_address(site: Server) -> None:
    assert "mailto:alice@example.com" in site.principal(ALICE).calendar_user_address_set()
    assert "[scheduling] domain" not in site.log.read_text()  # the summary: every user has an address


def test_mail_address_users_invite_each_other_and_a_guest_waits_in_the_spool(site: Server) -> None:
    uid = str(uuid.uuid4())
    calendar(site, ALICE).save_event(event(uid, organizer="alice", attendees=("bob",),
                                           extra=f"ATTENDEE;CN=Guest;RSVP=TRUE:mailto:{GUEST}"))
    assert attendee(copy_of(site, BOB, uid), f"mailto:{BOB}").params["PARTSTAT"] == "NEEDS-ACTION"
    assert inbox_methods(site, BOB, uid) == ["REQUEST"]
    organizer_copy = copy_of(site, ALICE, uid)
    assert attendee(organizer_copy, f"mailto:{BOB}").params["SCHEDULE-STATUS"] == "1.2"
    listed = invito("queue", "list", "--config", str(site.config), cwd=site.config.parent)
    assert listed.returncode == 0, listed.stderr
    waiting = [row for row in section(listed.stdout, "Outbound (waiting)") if uid in row]
    assert [row[1:3] for row in waiting] == [[GUEST, "REQUEST"]]


# -- quiet start-up -------------------------------------------------------------------------------------


def serve(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*INVITO, "serve", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=config.parent)


def stopped(proc: subprocess.Popen[str]) -> str:
    """The rest of the output, after a clean stop."""
    os.kill(proc.pid, signal.SIGTERM)
    rest, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, rest
    return rest


def test_serve_prints_the_summary_the_ready_line_and_one_line_per_request(tmp_path: Path) -> None:
    port = free_port()
    config = hosts_only(tmp_path, port)
    assert invito("user", "add", ALICE, "--config", str(config), cwd=tmp_path, stdin="pw\n").returncode == 0
    proc = serve(config)
    try:
        started = wait_ready(proc)
        url = f"http://127.0.0.1:{port}/"
        assert request(url, "OPTIONS", ALICE, "pw")[0] == 200
        assert request(f"{url}{ALICE}/", "PROPFIND", ALICE, "pw")[0] == 207
        assert request(url + ".web/", "GET", ALICE, "pw")[0] == 200
        assert request(f"{url}{ALICE}/", "PROPFIND", ALICE, "wrong")[0] == 401
        after = stopped(proc).splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert started[0].startswith("Invito ") and started[-1].startswith("Invito is ready on " + url)
    assert not [line for line in started if re.match(r"\[\d{4}-", line)]  # no Radicale line before ready
    assert "Not configured yet:\n" in started
    assert [re.sub(r" in [\d.]+ seconds.*: ", " ", line.split("] ", 3)[-1]) for line in after] == [
        "OPTIONS response status for '/' 200 OK",
        f"PROPFIND response status for '/{ALICE}/' 207 Multi-Status",
        "GET response status for '/.web/' 200 OK",
        f"Login verification failed for user: '{ALICE}' (htpasswd/bcrypt/BCRYPT)",  # warnings stay
        f"Failed login attempt from 127.0.0.1: '{ALICE}' (htpasswd)",
        f"PROPFIND response status for '/{ALICE}/' 401 Unauthorized"]


def test_at_level_debug_radicale_tells_everything(tmp_path: Path) -> None:
    port = free_port()
    config = hosts_only(tmp_path, port, "[logging]\nlevel = debug\n")
    proc = serve(config)
    try:
        started = "".join(wait_ready(proc))
        assert requests.options(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        output = started + stopped(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "[DEBUG] auth.cache_logins: True" in output  # the configuration dump
    assert "[DEBUG] Radicale server ready" in output
    assert re.search(r"\[DEBUG\] OPTIONS request for '/' received from 127\.0\.0\.1", output)
    assert "[INFO] OPTIONS response status for '/'" in output


# -- user add: the password from standard input --------------------------------------------------------


def test_user_add_reads_a_piped_password(tmp_path: Path) -> None:
    added = invito("user", "add", ALICE, cwd=tmp_path, stdin="piped pw\nnot this line\n")
    assert added.returncode == 0, added.stderr
    assert bcrypt.checkpw(b"piped pw", users(tmp_path / "invito-data")[ALICE].encode())
    changed = invito("user", "add", ALICE, "--password-stdin", cwd=tmp_path, stdin="second pw\r\n")
    assert changed.returncode == 0, changed.stderr
    assert bcrypt.checkpw(b"second pw", users(tmp_path / "invito-data")[ALICE].encode())


def test_user_add_with_nothing_on_stdin_says_how_to_give_a_password(tmp_path: Path) -> None:
    refused = invito("user", "add", ALICE, "--password-stdin", cwd=tmp_path, stdin="")
    assert refused.returncode == 1
    assert "--password-stdin" in refused.stderr and "--password-file" in refused.stderr
    assert not (tmp_path / "invito-data" / "users").exists()
    both = invito("user", "add", ALICE, "--password-stdin", "--password-file", "f", cwd=tmp_path, stdin="pw\n")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_user_add_on_a_terminal_asks_twice(tmp_path: Path) -> None:
    pid, terminal = pty.fork()
    if pid == 0:  # the child: `invito user add` with the pseudo-terminal as its controlling terminal
        os.chdir(tmp_path)
        os.execv(INVITO[0], [*INVITO, "user", "add", ALICE])
    try:
        seen = b""
        for answer in (b"typed pw\n", b"typed pw\n"):
            while not seen.rstrip().endswith(b":"):
                seen += os.read(terminal, 1024)
            os.write(terminal, answer)
            seen += b"|"
        while b"added user" not in seen:
            seen += os.read(terminal, 1024)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(terminal)
    assert b"Password for alice@example.com:" in seen and b"Same password again:" in seen
    assert os.waitstatus_to_exitcode(status) == 0
    assert bcrypt.checkpw(b"typed pw", users(tmp_path / "invito-data")[ALICE].encode())


# -- relative paths start at the config file's folder ---------------------------------------------------


def test_commands_run_from_different_folders_see_the_same_data(tmp_path: Path) -> None:
    site_folder, a, b = tmp_path / "site", tmp_path / "a", tmp_path / "b"
    for folder in (site_folder, a, b):
        folder.mkdir()
    (site_folder / "addresses").write_text("carol: carol@example.org\n")
    port = free_port()
    hosts_only(site_folder, port, "[scheduling]\naddresses = addresses\n")
    config = "../site/invito.conf"  # relative too, as an admin types it
    data = site_folder / "invito-data"

    for user in (ALICE, "carol"):
        assert invito("user", "add", user, "--config", config, cwd=a, stdin="pw\n").returncode == 0
    assert list(users(data)) == [ALICE, "carol"]
    checked = invito("check", "--config", config, cwd=b)
    assert str(data) in checked.stdout and str(data / "users") in checked.stdout, checked.stdout
    proc = subprocess.Popen([*INVITO, "serve", "--config", config], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=b)
    try:
        summary = "".join(wait_ready(proc))
        assert request(f"http://127.0.0.1:{port}/", "OPTIONS", ALICE, "pw")[0] == 200  # the user from a
        stopped(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert f"  data folder: {data}\n" in summary
    assert f"  users file:  {data / 'users'} (2 users)\n" in summary
    assert "[scheduling] domain" not in summary  # carol's address came from site/addresses
    assert sorted(os.listdir(a)) == sorted(os.listdir(b)) == []  # nothing made where the commands ran
