# SPDX-License-Identifier: GPL-3.0-or-later
"""The sender against a real SMTP relay (aiosmtpd on 127.0.0.1): reuse, refusals, retries, STARTTLS."""
from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Iterator

import icalendar
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from invito.plugins.imip.sender import Sender
from invito.plugins.imip.smtp import SmtpSettings
from invito.plugins.imip.spool import OutboundSpool, SpoolEntry
from invito.plugins.itip import ITipMessage
from invito.storage.pg.db import Database
from invito.storage.pg.outbox import Outbox
from tests.e2e.conftest import free_port
from tests.e2e.mailsink import MailSink, start_sink
from tests.e2e.test_queue_admin import scheduling_write

FROM = "invito@cal.example.com"
PASSWORD = "relay-pw-9f3k"


def build(entry: SpoolEntry) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = FROM
    msg["To"] = entry.recipient.removeprefix("mailto:")
    msg["Subject"] = "%s %s" % (entry.method, entry.uid)
    msg.add_attachment(entry.ics.encode(), maintype="text", subtype="calendar", params={"method": entry.method})
    return msg


class Outcomes(list):
    def __call__(self, entry: SpoolEntry, status: str, detail: str) -> None:
        self.append((entry.uid, status, detail))


def queue(spool: OutboundSpool | Outbox, uid: str, guest: str = "guest@partner.example.org") -> None:
    cal = icalendar.Calendar.from_ical("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nMETHOD:REQUEST\r\n"
                                       f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20300101T000000Z\r\n"
                                       "END:VEVENT\r\nEND:VCALENDAR\r\n")
    with scheduling_write(spool):
        entry_id = spool.prepare(ITipMessage("REQUEST", uid, "mailto:alice@example.com", (), cal),
                                 [f"mailto:{guest}"])
    spool.commit([entry_id])


@pytest.fixture
def spool(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Iterator[OutboundSpool | Outbox]:
    """The module's backend's outbound queue: a spool folder, or the outbox of a database of the test's own."""
    if backend == "files":
        yield OutboundSpool(str(tmp_path / "outbound"))
        return
    database = Database(request.getfixturevalue("database"), max_size=4)
    outbox = Outbox(database)
    try:
        yield outbox
    finally:
        outbox.close()
        database.close()


def plain(port: int) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, security="none", sender=FROM, timeout=5)


def test_a_batch_goes_out_over_one_connection(spool: OutboundSpool, relay: tuple[int, MailSink]) -> None:
    port, mail = relay
    for n in range(5):
        queue(spool, f"m{n}", guest=f"g{n}@partner.example.org")
    outcomes = Outcomes()
    assert Sender(spool, plain(port), build, outcomes).process_due(time.time()) == 5
    assert mail.connections == 1
    assert [(r.sender, r.recipients, r.message["Subject"]) for r in mail.received] == [
        (FROM, [f"g{n}@partner.example.org"], f"REQUEST m{n}") for n in range(5)]
    assert [o[:2] for o in outcomes] == [(f"m{n}", "1.1") for n in range(5)]
    assert spool.queued() == []


def test_a_refused_recipient_fails_and_the_others_still_go(spool: OutboundSpool, relay: tuple[int, MailSink]) -> None:
    port, mail = relay
    mail.refuse["nobody@partner.example.org"] = "550 5.1.1 <nobody@partner.example.org>: no such user"
    queue(spool, "m1", guest="nobody@partner.example.org")
    queue(spool, "m2")
    outcomes = Outcomes()
    assert Sender(spool, plain(port), build, outcomes).process_due(time.time()) == 1
    assert outcomes == [("m1", "5.2", "550 5.1.1 <nobody@partner.example.org>: no such user"),
                        ("m2", "1.1", f"accepted by 127.0.0.1:{port}")]
    assert [r.recipients for r in mail.received] == [["guest@partner.example.org"]]
    assert mail.connections == 1 and spool.queued() == []


def test_greylisting_is_retried_then_delivered(spool: OutboundSpool, relay: tuple[int, MailSink]) -> None:
    port, mail = relay
    mail.refuse["guest@partner.example.org"] = "451 4.7.1 greylisted, try again later"
    queue(spool, "m1")
    outcomes = Outcomes()
    sender = Sender(spool, plain(port), build, outcomes)
    now = time.time()
    assert sender.process_due(now) == 0
    [entry] = spool.queued()
    assert (entry.attempts, entry.last_error) == (1, "451 4.7.1 greylisted, try again later")
    del mail.refuse["guest@partner.example.org"]
    assert sender.process_due(entry.next_try) == 1
    assert [o[:2] for o in outcomes] == [("m1", "1.1")] and len(mail.received) == 1


