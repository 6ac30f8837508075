# SPDX-License-Identifier: GPL-3.0-or-later
"""The inbound SMTP/LMTP listener, spoken to over 127.0.0.1 with smtplib and raw sockets."""
from __future__ import annotations

import datetime
import logging
import smtplib
import socket
import ssl
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from invito.plugins.imip.inbound_spool import InboundSpool
from invito.plugins.imip.listener import Listener, ListenerSettings

GUEST = "guest@partner.example.org"
OURS = ("invito+abc@cal.example.com", "invito+def@cal.example.com")
BROKEN = "invito+broken@cal.example.com"
MESSAGE = b"From: guest@partner.example.org\r\nSubject: Accepted: Review\r\n\r\nBEGIN:VCALENDAR\r\n"


def accepts(address: str) -> bool:
    if address == BROKEN:
        raise RuntimeError("token store unavailable")
    return address in OURS


Serve = Callable[..., Listener]


@pytest.fixture
def spool(tmp_path: Path) -> InboundSpool:
    return InboundSpool(str(tmp_path / "inbound"))


@pytest.fixture
def serve(spool: InboundSpool) -> Iterator[Serve]:
    started: list[Listener] = []

    def start(**settings: object) -> Listener:
        listener = Listener(ListenerSettings(port=0, **settings), spool, accepts)  # type: ignore[arg-type]
        listener.start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


def client(listener: Listener) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", listener.port, timeout=5)


