# SPDX-License-Identifier: GPL-3.0-or-later
"""The email that carries one iTIP message to one guest outside the server (iMIP, RFC 6047).

Mail programs offer Accept/Decline only for messages shaped like the ones Google and Outlook send:
``multipart/alternative`` with a readable text and HTML body and the calendar itself as
``text/calendar; method=…``, then the same calendar as an ``invite.ics`` attachment for programs that only
look at attachments. The calendar is the guest's copy: one METHOD, every VTIMEZONE it needs, nothing
private to the organizer (alarms, server bookkeeping, other programs' private X- properties) and, when the
organizer hides the guest list, no other guest. Binary ATTACH values travel as ordinary mail attachments
instead of inflating the calendar, which mail programs and relays handle badly, and a VEVENT's DURATION as
the DTEND it means, which every mail program reads. Every other line is the organizer's own, as their
client wrote it (``Prepared.text``): icalendar's writing would escape list and structured values.

Every string from the event is untrusted: header values lose control characters and are length-capped
before the ``email`` package encodes them, and the HTML body is rendered with autoescaping.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import mimetypes
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.headerregistry import Address
from email import charset, encoders
from email.message import EmailMessage
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime
from typing import Callable, Iterator, Sequence

import icalendar
import jinja2
from markupsafe import Markup, escape

from invito.plugins.imip.i18n import Localizer
from invito.plugins.imip.tokens import set_organizer_address
from invito.plugins.itip import verbatim
from invito.plugins.itip.address import normalize
from invito.plugins.itip.components import (SERVER_PARAMS, Component, decoded, key_of, new_calendar, param,
                                            scheduled, sequence, strip_params, tzids, values)

logger = logging.getLogger("invito.imip")

METHODS = ("REQUEST", "CANCEL", "REPLY", "COUNTER", "DECLINECOUNTER")
_FROM_ATTENDEE = ("REPLY", "COUNTER")  # the message speaks for an attendee, to the organizer
ICS_NAME = "invite.ics"
# Parameters meaningful only on the server (RFC 6638 §7.1-7.3) or to Invito itself; PRIVATE_PREFIX too.
_NOT_SENT_PARAMS = (*SERVER_PARAMS, "SCHEDULE-AGENT")
# X- properties that describe the event for every participant (Outlook's busy status and HTML description,
# meeting links, structured location) rather than one program's private state (X-MOZ-SNOOZE-TIME,
# X-APPLE-TRAVEL-*, X-WR-CALNAME…): these are sent, every other X- property is not.
_SHARED_X_PREFIXES = ("X-MICROSOFT-", "X-ALT-DESC", "X-GOOGLE-CONFERENCE", "X-APPLE-STRUCTURED-LOCATION")
_FILENAME_PARAMS = ("FILENAME", "X-FILENAME", "X-APPLE-FILENAME")
_CONFERENCE_PROPS = ("CONFERENCE", "X-GOOGLE-CONFERENCE", "X-MICROSOFT-SKYPETEAMSMEETINGURL")
_LINK_SCHEMES = ("http", "https", "mailto", "tel")  # others (javascript:, data:…) are shown, never linked
_ANSWER_LINK_SCHEMES = ("http", "https", "mailto")  # in a guest's answer: any other link is not shown at all
COMMENT_LIMIT = 2000  # characters of a guest's COMMENT echoed to the organizer; the rest is cut
# A mail program must never take an event's attachment for the invitation itself.
_NOT_ATTACHABLE = ("text/calendar", "application/ics", "text/x-vcalendar")
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_MAILBOX = re.compile(r"[^\s<>()\[\],;:\\\"@]+@[^\s<>()\[\],;:\\\"@]+\.[^\s<>()\[\],;:\\\"@]+")
# C0/C1 controls, zero-width and bidirectional formatting characters, line and paragraph separators.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_NAME_LIMIT = 80
_QP_UTF8 = charset.Charset("utf-8")
_QP_UTF8.body_encoding = charset.QP  # readable in any mail source view, unlike base64
_TITLE_LIMIT = 150
_TEXT_LIMIT = 500
_VTIMEZONE_YEARS = 10  # generated VTIMEZONEs cover this long after the start of an open-ended series

# The RSVP buttons, in the email and on the page: white text on these keeps WCAG AA contrast (≥ 4.5:1).
ACCEPT_COLOR, MAYBE_COLOR, DECLINE_COLOR = "#1e6b35", "#8a5300", "#a3262e"

_TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


@dataclass(frozen=True)
class Sender:
    """Who the mail comes from (``[smtp] sender``), e.g. ``invito@cal.example.com``."""

    address: str


@dataclass(frozen=True)
class Attachment:
    """An ATTACH;VALUE=BINARY taken out of the calendar, to travel as a MIME part."""

    filename: str
    content_type: str
    data: bytes


@dataclass
class _Person:
    name: str
    email: str
    status: str = ""

    @property
    def display(self) -> str:
        return self.name or self.email

    @property
    def label(self) -> str:
        return f"{self.name} <{self.email}>" if self.name and self.name != self.email else self.email


@dataclass
class _Event:
    """What the body and the headers say about the message, read from the calendar that is sent."""

    method: str
    title: str
    primary: Component
    instances: list[Component]  # the components whose dates are shown: the master, or every instance
    organizer: _Person | None
    organizer_addresses: frozenset[str]  # ORGANIZER and the organizer's own address when that differs
    people: list[tuple[str, _Person, object]]  # (address, person, ATTENDEE), every attendee once


@dataclass(frozen=True)
class Prepared:
    """One iTIP message made fit to mail, once for all its recipients: a private copy of the calendar with
    personal data stripped, binary attachments taken out and time zones fitted."""
    calendar: icalendar.Calendar
    files: list[Attachment]
    method: str
    source: str = ""  # the text ``calendar`` was read from: its unchanged lines are sent as written there
    _serialized: dict[int, tuple[bytes, str, int]] = field(default_factory=dict, repr=False, compare=False)
    _read: dict[tuple[str, str | None], "_Event"] = field(default_factory=dict, repr=False, compare=False)

    def event(self, loc: Localizer, organizer_address: str | None) -> "_Event":
        """What the body says of the event, read once for every guest who sees the whole guest list."""
        key = (loc.language, organizer_address)
        if key not in self._read:
            self._read[key] = _read_event(self.calendar, self.method, loc, organizer_address)
        return self._read[key]

    def ics(self, organizer: str | None) -> bytes:
        """The calendar as sent, its ORGANIZER made ``organizer`` (a reply-token address) when given.

        Serializing a calendar with 50 guests is most of the cost of composing, and every guest's copy
        differs only in that address, whose length is fixed by the reply-address template: so the calendar
        is serialized once with a placeholder of that length, and each guest's address is written over
        it, keeping the line folds where they fell (folding counts bytes, hence ASCII only).
        """
        if not organizer:
            return self._serialize(None, 0)[0]
        if organizer.isascii():
            text, placeholder, expected = self._serialize(_placeholder(len(organizer)), len(organizer))
            result, found = _overwrite_folded(text, placeholder, organizer)
            if found == expected:
                return result
        with _organizer_as(self.calendar, organizer):
            return self.text(self.calendar)

    def text(self, cal: icalendar.Calendar) -> bytes:
        """``cal`` (this calendar, as one guest sees it) as sent: every line preparing it did not change is
        the source's own, so the guest gets the organizer's values (``RESOURCES:A,B``, X- properties) as
        written, not icalendar's rewriting of them."""
        return verbatim.render(cal, (self.source,)).encode("utf-8") if self.source else cal.to_ical()

    def _serialize(self, placeholder: str | None, key: int) -> tuple[bytes, str, int]:
        if key not in self._serialized:
            with _organizer_as(self.calendar, placeholder) as cal:
                self._serialized[key] = (self.text(cal), placeholder or "",
                                         sum(len(values(c, "ORGANIZER")) for c in scheduled(cal)))
        return self._serialized[key]


