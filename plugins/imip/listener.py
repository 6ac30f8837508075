# SPDX-License-Identifier: GPL-3.0-or-later
"""The inbound mail listener: guests' replies to invitations arrive here by SMTP, or by LMTP from Postfix.

It takes mail only for the addresses ``accepts`` knows (reply addresses, Invito's own), so it is never a
relay, and answers 250 only once the message is in the :class:`InboundSpool` (fsynced): mail a sending
server saw accepted is never lost. A failure on our side is a 4xx the sender retries, never aiosmtpd's
``500 Error: (SomeException) text``, which would bounce the reply and show our internals to strangers.

aiosmtpd runs in an asyncio loop on a thread of its own. ``accepts`` and the spool's fsyncs run on that
loop's worker threads, so a slow disk write does not hold up the other sessions.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import weakref
from dataclasses import dataclass
from typing import Any, AnyStr, Callable

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from invito.plugins.imip.inbound_spool import InboundSpool

logger = logging.getLogger("invito.imip")

PROTOCOLS = ("smtp", "lmtp")
TEMPORARY_FAILURE = "451 4.3.0 temporary failure, try again later"
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
    command_timeout: float = 60.0   # idle time allowed before each command
    data_timeout: float = 300.0     # the whole DATA phase

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
        """A new connection's protocol: a session, or a 421 when the cap is reached."""
        if len(self._sessions) >= self.settings.max_connections:
            return _Busy(self.settings.hostname, self.settings.max_connections)
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
                        _printable(address), peer, self.max_recipients)
            return "452 4.5.3 too many recipients"
        try:
            ours = await asyncio.get_running_loop().run_in_executor(None, self.accepts, address)
        except Exception:
            logger.exception("inbound mail: cannot tell whether <%s> is ours (peer %s)", _printable(address), peer)
            return TEMPORARY_FAILURE
        if not ours:
            logger.info("inbound mail: refused unknown recipient <%s> from <%s>, peer %s",
                        _printable(address), _printable(envelope.mail_from or ""), peer)
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
        except Exception:
            logger.exception("inbound mail from <%s> (peer %s) refused for now: cannot spool it",
                             _printable(mail_from), peer)
            return TEMPORARY_FAILURE
        logger.info("inbound mail %s accepted: from <%s> to %s, %d bytes, peer %s", entry.id, _printable(mail_from),
                    ", ".join("<%s>" % _printable(r) for r in recipients), len(raw), peer)
        return "250 2.0.0 queued as %s" % entry.id


class _SmtpSession(SMTP):
    """One connection: counted against the cap, timed, and answering only in words we chose."""
    ident = "ESMTP Invito"
    replies_per_recipient = False

    def __init__(self, handler: _Handler, settings: ListenerSettings, tls: ssl.SSLContext | None,
                 loop: asyncio.AbstractEventLoop | None) -> None:
        super().__init__(handler, hostname=settings.hostname, ident=self.ident, data_size_limit=settings.max_bytes,
                         enable_SMTPUTF8=True, tls_context=tls, timeout=settings.command_timeout,
                         auth_exclude_mechanism=("LOGIN", "PLAIN"), loop=loop)
        self.on_lost: Callable[[_SmtpSession], None] | None = None
        self._data_timeout = settings.data_timeout
        self._replies_due = 0  # LMTP: how many replies the end of DATA gets

    def connection_lost(self, error: Exception | None) -> None:
        if self.on_lost is not None:
            self.on_lost(self)
        super().connection_lost(error)

    async def smtp_DATA(self, arg: str) -> None:
        self._reset_timeout(self._data_timeout)  # one limit for the whole DATA phase, not per line
        await super().smtp_DATA(arg)
        self._reset_timeout()

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
    ident = "LMTP Invito"
    replies_per_recipient = True


class _Busy(asyncio.Protocol):
    """A connection over the cap: 421 instead of the greeting, then hang up (RFC 5321 §3.8)."""

    def __init__(self, hostname: str, cap: int) -> None:
        self.hostname = hostname
        self.cap = cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        logger.warning("inbound mail: refused a connection from %s: %d already open",
                       _format_peer(transport.get_extra_info("peername")), self.cap)
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(("421 4.7.0 %s too many connections, try again later\r\n" % self.hostname).encode("ascii"))
        transport.close()


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


def _peer(session: Session | None) -> str:
    return _format_peer(session.peer if session else None)


def _format_peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[:2]
        return ("[%s]:%s" if ":" in str(host) else "%s:%s") % (host, port)
    return str(peer)


def _printable(text: str) -> str:
    """Sender-chosen text fit for a log line or a reply: no control characters, no lone surrogates."""
    return "".join(c if c.isprintable() else "?" for c in text)
