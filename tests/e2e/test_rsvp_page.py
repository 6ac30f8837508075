# SPDX-License-Identifier: GPL-3.0-or-later
"""Guests answer on the RSVP page: the links in the invitation the server mailed, followed over real HTTP
on 127.0.0.1, and the organizer's event, inbox and notification read back as alice's client and mail
program would see them."""
from __future__ import annotations

import html
import re
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Callable, Iterator

import caldav
import icalendar
import pytest
import requests

from tests.e2e.conftest import Server, free_port, start, stop
from tests.e2e.mailsink import MailSink
from tests.e2e.test_invitations_by_mail import mail_settings, review, to
from tests.e2e.test_scheduling import attendee, calendar, copy_of, event, inbox_methods

GRACE = "mailto:grace@client.example.net"
GINO = "mailto:gino@partner.example.org"
LINK = re.compile(r"https?://[^\s\"<>]+/\.invito/rsvp/[^\s\"<>]+")


def rsvp_settings(relay_port: int, port: int, **rsvp: str) -> dict[str, dict[str, str]]:
    settings = mail_settings(relay_port)
    settings["rsvp"] = {"public_url": f"http://127.0.0.1:{port}", **rsvp}
    return settings


def serve(tmp_path: Path, relay_port: int, **rsvp: str) -> tuple[object, Server]:
    port = free_port()
    return start(tmp_path, rsvp_settings(relay_port, port, **rsvp), port=port)


@pytest.fixture
def site(tmp_path: Path, relay: tuple[int, MailSink]) -> Iterator[tuple[Server, MailSink]]:
    proc, srv = serve(tmp_path, relay[0])
    try:
        yield srv, relay[1]
    finally:
        stop(proc)


def body(message: EmailMessage, subtype: str) -> str:
    part = next(p for p in message.walk() if p.get_content_type() == f"text/{subtype}")
    return part.get_content()


def answer_links(message: EmailMessage) -> dict[str, str]:
    """accept / tentative / decline → the link in the invitation's text body."""
    found = {}
    for url in LINK.findall(body(message, "plain")):
        found[re.search(r"answer=(\w+)", url).group(1)] = url
    return found


def invite(srv: Server, sink: MailSink) -> tuple[str, dict[str, EmailMessage]]:
    """Alice invites Gino and Grace to the review; the invitations as their mail programs received them."""
    uid = str(uuid.uuid4())
    already = len(sink.received)
    calendar(srv, "alice").save_event(review(uid))
    received = sink.wait_for(already + 2)[already:]
    return uid, {GRACE: to(received, "grace@client.example.net")[0], GINO: to(received, "gino@partner.example.org")[0]}


def form_of(page: str) -> dict[str, str]:
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))
    fields["action"] = html.unescape(re.search(r'<form method="post" action="([^"]+)"', page).group(1))
    return fields


def post_answer(srv: Server, link: str, partstat: str, comment: str = "", **headers: str) -> requests.Response:
    """What the browser does on the page: load it, then submit its form with one of the buttons."""
    page = requests.get(link, timeout=10)
    assert page.status_code == 200, page.text
    form = form_of(page.text)
    return requests.post(srv.url.rstrip("/") + form.pop("action"),
                         data={**form, "answer": partstat, "comment": comment},
                         headers=headers, allow_redirects=False, timeout=10)


def edit(srv: Server, uid: str, change: Callable[[icalendar.Calendar], None]) -> None:
    """Alice edits the event as her client does: read, change, save with If-Match; when the server wrote
    meanwhile (the mail sender records each guest's delivery status), read again and redo the change."""
    for _ in range(10):
        obj = srv.principal("alice").calendar(cal_id="work").event_by_uid(uid)
        cal = icalendar.Calendar.from_ical(obj.data)
        change(cal)
        obj.data = cal.to_ical().decode()
        try:
            obj.save()
            return
        except caldav.lib.error.ETagMismatchError:
            time.sleep(0.2)
    raise AssertionError(f"alice could not save {uid}")


def vevent_of(cal: icalendar.Calendar) -> icalendar.cal.Event:
    return next(iter(cal.walk("VEVENT")))


def partstat(srv: Server, uid: str, guest: str) -> str:
    return str(attendee(copy_of(srv, "alice", uid), guest).params.get("PARTSTAT"))


def schedule_tag(srv: Server, uid: str) -> str:
    obj = srv.principal("alice").calendar(cal_id="work").event_by_uid(uid)
    response = requests.get(str(obj.url), auth=("alice", "secret-pw-123"), timeout=10)
    return response.headers["Schedule-Tag"]


