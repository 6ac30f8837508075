# SPDX-License-Identifier: GPL-3.0-or-later
"""A real SMTP relay for tests: aiosmtpd on 127.0.0.1 that keeps what it receives.

``refuse`` maps recipient addresses to the SMTP reply the sink gives them (e.g. "550 5.1.1 no such user"),
so tests can provoke permanent and temporary failures the way a real relay would.
"""
from __future__ import annotations

import asyncio
import email
import email.parser
import email.policy
import functools
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Callable

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    sender: str
    recipients: list[str]
    raw: bytes

    @functools.cached_property
    def message(self) -> EmailMessage:
        """Parsed when a test first reads it, not while the relay holds the sender's connection."""
        return email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[return-value]

    @functools.cached_property
    def headers(self) -> EmailMessage:
        """Only the header, parsed: cheap for a test that counts thousands of messages."""
        return email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(self.raw)  # type: ignore[return-value]


@dataclass
class MailSink:
    refuse: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    delay: float = 0.0  # seconds each DATA takes, like a slow relay
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        with self._lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address.lower() in self.refuse:
            return self.refuse[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or b""))
        return "250 Message accepted"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} messages, the sink has {len(self.received)}")

    def wait_one(self, wanted: Callable[[Received], bool], timeout: float = 20.0) -> Received:
        """The first message received that is ``wanted``, waiting for it to arrive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [r for r in self.received if wanted(r)]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no such message among the sink's {len(self.received)}")


def start_sink(port: int, sink: MailSink | None = None) -> tuple[Controller, MailSink]:
    sink = sink or MailSink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, sink
