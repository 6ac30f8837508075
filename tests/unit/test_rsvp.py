# SPDX-License-Identifier: GPL-3.0-or-later
"""The RSVP page's pure parts: signed links and forms, what a link may answer, the REPLY it builds (applied
by the iTIP core as an emailed one is), the request budget; and the links in the invitation email."""
from __future__ import annotations

import email
import email.policy
import re
from datetime import date, datetime, timezone
from pathlib import Path

import icalendar
import pytest
from radicale.config import Configuration

from invito.plugins.imip.tokens import ReplyTokens
from invito.plugins.itip import Applied, apply
from invito.plugins.itip.components import find_attendee, scheduled
from invito.plugins.rsvp import links
from invito.plugins.rsvp.answer import COMMENT_LIMIT, State, assess, changed_since, reply, seen
from invito.plugins.rsvp.ratelimit import RateLimiter
from invito.server import config as invito_config
from invito.server.mail import Composer
from invito.storage import backend
from invito.plugins.imip.spool import SpoolEntry

TOKEN = "abcdefghijklmnopqrstuvwxyz234567"
OTHER = "bbcdefghijklmnopqrstuvwxyz234567"
GUEST = "mailto:grace@client.example.net"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def sign(tmp_path: Path):  # type: ignore[no-untyped-def]
    return ReplyTokens(str(tmp_path / "tokens")).sign


def event(*lines: str, start: str = "20301010T090000Z", end: str = "20301010T100000Z",
          guests: tuple[str, ...] = (GUEST,), overrides: tuple[str, ...] = ()) -> icalendar.Calendar:
    attendees = [f"ATTENDEE;CN=Grace Hopper;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:{g}" for g in guests]
    text = "\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//test//EN",
        "BEGIN:VEVENT", "UID:review", "DTSTAMP:20300101T000000Z", f"DTSTART:{start}", f"DTEND:{end}",
        "SEQUENCE:2", "SUMMARY:Quarterly review", "ORGANIZER;CN=Alice:mailto:alice@example.com",
        "ATTENDEE;CN=Alice;PARTSTAT=ACCEPTED:mailto:alice@example.com", *attendees, *lines, "END:VEVENT",
        *overrides, "END:VCALENDAR", ""])
    return icalendar.Calendar.from_ical(text)


def override(rid: str, *lines: str, guests: tuple[str, ...] = (GUEST,)) -> str:
    start = rid
    end = rid[:9] + "1" + rid[10:]
    return "\r\n".join(["BEGIN:VEVENT", "UID:review", "DTSTAMP:20300101T000000Z", f"RECURRENCE-ID:{rid}",
                        f"DTSTART:{start}", f"DTEND:{end}", "SEQUENCE:3", "SUMMARY:Quarterly review",
                        "ORGANIZER;CN=Alice:mailto:alice@example.com",
                        *[f"ATTENDEE;PARTSTAT=TENTATIVE:{g}" for g in guests], *lines, "END:VEVENT"])


# -- links and forms ------------------------------------------------------------------------------------

def test_links_name_the_token_and_a_signed_occurrence(sign) -> None:  # type: ignore[no-untyped-def]
    assert links.parse(links.PREFIX + TOKEN, sign) == links.Link(TOKEN)
    assert links.parse(links.PREFIX + TOKEN.upper() + "/", sign) == links.Link(TOKEN)
    occurrence = links.Link(TOKEN, "20301017T090000Z")
    path = links.path_of(occurrence, sign)
    assert re.fullmatch(r"/\.invito/rsvp/[a-z2-7]{32}/20301017T090000Z\.[a-z2-7]{16}", path)
    assert links.parse(path, sign) == occurrence
    assert links.parse(path.lower(), sign) == occurrence  # a mail system that changed the case
    for instance in ("20301017", "20301017T090000"):
        assert links.parse(links.path_of(links.Link(TOKEN, instance), sign), sign) == links.Link(TOKEN, instance)


