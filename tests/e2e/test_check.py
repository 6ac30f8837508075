# SPDX-License-Identifier: GPL-3.0-or-later
"""`invito check` against real folders, real relays (aiosmtpd on 127.0.0.1) and real sockets.

Each test breaks one thing in an otherwise working setup and asserts the exact line the admin reads.
"""
from __future__ import annotations

import contextlib
import http.server
import io
import os
import socket
import socketserver
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import bcrypt
import icalendar
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from invito.server import cli
from tests.e2e import test_imip_sender
from tests.e2e.conftest import INVITO, Server, free_port, start, stop, write_config
from tests.e2e.mailsink import MailSink, start_sink
from tests.e2e.test_imip_sender import PASSWORD as RELAY_PASSWORD
from tests.e2e.test_imip_sender import self_signed

SENDER = "invito@cal.example.com"
tls_relay = test_imip_sender.tls_relay  # the fixture: a STARTTLS relay that wants a login


def check(config: Path | None, *options: str) -> tuple[int, list[str]]:
    """`invito check` in this process (fast; one test runs the real command): its output, its exit status."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["check", *(["--config", str(config)] if config else []), *options])
    return code, out.getvalue().splitlines()


def setting(config: Path, key: str) -> str:
    """The value of ``key`` in a config written by ``write_config`` (its keys are unique); "" if unset."""
    return next((line.split("=", 1)[1].strip() for line in config.read_text().splitlines()
                 if line.startswith(f"{key} =")), "")


def caldav_address(config: Path) -> str:
    return setting(config, "hosts")


def collections_line(config: Path, line: str) -> list[str]:
    """``line`` about the collections folder, which the check names only on the filesystem backend."""
    return [] if setting(config, "database") else [line]


def database_line(config: Path) -> list[str]:
    """What the check says of the database on the database backend (a fresh, migrated one); nothing on
    the filesystem backend."""
    from invito.storage.pg import migrations

    url = setting(config, "database")
    return [f"ok   database {url}: schema version {migrations.latest()}, as this Invito needs"] if url else []


def test_a_taken_caldav_port_that_does_not_answer_is_named(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    with socket.socket() as taken:  # the kernel accepts the connection, nobody ever answers
        taken.bind(("127.0.0.1", port))
        taken.listen()
        code, lines = check(config)
    assert f"FAIL CalDAV on 127.0.0.1:{port}: port {port} is in use, and what listens there did not answer " \
           "within 2 s (set [server] hosts)" in lines
    assert code == 1


def a_file(tmp_path: Path) -> Path:
    """A plain file where a folder is expected: nothing can be created below it, even by root."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    return blocker


def working(tmp: Path, relay_port: int, **changes: dict[str, str]) -> Path:
    """A config where everything works, with one user, a plain relay on ``relay_port`` and a listener
    offering STARTTLS; ``changes`` override it section by section."""
    (tmp / "data").mkdir()
    digest = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    (tmp / "data" / "users").write_text(f"# the users\nalice:{digest}\n")
    cert, key = self_signed(tmp, "inbound")
    settings = {
        "smtp": {"host": "127.0.0.1", "port": str(relay_port), "security": "none", "sender": SENDER, "timeout": "5"},
        "imip": {"reply_address": "invito+{token}@cal.example.com", "listen": f"127.0.0.1:{free_port()}",
                 "tls_certificate": str(cert), "tls_key": str(key)},
        "rsvp": {"public_url": "https://cal.example.com"},
    }
    for section, values in changes.items():
        settings.setdefault(section, {}).update(values)
    return write_config(tmp, free_port(), settings)


def failures(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("FAIL")]


