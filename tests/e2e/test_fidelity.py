# SPDX-License-Identifier: GPL-3.0-or-later
"""What a client stores comes back intact: every property, parameter and value of real clients' events
(tests/data/roundtrip, sources in its README) survives PUT → GET, the delivery to an internal attendee
(calendar copy and inbox item) and the merge of replies (an attendee accepting through CalDAV, a guest by
mail), apart from what scheduling itself must change. Compared with ``semantic.differences``: unfolded,
order-insensitive, by hand, so neither of the server's iCalendar libraries judges its own output."""
from __future__ import annotations

import re
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import caldav
from caldav.davclient import DAVResponse
import pytest

from tests.e2e.conftest import Server, free_port, start, stop
from tests.e2e.mailsink import MailSink, start_sink
from tests.e2e.semantic import Allowed, differences
from tests.e2e.test_invitations_by_mail import calendar_part, to, wait_for_status
from tests.e2e.test_replies_by_mail import inbound_settings, send, wait_listening, wait_partstat, wire

CORPUS = sorted((Path(__file__).parent.parent / "data" / "roundtrip").glob("*.ics"))
CORPUS_BY_NAME = {p.stem: p for p in CORPUS}
BOB = "bob@example.com"
GRACE = "grace@client.example.net"

# What scheduling may change (RFC 6638): the server's parameters on the organizer's copy (never our own
# bookkeeping: that is kept out of band); in a delivered copy also the message's stamp, the organizer's alarms, calendar-level
# properties (those describe the organizer's calendar, not the event) and DURATION written as the DTEND
# it means (iTIP messages carry DTEND for mail programs that cannot read DURATION).
ORGANIZER_COPY = Allowed(properties=frozenset({"SEQUENCE"}), params=frozenset({"SCHEDULE-STATUS"}))
DELIVERED = ORGANIZER_COPY | Allowed(properties=frozenset({"DTSTAMP", "METHOD", "DTEND", "DURATION"}),
                                     params=frozenset({"SCHEDULE-AGENT", "SCHEDULE-FORCE-SEND"}),
                                     components=frozenset({"VALARM"}), answers_of=frozenset({BOB}),
                                     only=frozenset({"VEVENT", "VTODO", "VTIMEZONE"}))


@dataclass
class Site:
    srv: Server
    sink: MailSink
    listen: int


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Site]:
    """One server for the module: CalDAV, a relay that receives the guests' invitations, and the
    listener their replies go to."""
    relay_port, listen = free_port(), free_port()
    controller, sink = start_sink(relay_port)
    proc, srv = start(tmp_path_factory.mktemp("fidelity"), inbound_settings(relay_port, listen))
    try:
        wait_listening(listen)
        for user in ("alice", "bob"):
            srv.principal(user).make_calendar(name="work", cal_id="work")
        yield Site(srv, sink, listen)
    finally:
        stop(proc)
        controller.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    """A server without addresses: nothing is scheduled, objects take Radicale's plain storage path."""
    proc, srv = start(tmp_path_factory.mktemp("plain"), {"scheduling": {"domain": ""}})
    try:
        srv.principal("alice").make_calendar(name="work", cal_id="work")
        yield srv
    finally:
        stop(proc)


def corpus_text(path: Path, uid: str) -> str:
    return path.read_bytes().decode("utf-8").replace("__UID__", uid)


def unfolded(text: str) -> str:
    return re.sub(r"\r?\n[ \t]", "", text)


def without_scheduling(text: str) -> str:
    """The same event as a private one: no ORGANIZER, no ATTENDEE lines (alarms' ATTENDEEs stay)."""
    lines, depth = [], 0
    for line in unfolded(text).splitlines():
        depth += line.startswith("BEGIN:VALARM") - line.startswith("END:VALARM")
        if depth == 0 and line.startswith(("ORGANIZER", "ATTENDEE")):
            continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def put(srv: Server, user: str, uid: str, text: str) -> tuple[str, DAVResponse]:
    """PUT ``text`` as a new object into ``user``'s work calendar with the caldav client; its URL."""
    url = f"{srv.url}{user}/work/{uid}.ics"
    response = srv.principal(user).client.put(url, text, {"Content-Type": "text/calendar; charset=utf-8",
                                                          "If-None-Match": "*"})
    assert response.status == 201, response.raw
    return url, response


