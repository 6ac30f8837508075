# SPDX-License-Identifier: GPL-3.0-or-later
"""The inbound mail listener: guests' replies to invitations arrive here by SMTP, or by LMTP from Postfix.

It takes mail only for the addresses ``accepts`` knows (reply addresses, Invito's own), so it is never a
relay, and answers 250 only once the message is in the :class:`InboundSpool` (fsynced): mail a sending
server saw accepted is never lost. A failure on our side is a 4xx the sender retries, never aiosmtpd's
``500 Error: (SomeException) text``, which would bounce the reply and show our internals to strangers.

aiosmtpd runs in an asyncio loop on a thread of its own. ``accepts`` and the spool's fsyncs run on that
loop's worker threads, so a slow disk write does not hold up the other sessions.

No client can hold the listener: connections are capped in total and per client address, a connection
has ``transaction_timeout`` seconds after its greeting (or its previous message) to start sending a
message, each command comes within ``command_timeout``, and DATA must keep up ``min_data_rate`` bytes a
second on average. A cut connection hears ``421`` first.

Message lines ending in a bare LF are read as if they ended in CRLF, as Postfix's default
``smtpd_forbid_bare_newline = normalize`` does; the end of DATA is only ever the standard CRLF "." CRLF,
so a ``\n.\r\n`` inside a message never ends it early and cannot smuggle in a second message.
"""
from __future__ import annotations

import asyncio
import logging
import math
import ssl
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, AnyStr, Callable

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from invito.plugins.imip.inbound_spool import InboundSpool
from invito.plugins.imip.spool import out_of_space
from invito.plugins.imip.tokens import redact

logger = logging.getLogger("invito.imip")

PROTOCOLS = ("smtp", "lmtp")
# The greeting's last words per protocol: how `invito check` recognises this listener on a taken port.
IDENTS = {"smtp": "ESMTP Invito", "lmtp": "LMTP Invito"}
TEMPORARY_FAILURE = "451 4.3.0 temporary failure, try again later"
NO_SPACE = "451 4.3.1 insufficient system storage, try again later"
# aiosmtpd's own answers to an oversized message (SIZE= in MAIL, or too much DATA): no RFC 3463 code.
_AIOSMTPD_OVERSIZE = ("552 Error: message size exceeds fixed maximum message size", "552 Error: Too much mail data")


@dataclass(frozen=True)
class ListenerSettings:
    host: str = "127.0.0.1"
    port: int = 8025                # 0: any free port (see Listener.port)
    protocol: str = "smtp"          # smtp | lmtp (behind Postfix: one reply per recipient after DATA, RFC 2033)
    hostname: str = "invito"        # the name in the greeting
    tls_cert: str = ""              # both set: STARTTLS offered
    tls_key: str = ""
    max_bytes: int = 2_000_000      # advertised as SIZE and enforced
    max_recipients: int = 20
    max_connections: int = 50
    max_connections_per_client: int = 10  # from one client address (SMTP; LMTP has one client, the MTA)
    command_timeout: float = 60.0   # idle time allowed before each command (and each DATA line)
    transaction_timeout: float = 60.0  # from the greeting or the previous message to the next DATA
    min_data_rate: float = 500.0    # bytes per second DATA must average, after command_timeout's grace

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError("inbound mail protocol must be one of %s, not %r" % (", ".join(PROTOCOLS), self.protocol))
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("inbound mail TLS needs both a certificate and its key")