def compose(calendar: icalendar.Calendar | Prepared, recipient: str, *, sender: Sender, language: str = "en",
            hide_attendees: bool = False, changes: Sequence[str] = (), organizer_address: str | None = None,
            reply_address: str | None = None, author: str | None = None,
            notes: Sequence[tuple[str, str]] = (), message_date: datetime | None = None,
            answer_link: Callable[[str, str], str] | None = None) -> EmailMessage:
    """The iMIP message that brings ``calendar`` (one iTIP message) to ``recipient`` (``mailto:…``).

    ``calendar`` may be :func:`prepare`d once and composed for each of its recipients (the expensive
    copying then happens once); ``compose`` leaves it as it found it.
    ``changes``: what an update changed (see ``itip.changed_aspects``); empty for a first invitation.
    ``reply_address``: the ORGANIZER the guest's calendar names instead (``mailto:`` + a reply-token
    address), so that the guest's reply returns to Invito, and the Reply-To, so that a "reply" does too;
    ``organizer_address`` is then the organizer's own address, for the body. ``hide_attendees`` does not
    apply to REPLY, which names only the replying attendee anyway. ``author``: a COUNTER's proposing
    attendee. ``notes``: what the organizer should know about a guest's answer relayed to them, (kind,
    value) with kind ``from`` (who really sent it), ``authentication`` (why it failed) or ``uninvited``. ``answer_link(answer, language)``: the
    guest's RSVP page URL for ``accept``, ``tentative`` or ``decline``, offered in a REQUEST's body for mail
    programs that show no invitation buttons.
    """
    prepared = calendar if isinstance(calendar, Prepared) else prepare(calendar)
    method, files = prepared.method, prepared.files
    guest = normalize(recipient)
    hidden = hide_attendees and method not in _FROM_ATTENDEE
    loc = Localizer(language)
    with _attendees_seen_by(prepared.calendar, guest, hidden) as sent:
        event = _read_event(sent, method, loc, organizer_address) if hidden else prepared.event(loc, organizer_address)
        msg = EmailMessage()
        msg.make_mixed()  # first: it would move Content-* headers set before it into a part
        speaker = normalize(author) if author else None
        _set_headers(msg, event, guest, speaker, sender, loc, changes, message_date, reply_address)
        msg["Message-ID"] = message_id(sent, guest, sender)
        context = _body(event, guest, speaker, loc, changes, hidden, files, notes)
        context["answer_links"] = _answer_links(loc, answer_link) if method == "REQUEST" and answer_link else []
        text, html = _render(context)
        if hidden:  # this guest's own calendar: nothing to share with the others
            with _organizer_as(sent, reply_address):
                ics = prepared.text(sent)
        else:
            ics = prepared.ics(reply_address)
    # The parts are built with the classic email.mime classes: they take their headers as written, where
    # EmailMessage.set_content parses back every header it sets (most of the cost of composing).
    body = MIMEMultipart("alternative")
    body.attach(MIMEText(text, "plain", _QP_UTF8))
    body.attach(MIMEText(html, "html", _QP_UTF8))
    # Bytes, base64: the CRLF line ends of iCalendar survive any relay and any 8-bit-unsafe hop.
    body.attach(_binary_part("text/calendar", ics, method=method, charset="utf-8"))
    msg.attach(body)
    msg.attach(_binary_part("application/ics", ics, ICS_NAME, name=ICS_NAME))
    for item in files:
        msg.attach(_binary_part(item.content_type, item.data, item.filename))
    return msg


