# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile and sloppy inbound mail against a real `invito serve`: guests' replies over SMTP on 127.0.0.1
(smtplib and raw sockets), the organizer's event read back with the caldav client, the quarantine and the
server log read from disk."""
from __future__ import annotations

import base64
import email
import email.policy
import os
import re
import select
import smtplib
import socket
import stat
import subprocess
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Iterator

import caldav
import pytest

from tests.e2e.conftest import Server, free_port, inbound_pending, quarantined_entries, start, stop
from tests.e2e.mailsink import MailSink, start_sink
from tests.e2e.test_invitations_by_mail import calendar_part, review
from tests.e2e.test_replies_by_mail import GINO, GRACE, answer, inbound_settings, send, wait_listening, \
    wait_partstat
from tests.e2e.test_scheduling import attendee, copy_of

TIMING = {"command_timeout": "1.5", "transaction_timeout": "2", "min_data_rate": "200"}


class Site:
    """One server for the module: its listener port, the relay's sink, and Alice's calendar."""

    def __init__(self, srv: Server, sink: MailSink, listen: int) -> None:
        self.srv, self.sink, self.listen = srv, sink, listen
        self.calendar: caldav.Calendar = srv.principal("alice").make_calendar(name="work", cal_id="work")

    def invite(self) -> tuple[str, dict[str, EmailMessage]]:
        """Alice invites Gino and Grace; their invitations as their mail programs received them."""
        uid = str(uuid.uuid4())
        self.calendar.save_event(review(uid))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            mine = {}
            for received in list(self.sink.received):
                for guest in (GINO, GRACE):
                    if guest[len("mailto:"):] in received.recipients and _uid(received.message) == uid:
                        mine[guest] = received.message
            if len(mine) == 2:
                return uid, mine
            time.sleep(0.05)
        raise AssertionError("the invitations did not arrive")

    def reasons(self) -> set[str]:
        """The ids of what the quarantine holds."""
        return {entry.id for entry in quarantined_entries(self.srv)}

    def new_reason(self, before: set[str], timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = [entry for entry in quarantined_entries(self.srv) if entry.id not in before]
            if new and all(entry.mail_from is not None for entry in new):  # the move is complete
                [entry] = new
                return entry.reason
            time.sleep(0.1)
        raise AssertionError("nothing was quarantined")


def _uid(message: EmailMessage) -> str | None:
    try:
        _, ics = calendar_part(message)
    except AssertionError:
        return None
    return str(next(iter(ics.walk("VEVENT")))["UID"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("inbound")
    relay = free_port()
    controller, sink = start_sink(relay)
    listen = free_port()
    previous = os.umask(0o022)  # as a user's shell has it: Invito itself must keep its files private
    try:
        proc, srv = start(tmp, inbound_settings(relay, listen, **TIMING))
    finally:
        os.umask(previous)
    try:
        wait_listening(listen)
        yield Site(srv, sink, listen)
    finally:
        stop(proc)
        controller.stop()


def token_address(invitation: EmailMessage) -> str:
    _, ics = calendar_part(invitation)
    return str(next(iter(ics.walk("VEVENT")))["ORGANIZER"])[len("mailto:"):]


def partstat(site: Site, uid: str, guest: str) -> str:
    return str(attendee(copy_of(site.srv, "alice", uid), guest).params.get("PARTSTAT"))


def conversation(port: int, source: str = "127.0.0.1") -> tuple[socket.socket, "Lines"]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock, Lines(sock)


class Lines:
    def __init__(self, sock: socket.socket) -> None:
        self.file = sock.makefile("rb")

    def __call__(self) -> str:
        return self.file.readline().decode("ascii").rstrip("\r\n")


def transaction(sock: socket.socket, line: Lines, recipient: str) -> None:
    assert line().startswith("220 ")
    for command, code in (("EHLO client.example.net", "250"), ("MAIL FROM:<grace@client.example.net>", "250"),
                          (f"RCPT TO:<{recipient}>", "250"), ("DATA", "354")):
        sock.sendall(command.encode() + b"\r\n")
        reply = line()
        while reply[3:4] == "-":
            reply = line()
        assert reply.startswith(code), (command, reply)


# -- bare LF and smuggling ------------------------------------------------------------------------------

def test_a_reply_with_bare_lf_lines_is_applied(site: Site) -> None:
    uid, invitations = site.invite()
    to, raw = answer(invitations[GRACE], GRACE, "ACCEPTED")
    lf_only = raw.replace(b"\r\n", b"\n")
    with smtplib.SMTP("127.0.0.1", site.listen, timeout=10) as smtp:  # bytes go as they are, LF and all
        assert smtp.sendmail("grace@client.example.net", [to], lf_only) == {}
    wait_partstat(site.srv, uid, GRACE, "ACCEPTED")


def test_a_smuggled_second_message_is_never_split_off(site: Site) -> None:
    uid, invitations = site.invite()
    grace_to, grace = answer(invitations[GRACE], GRACE, "ACCEPTED")
    gino_to, forged = answer(invitations[GINO], GINO, "DECLINED", sender="gino@partner.example.org")
    smuggled = (b"\n.\r\nMAIL FROM:<gino@partner.example.org>\r\nRCPT TO:<" + gino_to.encode() + b">\r\nDATA\r\n"
                + forged + b"\r\n.\r\n")
    sock, line = conversation(site.listen)
    transaction(sock, line, grace_to)
    sock.sendall(grace.rstrip(b"\r\n") + smuggled)  # ends with the real CRLF.CRLF of the forged part
    assert line().startswith("250 2.0.0 queued as ")
    sock.sendall(b"NOOP\r\n")
    assert line().startswith("250 ")  # the one reply to DATA: no MAIL, RCPT or second DATA was obeyed
    sock.sendall(b"QUIT\r\n")
    sock.close()
    wait_partstat(site.srv, uid, GRACE, "ACCEPTED")
    assert partstat(site, uid, GINO) == "NEEDS-ACTION"
    assert inbound_pending(site.srv) == []  # nothing else waiting to be applied
    assert partstat(site, uid, GINO) == "NEEDS-ACTION"


# -- headers no genuine reply has ---------------------------------------------------------------------

@pytest.mark.parametrize("extra, expected", [
    (b"From: attacker@evil.example\r\n", "2 From headers"),
    (b"".join(b"Received: from mx%d.example.net by mx%d.example.net; Thu, 3 Dec 2026 10:00:00 +0000\r\n"
              % (i, i + 1) for i in range(60)), "mail loop"),
], ids=["two-from", "sixty-received"])
def test_a_reply_with_two_authors_or_from_a_loop_is_quarantined(site: Site, extra: bytes, expected: str) -> None:
    uid, invitations = site.invite()
    to, raw = answer(invitations[GRACE], GRACE, "DECLINED")
    before = site.reasons()
    send(site.listen, to, extra + raw)
    reason = site.new_reason(before)
    assert expected in reason
    assert partstat(site, uid, GRACE) == "NEEDS-ACTION"


# -- calendar parts no genuine reply has --------------------------------------------------------------

def calendar_mail(invitation: EmailMessage, cte: str, body: bytes) -> tuple[str, bytes]:
    to, _ = answer(invitation, GRACE, "ACCEPTED")
    return to, (f"From: grace@client.example.net\r\nTo: {to}\r\nSubject: Accepted: Quarterly review\r\n"
                "MIME-Version: 1.0\r\nContent-Type: text/calendar; method=REPLY; charset=utf-8\r\n"
                f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode() + body


def reply_ics(invitation: EmailMessage) -> bytes:
    _, raw = answer(invitation, GRACE, "ACCEPTED", shape="outlook")
    data = email.message_from_bytes(raw, policy=email.policy.compat32).get_payload(decode=True)
    assert isinstance(data, bytes) and b"PARTSTAT=ACCEPTED" in data
    return data


def broken_base64(ics: bytes) -> tuple[str, bytes]:
    encoded = base64.encodebytes(ics)
    return "base64", encoded[:100] + b"*!*" + encoded[100:]


@pytest.mark.parametrize("make, expected", [
    (broken_base64, "base64 is broken"),
    (lambda ics: ("x-gzip64", ics), "Content-Transfer-Encoding 'x-gzip64' is unknown"),
    (lambda ics: ("8bit", b"\xef\xbb\xbf" + ics), "byte order mark"),
    (lambda ics: ("8bit", ics.replace(b"SUMMARY:", b"SUMMARY:\x00")), "NUL"),
    (lambda ics: ("8bit", ics.replace(b"PARTSTAT=ACCEPTED", b"PARTSTAT=")), "PARTSTAT="),
    (lambda ics: ("8bit", ics.replace(b"PARTSTAT=ACCEPTED", b"PARTSTAT=X-FOO")), "PARTSTAT=X-FOO"),
], ids=["broken-base64", "unknown-cte", "bom", "nul", "empty-partstat", "x-partstat"])
def test_a_damaged_calendar_part_is_quarantined_with_the_reason(site: Site, make, expected: str) -> None:
    uid, invitations = site.invite()
    cte, body = make(reply_ics(invitations[GRACE]))
    to, raw = calendar_mail(invitations[GRACE], cte, body)
    before = site.reasons()
    send(site.listen, to, raw)
    assert expected in site.new_reason(before)
    assert partstat(site, uid, GRACE) == "NEEDS-ACTION"
    to, good = calendar_mail(invitations[GRACE], "8bit", reply_ics(invitations[GRACE]))
    send(site.listen, to, good)  # the same answer, undamaged, is applied
    wait_partstat(site.srv, uid, GRACE, "ACCEPTED")


# -- clients that only hold a connection ----------------------------------------------------------------

def test_idle_connections_from_one_address_do_not_block_a_reply_from_another(site: Site) -> None:
    uid, invitations = site.invite()
    opened = time.monotonic()
    idle = [conversation(site.listen) for _ in range(50)]  # 127.0.0.1, saying nothing
    greetings = [line() for _, line in idle]
    assert sum(g.startswith("220 ") for g in greetings) == 10  # max_connections_per_client
    assert all(g.startswith("421 4.7.0 ") for g in greetings if not g.startswith("220 "))
    slow, slow_line = conversation(site.listen, "127.0.0.3")
    to, raw = answer(invitations[GINO], GINO, "TENTATIVE")
    transaction(slow, slow_line, to)
    cut: list[bytes] = []
    trickle = threading.Thread(target=lambda: cut.append(trickled(slow, opened + 10)))
    trickle.start()

    sock, line = conversation(site.listen, "127.0.0.2")  # meanwhile, a normal reply
    to, raw = answer(invitations[GRACE], GRACE, "ACCEPTED")
    transaction(sock, line, to)
    sock.sendall(raw + b".\r\n")
    assert line().startswith("250 2.0.0 ")
    sock.close()
    wait_partstat(site.srv, uid, GRACE, "ACCEPTED")

    trickle.join()
    assert cut[0].startswith(b"421 4.4.2 ")
    slow.close()
    for (sock, line), greeting in zip(idle, greetings):  # the held slots are freed too
        if greeting.startswith("220 "):
            assert line().startswith("421 4.4.2 ")
        assert line() == ""
        sock.close()
    assert time.monotonic() - opened < 10
    assert partstat(site, uid, GINO) == "NEEDS-ACTION"
    assert re.search(r"closed the connection from 127\.0\.0\.3:\d+: DATA slower", site.srv.log.read_text())


def trickled(sock: socket.socket, until: float) -> bytes:
    """Send a message line every 0.1 s (30 bytes/s; min_data_rate is 200) until the server answers."""
    while time.monotonic() < until:
        sock.sendall(b"x\r\n")
        if select.select([sock], [], [], 0.1)[0]:
            return sock.recv(200)
    return b""


# -- what the server writes --------------------------------------------------------------------------

def test_the_log_names_reply_tokens_by_a_tag_only(site: Site) -> None:
    uid, invitations = site.invite()
    to, raw = answer(invitations[GRACE], GRACE, "ACCEPTED")
    token = re.fullmatch(r"invito\+([a-z2-7]{32})@cal\.example\.com", to)
    assert token is not None
    send(site.listen, to, raw)
    wait_partstat(site.srv, uid, GRACE, "ACCEPTED")
    log = site.srv.log.read_text()
    assert re.search(r"inbound mail \S+ accepted: from <grace@client\.example\.net> to "
                     r"<invito\+tok-[0-9a-f]{10}@cal\.example\.com>", log)
    assert token.group(1) not in log.lower()
    assert not re.search(r"invito\+[a-z2-7]{32}@", log, re.IGNORECASE)  # nor any other guest's, all module long


@pytest.mark.only_backend("files")  # the data folder's modes; on the database it holds no calendars, tokens or spools
def test_files_created_under_a_loose_umask_are_private(site: Site) -> None:
    site.invite()  # calendars, tokens, outbound and inbound spools all exist by now
    data = site.srv.data
    for sub in ("collections", "imip/tokens", "spool/inbound/queue"):
        assert (data / sub).exists(), sub
    loose = []
    for folder, dirs, files in os.walk(data):
        for name in [*dirs, *files]:
            mode = stat.S_IMODE(os.lstat(os.path.join(folder, name)).st_mode)
            if mode & 0o077:
                loose.append((os.path.join(folder, name), oct(mode)))
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert loose == []


# -- a full disk --------------------------------------------------------------------------------------

@pytest.fixture
def small_disks(tmp_path: Path) -> Iterator[Site]:
    """A server whose inbound spool (512 KiB) and calendars (4 MiB) are on small tmpfs mounts of their own,
    so the kernel itself answers ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("mounting small tmpfs file systems needs root (CI runs as root)")
    mounts = [(tmp_path / "data" / "spool" / "inbound", "512k"), (tmp_path / "data" / "collections", "4m")]
    mounted: list[Path] = []
    relay, listen = free_port(), free_port()
    controller, sink = start_sink(relay)
    proc = None
    try:
        for folder, size in mounts:
            folder.mkdir(parents=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
                           check=True)
            mounted.append(folder)
        proc, srv = start(tmp_path, inbound_settings(relay, listen))
        wait_listening(listen)
        yield Site(srv, sink, listen)
    finally:
        if proc is not None:
            stop(proc)
        controller.stop()
        for folder in reversed(mounted):
            subprocess.run(["umount", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Take every free byte of ``folder``'s file system."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
                    f.flush()
            except OSError:
                pass
    return filler


@pytest.mark.only_backend("files")  # ENOSPC of the spool's and the calendars' own file systems (tmpfs mounts)
def test_a_full_disk_delays_replies_and_loses_none(small_disks: Site) -> None:
    site = small_disks
    uid, invitations = site.invite()
    spool = site.srv.data / "spool" / "inbound"

    # Receiving: too big for the spool's disk is 451 4.3.1, and nothing of it stays behind.
    to, raw = answer(invitations[GRACE], GRACE, "ACCEPTED")
    big = raw.replace(b"\r\n\r\n", b"\r\n" + b"".join(b"X-Padding-%d: %s\r\n" % (i, b"p" * 900)
                                                      for i in range(700)) + b"\r\n", 1)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(site.listen, to, big)
    assert (refused.value.smtp_code, refused.value.smtp_error[:6]) == (451, b"4.3.1 ")
    assert os.listdir(spool / "tmp") == []
    send(site.listen, to, raw)  # a normal reply right after is accepted and applied
    wait_partstat(site.srv, uid, GRACE, "ACCEPTED")

    # Applying: no room for the organizer's event; the reply waits in the queue, not in the quarantine.
    filler = fill(site.srv.data / "collections")
    to, raw = answer(invitations[GINO], GINO, "DECLINED", sender="gino@partner.example.org")
    send(site.listen, to, raw, sender="gino@partner.example.org")
    deadline = time.monotonic() + 20
    while "no space left on disk to process it" not in site.srv.log.read_text():
        assert time.monotonic() < deadline, "the processor never met the full disk"
        time.sleep(0.1)
    assert len(list((spool / "queue").glob("*.json"))) == 1
    assert not site.reasons()
    filler.unlink()  # space is back
    wait_partstat(site.srv, uid, GINO, "DECLINED")
    assert not list((spool / "queue").glob("*.json")) and not site.reasons()