class Listener:
    def __init__(self, settings: ListenerSettings, spool: InboundSpool, accepts: Callable[[str], bool]) -> None:
        """``accepts(address)`` says whether mail for that bare envelope address is ours; it is called on a
        worker thread. Raising makes that recipient a temporary failure (451)."""
        self.settings = settings
        self._handler = _Handler(spool, accepts, settings.max_recipients)
        self._session_class = _LmtpSession if settings.protocol == "lmtp" else _SmtpSession
        self._sessions: weakref.WeakSet[_SmtpSession] = weakref.WeakSet()  # weak: a leak never blocks the cap
        self._tls: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port actually listened on (``settings.port`` 0 picks a free one)."""
        return self._server.sockets[0].getsockname()[1] if self._server else self.settings.port

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the inbound mail listener is already running")
        # aiosmtpd logs every command at INFO and every message line at DEBUG: we log our own summary.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self._tls = _tls_context(self.settings)
        self._loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run, args=(self._loop,), name="invito-inbound-mail", daemon=True)
        thread.start()
        host, port = self.settings.host, self.settings.port
        try:
            self._server = asyncio.run_coroutine_threadsafe(
                self._loop.create_server(self._connection, host, port), self._loop).result()
        except BaseException as e:
            self._loop.call_soon_threadsafe(self._loop.stop)
            thread.join()
            self._loop = None
            if isinstance(e, OSError):
                raise OSError(e.errno, "cannot listen on %s:%d for inbound mail: %s" % (host, port, e.strerror or e)) from e
            raise
        self._thread = thread
        logger.info("inbound mail: listening for %s on %s:%d%s", self.settings.protocol.upper(), host, self.port,
                    " (STARTTLS offered)" if self._tls else "")

    def stop(self) -> None:
        """Stop listening and hang up; a spool write in progress still finishes (its sender got no 250 and
        will send again, so at worst a message arrives twice)."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._close)
        self._thread.join()
        self._thread = self._loop = self._server = None
        logger.info("inbound mail: listener stopped")

    def _close(self) -> None:
        assert self._server is not None and self._loop is not None
        self._server.close()
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        self._loop.stop()

    def _connection(self) -> asyncio.Protocol:
        """A new connection's protocol: a gate that admits it to a session or refuses it with 421."""
        return _Gate(self._admit, self.settings.hostname)

    def _admit(self, transport: asyncio.BaseTransport) -> asyncio.Protocol | str:
        """A session for a new connection, or why it is refused (the cap, or its address's share)."""
        peer = transport.get_extra_info("peername")
        if len(self._sessions) >= self.settings.max_connections:
            return "%d connections already open" % self.settings.max_connections
        host = _host(peer)
        # Behind Postfix (LMTP) every connection is Postfix's own: only the total cap applies.
        if self.settings.protocol == "smtp" and sum(
                1 for s in self._sessions if _host(s.session.peer if s.session else None) == host) \
                >= self.settings.max_connections_per_client:
            return "%d connections already open from %s" % (self.settings.max_connections_per_client, host)
        session = self._session_class(self._handler, self.settings, self._tls, self._loop)
        self._sessions.add(session)
        session.on_lost = self._sessions.discard
        return session