def get(srv: Server, user: str, url: str) -> str:
    response = srv.principal(user).client.request(url)
    assert response.status == 200, response.raw
    return response.raw


def copy_url(srv: Server, user: str, uid: str) -> str:
    """Where ``user``'s copy of ``uid`` is, found by a calendar-query REPORT as a client finds it."""
    for cal in srv.principal(user).calendars():
        try:
            return str(cal.event_by_uid(uid).url)
        except caldav.lib.error.NotFoundError:
            continue
    raise AssertionError(f"{user} has no copy of {uid}")


MULTIGET = """<?xml version="1.0" encoding="utf-8"?>
<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><D:getetag/><C:calendar-data/></D:prop><D:href>{href}</D:href>
</C:calendar-multiget>"""
QUERY = """<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><C:calendar-data/></D:prop>
  <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">
    <C:prop-filter name="UID"><C:text-match collation="i;octet">{uid}</C:text-match></C:prop-filter>
  </C:comp-filter></C:comp-filter></C:filter>
</C:calendar-query>"""
SYNC = """<?xml version="1.0" encoding="utf-8"?>
<D:sync-collection xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:sync-token/><D:sync-level>1</D:sync-level><D:prop><C:calendar-data/></D:prop>
</D:sync-collection>"""


def calendar_data(srv: Server, user: str, collection: str, body: str, href: str) -> str:
    """The calendar-data a REPORT answers for ``href``, as the server wrote it."""
    response = srv.principal(user).client.report(collection, body, depth=1)
    assert response.status == 207, response.raw
    for found in ET.fromstring(response.raw).iter("{DAV:}response"):
        if urlparse(found.findtext("{DAV:}href") or "").path == urlparse(href).path:
            data = found.find(".//{urn:ietf:params:xml:ns:caldav}calendar-data")
            assert data is not None and data.text
            return data.text
    raise AssertionError(f"{href} not in the REPORT answer")


def read_back(srv: Server, user: str, uid: str) -> list[tuple[str, str]]:
    """Every way a client reads an object back: GET and the three REPORTs (calendar-query by UID,
    calendar-multiget, sync-collection)."""
    url = copy_url(srv, user, uid)
    collection = url.rsplit("/", 1)[0] + "/"
    return [("GET", get(srv, user, url)),
            ("calendar-query", calendar_data(srv, user, collection, QUERY.format(uid=uid), url)),
            ("calendar-multiget", calendar_data(srv, user, collection, MULTIGET.format(href=urlparse(url).path), url)),
            ("sync-collection", calendar_data(srv, user, collection, SYNC, url))]


def inbox_items(srv: Server, user: str, uid: str) -> list[str]:
    return [text for text in (get(srv, user, str(i.url)) for i in srv.principal(user).schedule_inbox().get_items())
            if f"UID:{uid}" in unfolded(text)]


def mail_reply(site: Site, uid: str, partstat: str) -> None:
    """Grace answers her invitation from her mail program: a REPLY to the invitation's ORGANIZER (the
    reply-token address) over SMTP to the listener."""
    deadline = time.monotonic() + 20
    while True:
        invitations = [m for m in to(site.sink.received, GRACE) if uid in str(calendar_part(m)[1].walk("VEVENT")[0]["UID"])]
        if invitations or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert invitations, "Grace got no invitation"
    event = calendar_part(invitations[0])[1].walk("VEVENT")[0]
    organizer = str(event["ORGANIZER"])
    reply = "\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Invito tests//fidelity//EN", "METHOD:REPLY",
        "BEGIN:VEVENT", f"UID:{uid}", f"SEQUENCE:{int(event.get('SEQUENCE', 0))}",
        "DTSTAMP:" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        event.content_line("DTSTART", event["DTSTART"]).to_ical().decode(),
        f"ORGANIZER:{organizer}", f"ATTENDEE;PARTSTAT={partstat}:mailto:{GRACE}",
        "END:VEVENT", "END:VCALENDAR", ""])
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = GRACE, organizer[len("mailto:"):], "Accepted"
    msg.set_content("Accepted.")
    msg.add_alternative(reply, subtype="calendar", params={"method": "REPLY"})
    send(site.listen, organizer[len("mailto:"):], wire(msg), sender=GRACE)