def test_a_working_setup_passes_every_check(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    port, _ = relay
    listen = f"127.0.0.1:{free_port()}"
    config = working(tmp_path, port, imip={"listen": listen})
    code, lines = check(config)
    data = tmp_path / "data"
    caldav_at = caldav_address(config)
    assert lines == [
        f"ok   config file {config}: valid",
        f"ok   data folder {data}: writable",
        *collections_line(config, f"ok   collections folder {data / 'collections'}: does not exist yet, "
                                  "`invito serve` will create it"),
        f"ok   users file {data / 'users'}: 1 user",
        *database_line(config),
        "ok   scheduling domain example.com: user NAME has the calendar address NAME@example.com",
        f"ok   CalDAV on {caldav_at}: the port is free",
        f"ok   smtp sender {SENDER}",
        f"ok   smtp relay 127.0.0.1:{port}: connected without TLS, no login",
        "ok   reply address invito+{token}@cal.example.com",
        f"ok   inbound mail listener {listen}: the port is free",
        f"ok   inbound mail TLS: certificate {tmp_path / 'inbound.crt'} with key {tmp_path / 'inbound.key'}",
        "ok   RSVP page: invitations link to https://cal.example.com/.invito/rsvp/…",
        "no problems",
    ]
    assert code == 0
    assert sorted(p.name for p in data.iterdir()) == ["users"]  # the scratch files are gone


def test_run_as_a_command_against_a_starttls_relay_with_a_login(
        tmp_path: Path, tls_relay: tuple[int, MailSink, Path]) -> None:
    port, _, cert = tls_relay
    password_file = tmp_path / "smtp-password"
    password_file.write_text(RELAY_PASSWORD + "\n")
    config = working(tmp_path, port, smtp={"security": "starttls", "cafile": str(cert), "username": "invito",
                                           "password_file": str(password_file)})
    done = subprocess.run([*INVITO, "check", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ok   smtp relay 127.0.0.1:{port}: connected with starttls, logged in as invito" in done.stdout
    assert done.stdout.splitlines()[-1] == "no problems"
    assert RELAY_PASSWORD not in done.stdout + done.stderr


def test_warnings_alone_do_not_fail(tmp_path: Path) -> None:
    caldav_port = free_port()
    config = write_config(tmp_path, caldav_port, {"scheduling": {"domain": ""}})
    code, lines = check(config)
    assert lines[1:] == [
        f"ok   data folder {tmp_path / 'data'}: does not exist yet, `invito serve` will create it",
        *collections_line(config, f"ok   collections folder {tmp_path / 'data' / 'collections'}: does not exist "
                                  "yet, `invito serve` will create it"),
        f"warn users file {tmp_path / 'data' / 'users'}: does not exist yet, so nobody can log in; add users with "
        f"`invito user add NAME --config {config}`",
        *database_line(config),
        "warn scheduling domain: empty, so users have no calendar address and nothing is scheduled "
        "(set [scheduling] domain)",
        f"ok   CalDAV on 127.0.0.1:{caldav_port}: the port is free",
        "warn smtp relay: none set, so invitations to external guests wait in the spool (set [smtp] host)",
        "warn inbound mail: no listener, so guests' replies to the organizers never reach Invito "
        "(set [imip] listen)",
        "skip RSVP page: no [rsvp] public_url, so invitations carry no answer links",
        "no problems, 4 warnings",
    ]
    assert code == 0
    assert not (tmp_path / "data").exists()  # checking creates nothing


def test_an_empty_users_file_and_a_domain_with_an_addresses_file(tmp_path: Path) -> None:
    addresses = tmp_path / "addresses"
    addresses.write_text("alice: alice@example.org\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "users").write_text("# nobody yet\n")
    code, lines = check(write_config(tmp_path, free_port(), {"scheduling": {"domain": "",
                                                                            "addresses": str(addresses)}}))
    assert f"warn users file {tmp_path / 'data' / 'users'}: no users, so nobody can log in; add users with " \
           f"`invito user add NAME --config {tmp_path / 'invito.conf'}`" in lines
    assert f"warn scheduling domain: empty, so only the users listed in {addresses} have a calendar address " \
           "(set [scheduling] domain)" in lines
    assert code == 0


def test_without_a_config_file_the_defaults_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, lines = check(None)
    assert lines[:2] == ["ok   config file: none given, the built-in defaults apply",
                         f"ok   data folder {tmp_path / 'invito-data'}: does not exist yet, `invito serve` will "
                         "create it"]
    assert "`invito user add NAME`" in lines[3]
    assert code == 0


def test_an_invalid_config_is_reported_and_nothing_else_is_checked(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), {"smtp": {"port": "lots"}, "imip": {"listen": "nowhere"}})
    code, lines = check(config)
    assert code == 2
    assert len(lines) == 3
    assert lines[0].startswith(f"FAIL {config}: [smtp] port = 'lots' is invalid (")
    assert lines[1].startswith(f"FAIL {config}: [imip] listen = 'nowhere' is invalid (")
    assert lines[2] == "the configuration is invalid; fix it, then run the check again"


def test_a_missing_config_file(tmp_path: Path) -> None:
    code, lines = check(tmp_path / "nope.conf")
    assert (code, lines[0]) == (2, f"FAIL {tmp_path / 'nope.conf'}: cannot read the config file: "
                                   "No such file or directory")


# -- folders ---------------------------------------------------------------------------------------------


def test_a_data_folder_under_a_file_names_data_folder_once(tmp_path: Path) -> None:
    blocker = a_file(tmp_path)
    code, lines = check(write_config(tmp_path, free_port(), {"invito": {"data_folder": str(blocker / "data")}}))
    assert failures(lines) == [f"FAIL data folder {blocker / 'data'}: cannot create it: {blocker} is a file, not a "
                               "folder (set [invito] data_folder)"]
    assert not any("collections folder" in line or "users file" in line for line in lines)  # inside it
    assert lines[-1].startswith("1 problem, ") and code == 1


def test_a_data_folder_that_is_a_file(tmp_path: Path) -> None:
    blocker = a_file(tmp_path)
    code, lines = check(write_config(tmp_path, free_port(), {"invito": {"data_folder": str(blocker)}}))
    assert failures(lines) == [f"FAIL data folder {blocker}: {blocker} is a file, not a folder "
                               "(set [invito] data_folder)"]
    assert code == 1


def test_collections_and_users_file_set_apart_are_checked_with_their_own_keys(tmp_path: Path) -> None:
    blocker = a_file(tmp_path)
    (tmp_path / "users-dir").mkdir()
    config = write_config(tmp_path, free_port(), {
        "storage": {"filesystem_folder": str(blocker / "collections")},
        "auth": {"htpasswd_filename": str(tmp_path / "users-dir")}})
    code, lines = check(config)
    assert failures(lines) == [
        *collections_line(config, f"FAIL collections folder {blocker / 'collections'}: cannot create it: {blocker} "
                                  "is a file, not a folder (set [storage] filesystem_folder)"),  # unused on a database
        f"FAIL users file {tmp_path / 'users-dir'}: cannot read it: Is a directory (set [auth] htpasswd_filename)"]
    assert code == 1


def test_a_users_file_that_is_not_text(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "users").write_bytes(b"\xffalice:x\n")
    code, lines = check(write_config(tmp_path, free_port()))
    assert failures(lines) == [f"FAIL users file {tmp_path / 'data' / 'users'}: cannot read it: 'utf-8' codec can't "
                               "decode byte 0xff in position 0: invalid start byte (set [auth] htpasswd_filename)"]
    assert code == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_a_data_folder_without_write_permission(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(mode=0o500)
    try:
        code, lines = check(write_config(tmp_path, free_port()))
    finally:
        (tmp_path / "data").chmod(0o700)
    assert failures(lines) == [f"FAIL data folder {tmp_path / 'data'}: cannot write in {tmp_path / 'data'}: "
                               "Permission denied (set [invito] data_folder)"]
    assert code == 1


def test_a_users_file_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = a_file(tmp_path)
    code, lines = check(write_config(tmp_path, free_port(), {"auth": {"htpasswd_filename": str(blocker / "users")}}))
    assert failures(lines) == [f"FAIL users file {blocker / 'users'}: {blocker} is a file, not a folder "
                               "(set [auth] htpasswd_filename)"]
    assert code == 1


# -- the relay -------------------------------------------------------------------------------------------


def test_a_relay_that_is_down(tmp_path: Path) -> None:
    port = free_port()
    code, lines = check(working(tmp_path, port))
    assert failures(lines) == [f"FAIL smtp relay: cannot reach 127.0.0.1:{port}: Connection refused "
                               "(set [smtp] host or port)"]
    assert code == 1


def test_a_relay_that_does_not_answer(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) but never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        code, lines = check(working(tmp_path, port, smtp={"timeout": "0.3"}))
    assert failures(lines) == [f"FAIL smtp relay: 127.0.0.1:{port}: Connection unexpectedly closed: timed out "
                               "(set [smtp] host, port or timeout)"]
    assert code == 1


@pytest.fixture
def login_relay() -> Iterator[int]:
    """A relay that wants a login (without TLS, which tls_relay covers) and says 535 to a wrong one."""
    def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     data: LoginPassword) -> AuthResult:
        # handled=False: aiosmtpd itself answers a failure (its default leaves the client waiting)
        return AuthResult(success=(data.login, data.password) == (b"invito", RELAY_PASSWORD.encode()), handled=False)

    port = free_port()
    controller = Controller(MailSink(), hostname="127.0.0.1", port=port, authenticator=authenticate,
                            auth_required=True, auth_require_tls=False)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize(("password", "expected", "status"), [
    (RELAY_PASSWORD, "ok   smtp relay {relay}: connected without TLS, logged in as invito", 0),
    ("not-the-password", "FAIL smtp relay: {relay} refused the login as invito: 535 5.7.8 Authentication "
                         "credentials invalid (set [smtp] username or password_file)", 1),
], ids=["right-password", "wrong-password"])
def test_the_relay_login(tmp_path: Path, login_relay: int, password: str, expected: str, status: int) -> None:
    password_file = tmp_path / "smtp-password"
    password_file.write_text(password + "\n")
    code, lines = check(working(tmp_path, login_relay, smtp={"username": "invito",
                                                             "password_file": str(password_file)}))
    assert [line for line in lines if "smtp relay" in line] == [expected.format(relay=f"127.0.0.1:{login_relay}")]
    assert code == status
    assert not any(password in line for line in lines)


def test_a_relay_certificate_from_an_untrusted_ca(tmp_path: Path, tls_relay: tuple[int, MailSink, Path]) -> None:
    port, _, _ = tls_relay
    other_ca, _ = self_signed(tmp_path, "other")
    password_file = tmp_path / "smtp-password"
    password_file.write_text(RELAY_PASSWORD + "\n")
    code, lines = check(working(tmp_path, port, smtp={"security": "starttls", "cafile": str(other_ca),
                                                      "username": "invito", "password_file": str(password_file)}))
    [line] = failures(lines)
    assert line.startswith(f"FAIL smtp relay: TLS: the certificate of 127.0.0.1:{port} is not trusted: ")
    assert line.endswith(" (set [smtp] cafile or host)")
    assert code == 1


@pytest.mark.parametrize(("smtp", "expected"), [
    ({"security": "starttls"}, "{relay}: STARTTLS extension not supported by server. (set [smtp] security or port)"),
    ({"security": "tls"}, "TLS with {relay} failed: WRONG_VERSION_NUMBER (set [smtp] security or port)"),
    ({"username": "invito", "password_file": "{password_file}"},
     "{relay}: SMTP AUTH extension not supported by server. (set [smtp] username or security)"),
], ids=["starttls-not-offered", "tls-on-a-plain-port", "no-login-offered"])
def test_security_settings_the_relay_does_not_match(tmp_path: Path, relay: tuple[int, MailSink],
                                                     smtp: dict[str, str], expected: str) -> None:
    port, _ = relay
    password_file = tmp_path / "smtp-password"
    password_file.write_text("pw\n")
    code, lines = check(working(tmp_path, port, smtp={k: v.format(password_file=password_file)
                                                      for k, v in smtp.items()}))
    assert failures(lines) == ["FAIL smtp relay: " + expected.format(relay=f"127.0.0.1:{port}")]
    assert code == 1


@pytest.mark.parametrize(("smtp", "expected"), [
    ({"username": "invito"},
     "FAIL smtp login: username invito is set but password_file is empty (set [smtp] password_file)"),
    ({"username": "invito", "password_file": "{tmp}/missing"},
     "FAIL smtp password_file {tmp}/missing: cannot read it: No such file or directory (set [smtp] password_file)"),
    ({"security": "starttls", "cafile": "{tmp}/missing"},
     "FAIL smtp cafile {tmp}/missing: cannot load it: No such file or directory (set [smtp] cafile)"),
    ({"security": "starttls", "cafile": "{tmp}/invito.conf"},
     "FAIL smtp cafile {tmp}/invito.conf: cannot load it: NO_CERTIFICATE_OR_CRL_FOUND (set [smtp] cafile)"),
], ids=["no-password-file", "password-file-missing", "cafile-missing", "cafile-not-pem"])
def test_relay_files_are_checked_before_the_relay_is_tried(tmp_path: Path, relay: tuple[int, MailSink],
                                                          smtp: dict[str, str], expected: str) -> None:
    port, sink = relay
    code, lines = check(working(tmp_path, port, smtp={k: v.format(tmp=tmp_path) for k, v in smtp.items()}),
                        "--send-test", "guest@partner.example.org")
    assert failures(lines) == [expected.format(tmp=tmp_path)]
    assert "skip smtp relay: not tried until the files above are fixed" in lines
    assert "skip test invitation to guest@partner.example.org: not sent because of the problems above" in lines
    assert sink.connections == 0 and code == 1


@pytest.mark.parametrize(("sender", "expected"), [
    ("", "FAIL smtp sender: empty, so invitations wait in the spool (set [smtp] sender)"),
    ("invito", "FAIL smtp sender 'invito': not a mail address such as invito@cal.example.com (set [smtp] sender)"),
])
def test_a_relay_without_a_usable_sender(tmp_path: Path, relay: tuple[int, MailSink], sender: str,
                                         expected: str) -> None:
    port, sink = relay
    code, lines = check(working(tmp_path, port, smtp={"sender": sender}), "--send-test", "guest@partner.example.org")
    assert failures(lines) == [expected]
    assert "skip test invitation to guest@partner.example.org: not sent because of the problems above" in lines
    assert sink.received == [] and code == 1


def test_no_relay_means_no_test_invitation(tmp_path: Path) -> None:
    code, lines = check(working(tmp_path, free_port(), smtp={"host": ""}), "--send-test", "guest@partner.example.org")
    assert "warn smtp relay: none set, so invitations to external guests wait in the spool (set [smtp] host)" in lines
    assert failures(lines) == ["FAIL test invitation to guest@partner.example.org: not sent: there is no relay "
                               "(set [smtp] host)"]
    assert code == 1


# -- --send-test -----------------------------------------------------------------------------------------


def test_send_test_delivers_a_real_invitation(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    port, sink = relay
    code, lines = check(working(tmp_path, port), "--send-test", "guest@partner.example.org")
    assert f"ok   test invitation to guest@partner.example.org: sent, accepted by 127.0.0.1:{port}" in lines
    assert code == 0
    [received] = sink.received
    assert (received.sender, received.recipients) == (SENDER, ["guest@partner.example.org"])
    message = received.message
    assert message["To"].addresses[0].addr_spec == "guest@partner.example.org"
    assert message["From"].addresses[0].addr_spec == SENDER
    [calendar] = [part for part in message.walk() if part.get_content_type() == "text/calendar"
                  and part.get_content_disposition() is None]
    assert calendar.get_param("method") == "REQUEST"
    [event] = icalendar.Calendar.from_ical(calendar.get_content()).walk("VEVENT")
    assert str(event["SUMMARY"]) == "Invito test invitation"
    assert (str(event["ORGANIZER"]), str(event["ATTENDEE"])) == (f"mailto:{SENDER}", "mailto:guest@partner.example.org")


def test_send_test_to_an_address_the_relay_refuses(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    port, sink = relay
    sink.refuse["nobody@partner.example.org"] = "550 5.1.1 no such user"
    code, lines = check(working(tmp_path, port), "--send-test", "nobody@partner.example.org")
    assert failures(lines) == ["FAIL test invitation to nobody@partner.example.org: 550 5.1.1 no such user"]
    assert code == 1


def test_send_test_to_something_that_is_not_an_address(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    port, sink = relay
    code, lines = check(working(tmp_path, port), "--send-test", "nobody")
    assert failures(lines) == ["FAIL test invitation to nobody: 'nobody' is not a mail address"]
    assert sink.received == [] and code == 1


def test_send_test_from_a_sender_the_relay_refuses(tmp_path: Path) -> None:
    class NotFromHere(MailSink):
        async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                              mail_options: list[str]) -> str:
            return "553 5.7.1 sender not allowed"

    port = free_port()
    controller, sink = start_sink(port, NotFromHere())
    try:
        code, lines = check(working(tmp_path, port), "--send-test", "guest@partner.example.org")
    finally:
        controller.stop()
    assert failures(lines) == ["FAIL test invitation to guest@partner.example.org: 553 5.7.1 sender not allowed "
                               "(set [smtp] sender)"]
    assert code == 1


# -- inbound mail ----------------------------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something listens on and never answers, as a hung program would."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_a_listener_port_in_use_by_something_silent(tmp_path: Path, relay: tuple[int, MailSink],
                                                    taken_port: int) -> None:
    code, lines = check(working(tmp_path, relay[0], imip={"listen": f"127.0.0.1:{taken_port}"}))
    assert failures(lines) == [f"FAIL inbound mail listener 127.0.0.1:{taken_port}: port {taken_port} is in use, "
                               "and what listens there did not answer within 2 s (set [imip] listen)"]
    assert code == 1


def test_a_listener_address_of_another_machine(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    code, lines = check(working(tmp_path, relay[0], imip={"listen": "192.0.2.1:8025"}))  # TEST-NET-1
    assert failures(lines) == ["FAIL inbound mail listener 192.0.2.1:8025: 192.0.2.1 is not an address of this "
                               "machine (set [imip] listen)"]
    assert code == 1


def test_a_reply_address_without_a_listener(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    code, lines = check(working(tmp_path, relay[0], imip={"listen": ""}))
    assert "warn inbound mail: no listener, so guests' replies to invito+{token}@cal.example.com never reach " \
           "Invito (set [imip] listen)" in lines
    assert code == 0


@pytest.mark.parametrize(("imip", "expected"), [
    ({"tls_key": "{tmp}/missing.key"},
     "cannot read {tmp}/missing.key: No such file or directory (set [imip] tls_key)"),
    ({"tls_certificate": "{tmp}/missing.crt"},
     "cannot read {tmp}/missing.crt: No such file or directory (set [imip] tls_certificate)"),
    ({"tls_key": ""}, "tls_certificate is set but tls_key is empty: both or neither (set [imip] tls_key)"),
    ({"tls_certificate": ""},
     "tls_key is set but tls_certificate is empty: both or neither (set [imip] tls_certificate)"),
    ({"tls_key": "{tmp}/other.key"}, "certificate {tmp}/inbound.crt with key {tmp}/other.key does not load: "
                                     "KEY_VALUES_MISMATCH (set [imip] tls_certificate or tls_key)"),
], ids=["key-missing", "certificate-missing", "no-key", "no-certificate", "key-of-another-certificate"])
def test_inbound_tls_files(tmp_path: Path, relay: tuple[int, MailSink], imip: dict[str, str], expected: str) -> None:
    self_signed(tmp_path, "other")
    code, lines = check(working(tmp_path, relay[0], imip={k: v.format(tmp=tmp_path) for k, v in imip.items()}))
    assert failures(lines) == ["FAIL inbound mail TLS: " + expected.format(tmp=tmp_path)]
    assert code == 1


def test_caldav_tls_files(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    cert, _ = self_signed(tmp_path, "caldav")
    _, other_key = self_signed(tmp_path, "other")
    code, lines = check(working(tmp_path, relay[0], server={"ssl": "true", "certificate": str(cert),
                                                             "key": str(other_key)}))
    assert failures(lines) == [f"FAIL CalDAV TLS: certificate {cert} with key {other_key} does not load: "
                               "KEY_VALUES_MISMATCH (set [server] certificate or key)"]
    assert code == 1
    (tmp_path / "missing").mkdir()
    code, lines = check(working(tmp_path / "missing", relay[0], server={"ssl": "true",
                                                                       "key": str(tmp_path / "none.key")}))
    assert failures(lines) == ["FAIL CalDAV TLS: cannot read /etc/ssl/radicale.cert.pem: No such file or "
                               "directory (set [server] certificate)"]


def test_rsvp_links_over_plain_http_are_flagged(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    code, lines = check(working(tmp_path, relay[0], rsvp={"public_url": "http://cal.example.com"}))
    assert "warn RSVP page http://cal.example.com: guests' links and answers would travel unencrypted; use " \
           "https:// (a reverse proxy doing TLS, see config/mail-and-proxy.md) (set [rsvp] public_url)" in lines
    assert code == 0
    (tmp_path / "none").mkdir()
    code, lines = check(working(tmp_path / "none", relay[0], rsvp={"public_url": ""}))
    assert "skip RSVP page: no [rsvp] public_url, so invitations carry no answer links" in lines


# -- a running server ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[("smtp", "http"), ("lmtp", "https")], ids=["smtp-http", "lmtp-https"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            backend: str) -> Iterator[Server]:
    """A real `invito serve` with its inbound mail listener: SMTP with plain CalDAV, or LMTP with CalDAV
    over TLS (its certificate self-signed, as the check must accept)."""
    protocol, scheme = request.param
    tmp = tmp_path_factory.mktemp(f"running-{protocol}")
    settings = {"imip": {"listen": f"127.0.0.1:{free_port()}", "protocol": protocol,
                         "reply_address": "invito+{token}@cal.example.com"}}
    if scheme == "https":
        cert, key = self_signed(tmp, "caldav")
        settings["server"] = {"ssl": "true", "certificate": str(cert), "key": str(key)}
    proc, srv = start(tmp, settings)
    try:
        yield srv
    finally:
        stop(proc)


def test_a_running_server_is_recognised_on_both_ports(running: Server) -> None:
    done = subprocess.run([*INVITO, "check", "--config", str(running.config)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    data, tls = running.data, setting(running.config, "ssl") == "true"
    assert done.stdout.splitlines() == [
        f"ok   config file {running.config}: valid",
        f"ok   data folder {data}: writable",  # the server's own files in use there are no problem
        *collections_line(running.config, f"ok   collections folder {data / 'collections'}: writable"),
        f"ok   users file {data / 'users'}: 3 users",
        *database_line(running.config),
        "ok   scheduling domain example.com: user NAME has the calendar address NAME@example.com",
        f"ok   CalDAV on {caldav_address(running.config)}: invito serve is running here",
        *([f"ok   CalDAV TLS: certificate {setting(running.config, 'certificate')} with key "
           f"{setting(running.config, 'key')}"] if tls else []),
        "warn smtp relay: none set, so invitations to external guests wait in the spool (set [smtp] host)",
        "ok   reply address invito+{token}@cal.example.com",
        f"ok   inbound mail listener {setting(running.config, 'listen')}: invito serve is running here",
        "skip RSVP page: no [rsvp] public_url, so invitations carry no answer links",
        "no problems, 1 warning",
    ]


def test_a_listener_protocol_changed_since_the_server_started(running: Server, tmp_path: Path) -> None:
    speaks = setting(running.config, "protocol")
    configured = "lmtp" if speaks == "smtp" else "smtp"
    changed = tmp_path / "invito.conf"
    changed.write_text(running.config.read_text().replace(f"protocol = {speaks}", f"protocol = {configured}"))
    code, lines = check(changed)
    listen = setting(running.config, "listen")
    assert [line for line in lines if "inbound mail listener" in line] == [
        f"ok   inbound mail listener {listen}: invito serve is running here",
        f"warn inbound mail listener {listen}: the running invito serve speaks {speaks.upper()}, not "
        f"{configured.upper()}: restart it to apply the config",
    ]
    assert code == 0


class _OtherCalDAV(http.server.BaseHTTPRequestHandler):
    """Another CalDAV server, one that schedules too: only Invito's own token tells them apart."""

    def do_OPTIONS(self) -> None:
        self.send_response(200)
        self.send_header("DAV", "1, 2, 3, calendar-access, calendar-auto-schedule")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _OtherMailServer(socketserver.BaseRequestHandler):
    GREETING = "220 mx.cal.example.com ESMTP Postfix (Debian/GNU)"

    def handle(self) -> None:
        self.request.sendall(self.GREETING.encode() + b"\r\n")
        self.request.settimeout(5)
        with contextlib.suppress(OSError):
            self.request.recv(1024)  # until the client hangs up (or sends a request it does not understand)


@contextlib.contextmanager
def serving(server: socketserver.TCPServer) -> Iterator[int]:
    """``server`` answering on a thread; yields its port."""
    server.daemon_threads = True  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def other_http() -> contextlib.AbstractContextManager[int]:
    return serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OtherCalDAV))


def other_mail() -> contextlib.AbstractContextManager[int]:
    return serving(socketserver.ThreadingTCPServer(("127.0.0.1", 0), _OtherMailServer))


def test_other_programs_on_the_ports_are_named(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    with other_http() as http_port, other_mail() as mail_port:
        config = working(tmp_path, relay[0], imip={"listen": f"127.0.0.1:{mail_port}"})
        config.write_text(config.read_text().replace(caldav_address(config), f"127.0.0.1:{http_port}"))
        done = subprocess.run([*INVITO, "check", "--config", str(config)], capture_output=True, text=True,
                              timeout=60)
    assert failures(done.stdout.splitlines()) == [
        f"FAIL CalDAV on 127.0.0.1:{http_port}: port {http_port} is used by another program (it answered HTTP "
        "without Invito's DAV header) (set [server] hosts)",
        f"FAIL inbound mail listener 127.0.0.1:{mail_port}: port {mail_port} is used by another program (it "
        f"greeted with '{_OtherMailServer.GREETING}') (set [imip] listen)",
    ]
    assert done.returncode == 1


def test_a_mail_server_on_the_caldav_port(tmp_path: Path) -> None:
    with other_mail() as port:
        code, lines = check(write_config(tmp_path, port))
    assert failures(lines) == [f"FAIL CalDAV on 127.0.0.1:{port}: port {port} is used by another program (what it "
                               "answered is not HTTP) (set [server] hosts)"]
    assert code == 1


def test_plain_http_where_the_config_says_https(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "caldav")
    with other_http() as port:
        code, lines = check(write_config(tmp_path, port, {"server": {"ssl": "true", "certificate": str(cert),
                                                                     "key": str(key)}}))
    [line] = failures(lines)
    assert line.startswith(f"FAIL CalDAV on 127.0.0.1:{port}: port {port} is used by another program (it does not "
                           "speak HTTPS: ")
    assert code == 1


def test_an_http_server_on_the_listener_port(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    with other_http() as port:  # it waits for a request, as a mail client waits for a greeting
        code, lines = check(working(tmp_path, relay[0], imip={"listen": f"127.0.0.1:{port}"}))
    assert failures(lines) == [f"FAIL inbound mail listener 127.0.0.1:{port}: port {port} is in use, and what "
                               "listens there did not answer within 2 s (set [imip] listen)"]
    assert code == 1