class _Handler:
    """aiosmtpd's hooks: which recipients are ours, and into the spool with the message."""

    def __init__(self, spool: InboundSpool, accepts: Callable[[str], bool], max_recipients: int) -> None:
        self.spool = spool
        self.accepts = accepts
        self.max_recipients = max_recipients

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # a hook that takes over EHLO must record the name itself
        return [line for line in responses if not line.startswith("250-AUTH")]  # nothing to log in for

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        peer = _peer(session)
        if len(envelope.rcpt_tos) >= self.max_recipients:
            logger.info("inbound mail: refused recipient <%s> from %s: over %d recipients",
                        _logged(address), peer, self.max_recipients)
            return "452 4.5.3 too many recipients"
        try:
            ours = await asyncio.get_running_loop().run_in_executor(None, self.accepts, address)
        except Exception:
            logger.exception("inbound mail: cannot tell whether <%s> is ours (peer %s)", _logged(address), peer)
            return TEMPORARY_FAILURE
        if not ours:
            logger.info("inbound mail: refused unknown recipient <%s> from <%s>, peer %s",
                        _logged(address), _logged(envelope.mail_from or ""), peer)
            return "550 5.1.1 <%s>: no such recipient here" % _printable(address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from or ""
        recipients = list(dict.fromkeys(envelope.rcpt_tos))
        peer = _peer(session)
        try:
            entry = await asyncio.get_running_loop().run_in_executor(
                None, self.spool.accept, raw, mail_from, recipients, peer)
        except Exception as e:
            if out_of_space(e):
                logger.warning("inbound mail from <%s> (peer %s), %d bytes, refused for now: no space to spool it",
                               _logged(mail_from), peer, len(raw))
                return NO_SPACE
            logger.exception("inbound mail from <%s> (peer %s) refused for now: cannot spool it",
                             _logged(mail_from), peer)
            return TEMPORARY_FAILURE
        logger.info("inbound mail %s accepted: from <%s> to %s, %d bytes, peer %s", entry.id, _logged(mail_from),
                    ", ".join("<%s>" % _logged(r) for r in recipients), len(raw), peer)
        return "250 2.0.0 queued as %s" % entry.id


class _SmtpSession(SMTP):
    """One connection: counted against the cap, timed, and answering only in words we chose."""
    ident = IDENTS["smtp"]
    replies_per_recipient = False

    def __init__(self, handler: _Handler, settings: ListenerSettings, tls: ssl.SSLContext | None,
                 loop: asyncio.AbstractEventLoop | None) -> None:
        super().__init__(handler, hostname=settings.hostname, ident=self.ident, data_size_limit=settings.max_bytes,
                         enable_SMTPUTF8=True, tls_context=tls, timeout=settings.command_timeout,
                         auth_exclude_mechanism=("LOGIN", "PLAIN"), loop=loop)
        self.on_lost: Callable[[_SmtpSession], None] | None = None
        self._settings = settings
        self._replies_due = 0  # LMTP: how many replies the end of DATA gets
        self._in_data = False
        self._transaction_handle: asyncio.TimerHandle | None = None
        self._data_deadline = 0.0  # monotonic; pushed back by each byte received

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_transaction_timer()

    def connection_lost(self, error: Exception | None) -> None:
        if self.on_lost is not None:
            self.on_lost(self)
        if self._transaction_handle is not None:
            self._transaction_handle.cancel()
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        super().eof_received()
        return False  # close now: a client that hung up says nothing more, and its slot is free at once

    async def smtp_DATA(self, arg: str) -> None:
        """DATA read through a reader that normalizes bare LF and keeps time against ``min_data_rate``."""
        reader = self._reader
        self._in_data = True
        self._data_deadline = time.monotonic() + self._settings.command_timeout
        self._reader = _DataReader(reader, self._data_received)  # type: ignore[assignment]
        try:
            await super().smtp_DATA(arg)
        finally:
            self._reader = reader
            self._in_data = False
        self._reset_timeout()
        self._arm_transaction_timer()

    def _data_received(self, size: int) -> None:
        """Each DATA line earns its share of time; the next must come before the idle or the rate limit."""
        rate = self._settings.min_data_rate
        self._data_deadline += size / rate if rate else math.inf
        remaining = min(self._settings.command_timeout, self._data_deadline - time.monotonic())
        if remaining <= 0:
            self._hang_up(self._too_slow())
        else:
            self._reset_timeout(remaining)

    def _arm_transaction_timer(self) -> None:
        if self._transaction_handle is not None:
            self._transaction_handle.cancel()
        self._transaction_handle = self.loop.call_later(self._settings.transaction_timeout, self._transaction_due)

    def _transaction_due(self) -> None:
        if not self._in_data:
            self._hang_up("no message within %g s" % self._settings.transaction_timeout)

    def _timeout_cb(self) -> None:
        slow = self._in_data and time.monotonic() >= self._data_deadline - 0.01
        self._hang_up(self._too_slow() if slow else "idle for %g s" % self._settings.command_timeout)

    def _too_slow(self) -> str:
        return "DATA slower than %g bytes/s" % self._settings.min_data_rate

    def _hang_up(self, why: str) -> None:
        """Close with a 421 the client can read (RFC 5321 §3.8), whatever it was doing."""
        if self.transport is None or self.transport.is_closing():
            return
        logger.info("inbound mail: closed the connection from %s: %s", _peer(self.session), why)
        self.transport.write(("421 4.4.2 %s timeout, closing connection\r\n" % self.hostname).encode("ascii"))
        self.transport.close()

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            if status in _AIOSMTPD_OVERSIZE:
                logger.info("inbound mail: refused a message from %s over %d bytes", _peer(self.session),
                            self.data_size_limit)
                status = "552 5.3.4 message too big (at most %d bytes)" % self.data_size_limit
            if self._replies_due:
                # RFC 2033 §4.2: one reply to the end of DATA for each recipient accepted, success or not
                status, self._replies_due = "\r\n".join([status] * self._replies_due), 0
        await super().push(status)
        if self.replies_per_recipient and isinstance(status, str) and status.startswith("354"):
            assert self.envelope is not None
            self._replies_due = len(self.envelope.rcpt_tos)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            logger.info("inbound mail: TLS handshake with %s failed: %s", _peer(self.session), error.__cause__)
        else:
            logger.error("inbound mail: unexpected error in the session with %s", _peer(self.session), exc_info=error)
        self._set_rset_state()  # the sender starts the transaction over
        return TEMPORARY_FAILURE


class _LmtpSession(_SmtpSession, LMTP):
    ident = IDENTS["lmtp"]
    replies_per_recipient = True


class _Gate(asyncio.Protocol):
    """A new connection, before it has a session: the peer address is known only now. Admitted, the
    transport is handed to its session; refused, 421 instead of the greeting, then hang up (RFC 5321 §3.8)."""

    def __init__(self, admit: Callable[[asyncio.BaseTransport], asyncio.Protocol | str], hostname: str) -> None:
        self._admit = admit
        self.hostname = hostname

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        admitted = self._admit(transport)
        if not isinstance(admitted, str):
            transport.set_protocol(admitted)
            admitted.connection_made(transport)
            return
        logger.warning("inbound mail: refused a connection from %s: %s",
                       _format_peer(transport.get_extra_info("peername")), admitted)
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(("421 4.7.0 %s too many connections, try again later\r\n" % self.hostname).encode("ascii"))
        transport.close()


class _DataReader:
    """The session's stream reader as DATA sees it: lines end in CRLF, bare LF ones normalized.

    aiosmtpd ends DATA at a line that reads exactly ``.\r\n``. Such a line is passed on only when the
    client really sent CRLF "." CRLF; a "." line next to a bare LF is content and comes back dot-stuffed
    (``..\r\n``, which aiosmtpd unstuffs to "."). Every line read is reported to ``received``.
    """

    def __init__(self, reader: asyncio.StreamReader, received: Callable[[int], None]) -> None:
        self._reader = reader
        self._received = received
        self._after_crlf = True  # the DATA command line itself ended the previous line

    async def readuntil(self, separator: bytes = b"\r\n") -> bytes:
        assert separator == b"\r\n"
        line = await self._reader.readuntil(b"\n")
        self._received(len(line))
        after_crlf, self._after_crlf = self._after_crlf, line.endswith(b"\r\n")
        if line == b".\r\n" and after_crlf:
            return line
        if line in (b".\r\n", b".\n"):
            return b"..\r\n"
        return line if line.endswith(b"\r\n") else line[:-1] + b"\r\n"

    async def read(self, n: int = -1) -> bytes:
        """A piece of an over-long line (aiosmtpd discards it): the line goes on."""
        data = await self._reader.read(n)
        self._received(len(data))
        self._after_crlf = False
        return data


def _run(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()
    # Stopped: end the sessions still open, let spool writes in flight finish, then release the loop.
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


def _tls_context(settings: ListenerSettings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except OSError as e:  # ssl.SSLError included
        raise OSError(e.errno, "inbound mail: cannot use TLS certificate %s with key %s: %s"
                      % (settings.tls_cert, settings.tls_key, e.strerror or e)) from e
    return context


def _host(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


def _peer(session: Session | None) -> str:
    return _format_peer(session.peer if session else None)


def _format_peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[:2]
        return ("[%s]:%s" if ":" in str(host) else "%s:%s") % (host, port)
    return str(peer)


def _printable(text: str) -> str:
    """Sender-chosen text fit for a reply: no control characters, no lone surrogates."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _logged(address: str) -> str:
    """An address fit for a log line: printable, and a reply token in it shown only by its tag."""
    return redact(_printable(address))