def _binary_part(content_type: str, data: bytes, filename: str | None = None, **params: str) -> MIMEBase:
    """A base64 part; with ``filename``, an attachment (RFC 2231-encoded when not ASCII)."""
    maintype, subtype = content_type.split("/", 1)
    part = MIMEBase(maintype, subtype, **params)
    part.set_payload(data)
    encoders.encode_base64(part)
    if filename is not None:
        part.add_header("Content-Disposition", "attachment",
                        filename=filename if filename.isascii() else ("utf-8", "", filename))
    return part


@contextlib.contextmanager
def _organizer_as(cal: icalendar.Calendar, address: str | None) -> Iterator[icalendar.Calendar]:
    """``cal`` with ``address`` as its ORGANIZER (None: unchanged); the original put back afterwards."""
    saved = [(comp, comp.get("ORGANIZER")) for comp in scheduled(cal)] if address else []
    if address:
        set_organizer_address(cal, address)
    try:
        yield cal
    finally:
        for comp, original in saved:
            if original is not None:
                comp["ORGANIZER"] = original


def _placeholder(length: int) -> str:
    """A ``mailto:`` address of ``length`` characters that no calendar contains by chance."""
    return ("mailto:" + uuid.uuid4().hex * (length // 32 + 1))[:length]


def _overwrite_folded(text: bytes, placeholder: str, value: str) -> tuple[bytes, int]:
    """``text`` with each ``placeholder`` (ASCII, possibly split by line folds) overwritten by ``value`` of the
    same length, folds kept: the bytes ``to_ical`` would have produced with ``value`` in the calendar;
    and how many were found."""
    fold = rb"(?:\r\n[ \t])?"
    pattern = re.compile(fold.join(re.escape(c.encode()) for c in placeholder))
    replacement = value.encode()

    def overwrite(match: re.Match[bytes]) -> bytes:
        out, chars = bytearray(), iter(replacement)
        span, i = match.group(0), 0
        while i < len(span):
            if span[i:i + 2] == b"\r\n":
                out += span[i:i + 3]
                i += 3
            else:
                out.append(next(chars))
                i += 1
        return bytes(out)

    return pattern.subn(overwrite, text)


def method_of(calendar: icalendar.Calendar) -> str:
    """The calendar's one METHOD; ValueError if it has none, several, or one that iMIP here does not send."""
    found = {str(m).strip().upper() for m in values(calendar, "METHOD")}
    if len(found) != 1 or next(iter(found)) not in METHODS:
        raise ValueError(f"cannot mail an iTIP calendar with METHOD {sorted(found) or 'missing'}")
    return found.pop()


def prepare(calendar: icalendar.Calendar, source: str = "") -> Prepared:
    """The calendar as guests receive it (see the module doc), apart from whose ATTENDEE lines they see;
    ``source``: the text ``calendar`` was read from, whose lines are kept where nothing changed them."""
    method = method_of(calendar)
    cal = icalendar.Calendar.from_ical(calendar.to_ical())  # a deep copy we are free to change
    _drop_private(cal)
    cal.pop("METHOD", None)
    cal.add("METHOD", method)
    files: list[Attachment] = []
    for comp in scheduled(cal):
        comp.subcomponents = [s for s in comp.subcomponents if s.name != "VALARM"]
        _drop_private(comp)
        _end_from_duration(comp)
        for item in _take_binary_attachments(comp):
            if item not in files:  # the same file on the master and its overrides travels once
                files.append(item)
    _fit_timezones(cal)
    return Prepared(cal, files, method, source)


@contextlib.contextmanager
def _attendees_seen_by(cal: icalendar.Calendar, recipient: str, hidden: bool) -> Iterator[icalendar.Calendar]:
    """``cal`` with only ``recipient``'s own ATTENDEE lines while ``hidden``; put back afterwards."""
    saved = [(comp, comp.get("ATTENDEE")) for comp in scheduled(cal)] if hidden else []
    for comp, _ in saved:
        _keep_attendees(comp, recipient)
    try:
        yield cal
    finally:
        for comp, attendees in saved:
            comp.pop("ATTENDEE", None)
            if attendees is not None:
                comp["ATTENDEE"] = attendees


def message_id(calendar: icalendar.Calendar, recipient: str, sender: Sender) -> str:
    """``<hash@sender-domain>``, the same whenever this very message is built again (a retry from the spool).

    Besides UID, SEQUENCE, recipient and METHOD the hash covers DTSTAMP, the time the iTIP message was made:
    an organizer who adds a guest, or an attendee who changes an answer, sends again with the same
    SEQUENCE, and mail systems that drop duplicate Message-IDs must not drop that.
    """
    comps = scheduled(calendar)
    stamps = sorted(key_of(d) for c in comps if (d := decoded(c, "DTSTAMP")) is not None)
    parts = (str(comps[0].get("UID", "")) if comps else "", str(max((sequence(c) for c in comps), default=0)),
             normalize(recipient), method_of(calendar), stamps[-1] if stamps else "")
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]
    return f"<{digest}@{_mailbox(sender.address).domain}>"


# --- the calendar that is sent ----------------------------------------------------------------------------

def _drop_private(comp: Component) -> None:
    """Remove X- properties that are not :data:`_SHARED_X_PREFIXES` and server-only parameters."""
    for name in list(comp.keys()):
        if name.startswith("X-") and not name.startswith(_SHARED_X_PREFIXES):
            del comp[name]
            continue
        for prop in values(comp, name):
            strip_params(prop, _NOT_SENT_PARAMS)


_DURATION = re.compile(r"([+-]?)P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", re.IGNORECASE)


def _end_from_duration(comp: Component) -> None:
    """A VEVENT's DURATION as the DTEND it means (RFC 5545 §3.3.6): weeks and days on the wall clock of
    DTSTART's zone, hours, minutes and seconds as elapsed time. Gnus (gnus-icalendar, up to 28 at least)
    fails on an event without DTEND and then offers the guest no buttons; the stored event is unchanged."""
    if comp.name != "VEVENT" or "DURATION" not in comp or "DTEND" in comp or "DTSTART" not in comp:
        return
    match = _DURATION.fullmatch(comp["DURATION"].to_ical().decode("ascii", "replace").strip())
    start = decoded(comp, "DTSTART")
    if match is None or not isinstance(start, date):
        return  # not a duration we can read: sent as written
    sign = -1 if match.group(1) == "-" else 1
    weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups()[1:])
    end = start + sign * timedelta(weeks=weeks, days=days)
    elapsed = sign * timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if isinstance(end, datetime) and end.tzinfo is not None:
        end = (end.astimezone(timezone.utc) + elapsed).astimezone(end.tzinfo)
    elif isinstance(end, datetime):
        end += elapsed  # floating or UTC: the wall clock is the elapsed time
    tzid = comp["DTSTART"].params.get("TZID")
    del comp["DURATION"]
    comp.add("DTEND", end, parameters={"TZID": tzid} if tzid and isinstance(end, datetime) else None)


