# SPDX-License-Identifier: GPL-3.0-or-later
"""The RSVP pages' answers that the end-to-end tests cannot provoke through a browser: a refused answer
kept in the quarantine as an answer and given again when released, a server error shown as a page, methods and sizes a form never has. The pages are
called as WSGI does, on a real storage of either backend; the quarantine is read through its admin interface
(``plugins.imip.queues.InboundAdmin``), as `invito queue` reads it."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode

import pytest
import radicale.item as radicale_item
from radicale.config import Configuration

from invito.plugins.imip.inbound_spool import InboundSpool
from invito.plugins.imip.tokens import tag
from invito.plugins.itip.components import find_attendee, scheduled
from invito.plugins.rsvp import links
from invito.server import queue_admin
from invito.server.inbound import Processor
from invito.server.rsvp import RsvpPages
from invito.storage import Storage, backend
from invito.storage.pg.inbound import InboundQueue

GUEST = "mailto:guest@partner.example.org"
EVENT = "\r\n".join([
    "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN", "BEGIN:VEVENT", "UID:meeting-1",
    "DTSTAMP:20300101T000000Z", "DTSTART:20301010T090000Z", "DTEND:20301010T100000Z", "SUMMARY:Plan",
    "ORGANIZER:mailto:alice@example.com", "ATTENDEE;PARTSTAT=ACCEPTED:mailto:alice@example.com",
    f"ATTENDEE;CN=Guest;PARTSTAT=NEEDS-ACTION:{GUEST}", "END:VEVENT", "END:VCALENDAR", ""])
NOW = 1893456000.0  # 2030-01-01


@pytest.fixture
def pages(configuration: Configuration, storage: Storage) -> tuple[RsvpPages, Storage, str]:
    """Pages over alice's event, and the guest's link."""
    with storage.acquire_lock("w"):
        alice = next(iter(storage.discover("/alice/calendar/")))
        alice.upload("meeting.ics", radicale_item.Item(collection_path="alice/calendar", text=EVENT))
    tokens = backend.tokens(configuration)
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


def kept_records(spool: InboundSpool | InboundQueue, entry_id: str) -> list[str]:
    """Everything the quarantine keeps of ``entry_id``, as text: its files, or its database row."""
    if isinstance(spool, InboundSpool):
        return [(Path(spool.quarantined) / n).read_text() for n in sorted(os.listdir(spool.quarantined))
                if n.startswith(entry_id)]
    with spool.db.read() as conn:
        return [str(value) for value in conn.execute("SELECT * FROM invito_inbound WHERE id = %s",
                                                     (entry_id,)).fetchone()]


def edit_kept_answer(spool: InboundSpool | InboundQueue, entry_id: str, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in the kept answer's fields, as someone with the files or the database
    could."""
    if isinstance(spool, InboundSpool):
        record = Path(spool.quarantined) / (entry_id + ".json")
        record.write_text(record.read_text().replace(old, new))
        return
    with spool.db.write() as conn:
        (answer,) = conn.execute("SELECT answer FROM invito_inbound WHERE id = %s", (entry_id,)).fetchone()
        conn.execute("UPDATE invito_inbound SET answer = %s WHERE id = %s",
                     (json.dumps(answer).replace(old, new), entry_id))


def refused_on_the_page(site: RsvpPages, rewrite_copy: Callable[..., None], path: str) -> str:
    """The guest declines on the page while the event refuses answers; the page says so."""
    rewrite_copy("alice", "meeting-1", answered_in_2099)
    _, _, page = call(site, "GET", path)
    status, _, page = call(site, "POST", path, {**hidden(page), "answer": "DECLINED", "comment": "sorry"})
    assert status == 409
    return page


