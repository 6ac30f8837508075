# SPDX-License-Identifier: GPL-3.0-or-later
"""The RSVP pages' answers that the end-to-end tests cannot provoke through a browser: a refused answer
kept in the quarantine as an answer and given again when released, a server error shown as a page, methods and sizes a form never has. The pages are
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
from invito.plugins.imip.tokens import ReplyTokens, tag
from invito.plugins.itip.components import find_attendee, scheduled
from invito.plugins.rsvp import links
from invito.server.inbound import Processor
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


def answered_in_2099(cal):  # type: ignore[no-untyped-def]
    """The guest's answer as an emailed reply from a clock far ahead left it: later answers are out of order."""
    find_attendee(scheduled(cal)[0], GUEST).params["X-INVITO-REPLY-DTSTAMP"] = "20990101T000000Z"
    return cal


def clock_fixed(cal):  # type: ignore[no-untyped-def]
    del find_attendee(scheduled(cal)[0], GUEST).params["X-INVITO-REPLY-DTSTAMP"]
    return cal


def guest_answer(storage: Storage) -> str:
    stored = storage.read_event("alice", "meeting-1")
    return str(find_attendee(scheduled(stored)[0], GUEST).params["PARTSTAT"])


def refused_on_the_page(site: RsvpPages, rewrite_copy: Callable[..., None], path: str) -> str:
    """The guest declines on the page while the event refuses answers; the page says so."""
    rewrite_copy("alice", "meeting-1", answered_in_2099)
    _, _, page = call(site, "GET", path)
    status, _, page = call(site, "POST", path, {**hidden(page), "answer": "DECLINED", "comment": "sorry"})
    assert status == 409
    return page


def test_an_answer_the_event_refuses_is_kept_for_the_admin_as_an_answer(pages: tuple[RsvpPages, Storage, str],
                                                                        tmp_path: Path, rewrite_copy: Callable[..., None]) -> None:
    site, storage, path = pages
    page = refused_on_the_page(site, rewrite_copy, path)
    assert "Your answer could not be recorded. Please answer from your mail program, or write to the organizer." \
        in page
    assert "<form" in page  # the guest can still see the event and try again
    spool = InboundSpool(str(tmp_path / "spool" / "inbound"))
    (record,) = [n for n in os.listdir(spool.quarantined) if n.endswith(".json")]
    entry_id = record[:-len(".json")]
    assert sorted(os.listdir(spool.quarantined)) == [entry_id + ".json", entry_id + ".reason"]  # no made-up mail
    answer = spool.quarantined_answer(entry_id)
    assert answer is not None
    assert "METHOD:REPLY" in answer.calendar and "PARTSTAT=DECLINED" in answer.calendar
    assert "COMMENT:sorry" in answer.calendar
    token = ReplyTokens(str(tmp_path / "imip" / "tokens")).issue("mailto:alice@example.com", "meeting-1", GUEST)
    assert (answer.guest, answer.organizer, answer.uid, answer.client) == (GUEST, "mailto:alice@example.com",
                                                                          "meeting-1", "192.0.2.7")
    assert answer.token_tag == tag(token.token)
    for name in os.listdir(spool.quarantined):  # the link's token is the guest's key: never kept
        assert token.token not in (Path(spool.quarantined) / name).read_text()
    reason = (Path(spool.quarantined) / (entry_id + ".reason")).read_text()
    assert "given on the RSVP page by <guest@partner.example.org> for event meeting-1" in reason
    assert f"link {answer.token_tag}, browser 192.0.2.7" in reason and "out of order" in reason
    assert not os.path.isdir(spool.queue) or os.listdir(spool.queue) == []  # set aside, never queued
    assert guest_answer(storage) == "NEEDS-ACTION"


def test_a_released_answer_is_given_again(pages: tuple[RsvpPages, Storage, str], configuration: Configuration,
                                          tmp_path: Path, rewrite_copy: Callable[..., None]) -> None:
    site, storage, path = pages
    refused_on_the_page(site, rewrite_copy, path)
    spool = InboundSpool(str(tmp_path / "spool" / "inbound"))
    (record,) = [n for n in os.listdir(spool.quarantined) if n.endswith(".json")]
    rewrite_copy("alice", "meeting-1", clock_fixed)  # what refused it is fixed
    spool.release(record[:-len(".json")])
    [released] = spool.pending()
    assert released.id == record[:-len(".json")] and released.answer is not None
    assert os.listdir(spool.quarantined) == []
    assert Processor(configuration, storage).process_batch() == 1
    assert guest_answer(storage) == "DECLINED"
    assert spool.pending() == [] and os.listdir(spool.quarantined) == []


def test_a_released_answer_still_refused_is_kept_again(pages: tuple[RsvpPages, Storage, str],
                                                       configuration: Configuration, tmp_path: Path, rewrite_copy: Callable[..., None]) -> None:
    site, storage, path = pages
    refused_on_the_page(site, rewrite_copy, path)
    spool = InboundSpool(str(tmp_path / "spool" / "inbound"))
    (record,) = [n for n in os.listdir(spool.quarantined) if n.endswith(".json")]
    entry_id = record[:-len(".json")]
    spool.release(entry_id)
    Processor(configuration, storage).process_batch()
    again = spool.quarantined_answer(entry_id)
    assert again is not None and "COMMENT:sorry" in again.calendar
    assert "out of order" in (Path(spool.quarantined) / (entry_id + ".reason")).read_text()
    assert guest_answer(storage) == "NEEDS-ACTION"


def test_a_released_answer_whose_link_was_never_issued_is_not_given(pages: tuple[RsvpPages, Storage, str],
                                                                    configuration: Configuration,
                                                                    tmp_path: Path, rewrite_copy: Callable[..., None]) -> None:
    """The record names the guest: edited to another guest, it is no answer of theirs (its tag is not theirs)."""
    site, storage, path = pages
    refused_on_the_page(site, rewrite_copy, path)
    rewrite_copy("alice", "meeting-1", clock_fixed)
    spool = InboundSpool(str(tmp_path / "spool" / "inbound"))
    (record,) = [Path(spool.quarantined) / n for n in os.listdir(spool.quarantined) if n.endswith(".json")]
    record.write_text(record.read_text().replace("guest@partner.example.org", "other@partner.example.org"))
    spool.release(record.stem)
    Processor(configuration, storage).process_batch()
    reason = (Path(spool.quarantined) / (record.stem + ".reason")).read_text()
    assert "is not one this server issued" in reason
    assert guest_answer(storage) == "NEEDS-ACTION"


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