class Raw:
    """A hand-driven conversation, to see every reply line smtplib would hide."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rb")

    def line(self) -> str:
        return self.file.readline().decode("ascii").rstrip("\r\n")

    def say(self, command: str) -> str:
        self.send(command)
        return self.reply()

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode("ascii") + b"\r\n")

    def reply(self) -> str:
        lines = [self.line()]
        while lines[-1][3:4] == "-":
            lines.append(self.line())
        return lines[-1]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def greeting_once_free(listener: Listener) -> str:
    """The greeting of a new connection, once the server has noticed a hang-up (within 2 s)."""
    deadline = time.monotonic() + 2
    while True:
        conn = Raw(listener.port)
        greeting = conn.line()
        conn.close()
        if not greeting.startswith("421 ") or time.monotonic() > deadline:
            return greeting
        time.sleep(0.02)


def test_accepted_mail_lands_in_the_spool_with_its_envelope(serve: Serve, spool: InboundSpool,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    listener = serve()
    with client(listener) as smtp:
        refused = smtp.sendmail(GUEST, list(OURS), MESSAGE)
    assert refused == {}
    [entry] = spool.pending()
    assert (entry.mail_from, entry.recipients) == (GUEST, OURS)
    assert entry.peer.startswith("127.0.0.1:")
    assert entry.raw() == MESSAGE
    assert spool.arrived.is_set()
    [logged] = [r.getMessage() for r in caplog.records if "accepted" in r.getMessage()]
    for part in (entry.id, GUEST, OURS[0], OURS[1], "%d bytes" % len(MESSAGE), entry.peer):
        assert part in logged
    assert "Subject" not in caplog.text  # never the content


def test_the_null_sender_is_accepted(serve: Serve, spool: InboundSpool) -> None:
    with client(serve()) as smtp:
        smtp.sendmail("", [OURS[0]], MESSAGE)
    assert [entry.mail_from for entry in spool.pending()] == [""]


def test_unknown_recipient_is_refused_and_nothing_spooled(serve: Serve, spool: InboundSpool) -> None:
    with client(serve()) as smtp:
        smtp.ehlo()
        smtp.mail(GUEST)
        code, text = smtp.rcpt("someone@elsewhere.example.net")
        assert (code, text) == (550, b"5.1.1 <someone@elsewhere.example.net>: no such recipient here")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.data(MESSAGE)
        assert refused.value.smtp_code == 503  # no recipient accepted: nothing to send
    assert spool.pending() == []


def test_accepts_raising_is_a_temporary_failure_for_that_recipient(serve: Serve, spool: InboundSpool) -> None:
    with client(serve()) as smtp:
        smtp.ehlo()
        smtp.mail(GUEST)
        assert smtp.rcpt(BROKEN) == (451, b"4.3.0 temporary failure, try again later")
        assert smtp.rcpt(OURS[0])[0] == 250
        assert smtp.data(MESSAGE)[0] == 250
    assert [entry.recipients for entry in spool.pending()] == [(OURS[0],)]


def test_spool_failure_is_451_without_details(serve: Serve, spool: InboundSpool,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object) -> None:
        raise OSError(28, "No space left on device: '/srv/secret/inbound'")

    monkeypatch.setattr(spool, "accept", full)
    with client(serve()) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail(GUEST, [OURS[0]], MESSAGE)
        assert (refused.value.smtp_code, refused.value.smtp_error) == (
            451, b"4.3.1 insufficient system storage, try again later")  # RFC 3463: no path, no errno text
        monkeypatch.undo()
        assert smtp.sendmail(GUEST, [OURS[0]], MESSAGE) == {}  # the session goes on: the sender retries
    assert len(spool.pending()) == 1


def test_an_unexpected_error_is_451_without_details(serve: Serve, spool: InboundSpool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool, "accept", lambda *args: None)  # a bug: no entry comes back
    with client(serve()) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail(GUEST, [OURS[0]], MESSAGE)
        assert (refused.value.smtp_code, refused.value.smtp_error) == (451, b"4.3.0 temporary failure, try again later")
        assert smtp.mail(GUEST)[0] == 250  # the failed transaction was dropped: a new one can start


def test_oversized_mail_is_refused(serve: Serve, spool: InboundSpool) -> None:
    big = MESSAGE + b"x" * 70 + b"\r\n" * 30
    with client(serve(max_bytes=1000)) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == "1000"
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:  # SIZE= announced in MAIL FROM
            smtp.sendmail(GUEST, [OURS[0]], big * 10)
        assert refused.value.smtp_code == 552 and refused.value.smtp_error.startswith(b"5.3.4 ")
        smtp.rset()
        smtp.mail(GUEST)  # no SIZE=: found out while receiving
        smtp.rcpt(OURS[0])
        code, text = smtp.data(big * 10)
        assert code == 552 and text.startswith(b"5.3.4 ")
    assert spool.pending() == []


def test_recipients_over_the_cap_are_refused(serve: Serve, spool: InboundSpool) -> None:
    with client(serve(max_recipients=1)) as smtp:
        refused = smtp.sendmail(GUEST, list(OURS), MESSAGE)
    assert refused == {OURS[1]: (452, b"4.5.3 too many recipients")}
    assert [entry.recipients for entry in spool.pending()] == [(OURS[0],)]


def test_connections_over_the_cap_get_421(serve: Serve) -> None:
    listener = serve(max_connections=2)
    first, second = Raw(listener.port), Raw(listener.port)
    assert first.line().startswith("220 ") and second.line().startswith("220 ")
    extra = Raw(listener.port)
    assert extra.line().startswith("421 4.7.0 ")
    assert extra.line() == ""  # and hung up
    extra.close()
    first.say("QUIT")
    first.close()
    assert greeting_once_free(listener).startswith("220 ")  # the freed slot is taken by the next connection
    second.close()


def test_an_idle_connection_is_closed(serve: Serve) -> None:
    listener = serve(command_timeout=0.2)
    conn = Raw(listener.port)
    assert conn.line().startswith("220 ")
    started = time.monotonic()
    assert conn.line().startswith("421 4.4.2 ")
    assert conn.line() == ""
    assert time.monotonic() - started < 2
    conn.close()


def lmtp_transaction(conn: Raw, recipients: list[str]) -> list[str]:
    assert conn.line().startswith("220 ")
    assert conn.say("LHLO postfix.cal.example.com").startswith("250 ")
    assert conn.say("MAIL FROM:<%s>" % GUEST).startswith("250 ")
    rcpt_replies = [conn.say("RCPT TO:<%s>" % r) for r in recipients]
    assert conn.say("DATA").startswith("354 ")
    conn.sock.sendall(MESSAGE + b".\r\n")
    return rcpt_replies


def test_lmtp_replies_once_per_accepted_recipient(serve: Serve, spool: InboundSpool) -> None:
    listener = serve(protocol="lmtp")
    conn = Raw(listener.port)
    rcpt = lmtp_transaction(conn, [OURS[0], "nobody@cal.example.com", OURS[1]])
    assert [reply[:3] for reply in rcpt] == ["250", "550", "250"]
    after_data = [conn.line(), conn.line()]
    assert [reply[:10] for reply in after_data] == ["250 2.0.0 "] * 2
    assert conn.say("NOOP").startswith("250 ")  # no third reply was waiting
    conn.close()
    assert [entry.recipients for entry in spool.pending()] == [OURS]


def test_lmtp_spool_failure_fails_every_recipient(serve: Serve, spool: InboundSpool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(spool, "accept", broken)
    conn = Raw(serve(protocol="lmtp").port)
    lmtp_transaction(conn, list(OURS))
    assert [conn.line(), conn.line()] == ["451 4.3.0 temporary failure, try again later"] * 2
    assert conn.say("NOOP").startswith("250 ")
    conn.close()


def test_lmtp_with_smtplib(serve: Serve, spool: InboundSpool) -> None:
    listener = serve(protocol="lmtp")
    with smtplib.LMTP("127.0.0.1", listener.port, timeout=5) as lmtp:
        assert lmtp.sendmail(GUEST, [OURS[0]], MESSAGE) == {}
    assert len(spool.pending()) == 1


def self_signed(folder: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cal.example.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_starttls(serve: Serve, spool: InboundSpool, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    listener = serve(tls_cert=cert, tls_key=key)
    context = ssl.create_default_context(cafile=cert)
    context.check_hostname = False
    with client(listener) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
        assert smtp.starttls(context=context)[0] == 220
        smtp.ehlo()
        assert not smtp.has_extn("starttls") and not smtp.has_extn("auth")  # never AUTH: nothing to relay
        assert smtp.sendmail(GUEST, [OURS[0]], MESSAGE) == {}
    assert len(spool.pending()) == 1


def test_a_failed_tls_handshake_frees_its_connection_slot(serve: Serve, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    listener = serve(tls_cert=cert, tls_key=key, max_connections=1)
    conn = Raw(listener.port)
    conn.line()
    conn.say("EHLO client.example.org")
    assert conn.say("STARTTLS").startswith("220 ")
    conn.sock.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not a TLS client hello
    assert conn.line() == ""
    conn.close()
    assert greeting_once_free(listener).startswith("220 ")


def test_unreadable_tls_files_are_a_clear_error(spool: InboundSpool, tmp_path: Path) -> None:
    settings = ListenerSettings(port=0, tls_cert=str(tmp_path / "missing.pem"), tls_key=str(tmp_path / "key.pem"))
    with pytest.raises(OSError, match="cannot use TLS certificate .*missing.pem"):
        Listener(settings, spool, accepts).start()


def test_a_taken_port_is_a_clear_error(serve: Serve, spool: InboundSpool) -> None:
    taken = serve().port
    with pytest.raises(OSError, match="cannot listen on 127.0.0.1:%d for inbound mail" % taken):
        Listener(ListenerSettings(port=taken), spool, accepts).start()


def test_garbage_and_broken_connections_do_not_stop_the_listener(serve: Serve, spool: InboundSpool) -> None:
    listener = serve()
    conn = Raw(listener.port)
    conn.line()
    conn.sock.sendall(b"\xff\xfe garbage\r\n\r\nRCPT TO:<x>\r\n" + b"A" * 5000 + b"\r\n")
    assert [conn.line()[:3] for _ in range(4)] == ["500", "500", "503", "500"]
    for _ in range(5):  # unknown commands: the budget runs out and the listener hangs up
        conn.send("WHAT")
    assert [conn.line()[:3] for _ in range(5)] == ["500"] * 4 + ["502"]
    conn.close()

    cut = Raw(listener.port)  # gone in the middle of DATA
    cut.line()
    cut.say("EHLO client.example.org")
    cut.say("MAIL FROM:<%s>" % GUEST)
    cut.say("RCPT TO:<%s>" % OURS[0])
    cut.say("DATA")
    cut.sock.sendall(b"Subject: half a message\r\n")
    cut.close()

    with client(listener) as smtp:
        assert smtp.sendmail(GUEST, [OURS[0]], MESSAGE) == {}
    assert [entry.raw() for entry in spool.pending()] == [MESSAGE]