@pytest.mark.parametrize("bad", [
    "/.invito/rsvp/", "/.invito/rsvp/short", "/.invito/rsvp/" + TOKEN[:-1] + "1",  # 1 is not base32
    "/.invito/rsvp/" + TOKEN + "/20301017T090000Z", "/.invito/rsvp/" + TOKEN + "/x.aaaaaaaaaaaaaaaa",
    "/.invito/rsvp/" + TOKEN + "/20301017T090000Z.aaaaaaaaaaaaaaaa", "/other/" + TOKEN,
    "/.invito/rsvp/" + TOKEN + "/../../alice/calendar/",
])
def test_malformed_or_forged_links_name_nothing(sign, bad: str) -> None:  # type: ignore[no-untyped-def]
    assert links.parse(bad, sign) is None


def test_an_occurrence_signature_is_bound_to_its_token(sign) -> None:  # type: ignore[no-untyped-def]
    path = links.path_of(links.Link(TOKEN, "20301017T090000Z"), sign)
    assert links.parse(path.replace(TOKEN, OTHER), sign) is None
    assert links.parse(path.replace("20301017T09", "20301024T09"), sign) is None


def test_email_links_carry_the_answer_and_language(sign) -> None:  # type: ignore[no-untyped-def]
    url = links.url("https://cal.example.com/", links.Link(TOKEN), sign, "accept", "it")
    assert url == f"https://cal.example.com/.invito/rsvp/{TOKEN}?answer=accept&lang=it"
    assert links.url("https://x.example/invito", links.Link(TOKEN), sign).endswith(f"/invito/.invito/rsvp/{TOKEN}")


def test_occurrence_keys_read_back_as_recurrence_ids() -> None:
    assert links.rid_of("20301017") == date(2030, 10, 17)
    assert links.rid_of("20301017T090000") == datetime(2030, 10, 17, 9, 0)
    assert links.rid_of("20301017T090000Z") == datetime(2030, 10, 17, 9, 0, tzinfo=timezone.utc)


def test_a_form_is_valid_only_for_its_link_and_for_a_while(sign) -> None:  # type: ignore[no-untyped-def]
    link = links.Link(TOKEN)
    stamp = links.form_stamp(link, sign, 1000.0)
    assert links.form_valid(stamp, link, sign, 1000.0 + links.FORM_MAX_AGE)
    assert not links.form_valid(stamp, link, sign, 1001.0 + links.FORM_MAX_AGE)  # too old
    assert not links.form_valid(stamp, link, sign, 999.0)  # from the future
    assert not links.form_valid(stamp, links.Link(OTHER), sign, 1000.0)
    assert not links.form_valid(stamp, links.Link(TOKEN, "20301017T090000Z"), sign, 1000.0)
    issued, signature = stamp.split(".")
    assert not links.form_valid(f"{int(issued) + 5}.{signature}", link, sign, 1010.0)
    for garbage in ("", ".", "x.y", "1000", "-5." + signature):
        assert not links.form_valid(garbage, link, sign, 1000.0)


# -- what a link may answer ---------------------------------------------------------------------------------

def test_an_invited_guest_may_answer_until_the_event_is_over() -> None:
    found = assess(event(), GUEST, None, NOW)
    assert found.state is State.OPEN and found.answer == "NEEDS-ACTION"
    assert [str(c["SUMMARY"]) for c in found.components] == ["Quarterly review"]
    assert assess(event(), GUEST, None, datetime(2030, 10, 10, 9, 30, tzinfo=timezone.utc)).state is State.OPEN
    assert assess(event(), GUEST, None, datetime(2030, 10, 10, 10, 0, 1, tzinfo=timezone.utc)).state is State.OVER