def assert_same(sent: str, got: str, allowed: Allowed, what: str) -> None:
    lost = differences(sent, got, allowed)
    assert not lost, "%s differs from what the client sent:\n  %s" % (what, "\n  ".join(lost))


# -- the rule's own check: it must see the bugs it is there for ----------------------------------


def test_the_comparison_sees_a_value_cut_at_its_comma() -> None:
    sent = corpus_text(CORPUS[0], "x")
    cut = sent.replace("geo:45.46,9.19", "geo:45.46")
    assert differences(sent, cut)
    assert not differences(sent, unfolded(sent))  # folding is not a difference


# -- the rule, end to end ------------------------------------------------------------------------


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_plain_storage_keeps_the_clients_text(plain: Server, path: Path) -> None:
    uid = str(uuid.uuid4())
    sent = corpus_text(path, uid)
    url, response = put(plain, "alice", uid, sent)
    got = get(plain, "alice", url)
    assert_same(sent, got, Allowed(), "GET on a server without scheduling")
    assert got.replace("\r\n", "\n") == sent.replace("\r\n", "\n")  # the client's text itself


@pytest.mark.only_backend("files")  # Radicale's item cache beside the files; the database has none
@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_plain_storage_keeps_the_clients_text_without_its_item_cache(plain: Server, path: Path) -> None:
    uid = str(uuid.uuid4())
    sent = corpus_text(path, uid)
    url, response = put(plain, "alice", uid, sent)
    etag = response.headers["ETag"]  # what was sent is stored: a strong ETag

    # Radicale's item cache lost (a restart with a cleaned cache, an object copied in by hand): the
    # object is read from its file again, and still served as the client wrote it, with the same ETag.
    cached = plain.data / "collections" / "collection-root" / "alice" / "work" / ".Radicale.cache" / "item" / f"{uid}.ics"
    cached.unlink()
    response = plain.principal("alice").client.request(url)
    assert response.raw.replace("\r\n", "\n") == sent.replace("\r\n", "\n")
    assert response.headers["ETag"] == etag


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_an_event_without_attendees_is_stored_as_sent(site: Site, path: Path) -> None:
    uid = str(uuid.uuid4())
    sent = without_scheduling(corpus_text(path, uid))
    put(site.srv, "alice", uid, sent)
    for way, got in read_back(site.srv, "alice", uid):
        assert_same(sent, got, Allowed(), way)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_every_line_survives_scheduling(site: Site, path: Path) -> None:
    srv = site.srv
    uid = str(uuid.uuid4())
    sent = corpus_text(path, uid)
    put(srv, "alice", uid, sent)

    for way, got in read_back(srv, "alice", uid):
        assert_same(sent, got, ORGANIZER_COPY, f"the organizer's copy ({way})")

    bobs = get(srv, "bob", copy_url(srv, "bob", uid))
    assert_same(sent, bobs, DELIVERED, "the attendee's calendar copy")
    [invitation] = inbox_items(srv, "bob", uid)
    assert_same(sent, invitation, DELIVERED, "the attendee's inbox item")

    # Bob accepts with his CalDAV client: his own line changes, nothing else.
    accepted = re.sub(r"^(ATTENDEE[^\r\n]*)PARTSTAT=NEEDS-ACTION([^\r\n]*:(?i:mailto):bob@example\.com)$",
                      r"\1PARTSTAT=ACCEPTED\2", unfolded(bobs), flags=re.M)
    assert accepted != unfolded(bobs)
    response = srv.principal("bob").client.put(copy_url(srv, "bob", uid), accepted,
                                                {"Content-Type": "text/calendar; charset=utf-8"})
    assert response.status in (201, 204), response.raw
    assert_same(accepted, get(srv, "bob", copy_url(srv, "bob", uid)), ORGANIZER_COPY, "the attendee's own PUT")
    wait_partstat(srv, uid, "mailto:" + BOB, "ACCEPTED")

    # Grace accepts by mail.
    mail_reply(site, uid, "ACCEPTED")
    wait_partstat(srv, uid, "mailto:" + GRACE, "ACCEPTED")
    answered = ORGANIZER_COPY | Allowed(answers_of=frozenset({BOB, GRACE}))
    for way, got in read_back(srv, "alice", uid):
        assert_same(sent, got, answered, f"the organizer's copy after both replies ({way})")


