# SPDX-License-Identifier: GPL-3.0-or-later
"""Handing messages to the site's SMTP relay, and telling the caller what the relay said.

One connection serves a whole batch (``close`` ends it), so 500 invitations cost one TLS handshake and
one login. Each ``send`` returns an ``Outcome`` instead of raising: the sender needs to tell a refused
recipient (permanent, the organizer must fix the address) from a relay that is down, misconfigured or
not trusted (temporary: the admin fixes it and the spool catches up; no invitation is lost meanwhile).
That is why TLS, login and MAIL FROM failures are temporary even when the relay answers 5xx: they say
nothing about the message, and the next message would fail the same way (``Stage.RELAY``).
"""
from __future__ import annotations

import enum
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

SECURITY = ("none", "starttls", "tls")


@dataclass(frozen=True)
class SmtpSettings:
    """The ``[smtp]`` section. ``host`` empty: not configured, nothing is sent."""
    host: str = ""
    port: int = 587
    security: str = "starttls"  # none | starttls | tls; certificates are always verified
    cafile: str = ""            # CA bundle for the relay's certificate; empty: the system's
    username: str = ""          # empty: no login
    password_file: str = ""     # first line is the password; read at each connection, never logged
    sender: str = ""            # envelope sender (MAIL FROM)
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.security not in SECURITY:
            raise ValueError("[smtp] security must be one of %s, not %r" % (", ".join(SECURITY), self.security))

    @property
    def relay(self) -> str:
        return "%s:%d" % (self.host, self.port)


class Delivery(enum.Enum):
    SENT = "sent"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


class Stage(enum.Enum):
    """What an outcome is about."""
    RELAY = "relay"          # connection, TLS, login, sender: every message of the batch is affected
    RECIPIENT = "recipient"  # RCPT TO: this address
    MESSAGE = "message"      # DATA (or its size): this message


@dataclass(frozen=True)
class Outcome:
    delivery: Delivery
    detail: str               # the relay's reply ("550 5.1.1 no such user") or the local error
    stage: Stage = Stage.MESSAGE
    code: int | None = None   # SMTP reply code, when the relay gave one


class ConfigProblem(Exception):
    """A local setting the relay connection needs is unusable (file missing, unreadable)."""