def test_a_relay_that_ends_the_connection_gets_a_fresh_one(spool: OutboundSpool) -> None:
    class TwoPerConnection(MailSink):
        async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                              mail_options: list[str]) -> str:
            session.mails = getattr(session, "mails", 0) + 1  # type: ignore[attr-defined]
            if session.mails > 2:  # type: ignore[attr-defined]
                return "421 4.7.0 too many messages on this connection"
            envelope.mail_from = address
            return "250 OK"

    port = free_port()
    controller, mail = start_sink(port, TwoPerConnection())
    try:
        for n in range(5):
            queue(spool, f"m{n}")
        assert Sender(spool, plain(port), build, Outcomes()).process_due(time.time()) == 5
    finally:
        controller.stop()
    assert mail.connections == 3 and len(mail.received) == 5


def test_mail_waits_while_the_relay_is_down_and_goes_when_it_is_back(spool: OutboundSpool) -> None:
    port = free_port()  # nothing listens yet
    queue(spool, "m1")
    outcomes = Outcomes()
    sender = Sender(spool, plain(port), build, outcomes, probe_every=0.2)
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop, wake))
    thread.start()
    controller = None
    try:
        deadline = time.monotonic() + 10
        while not any(e.last_error for e in spool.queued()) and time.monotonic() < deadline:
            time.sleep(0.02)
        [entry] = spool.queued()
        assert entry.last_error.startswith(f"cannot reach 127.0.0.1:{port}: ") and outcomes == []
        assert entry.attempts == 0  # the relay's outage, not the message's
        controller, mail = start_sink(port)
        mail.wait_for(1, timeout=10)
        while not outcomes and time.monotonic() < deadline + 10:
            time.sleep(0.02)
        time.sleep(0.1)  # the sender is asleep now, with nothing queued
        queue(spool, "m2")  # committed while the sender sleeps with nothing due: the wake sends it
        wake.set()
        received = mail.wait_for(2, timeout=5)
        assert [r.message["Subject"] for r in received] == ["REQUEST m1", "REQUEST m2"]
    finally:
        stop.set()
        wake.set()
        thread.join(timeout=5)
        if controller is not None:
            controller.stop()
    assert not thread.is_alive()
    assert [o[:2] for o in outcomes] == [("m1", "1.1"), ("m2", "1.1")]


# -- STARTTLS ---------------------------------------------------------------------------------------

def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_relay(tmp_path: Path) -> Iterator[tuple[int, MailSink, Path]]:
    """A relay that speaks only after STARTTLS and wants a login; yields its port, sink and certificate."""
    cert, key = self_signed(tmp_path, "relay")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     data: LoginPassword) -> AuthResult:
        ok = (data.login, data.password) == (b"invito", PASSWORD.encode())
        return AuthResult(success=ok, handled=ok)  # handled=False: aiosmtpd answers the refusal itself

    port, mail = free_port(), MailSink()
    controller = Controller(mail, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            authenticator=authenticate, auth_required=True)
    controller.start()
    try:
        yield port, mail, cert
    finally:
        controller.stop()


def starttls(port: int, cafile: Path, password_file: Path) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, security="starttls", cafile=str(cafile), username="invito",
                        password_file=str(password_file), sender=FROM, timeout=5)


def test_starttls_with_the_relays_ca_and_a_login(spool: OutboundSpool, tmp_path: Path,
                                                  tls_relay: tuple[int, MailSink, Path],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    port, mail, cert = tls_relay
    password_file = tmp_path / "smtp-password"
    password_file.write_text(PASSWORD + "\n")
    queue(spool, "m1")
    queue(spool, "m2")
    outcomes = Outcomes()
    with caplog.at_level(logging.DEBUG):
        assert Sender(spool, starttls(port, cert, password_file), build, outcomes).process_due(time.time()) == 2
    assert len(mail.received) == 2 and [o[1] for o in outcomes] == ["1.1", "1.1"]
    assert "m1" in caplog.text and PASSWORD not in caplog.text


def test_a_relay_certificate_from_another_ca_is_a_temporary_tls_failure(
        spool: OutboundSpool, tmp_path: Path, tls_relay: tuple[int, MailSink, Path]) -> None:
    port, mail, _ = tls_relay
    other_ca, _ = self_signed(tmp_path, "other")
    password_file = tmp_path / "smtp-password"
    password_file.write_text(PASSWORD + "\n")
    queue(spool, "m1")
    outcomes = Outcomes()
    assert Sender(spool, starttls(port, other_ca, password_file), build, outcomes).process_due(time.time()) == 0
    [entry] = spool.queued()
    assert (entry.attempts, entry.stage) == (0, "relay") and outcomes == [] and mail.received == []
    assert entry.last_error.startswith(f"TLS: the certificate of 127.0.0.1:{port} is not trusted: ")