def _keep_attendees(comp: Component, recipient: str) -> None:
    mine = [a for a in values(comp, "ATTENDEE") if normalize(str(a)) == recipient]
    comp.pop("ATTENDEE", None)
    for prop in mine:
        comp.add("ATTENDEE", prop)


def _take_binary_attachments(comp: Component) -> list[Attachment]:
    kept, taken = [], []
    for prop in values(comp, "ATTACH"):
        if isinstance(prop, icalendar.vBinary):
            taken.append(Attachment(_filename(prop, len(taken) + 1), _content_type(prop), prop.bytes))
        else:
            kept.append(prop)
    if taken:
        comp.pop("ATTACH")
        for prop in kept:
            comp.add("ATTACH", prop)
    return taken


def _filename(prop: object, number: int) -> str:
    for name in _FILENAME_PARAMS:
        given = getattr(prop, "params", {}).get(name)
        if given:
            base = re.split(r"[/\\]", _one_line(str(given), _NAME_LIMIT))[-1].strip(". ")
            if base:
                return base
    extension = mimetypes.guess_extension(_content_type(prop)) or ""
    return f"attachment-{number}{extension}"


def _content_type(prop: object) -> str:
    given = str(getattr(prop, "params", {}).get("FMTTYPE", "")).strip().lower()
    if _MIME_TYPE.fullmatch(given) and given not in _NOT_ATTACHABLE \
            and given.split("/")[0] not in ("multipart", "message"):
        return given
    for name in _FILENAME_PARAMS:
        guessed = mimetypes.guess_type(str(getattr(prop, "params", {}).get(name, "")))[0]
        if guessed and guessed not in _NOT_ATTACHABLE:
            return guessed
    return "application/octet-stream"


