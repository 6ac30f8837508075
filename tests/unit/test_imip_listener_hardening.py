# SPDX-License-Identifier: GPL-3.0-or-later
"""The listener against hostile and sloppy clients, over 127.0.0.1 with raw sockets: bare LF lines,
SMTP smuggling, connections that only hold a slot, and senders that trickle."""
from __future__ import annotations

import select
import socket
import time

from invito.plugins.imip.inbound_spool import InboundSpool
from tests.unit.test_imip_listener import GUEST, OURS, Raw, Serve, serve, spool  # noqa: F401 (fixtures)


def open_transaction(conn: Raw) -> None:
    assert conn.line().startswith("220 ")
    assert conn.say("EHLO client.example.org").startswith("250 ")
    assert conn.say("MAIL FROM:<%s>" % GUEST).startswith("250 ")
    assert conn.say("RCPT TO:<%s>" % OURS[0]).startswith("250 ")
    assert conn.say("DATA").startswith("354 ")


def test_bare_lf_lines_are_accepted_and_normalized(serve: Serve, spool: InboundSpool) -> None:
    conn = Raw(serve().port)
    open_transaction(conn)
    lines = [b"From: guest@partner.example.org", b"Subject: Accepted", b"", b"x" * 900, b"last line"]
    conn.sock.sendall(b"\n".join(lines) + b"\r\n.\r\n")  # LF lines; only the end of data is standard
    assert conn.reply().startswith("250 2.0.0 queued as ")
    conn.close()
    [entry] = spool.pending()
    assert entry.raw() == b"\r\n".join(lines) + b"\r\n"


def test_a_bare_lf_before_the_dot_does_not_end_the_message(serve: Serve, spool: InboundSpool) -> None:
    """SMTP smuggling: ``\\n.\\r\\n`` then a second transaction inside the DATA of the first."""
    conn = Raw(serve().port)
    open_transaction(conn)
    smuggled = ("MAIL FROM:<attacker@evil.example>\r\nRCPT TO:<%s>\r\nDATA\r\n"
                "From: attacker@evil.example\r\nSubject: smuggled\r\n\r\nhello\r\n" % OURS[1]).encode()
    conn.sock.sendall(b"From: guest@partner.example.org\r\nSubject: first\r\n\r\nbody\n.\r\n" + smuggled
                      + b"also\r\n.\nstill content\r\n.\r\n")
    assert conn.reply().startswith("250 2.0.0 queued as ")
    assert conn.say("NOOP").startswith("250 ")  # nothing else was answered: no second transaction ran
    conn.close()
    [entry] = spool.pending()
    assert entry.recipients == (OURS[0],)
    raw = entry.raw()
    assert raw.startswith(b"From: guest@partner.example.org\r\n")
    assert b"MAIL FROM:<attacker@evil.example>" in raw and raw.endswith(b"still content\r\n")


def test_one_address_cannot_take_every_slot(serve: Serve, spool: InboundSpool) -> None:
    listener = serve(max_connections=50, max_connections_per_client=5, transaction_timeout=1.0)
    started = time.monotonic()
    idle = [Raw(listener.port) for _ in range(50)]  # all from 127.0.0.1
    greetings = [conn.line() for conn in idle]
    assert sum(g.startswith("220 ") for g in greetings) == 5
    assert sum(g.startswith("421 4.7.0 ") for g in greetings) == 45
    other = socket.create_connection(("127.0.0.1", listener.port), timeout=5, source_address=("127.0.0.2", 0))
    conn = Raw.__new__(Raw)
    conn.sock, conn.file = other, other.makefile("rb")
    open_transaction(conn)
    conn.sock.sendall(b"Subject: a normal reply\r\n\r\nyes\r\n.\r\n")
    assert conn.reply().startswith("250 2.0.0 ")
    conn.close()
    assert len(spool.pending()) == 1
    held = [conn for conn, greeting in zip(idle, greetings) if greeting.startswith("220 ")]
    for conn in held:  # sending nothing does not keep a slot
        assert conn.line().startswith("421 4.4.2 ")
        assert conn.line() == ""
    assert time.monotonic() - started < 3
    for conn in idle:
        conn.close()


