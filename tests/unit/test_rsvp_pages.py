# SPDX-License-Identifier: GPL-3.0-or-later
"""The RSVP pages' answers that the end-to-end tests cannot provoke through a browser: a refused answer
kept in the quarantine, a server error shown as a page, methods and sizes a form never has. The pages are
called as WSGI does, on a real storage on disk."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode

import pytest
import radicale.item as radicale_item
from radicale.config import Configuration

from invito.plugins.imip.inbound_spool import InboundSpool
from invito.plugins.imip.tokens import ReplyTokens
from invito.plugins.itip.components import find_attendee, scheduled
from invito.plugins.rsvp import links
from invito.server.rsvp import RsvpPages
from invito.storage import Storage

GUEST = "mailto:guest@partner.example.org"
EVENT = "\r\n".join([
    "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN", "BEGIN:VEVENT", "UID:meeting-1",
    "DTSTAMP:20300101T000000Z", "DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", "SUMMARY:Plan",
    "ORGANIZER:mailto:alice@example.com", "ATTENDEE;PARTSTAT=ACCEPTED:mailto:alice@example.com",
    f"ATTENDEE;CN=Guest;PARTSTAT=NEEDS-ACTION:{GUEST}", "END:VEVENT", "END:VCALENDAR", ""])
NOW = 1893456000.0  # 2030-01-01


@pytest.fixture
def pages(configuration: Configuration, storage: Storage, tmp_path: Path) -> tuple[RsvpPages, Storage, str]:
    """Pages over alice's event, and the guest's link."""
    with storage.acquire_lock("w"):
        alice = next(iter(storage.discover("/alice/calendar/")))
        alice.upload("meeting.ics", radicale_item.Item(collection_path="alice/calendar", text=EVENT))
    tokens = ReplyTokens(str(tmp_path / "imip" / "tokens"))
    token = tokens.issue("mailto:alice@example.com", "meeting-1", GUEST)
    return RsvpPages(configuration, storage, clock=lambda: NOW), storage, links.path_of(links.Link(token.token),
                                                                                       tokens.sign)


def call(pages: RsvpPages, method: str, path: str, form: dict[str, str] | None = None,
         length: str | None = None) -> tuple[int, dict[str, str], str]:
    body = urlencode(form or {}).encode()
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "REMOTE_ADDR": "192.0.2.7",
               "HTTP_HOST": "cal.example.com", "wsgi.url_scheme": "https", "wsgi.input": io.BytesIO(body),
               "CONTENT_LENGTH": length if length is not None else str(len(body))}
    status, headers, answer = pages(environ)
    return status, headers, answer.decode()


def hidden(page: str) -> dict[str, str]:
    """The form's hidden fields, as a browser sends them back."""
    return {name: page.split(f'name="{name}" value="')[1].split('"')[0] for name in ("form", "seen")}


def test_an_answer_the_event_refuses_is_kept_for_the_admin(pages: tuple[RsvpPages, Storage, str], tmp_path: Path,
                                                           rewrite_copy: Callable[..., None]) -> None:
    site, storage, path = pages

    def answered_in_2099(cal):  # type: ignore[no-untyped-def]
        find_attendee(scheduled(cal)[0], GUEST).params["X-INVITO-REPLY-DTSTAMP"] = "20990101T000000Z"
        return cal
    rewrite_copy("alice", "meeting-1", answered_in_2099)  # an emailed reply from a clock ahead
    _, _, page = call(site, "GET", path)
    status, _, page = call(site, "POST", path, {**hidden(page), "answer": "DECLINED", "comment": "sorry"})
    assert status == 409
    assert "Your answer could not be recorded. Please answer from your mail program, or write to the organizer." \
        in page
    assert "<form" in page  # the guest can still see the event and try again
    spool = InboundSpool(str(tmp_path / "spool" / "inbound"))
    (kept,) = [n for n in os.listdir(spool.quarantined) if n.endswith(".eml")]
    raw = open(os.path.join(spool.quarantined, kept), "rb").read()
    assert b"METHOD:REPLY" in raw and b"PARTSTAT=DECLINED" in raw and b"COMMENT:sorry" in raw
    reason = open(os.path.join(spool.quarantined, kept[:-4] + ".reason"), encoding="utf-8").read()
    assert "out of order" in reason and "(from <guest@partner.example.org> to <rsvp page>" in reason
    assert not os.path.isdir(spool.queue) or os.listdir(spool.queue) == []  # set aside, never queued


def test_a_server_error_is_a_page_not_a_traceback(pages: tuple[RsvpPages, Storage, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    site, storage, path = pages

    def broken(user: str, uid: str) -> None:
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(storage, "read_event", broken)
    status, headers, page = call(site, "GET", path)
    assert status == 500 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Something went wrong on the server, and your answer may not have been recorded." in page
    assert "disk on fire" not in page and "Traceback" not in page


@pytest.mark.parametrize(("method", "length", "status"), [
    ("PUT", None, 405), ("DELETE", None, 405), ("POST", "20000", 413), ("POST", "-1", 413),
    ("POST", "lots", 413),
])
def test_methods_and_sizes_a_form_never_has(pages: tuple[RsvpPages, Storage, str], method: str,
                                            length: str | None, status: int) -> None:
    site, _, path = pages
    got, headers, text = call(site, method, path, length=length)
    assert got == status and headers["Content-Type"] == "text/plain; charset=utf-8"
    assert text.startswith(str(status))