def test_an_answer_the_event_refuses_is_kept_for_the_admin_as_an_answer(pages: tuple[RsvpPages, Storage, str],
                                                                        configuration: Configuration,
                                                                        rewrite_copy: Callable[..., None]) -> None:
    site, storage, path = pages
    page = refused_on_the_page(site, rewrite_copy, path)
    assert "Your answer could not be recorded. Please answer from your mail program, or write to the organizer." \
        in page
    assert "<form" in page  # the guest can still see the event and try again
    spool = backend.inbound(configuration)
    (entry,) = spool.quarantined_entries()
    entry_id = entry.id
    with pytest.raises(FileNotFoundError):  # no made-up mail
        spool.quarantined_mail(entry_id)
    answer = spool.quarantined_answer(entry_id)
    assert answer is not None and entry.answer == answer
    assert "METHOD:REPLY" in answer.calendar and "PARTSTAT=DECLINED" in answer.calendar
    assert "COMMENT:sorry" in answer.calendar
    token = backend.tokens(configuration).issue("mailto:alice@example.com", "meeting-1", GUEST)
    assert (answer.guest, answer.organizer, answer.uid, answer.client) == (GUEST, "mailto:alice@example.com",
                                                                          "meeting-1", "192.0.2.7")
    assert answer.token_tag == tag(token.token)
    kept = kept_records(spool, entry_id)
    assert kept and all(token.token not in text for text in kept)  # the link's token is the guest's key: never kept
    shown = "\n".join(queue_admin.show(queue_admin.Spools(backend.outbound(configuration), spool, configuration),
                                        queue_admin.QUARANTINED, entry_id).lines)  # as `invito queue show` tells it
    assert "given on the RSVP page by guest@partner.example.org for uid=meeting-1" in shown
    assert f"link {answer.token_tag}, browser 192.0.2.7" in shown and "out of order" in entry.reason
    assert spool.pending() == []  # set aside, never queued
    assert guest_answer(storage) == "NEEDS-ACTION"


def test_a_released_answer_is_given_again(pages: tuple[RsvpPages, Storage, str], configuration: Configuration,
                                          rewrite_copy: Callable[..., None]) -> None:
    site, storage, path = pages
    refused_on_the_page(site, rewrite_copy, path)
    spool = backend.inbound(configuration)
    (entry_id,) = spool.quarantined_ids()
    rewrite_copy("alice", "meeting-1", clock_fixed)  # what refused it is fixed
    spool.release(entry_id)
    [released] = spool.pending()
    assert released.id == entry_id and released.answer is not None
    assert spool.quarantined_ids() == set()
    assert Processor(configuration, storage).process_batch() == 1
    assert guest_answer(storage) == "DECLINED"
    assert spool.pending() == [] and spool.quarantined_ids() == set()


def test_a_released_answer_still_refused_is_kept_again(pages: tuple[RsvpPages, Storage, str],
                                                       configuration: Configuration, rewrite_copy: Callable[..., None]) -> None:
    site, storage, path = pages
    refused_on_the_page(site, rewrite_copy, path)
    spool = backend.inbound(configuration)
    (entry_id,) = spool.quarantined_ids()
    spool.release(entry_id)
    Processor(configuration, storage).process_batch()
    again = spool.quarantined_answer(entry_id)
    assert again is not None and "COMMENT:sorry" in again.calendar
    assert "out of order" in spool.quarantined_entry(entry_id).reason
    assert guest_answer(storage) == "NEEDS-ACTION"


def test_a_released_answer_whose_link_was_never_issued_is_not_given(pages: tuple[RsvpPages, Storage, str],
                                                                    configuration: Configuration,
                                                                    rewrite_copy: Callable[..., None]) -> None:
    """The record names the guest: edited to another guest, it is no answer of theirs (its tag is not theirs)."""
    site, storage, path = pages
    refused_on_the_page(site, rewrite_copy, path)
    rewrite_copy("alice", "meeting-1", clock_fixed)
    spool = backend.inbound(configuration)
    (entry_id,) = spool.quarantined_ids()
    edit_kept_answer(spool, entry_id, "guest@partner.example.org", "other@partner.example.org")
    answer = spool.quarantined_answer(entry_id)
    assert answer is not None and answer.guest == "mailto:other@partner.example.org"
    spool.release(entry_id)
    Processor(configuration, storage).process_batch()
    assert "is not one this server issued" in spool.quarantined_entry(entry_id).reason
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