@pytest.mark.parametrize("path", CORPUS[:1], ids=lambda p: p.stem)
def test_a_failed_delivery_recorded_later_changes_only_the_status(site: Site, path: Path) -> None:
    """The relay refuses Grace: the sender records 5.x in the stored event afterwards; nothing else moves."""
    site.sink.refuse[GRACE] = "550 5.1.1 <%s>: no such user" % GRACE
    try:
        uid = str(uuid.uuid4())
        sent = corpus_text(path, uid)
        put(site.srv, "alice", uid, sent)
        wait_for_status(site.srv, uid, "mailto:" + GRACE, "5.2")
    finally:
        del site.sink.refuse[GRACE]
    for way, got in read_back(site.srv, "alice", uid):
        assert_same(sent, got, ORGANIZER_COPY, f"the organizer's copy after the failure ({way})")


def test_a_whole_calendar_put_keeps_each_objects_lines(site: Site) -> None:
    """A calendar imported in one PUT (``curl -T calendar.ics``): Radicale splits it into one object per
    UID; each is stored as the client's own lines."""
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    apple = without_scheduling(corpus_text(CORPUS_BY_NAME["apple-macos14-structured-location"], first))
    lists = without_scheduling(corpus_text(CORPUS_BY_NAME["rfc5545-list-and-structured-values"], second))
    body = apple.replace("END:VCALENDAR\r\n", "") + lists[lists.index("BEGIN:VEVENT"):]
    response = site.srv.principal("alice").client.put(f"{site.srv.url}alice/imported/", body,
                                                      {"Content-Type": "text/calendar; charset=utf-8"})
    assert response.status == 201, response.raw
    for way, got in read_back(site.srv, "alice", first):
        assert_same(apple, got, Allowed(), way)
    for way, got in read_back(site.srv, "alice", second):
        assert_same(lists, got, Allowed(only=frozenset({"VEVENT"})), way)


EXPAND = """<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><C:calendar-data><C:expand start="20301001T000000Z" end="20301201T000000Z"/></C:calendar-data></D:prop>
  <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">
    <C:time-range start="20301001T000000Z" end="20301201T000000Z"/>
    <C:prop-filter name="UID"><C:text-match collation="i;octet">{uid}</C:text-match></C:prop-filter>
  </C:comp-filter></C:comp-filter></C:filter>
</C:calendar-query>"""


def test_expanded_instances_keep_every_stored_line(site: Site) -> None:
    """RFC 4791 §9.6.5 expand: each instance carries the series' properties as the client wrote them;
    only what makes it an instance (DTSTART, DTEND, RECURRENCE-ID, no RRULE/EXDATE) is the server's."""
    uid = str(uuid.uuid4())
    sent = without_scheduling(corpus_text(CORPUS_BY_NAME["thunderbird-128-x-moz"], uid)).replace(
        "X-MOZ-GENERATION:4", "X-MOZ-GENERATION:4\r\nX-CUSTOM-LIST:one,two,three\r\n"
        "X-APPLE-STRUCTURED-LOCATION;VALUE=URI;X-TITLE=Duomo:geo:45.46,9.19")
    url, _ = put(site.srv, "alice", uid, sent)
    instances = calendar_data(site.srv, "alice", url.rsplit("/", 1)[0] + "/", EXPAND.format(uid=uid), url)
    assert instances.count("BEGIN:VEVENT") == 10  # 12 weekly, minus the two EXDATEs
    series = Allowed(properties=frozenset({"DTSTART", "DTEND", "RRULE", "EXDATE", "RECURRENCE-ID"}),
                     only=frozenset({"VEVENT"}))
    for instance in re.findall(r"BEGIN:VEVENT\r?\n.*?END:VEVENT\r?\n", instances, flags=re.S):
        alone = "BEGIN:VCALENDAR\r\n" + instance + "END:VCALENDAR\r\n"
        master = sent[:sent.index("BEGIN:VTIMEZONE")] + sent[sent.index("BEGIN:VEVENT"):]
        assert_same(master, alone, series, "an expanded instance")