@pytest.mark.parametrize("calendar, state", [
    (None, State.GONE),
    (event("STATUS:CANCELLED"), State.CANCELLED),
    (event(guests=("mailto:someone@else.example",)), State.NOT_INVITED),
    (event(start="20200101", end="20200102"), State.OVER),
    (event(start="20301010", end="20301011"), State.OPEN),
    (event("DURATION:PT1H", start="20301010T090000Z", end="20301010T100000Z"), State.OPEN),
    (event("RRULE:FREQ=WEEKLY", start="20200101T090000Z", end="20200101T100000Z"), State.OPEN),  # endless
    (event("RRULE:FREQ=WEEKLY;UNTIL=20200301T090000Z", start="20200101T090000Z", end="20200101T100000Z"),
     State.OVER),
])
def test_what_a_whole_event_link_allows(calendar: icalendar.Calendar | None, state: State) -> None:
    assert assess(calendar, GUEST, None, NOW).state is state


def test_an_occurrence_link_answers_that_occurrence_only() -> None:
    series = event("RRULE:FREQ=WEEKLY;COUNT=10", "EXDATE:20301024T090000Z",
                   overrides=(override("20301017T090000Z"),))
    moved = assess(series, GUEST, "20301017T090000Z", NOW)
    assert moved.state is State.OPEN and moved.answer == "TENTATIVE"  # the override's own answer
    derived = assess(series, GUEST, "20301031T090000Z", NOW)
    assert derived.state is State.OPEN and derived.answer == "NEEDS-ACTION"
    assert derived.components[0].decoded("RECURRENCE-ID") == datetime(2030, 10, 31, 9, 0, tzinfo=timezone.utc)
    assert assess(series, GUEST, "20301024T090000Z", NOW).state is State.CANCELLED  # excluded
    assert assess(series, GUEST, "20301025T090000Z", NOW).state is State.GONE  # not an occurrence
    later = datetime(2030, 10, 20, tzinfo=timezone.utc)
    assert assess(series, GUEST, "20301017T090000Z", later).state is State.OVER
    assert assess(series, GUEST, None, later).state is State.OPEN  # the series goes on


def test_cancelled_occurrences_and_guests_of_some_occurrences_only() -> None:
    series = event("RRULE:FREQ=WEEKLY;COUNT=10", guests=(),
                   overrides=(override("20301017T090000Z"), override("20301031T090000Z", "STATUS:CANCELLED")))
    only = assess(series, GUEST, None, NOW)
    assert only.state is State.OPEN
    assert [c.decoded("RECURRENCE-ID").day for c in only.components] == [17]
    assert assess(series, GUEST, "20301031T090000Z", NOW).state is State.CANCELLED
    assert assess(series, GUEST, "20301024T090000Z", NOW).state is State.NOT_INVITED


# -- the REPLY ----------------------------------------------------------------------------------------------

def test_the_reply_is_what_a_mail_client_sends_and_the_core_applies_it() -> None:
    stored = event()
    sent = reply(stored, assess(stored, GUEST, None, NOW), GUEST, "ACCEPTED", "  Happy\r\n to   join ", NOW)
    assert str(sent["METHOD"]) == "REPLY"
    (comp,) = scheduled(sent)
    assert [str(a) for a in (comp["ATTENDEE"],)] == [GUEST]
    assert comp["ATTENDEE"].params["PARTSTAT"] == "ACCEPTED" and comp["ATTENDEE"].params["CN"] == "Grace Hopper"
    assert str(comp["COMMENT"]) == "Happy to join" and int(comp["SEQUENCE"]) == 2
    assert comp.decoded("DTSTAMP") == NOW and "RECURRENCE-ID" not in comp
    result = apply(sent, stored, "mailto:alice@example.com", NOW)
    assert isinstance(result, Applied) and result.calendar is not None
    assert find_attendee(scheduled(result.calendar)[0], GUEST).params["PARTSTAT"] == "ACCEPTED"