def _fit_timezones(cal: icalendar.Calendar) -> None:
    """Keep the VTIMEZONEs the events use, and generate those missing for IANA zones (others stay as is)."""
    used = list(dict.fromkeys(t for comp in scheduled(cal) for t in tzids(comp) if t.upper() != "UTC"))
    known = {str(tz.get("TZID")): tz for tz in cal.walk("VTIMEZONE")}
    first, last = _span(scheduled(cal))
    zones = []
    for tzid in used:
        if tzid in known:
            zones.append(known[tzid])
            continue
        try:
            zones.append(icalendar.Timezone.from_tzid(tzid, first_date=first, last_date=last))
        except ValueError:
            logger.info("no VTIMEZONE for TZID %r: an unknown zone, sent without one", tzid)
    others = [c for c in cal.subcomponents if c.name != "VTIMEZONE"]
    cal.subcomponents = zones + others


def _span(comps: list[Component]) -> tuple[date, date]:
    """The dates a generated VTIMEZONE must cover: all of a bounded event, years ahead of a series."""
    found: list[date] = []
    open_ended = False
    for comp in comps:
        for name in ("DTSTART", "DTEND", "DUE", "RECURRENCE-ID"):
            value = decoded(comp, name)
            if isinstance(value, date):
                found.append(value.date() if isinstance(value, datetime) else value)
        for rule in values(comp, "RRULE"):
            until = rule.get("UNTIL", [None])[0]
            if isinstance(until, date):
                found.append(until.date() if isinstance(until, datetime) else until)
            else:  # endless, or COUNT: where it ends depends on the rule
                open_ended = True
    if not found:
        found = [datetime.now(timezone.utc).date()]
    first, last = min(found) - timedelta(days=1), max(found) + timedelta(days=2)
    if open_ended:
        last = max(last, first + timedelta(days=366 * _VTIMEZONE_YEARS))
    return first, last


# --- what the message says ----------------------------------------------------------------------------------

def _read_event(cal: icalendar.Calendar, method: str, loc: Localizer, organizer_address: str | None) -> _Event:
    comps = scheduled(cal)
    if not comps:
        raise ValueError("the iTIP calendar has no VEVENT or VTODO")
    masters = [c for c in comps if "RECURRENCE-ID" not in c]
    primary = masters[0] if masters else comps[0]
    title = _one_line(str(primary.get("SUMMARY", "")), _TITLE_LIMIT) or loc.text("untitled")
    org = primary.get("ORGANIZER") or next((c["ORGANIZER"] for c in comps if "ORGANIZER" in c), None)
    organizer = None
    if org is not None or organizer_address:
        organizer = _person(organizer_address or str(org), org.params.get("CN", "") if org is not None else "")
    people: dict[str, tuple[str, _Person, object]] = {}
    for comp in [primary, *comps]:
        for prop in values(comp, "ATTENDEE"):
            address = normalize(str(prop))
            people.setdefault(address, (address, _person(str(prop), prop.params.get("CN", "")), prop))
    org_addresses = {normalize(str(org))} if org is not None else set()
    if organizer_address:
        org_addresses.add(normalize(organizer_address))
    return _Event(method, title, primary, masters[:1] or comps, organizer, frozenset(org_addresses),
                  list(people.values()))


