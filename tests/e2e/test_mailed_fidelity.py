# SPDX-License-Identifier: GPL-3.0-or-later
"""The guest's mailed invitation keeps the organizer's event: every property, parameter and value of real
clients' events (tests/data/roundtrip) reaches the external guest's ``.ics`` (the text/calendar part and
the attachment, as received by the relay) as the organizer's client wrote it, apart from what iTIP must
change: the ORGANIZER address (the guest's reply-token address), METHOD, the message's stamp and
sequence, DTEND written for DURATION, server parameters, the organizer's alarms, calendar-level
properties, and the X- properties that are one program's private state (mime's shared list is sent).
Compared with ``semantic.differences``, so no iCalendar library judges its own output."""
from __future__ import annotations

import re
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.conftest import free_port, start, stop
from tests.e2e.mailsink import start_sink
from tests.e2e.semantic import Allowed
from tests.e2e.test_fidelity import BOB, CORPUS, DELIVERED, GRACE, Site, assert_same, corpus_text, put, unfolded
from tests.e2e.test_invitations_by_mail import to
from tests.e2e.test_replies_by_mail import inbound_settings, wait_listening

# X- properties every participant's program reads (plugins/imip/mime.py sends these and no other X-).
SHARED_X = ("X-MICROSOFT-", "X-ALT-DESC", "X-GOOGLE-CONFERENCE", "X-APPLE-STRUCTURED-LOCATION")
MAILED = DELIVERED | Allowed(properties=frozenset({"ORGANIZER"}), answers_of=frozenset({GRACE}))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Site]:
    relay_port, listen = free_port(), free_port()
    controller, sink = start_sink(relay_port)
    proc, srv = start(tmp_path_factory.mktemp("mailed"), inbound_settings(relay_port, listen))
    try:
        wait_listening(listen)
        srv.principal("alice").make_calendar(name="work", cal_id="work")
        yield Site(srv, sink, listen)
    finally:
        stop(proc)
        controller.stop()


def shared_only(text: str) -> str:
    """``text`` less the X- properties of events that are one program's private state (not mailed)."""
    lines, within = [], []
    for line in unfolded(text).splitlines():
        name = re.split(r"[;:]", line, maxsplit=1)[0].upper()
        if name == "BEGIN":
            within.append(line[len("BEGIN:"):].upper())
        elif name == "END":
            within.pop()
        elif within[1:] in (["VEVENT"], ["VTODO"]) and name.startswith("X-") and not name.startswith(SHARED_X):
            continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def mailed_calendars(site: Site, uid: str) -> dict[str, str]:
    """Grace's invitation for ``uid`` as her mail program reads it: the text/calendar part and the
    attached .ics, decoded from the message the relay received."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for message in to(site.sink.received, GRACE):
            parts = _calendar_parts(message)
            if any(f"UID:{uid}" in unfolded(text) for text in parts.values()):
                return parts
        time.sleep(0.1)
    raise AssertionError("Grace got no invitation for %s" % uid)


def _calendar_parts(message: EmailMessage) -> dict[str, str]:
    return {part.get_content_type(): part.get_payload(decode=True).decode("utf-8")
            for part in message.walk() if part.get_content_type() in ("text/calendar", "application/ics")}


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_the_guests_mailed_calendar_keeps_every_line_of_the_organizers_event(site: Site, path: Path) -> None:
    uid = str(uuid.uuid4())
    sent = corpus_text(path, uid)
    assert GRACE in unfolded(sent) and BOB in unfolded(sent)
    put(site.srv, "alice", uid, sent)
    parts = mailed_calendars(site, uid)
    assert set(parts) == {"text/calendar", "application/ics"}
    for kind, got in parts.items():
        assert_same(shared_only(sent), got, MAILED, f"Grace's mailed calendar ({kind})")