def test_an_occurrence_reply_names_it_and_keeps_its_time_zone() -> None:
    rome = icalendar.Calendar.from_ical("\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//test//EN", "BEGIN:VTIMEZONE", "TZID:Europe/Rome",
        "BEGIN:STANDARD", "DTSTART:19701025T030000", "TZOFFSETFROM:+0200", "TZOFFSETTO:+0100", "END:STANDARD",
        "END:VTIMEZONE", "BEGIN:VEVENT", "UID:weekly", "DTSTAMP:20300101T000000Z",
        "DTSTART;TZID=Europe/Rome:20301107T100000", "DTEND;TZID=Europe/Rome:20301107T110000",
        "RRULE:FREQ=WEEKLY", "ORGANIZER:mailto:alice@example.com",
        f"ATTENDEE;PARTSTAT=NEEDS-ACTION:{GUEST}", "END:VEVENT", "END:VCALENDAR", ""]))
    found = assess(rome, GUEST, "20301114T090000Z", NOW)
    sent = reply(rome, found, GUEST, "DECLINED", "x" * 5000, NOW)
    (comp,) = scheduled(sent)
    assert comp["RECURRENCE-ID"].params["TZID"] == "Europe/Rome"
    assert comp.decoded("RECURRENCE-ID").astimezone(timezone.utc) == datetime(2030, 11, 14, 9, tzinfo=timezone.utc)
    assert [str(tz["TZID"]) for tz in sent.walk("VTIMEZONE")] == ["Europe/Rome"]
    assert len(str(comp["COMMENT"])) == COMMENT_LIMIT
    result = apply(sent, rome, "mailto:alice@example.com", NOW)
    assert isinstance(result, Applied) and result.calendar is not None
    occurrence = [c for c in scheduled(result.calendar) if "RECURRENCE-ID" in c]
    assert len(occurrence) == 1 and find_attendee(occurrence[0], GUEST).params["PARTSTAT"] == "DECLINED"


def test_a_page_shown_before_the_time_changed_is_shown_again() -> None:
    stored = event("X-INVITO-RESCHEDULED:2")  # the time last changed at SEQUENCE 2 (the event is at 2)
    found = assess(stored, GUEST, None, NOW)
    assert seen(found) == "2" and not changed_since(found, "2")
    assert changed_since(found, "1")  # the guest saw SEQUENCE 1: another time
    for forged in ("", "x", "2,2", "-1", "2.0"):
        assert changed_since(found, forged)
    retitled = event("X-INVITO-RESCHEDULED:2").to_ical().replace(b"SEQUENCE:2", b"SEQUENCE:3")
    assert not changed_since(assess(icalendar.Calendar.from_ical(retitled), GUEST, None, NOW), "2")  # moves nothing
    # Invited to two occurrences only: each is checked against what was shown of it.
    two = event("RRULE:FREQ=WEEKLY;COUNT=10", guests=(), overrides=(
        override("20301017T090000Z"), override("20301031T090000Z", "X-INVITO-RESCHEDULED:3")))
    found = assess(two, GUEST, None, NOW)
    assert seen(found) == "3,3" and not changed_since(found, "3,3")
    assert changed_since(found, "3,2") and not changed_since(found, "2,3")


def test_nothing_to_answer_builds_no_reply() -> None:
    with pytest.raises(ValueError):
        reply(event(), assess(event(), GUEST, None, NOW), GUEST, "DELEGATED", "", NOW)
    with pytest.raises(ValueError):
        reply(event("STATUS:CANCELLED"), assess(event("STATUS:CANCELLED"), GUEST, None, NOW), GUEST, "ACCEPTED", "",
              NOW)


# -- the request budget -------------------------------------------------------------------------------------

def test_each_client_has_its_own_budget_that_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.allow("a") == pytest.approx(20.0)  # one request every 20 s at 3 per minute
    assert limiter.allow("b") == 0.0
    now[0] = 20.0
    assert limiter.allow("a") == 0.0 and limiter.allow("a") > 0