def _person(address: str, cn: object) -> _Person:
    uri = normalize(address)
    email = uri[len("mailto:"):] if uri.startswith("mailto:") else uri
    return _Person(_one_line(str(cn), _NAME_LIMIT), _one_line(email, _TEXT_LIMIT))


def _when(comp: Component, loc: Localizer) -> str:
    start = decoded(comp, "DTSTART")
    end = decoded(comp, "DTEND")
    if start is None:
        start, end = decoded(comp, "DUE"), None
    elif end is None:
        duration = decoded(comp, "DURATION")
        end = start + duration if isinstance(duration, timedelta) else decoded(comp, "DUE")
    if not isinstance(start, date):
        return ""
    return loc.when(start, end if isinstance(end, date) else None, _tzid(comp, "DTSTART") or _tzid(comp, "DUE"))


def _short_when(comp: Component, loc: Localizer) -> str:
    start = decoded(comp, "DTSTART")
    if start is None:
        start = decoded(comp, "DUE")
    return loc.short_when(start, _tzid(comp, "DTSTART")) if isinstance(start, date) else ""


def _tzid(comp: Component, name: str) -> str | None:
    prop = comp.get(name)
    tzid = getattr(prop, "params", {}).get("TZID") if prop is not None else None
    return _one_line(str(tzid), _NAME_LIMIT) if tzid else None


def _reply_status(event: _Event, speaker: str | None) -> tuple[str, _Person | None]:
    """The answer in a REPLY and who gave it (its one ATTENDEE); a COUNTER's proposer, ``speaker``."""
    if event.method == "COUNTER":
        found = next((person for address, person, _ in event.people if address == speaker), None)
        return "", found or (_person(speaker, "") if speaker else None)
    if not event.people:
        return "", None
    _address, person, prop = event.people[0]
    return param(prop, "PARTSTAT"), person


def _parties(event: _Event, guest: str, speaker: str | None) -> tuple[_Person | None, _Person]:
    """Who the message speaks for (the organizer; in a REPLY or COUNTER the attendee) and who reads it."""
    if event.method in _FROM_ATTENDEE:
        _status, author = _reply_status(event, speaker)
        org = event.organizer if guest in event.organizer_addresses else None
        return author, _Person(org.name if org else "", _person(guest, "").email)
    reader = next((p for a, p, _ in event.people if a == guest), None)
    return event.organizer, reader or _person(guest, "")


def _subject(event: _Event, loc: Localizer, changes: Sequence[str], speaker: str | None) -> str:
    if event.method == "REPLY":
        status, _who = _reply_status(event, speaker)
        key = "subject." + status if loc.has("subject." + status) else "subject.reply"
    elif event.method == "COUNTER":
        key = "subject.counter"
    elif event.method == "DECLINECOUNTER":
        key = "subject.declinecounter"
    elif event.method == "CANCEL":
        key = "subject.cancel"
    else:
        key = "subject.update" if changes else "subject.request"
    subject = loc.text(key, title=event.title)
    when = _short_when(event.primary, loc)
    return _one_line(f"{subject} @ {when}" if when else subject, 2 * _TITLE_LIMIT)