def text_of(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_invitations_carry_answer_links_in_both_bodies(site: tuple[Server, MailSink]) -> None:
    srv, sink = site
    _, mails = invite(srv, sink)
    links = answer_links(mails[GRACE])
    assert set(links) == {"accept", "tentative", "decline"}
    assert all(link.startswith(srv.url.rstrip("/") + "/.invito/rsvp/") and "lang=en" in link for link in links.values())
    html_body = body(mails[GRACE], "html")
    for link in links.values():
        assert html.escape(link) in html_body
    for label in ("Accept", "Maybe", "Decline"):
        assert f">{label}</a>" in html_body
    # Each guest has their own link, in their own language (Gino's ATTENDEE says LANGUAGE=it).
    gino = answer_links(mails[GINO])
    assert gino["accept"].split("?")[0] != links["accept"].split("?")[0]
    assert "lang=it" in gino["accept"] and ">Accetta</a>" in body(mails[GINO], "html")


def test_opening_a_link_shows_the_event_and_changes_nothing(site: tuple[Server, MailSink]) -> None:
    srv, sink = site
    uid, mails = invite(srv, sink)
    links = answer_links(mails[GRACE])
    for link in links.values():  # what a mail scanner does: follow every link
        page = requests.get(link, timeout=10)
        assert page.status_code == 200
        assert page.headers["Cache-Control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    shown = text_of(requests.get(links["accept"], timeout=10).text)
    for expected in ("Quarterly review", "Thursday, 10 October 2030, 09:00 – 19:00 (Central European Summer Time)",
                     "Sala Verde", "Alice", "alice@example.com", "Numbers and plans",
                     "agenda.pdf (attached to the invitation email)", "You chose “Accept” in the invitation email",
                     "Your answer so far: awaiting reply."):
        assert expected in shown, (expected, shown[-1200:])
    time.sleep(1)
    assert partstat(srv, uid, GRACE) == "NEEDS-ACTION"
    assert inbox_methods(srv, "alice", uid) == []
    assert not [r for r in sink.received if "alice@example.com" in r.recipients]


def test_an_answer_on_the_page_is_recorded_like_an_emailed_reply(site: tuple[Server, MailSink]) -> None:
    srv, sink = site
    uid, mails = invite(srv, sink)
    tag = schedule_tag(srv, uid)
    already = len(sink.received)
    response = post_answer(srv, answer_links(mails[GRACE])["accept"], "ACCEPTED",
                           comment="Happy to join,\r\nI will bring the figures.")
    assert response.status_code == 303
    thanks = requests.get(srv.url.rstrip("/") + response.headers["Location"], timeout=10)
    assert "Thank you: your answer “Accept” has been sent to Alice." in text_of(thanks.text)
    assert "Your answer so far: accepted." in text_of(thanks.text)
    guest = attendee(copy_of(srv, "alice", uid), GRACE)
    assert guest.params["PARTSTAT"] == "ACCEPTED"
    assert partstat(srv, uid, GINO) == "NEEDS-ACTION"
    assert schedule_tag(srv, uid) == tag  # a reply never changes the organizer's Schedule-Tag
    assert inbox_methods(srv, "alice", uid) == ["REPLY"]
    notification = to(sink.wait_for(already + 1)[already:], "alice@example.com")[0]
    assert notification["Subject"].startswith("Accepted: Quarterly review")
    assert "Happy to join, I will bring the figures." in body(notification, "plain")
    # Changing one's mind works the same way, and the same answer twice sends nothing more.
    assert post_answer(srv, answer_links(mails[GRACE])["decline"], "DECLINED").status_code == 303
    assert partstat(srv, uid, GRACE) == "DECLINED"
    sink.wait_for(already + 2)
    assert post_answer(srv, answer_links(mails[GRACE])["decline"], "DECLINED").status_code == 303
    time.sleep(1)
    assert len(sink.received) == already + 2
    assert inbox_methods(srv, "alice", uid) == ["REPLY", "REPLY"]
    # The log tells the story without the link, which is the guest's key.
    log = srv.log.read_text()
    token = re.search(r"/rsvp/([a-z2-7]{32})", answer_links(mails[GRACE])["accept"]).group(1)
    assert f"rsvp ACCEPTED uid={uid} attendee={GRACE}: REPLY from {GRACE}: applied\n" in log
    assert f"rsvp DECLINED uid={uid} attendee={GRACE}: REPLY from {GRACE}: applied before, nothing changed\n" in log
    assert token not in log


def test_forms_from_elsewhere_or_tampered_change_nothing(site: tuple[Server, MailSink]) -> None:
    srv, sink = site
    uid, mails = invite(srv, sink)
    link = answer_links(mails[GRACE])["accept"]
    path = link.split("?")[0]
    forged = requests.post(path, data={"answer": "DECLINED"}, allow_redirects=False, timeout=10)
    assert forged.status_code == 403
    assert "did not come from this server. Nothing was sent" in text_of(forged.text)
    other_site = post_answer(srv, link, "DECLINED", Origin="https://evil.example")
    assert other_site.status_code == 403
    form = form_of(requests.get(link, timeout=10).text)
    stamp = form["form"]
    tampered = requests.post(path, data={"form": str(int(stamp.split(".")[0]) + 1) + "." + stamp.split(".")[1],
                                         "answer": "DECLINED"}, allow_redirects=False, timeout=10)
    assert tampered.status_code == 403
    no_answer = requests.post(path, data={"form": stamp, "seen": form["seen"], "answer": "MAYBE-LATER"},
                              allow_redirects=False, timeout=10)
    assert no_answer.status_code == 400 and "Please choose Accept, Maybe or Decline." in text_of(no_answer.text)
    # A form for Gino's link does not answer for Grace.
    gino_form = form_of(requests.get(answer_links(mails[GINO])["accept"], timeout=10).text)
    swapped = requests.post(path, data={"form": gino_form["form"], "answer": "DECLINED"}, allow_redirects=False,
                            timeout=10)
    assert swapped.status_code == 403
    assert partstat(srv, uid, GRACE) == "NEEDS-ACTION"
    # The browser's own Origin is fine.
    assert post_answer(srv, link, "TENTATIVE", Origin=srv.url.rstrip("/")).status_code == 303
    assert partstat(srv, uid, GRACE) == "TENTATIVE"


def test_a_time_changed_while_the_page_was_open_is_shown_before_anything_is_sent(site: tuple[Server, MailSink]) -> None:
    srv, sink = site
    uid, mails = invite(srv, sink)
    link = answer_links(mails[GRACE])["accept"]
    opened = form_of(requests.get(link, timeout=10).text)
    def to_14(cal: icalendar.Calendar) -> None:  # the organizer moves the meeting to 14:00 while Grace reads
        vevent_of(cal)["DTSTART"].dt = vevent_of(cal)["DTSTART"].dt.replace(hour=14)
    edit(srv, uid, to_14)
    late = requests.post(srv.url.rstrip("/") + opened.pop("action"), data={**opened, "answer": "ACCEPTED"},
                         allow_redirects=False, timeout=10)
    assert late.status_code == 409
    shown = text_of(late.text)
    assert "The organizer has changed the time of this event since you opened this page. Nothing was sent" in shown
    assert "Thursday, 10 October 2030, 14:00 – 19:00" in shown
    assert partstat(srv, uid, GRACE) == "NEEDS-ACTION"
    # Answering the page as it is now works; an edit that moves nothing does not get in the way.
    again = form_of(late.text)
    edit(srv, uid, lambda cal: vevent_of(cal).__setitem__("SUMMARY", "Quarterly review (Q3)"))
    done = requests.post(srv.url.rstrip("/") + again.pop("action"), data={**again, "answer": "ACCEPTED"},
                         allow_redirects=False, timeout=10)
    assert done.status_code == 303
    assert partstat(srv, uid, GRACE) == "ACCEPTED"


def test_links_that_lead_nowhere_say_why(site: tuple[Server, MailSink]) -> None:
    srv, sink = site
    uid, mails = invite(srv, sink)
    base = srv.url.rstrip("/") + "/.invito/rsvp/"
    for bad in ("a" * 32, "not-a-token", "a" * 32 + "/20301010T070000Z.aaaaaaaaaaaaaaaa"):
        page = requests.get(base + bad, timeout=10)
        assert page.status_code == 404
        assert "This link does not work" in page.text and "Traceback" not in page.text
    grace = answer_links(mails[GRACE])["accept"]
    gino = answer_links(mails[GINO])["accept"]
    # Gino taken off the guest list: his link says so, and his answer cannot be given any more.
    def without_gino(cal: icalendar.Calendar) -> None:
        vevent_of(cal)["ATTENDEE"] = [a for a in vevent_of(cal)["ATTENDEE"] if str(a).lower() != GINO]
    edit(srv, uid, without_gino)
    page = requests.get(gino, timeout=10)
    assert page.status_code == 403 and "Non sei più tra gli invitati" in page.text  # Gino reads Italian
    stale_form = requests.post(gino.split("?")[0], data={"answer": "ACCEPTED"}, allow_redirects=False, timeout=10,
                               headers={"Accept-Language": "en"})
    assert stale_form.status_code == 403 and "You are no longer invited" in stale_form.text
    # Cancelled, then deleted.
    edit(srv, uid, lambda cal: vevent_of(cal).__setitem__("STATUS", "CANCELLED"))
    assert "This event has been cancelled" in requests.get(grace, timeout=10).text
    srv.principal("alice").calendar(cal_id="work").event_by_uid(uid).delete()
    page = requests.get(grace, timeout=10)
    assert page.status_code == 410 and "This event no longer exists" in page.text


def test_a_guest_invited_to_one_occurrence_answers_for_it(site: tuple[Server, MailSink]) -> None:
    srv, sink = site
    uid = str(uuid.uuid4())
    occurrence = "\r\n".join([
        "BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20300101T000000Z", "RECURRENCE-ID:20301017T090000Z",
        "DTSTART:20301017T090000Z", "DTEND:20301017T100000Z", "SUMMARY:Weekly sync",
        "ORGANIZER;CN=Alice:mailto:alice@example.com", "ATTENDEE;CN=Alice;PARTSTAT=ACCEPTED:mailto:alice@example.com",
        "ATTENDEE;CN=Bob;PARTSTAT=NEEDS-ACTION:mailto:bob@example.com",
        f"ATTENDEE;CN=Grace Hopper;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:{GRACE}", "END:VEVENT"])
    already = len(sink.received)
    calendar(srv, "alice").save_event(event(uid, summary="Weekly sync", attendees=("bob",),
                                            extra="RRULE:FREQ=WEEKLY;COUNT=8", components=occurrence))
    invitation = to(sink.wait_for(already + 1)[already:], "grace@client.example.net")[0]
    link = answer_links(invitation)["accept"]
    assert re.search(r"/\.invito/rsvp/[a-z2-7]{32}/20301017T090000Z\.[a-z2-7]{16}\?", link)
    page = text_of(requests.get(link, timeout=10).text)
    assert "Thursday, 17 October 2030, 09:00 – 10:00 (Coordinated Universal Time)" in page
    assert "This answer is for this date only." in page
    assert post_answer(srv, link, "ACCEPTED").status_code == 303
    stored = copy_of(srv, "alice", uid)
    assert attendee(stored, GRACE, "20301017T090000Z").params["PARTSTAT"] == "ACCEPTED"
    assert attendee(stored, "mailto:bob@example.com").params["PARTSTAT"] == "NEEDS-ACTION"


def test_answers_close_when_the_event_is_over(site: tuple[Server, MailSink]) -> None:
    srv, sink = site
    uid, mails = invite(srv, sink)
    link = answer_links(mails[GRACE])["accept"]
    assert requests.get(link, timeout=10).status_code == 200
    def a_year_ago(cal: icalendar.Calendar) -> None:  # the organizer moves it into the past
        for name in ("DTSTART", "DTEND"):
            vevent_of(cal)[name].dt = vevent_of(cal)[name].dt.replace(year=2020)
    edit(srv, uid, a_year_ago)
    page = requests.get(link, timeout=10)
    assert page.status_code == 410
    assert "This event is over" in page.text and "<form" not in page.text


def test_pages_speak_the_guests_language(site: tuple[Server, MailSink]) -> None:
    srv, sink = site
    _, mails = invite(srv, sink)
    gino = answer_links(mails[GINO])["decline"]
    page = requests.get(gino, timeout=10)
    assert page.headers["Content-Language"] == "it"
    shown = text_of(page.text)
    assert "Parteciperai?" in shown and "giovedì 10 ottobre 2030" in shown and "Rifiuta" in shown
    # Without the email's choice: the browser's languages, then the guest's LANGUAGE parameter.
    bare = gino.split("?")[0]
    assert requests.get(bare, headers={"Accept-Language": "en-GB,en;q=0.9"}, timeout=10).headers[
        "Content-Language"] == "en"
    assert requests.get(bare, headers={"Accept-Language": "fr"}, timeout=10).headers["Content-Language"] == "it"
    grace = answer_links(mails[GRACE])["accept"].split("?")[0]
    assert requests.get(grace, headers={"Accept-Language": "it-IT;q=0.8, de"}, timeout=10).headers[
        "Content-Language"] == "it"
    assert requests.get(srv.url.rstrip("/") + "/.invito/rsvp/nothing", headers={"Accept-Language": "it"},
                        timeout=10).text.count("Questo link non funziona") == 2  # title and heading


def test_each_client_has_a_request_budget(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    proc, srv = serve(tmp_path, relay[0], requests_per_minute="5")
    try:
        link = srv.url.rstrip("/") + "/.invito/rsvp/" + "b" * 32
        statuses = [requests.get(link, timeout=10).status_code for _ in range(6)]
        assert statuses == [404] * 5 + [429]
        refused = requests.get(link, timeout=10)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "Too many requests" in refused.text
        # CalDAV is not part of the budget.
        assert srv.principal("alice").calendars() is not None
    finally:
        stop(proc)