def test_a_message_must_start_within_the_transaction_timeout(serve: Serve) -> None:
    conn = Raw(serve(command_timeout=5, transaction_timeout=0.5).port)
    assert conn.line().startswith("220 ")
    started = time.monotonic()
    assert conn.say("EHLO client.example.org").startswith("250 ")
    assert conn.say("MAIL FROM:<%s>" % GUEST).startswith("250 ")
    while (reply := conn.say("RSET")).startswith("250 "):  # busy, but never sending a message
        time.sleep(0.1)
        assert time.monotonic() - started < 3
    assert reply.startswith("421 4.4.2 ")
    conn.close()


def test_a_trickling_sender_is_cut_off(serve: Serve, spool: InboundSpool) -> None:
    conn = Raw(serve(command_timeout=0.5, min_data_rate=100).port)
    open_transaction(conn)
    started = time.monotonic()
    cut = b""
    while not cut and time.monotonic() - started < 5:  # 30 bytes/s, each line well within the idle limit
        try:
            conn.sock.sendall(b"x\r\n")
        except OSError:
            break
        if select.select([conn.sock], [], [], 0.1)[0]:
            cut = conn.sock.recv(100)
    cut = cut.decode()
    assert cut.startswith("421 4.4.2 ")
    assert time.monotonic() - started < 2
    conn.close()
    assert spool.pending() == []


def test_a_message_at_a_fair_rate_is_not_cut(serve: Serve, spool: InboundSpool) -> None:
    conn = Raw(serve(command_timeout=0.5, min_data_rate=100).port)
    open_transaction(conn)
    for _ in range(10):  # 1 s in all, far beyond the grace, but 200 bytes/s
        conn.sock.sendall(b"y" * 18 + b"\r\n")
        time.sleep(0.1)
    conn.sock.sendall(b".\r\n")
    assert conn.reply().startswith("250 ")
    conn.close()
    assert len(spool.pending()) == 1


def test_each_message_gives_the_connection_time_for_the_next(serve: Serve, spool: InboundSpool) -> None:
    conn = Raw(serve(command_timeout=5, transaction_timeout=0.8).port)
    open_transaction(conn)
    for number in range(3):  # 1.5 s in all on one connection, each message well within 0.8 s of the last
        conn.sock.sendall(b"Subject: %d\r\n\r\nyes\r\n.\r\n" % number)
        assert conn.reply().startswith("250 ")
        time.sleep(0.5)
        if number < 2:
            assert conn.say("MAIL FROM:<%s>" % GUEST).startswith("250 ")
            assert conn.say("RCPT TO:<%s>" % OURS[0]).startswith("250 ")
            assert conn.say("DATA").startswith("354 ")
    conn.close()
    assert len(spool.pending()) == 3


def test_without_a_minimum_rate_only_silence_cuts_data(serve: Serve, spool: InboundSpool) -> None:
    conn = Raw(serve(command_timeout=0.5, min_data_rate=0).port)
    open_transaction(conn)
    for _ in range(12):  # 1.2 s at 30 bytes/s
        conn.sock.sendall(b"x\r\n")
        time.sleep(0.1)
    conn.sock.sendall(b".\r\n")
    assert conn.reply().startswith("250 ")
    conn.close()
    assert len(spool.pending()) == 1


def test_behind_an_mta_lmtp_connections_share_only_the_total_cap(serve: Serve) -> None:
    listener = serve(protocol="lmtp", max_connections=6, max_connections_per_client=2)
    conns = [Raw(listener.port) for _ in range(7)]  # Postfix delivers in parallel, all from 127.0.0.1
    greetings = [conn.line()[:4] for conn in conns]
    assert greetings == ["220 "] * 6 + ["421 "]
    for conn in conns:
        conn.close()