def _body(event: _Event, guest: str, speaker: str | None, loc: Localizer, changes: Sequence[str], hidden: bool,
          files: list[Attachment], notes: Sequence[tuple[str, str]]) -> dict[str, object]:
    """The template data, the same for the text and the HTML body."""
    organizer_name = event.organizer.display if event.organizer else ""
    author, reader = _parties(event, guest, speaker)
    primary = event.primary
    rule = next(iter(values(primary, "RRULE")), None)
    guests = []
    if event.method not in _FROM_ATTENDEE:
        for address, person, prop in event.people:
            if address == guest or address in event.organizer_addresses:  # the organizer has a line already
                continue
            status = param(prop, "PARTSTAT", "NEEDS-ACTION")
            words = [loc.text("status." + status)] if loc.has("status." + status) else []
            role = param(prop, "ROLE")
            words += [loc.text("role." + role)] if loc.has("role." + role) else []
            guests.append(_Person(person.name, person.email, ", ".join(words)))
    from_attendee = event.method in _FROM_ATTENDEE
    comment = "\n".join(_multi_line(str(c)) for c in values(primary, "COMMENT")) if from_attendee else ""
    if len(comment) > COMMENT_LIMIT:
        comment = comment[:COMMENT_LIMIT - 1].rstrip() + "…"
    links, attachments = _links(primary, loc), _uri_attachments(primary)
    if from_attendee:  # the guest's own words may link anywhere: only plain web and mail links are shown
        links = [link for link in links if _linkable(str(link["url"]), _ANSWER_LINK_SCHEMES)]
        attachments = [item for item in attachments if _linkable(str(item["url"]), _ANSWER_LINK_SCHEMES)]
    name = author.display if author else ""
    return {
        "language": loc.language,
        "t": loc.text,
        "headline": _headline(event, loc, changes, organizer_name, speaker),
        "notes": [loc.text("note." + kind, value=_one_line(value, _TEXT_LIMIT), name=name)
                  for kind, value in notes if loc.has("note." + kind)],
        "changes": loc.aspects(changes) if changes and event.method == "REQUEST" else "",
        "title": event.title,
        "cancelled": event.method == "CANCEL",
        "when": [w for w in (_when(c, loc) for c in event.instances) if w],
        "repeats": loc.repeats(rule) if rule is not None and event.method != "CANCEL" else "",
        "location": _one_line(str(primary.get("LOCATION", "")), _TEXT_LIMIT),
        "organizer": event.organizer,
        "guests": guests,
        "guests_hidden": hidden,
        "links": links,
        "attachments": [{"name": f.filename, "url": "", "clickable": False} for f in files] + attachments,
        "comment": comment,
        "description": _multi_line(str(primary.get("DESCRIPTION", ""))),
        "footer": loc.text("footer.sent", author=author.display if author else "Invito",
                           reader=reader.label),
        "answer_hint": loc.text({"REQUEST": "footer.answer", "COUNTER": "footer.counter"}[event.method])
        if event.method in ("REQUEST", "COUNTER") else "",
    }


def _answer_links(loc: Localizer, answer_link: Callable[[str, str], str]) -> list[dict[str, str]]:
    return [{"label": loc.text("rsvp." + partstat), "url": answer_link(word, loc.language), "color": color}
            for word, partstat, color in (("accept", "ACCEPTED", ACCEPT_COLOR), ("tentative", "TENTATIVE", MAYBE_COLOR),
                                          ("decline", "DECLINED", DECLINE_COLOR))]


def page_details(components: Sequence[Component], stored: icalendar.Calendar, guest: str,
                 loc: Localizer) -> dict[str, object]:
    """What the RSVP page shows of ``components`` (the guest's part of the organizer's copy ``stored``):
    the invitation body's own data (title, time in the event's zone, place, organizer, links, attachments,
    description), read the same way and with the same care for untrusted text. The page lists no other
    guests, so only the guest's own ATTENDEE is copied (a meeting may have hundreds)."""
    guest = normalize(guest)
    views = []
    for comp in components:
        view = comp.copy()  # shares property values with ``comp``: only its ATTENDEE list is replaced
        view.subcomponents = list(comp.subcomponents)
        _keep_attendees(view, guest)
        views.append(view)
    prepared = prepare(new_calendar("REQUEST", views, [stored]))
    return _body(prepared.event(loc, None), guest, None, loc, (), True, prepared.files, ())


def _headline(event: _Event, loc: Localizer, changes: Sequence[str], organizer_name: str,
              speaker: str | None) -> str:
    if event.method in _FROM_ATTENDEE:
        status, who = _reply_status(event, speaker)
        key = "headline.counter" if event.method == "COUNTER" else \
            "headline." + status if loc.has("headline." + status) else "headline.reply"
        return loc.text(key, name=who.display if who else "", title=event.title)
    if event.method == "DECLINECOUNTER":
        return loc.text("headline.declinecounter", organizer=organizer_name, title=event.title)
    if event.method == "CANCEL":
        whole = "RECURRENCE-ID" not in event.primary
        return loc.text("headline.cancel" if whole else "headline.cancel_instances", organizer=organizer_name)
    return loc.text("headline.update" if changes else "headline.request", organizer=organizer_name)