def test_no_limit_and_bounded_memory() -> None:
    assert all(RateLimiter(0).allow("a") == 0.0 for _ in range(100))
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0], max_clients=100)
    for n in range(1000):
        now[0] += 0.01
        assert limiter.allow(f"10.0.{n // 256}.{n % 256}") == 0.0
    assert len(limiter._buckets) <= 101


# -- configuration --------------------------------------------------------------------------------------------

def test_rsvp_settings_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "invito.conf"
    config.write_text("[rsvp]\npublic_url = https://cal.example.com/\ntrusted_proxies = 127.0.0.1, ::0:1\n")
    loaded = invito_config.load(str(config))
    assert loaded.get("rsvp", "public_url") == "https://cal.example.com"
    assert loaded.get("rsvp", "trusted_proxies") == ["127.0.0.1", "::1"]
    config.write_text("[rsvp]\npublic_url = cal.example.com\ntrusted_proxies = nginx\nrequests_per_minute = -1\n")
    with pytest.raises(invito_config.ConfigError) as problems:
        invito_config.load(str(config))
    text = str(problems.value)
    assert "[rsvp] public_url = 'cal.example.com' is invalid" in text and "https:// URL" in text
    assert "'nginx' is not an IP address" in text
    assert "[rsvp] requests_per_minute = '-1' is invalid" in text


# -- the links in the invitation ------------------------------------------------------------------------------

def composer(configuration: Configuration, public_url: str) -> Composer:
    configuration.update({"smtp": {"sender": "invito@cal.example.com"}, "rsvp": {"public_url": public_url}}, "test",
                         privileged=True)
    return Composer(configuration)


def entry(method: str, calendar: icalendar.Calendar) -> SpoolEntry:
    calendar.add("METHOD", method)
    return SpoolEntry(id="1-x", method=method, uid="review", sender="mailto:alice@example.com", recipient=GUEST,
                      ics=calendar.to_ical().decode(), created=0.0)


def text_links(message) -> list[str]:  # type: ignore[no-untyped-def]
    received = email.message_from_bytes(bytes(message), policy=email.policy.default)  # as the guest's program reads it
    text = next(p for p in received.walk() if p.get_content_type() == "text/plain").get_content()
    return re.findall(r"https://cal\.example\.com/\S+", text)


def test_invitations_link_to_the_guests_page(configuration: Configuration) -> None:
    compose = composer(configuration, "https://cal.example.com")
    found = text_links(compose(entry("REQUEST", event())))
    assert [re.search(r"answer=(\w+)", u).group(1) for u in found] == ["accept", "tentative", "decline"]
    tokens = backend.tokens(configuration)  # the tokens the composer issued, on either backend
    link = links.parse(found[0].split("?")[0][len("https://cal.example.com"):], tokens.sign)
    assert link is not None and link.instance is None
    record = tokens.lookup(link.token)
    assert record is not None and (record.organizer, record.uid, record.guest) == (
        "mailto:alice@example.com", "review", GUEST)


def test_an_invitation_to_one_occurrence_links_to_that_occurrence(configuration: Configuration) -> None:
    compose = composer(configuration, "https://cal.example.com")
    only = icalendar.Calendar.from_ical("\r\n".join(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN",
                                                     override("20301017T090000Z"), "END:VCALENDAR", ""]))
    found = text_links(compose(entry("REQUEST", only)))
    link = links.parse(found[0].split("?")[0][len("https://cal.example.com"):],
                       backend.tokens(configuration).sign)
    assert link is not None and link.instance == "20301017T090000Z"


def test_no_links_in_cancellations_or_without_a_public_url(configuration: Configuration) -> None:
    assert text_links(composer(configuration, "https://cal.example.com")(
        entry("CANCEL", event("STATUS:CANCELLED")))) == []
    assert text_links(composer(configuration, "")(entry("REQUEST", event()))) == []