class SmtpTransport:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._conn: smtplib.SMTP | None = None

    def send(self, msg: EmailMessage, from_addr: str, to_addr: str) -> Outcome:
        reused = self._conn is not None
        outcome = self._attempt(msg, from_addr, to_addr)
        if reused and self._conn is None and outcome.delivery is Delivery.TEMPORARY:
            # The relay ended a connection it had served before (idle too long, or its limit of messages
            # per connection, often a 421): that says nothing about this message. Once more, fresh.
            return self._attempt(msg, from_addr, to_addr)
        return outcome

    def _attempt(self, msg: EmailMessage, from_addr: str, to_addr: str) -> Outcome:
        try:
            conn = self._connection()
        except (OSError, ConfigProblem) as e:  # smtplib's exceptions are OSErrors too
            return Outcome(Delivery.TEMPORARY, self.describe(e), Stage.RELAY, _code(e))
        try:
            conn.send_message(msg, from_addr, [to_addr])
        except smtplib.SMTPRecipientsRefused as e:
            code, text = e.recipients.get(to_addr) or next(iter(e.recipients.values()))
            outcome = _refused(code, text, Stage.RECIPIENT)
        except smtplib.SMTPSenderRefused as e:  # 552 at MAIL FROM refuses the SIZE smtplib announced
            outcome = _refused(e.smtp_code, e.smtp_error, Stage.MESSAGE if e.smtp_code == 552 else Stage.RELAY)
        except smtplib.SMTPDataError as e:
            outcome = _refused(e.smtp_code, e.smtp_error, Stage.MESSAGE)
        except smtplib.SMTPNotSupportedError:  # non-ASCII address, relay without SMTPUTF8
            outcome = Outcome(Delivery.PERMANENT, "%s does not support SMTPUTF8, needed for %s"
                              % (self.settings.relay, to_addr), Stage.RECIPIENT)
        except smtplib.SMTPResponseException as e:
            outcome = _refused(e.smtp_code, e.smtp_error, Stage.RELAY)
        except OSError as e:  # disconnected, reset, timed out: the connection is unusable
            self._drop()
            return Outcome(Delivery.TEMPORARY, self.describe(e), Stage.RELAY)
        else:
            return Outcome(Delivery.SENT, "accepted by %s" % self.settings.relay)
        if conn.sock is None:  # smtplib closes the connection itself on a 421
            self._drop()
        return outcome

    def connect(self) -> None:
        """Connect, secure and log in now, as a batch's first ``send`` does, but send nothing: how `invito check`
        tries the relay. Raises OSError (smtplib's and ssl's errors are OSErrors) or ConfigProblem, both of
        which ``describe`` words for the admin. ``send`` then uses this connection; ``close`` ends it."""
        self._connection()

    def close(self) -> None:
        """End the batch: QUIT politely, or just drop a connection that is already broken."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except OSError:
            conn.close()

    def _connection(self) -> smtplib.SMTP:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = _tls_context(s.cafile) if s.security != "none" else None
        conn = (smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context) if s.security == "tls"
                else smtplib.SMTP(s.host, s.port, timeout=s.timeout))
        try:
            if s.security == "starttls":
                conn.starttls(context=context)
            if s.username:
                conn.login(s.username, _password(s.password_file))
        except BaseException:
            conn.close()
            raise
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def describe(self, e: BaseException) -> str:
        """A connection error (see ``connect``) in words for the admin's log."""
        relay = self.settings.relay
        if isinstance(e, ConfigProblem):
            return str(e)
        if isinstance(e, ssl.SSLCertVerificationError):
            return "TLS: the certificate of %s is not trusted: %s" % (relay, e.verify_message)
        if isinstance(e, ssl.SSLError):
            return "TLS with %s failed: %s" % (relay, e.reason or e)
        if isinstance(e, smtplib.SMTPAuthenticationError):
            return "%s refused the login as %s: %s" % (relay, self.settings.username, _reply(e.smtp_code, e.smtp_error))
        if isinstance(e, smtplib.SMTPResponseException):
            return "%s: %s" % (relay, _reply(e.smtp_code, e.smtp_error))
        if isinstance(e, TimeoutError):
            return "%s did not answer within %g s" % (relay, self.settings.timeout)
        if isinstance(e, smtplib.SMTPException):
            return "%s: %s" % (relay, e)
        return "cannot reach %s: %s" % (relay, getattr(e, "strerror", None) or e)


def _refused(code: int, text: bytes | str, stage: Stage) -> Outcome:
    """4xx: try again later. 5xx: final for this recipient or message; 421 or odd codes: the relay."""
    if code == 421 or not 400 <= code < 600:
        stage = Stage.RELAY
    permanent = code >= 500 and stage is not Stage.RELAY
    return Outcome(Delivery.PERMANENT if permanent else Delivery.TEMPORARY, _reply(code, text), stage, code)


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "%d %s" % (code, " ".join(text.split()))  # a multi-line reply on one log line


def _code(e: BaseException) -> int | None:
    return e.smtp_code if isinstance(e, smtplib.SMTPResponseException) else None


def _tls_context(cafile: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=cafile or None)
    except (OSError, ssl.SSLError) as e:
        raise ConfigProblem("cannot load [smtp] cafile %s: %s" % (cafile, getattr(e, "strerror", None) or e)) from e


def _password(path: str) -> str:
    if not path:
        raise ConfigProblem("[smtp] username is set but password_file is empty")
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except OSError as e:
        raise ConfigProblem("cannot read [smtp] password_file %s: %s" % (path, e.strerror or e)) from e