def _links(comp: Component, loc: Localizer) -> list[dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    for name in ("URL", *_CONFERENCE_PROPS):
        for prop in values(comp, name):
            url = _one_line(str(prop), _TEXT_LIMIT)
            given = getattr(prop, "params", {}).get("LABEL")
            label = _one_line(str(given), _NAME_LIMIT) if given else \
                loc.text("link.page" if name == "URL" else "link.join")
            if url and url not in found:
                found[url] = {"label": label, "url": url, "clickable": _linkable(url)}
    return list(found.values())


def _uri_attachments(comp: Component) -> list[dict[str, object]]:
    items = []
    for prop in values(comp, "ATTACH"):
        url = _one_line(str(prop), _TEXT_LIMIT)
        names = [prop.params.get(n) for n in _FILENAME_PARAMS if prop.params.get(n)]
        items.append({"name": _one_line(str(names[0]), _NAME_LIMIT) if names else url, "url": url,
                      "clickable": _linkable(url)})
    return items


def _linkable(url: str, schemes: tuple[str, ...] = _LINK_SCHEMES) -> bool:
    return url.split(":", 1)[0].lower() in schemes and ":" in url


# --- headers ---------------------------------------------------------------------------------------------

def _set_headers(msg: EmailMessage, event: _Event, guest: str, speaker: str | None, sender: Sender,
                 loc: Localizer, changes: Sequence[str], message_date: datetime | None,
                 reply_address: str | None) -> None:
    own = _mailbox(sender.address)
    author, reader = _parties(event, guest, speaker)
    from_name = loc.text("via", name=author.display) if author else "Invito"
    msg["From"] = Address(display_name=_one_line(from_name, _NAME_LIMIT + 20), username=own.username,
                          domain=own.domain)
    if author is not None:
        # Mail programs send a guest's calendar answer (Gnus, aerc) and a plain "reply" to Reply-To: the
        # guest's reply-token address brings both back to Invito, which applies the one and forwards the other.
        replies_to = reply_address if reply_address and event.method not in _FROM_ATTENDEE else author.email
        try:
            msg["Reply-To"] = _address(author.name, replies_to)
        except ValueError:
            logger.info("no Reply-To: %r is not a mail address", replies_to)
    msg["To"] = _address(reader.name, guest)
    msg["Subject"] = _subject(event, loc, changes, speaker)
    when = message_date or datetime.now(timezone.utc)
    msg["Date"] = format_datetime(when if when.tzinfo else when.replace(tzinfo=timezone.utc))
    msg["MIME-Version"] = "1.0"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: vacation responders stay quiet
    # Exchange and Outlook file messages with this class as meeting items, as they do their own.
    msg["Content-Class"] = "urn:content-classes:calendarmessage"
    msg["Content-Language"] = loc.language


def is_mailbox(address: str) -> bool:
    """Whether mail can be addressed to ``address`` (``mailto:`` optional): the test every sent message passes."""
    try:
        _mailbox(address)
    except ValueError:  # also UnicodeError from a domain IDNA cannot encode
        return False
    return True


def _mailbox(address: str) -> Address:
    """A mail address (``mailto:`` optional) as an Address; ValueError for anything else."""
    text = address.strip()
    if text.lower().startswith("mailto:"):
        text = text[len("mailto:"):]
    if not _MAILBOX.fullmatch(text) or _CONTROLS.search(text):
        raise ValueError(f"not a mail address: {address!r}")
    username, domain = text.rsplit("@", 1)
    return Address(username=username, domain=domain.encode("idna").decode("ascii"))


def _address(name: str, address: str) -> Address:
    box = _mailbox(address)
    return Address(display_name=_one_line(name, _NAME_LIMIT), username=box.username, domain=box.domain)


# --- text hygiene and rendering ------------------------------------------------------------------------------

def _one_line(value: str, limit: int) -> str:
    """One line of at most ``limit`` characters: controls become spaces, runs of blanks one space."""
    text = " ".join(_CONTROLS.sub(" ", value).split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _multi_line(value: str) -> str:
    """Free text with its line breaks (as LF) but without other control characters."""
    text = value.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", text.replace("\t", "    ")).strip()


def _nl2br(value: str) -> Markup:
    return Markup("<br>\n").join(escape(value).split("\n"))


def template_environment(autoescape: bool, folder: str = _TEMPLATES) -> jinja2.Environment:
    """Jinja2 as the mail bodies use it (strict, ``nl2br``); the RSVP page renders with it too."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(folder), autoescape=autoescape,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["nl2br"] = _nl2br
    return env


_HTML = template_environment(autoescape=True)
_TEXT = template_environment(autoescape=False)  # plain text: escaping would show "&amp;" to the reader


def _render(context: dict[str, object]) -> tuple[str, str]:
    return (_TEXT.get_template("invitation.txt").render(context),
            _HTML.get_template("invitation.html").render(context))
