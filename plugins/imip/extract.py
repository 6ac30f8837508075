# SPDX-License-Identifier: GPL-3.0-or-later
"""The one iTIP message an inbound email carries (RFC 6047), or why it carries none.

Anyone can send the listener mail, so every cost is capped before it is paid: the size before the message
is parsed, the number of MIME parts before and while the ``email`` package builds them (its parser recurses
on nesting), the calendar's size, components and attendees before icalendar parses it. Mail programs wrap
the calendar in many ways (inline ``text/calendar``, an ``.ics`` attachment of any type, both, or the whole
message); the inline part is the one mail programs act on, so it wins over attachments. Bounces and
auto-replies quote our own invitations and are told apart from real answers. Pure: bytes in, value out,
and no input makes :func:`extract` raise.

:class:`Inbound` is also what the RSVP page makes of an answer given there, so both reach triage as one
type that says where they came from (:class:`MailOrigin`, :class:`PageOrigin`).

What a guest's mail program never sends is refused rather than guessed at: a second From header (whose
author would the answer be? DMARC, RFC 7489 §6.6.1, refuses such mail too), more Received headers than
Postfix's ``hopcount_limit`` (a mail loop), and in the calendar part an unknown Content-Transfer-Encoding,
broken base64, a byte order mark, NUL characters, or a PARTSTAT that is not an answer.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import dataclasses
import enum
import logging
import re
from dataclasses import dataclass, field
from email.feedparser import BytesFeedParser
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value, getaddresses
from typing import Callable, Iterator

import icalendar
from icalendar.parser import Contentlines
from icalendar.timezone import tzp

from invito.plugins.imip.authentication import Verdict
from invito.plugins.imip.tokens import ReplyToken
from invito.plugins.itip.address import normalize
from invito.plugins.itip.components import addresses, replace, scheduled, values

logger = logging.getLogger("invito.imip")

METHODS = ("PUBLISH", "REQUEST", "REPLY", "ADD", "CANCEL", "REFRESH", "COUNTER", "DECLINECOUNTER")
_TEXT_LIMIT = 200
_HEADER_LIMIT = 4000  # longer From/Subject headers are not parsed (the address parser is pure Python)
_MAX_HEADERS = 1_000  # header fields in one part; real mail has a few dozen
_MAX_NESTING = 8      # VCALENDAR > VEVENT > VALARM > … is 3 deep; icalendar's to_ical recurses
_PARTS_BEFORE_PARSE = 2  # the byte pre-scan also counts Content-Type lines quoted in bodies: allow slack
_CONTENT_TYPE_LINE = re.compile(rb"(?:^|[\r\n])content-type[ \t]*:", re.IGNORECASE)
# Decoders that turn harmless-looking bytes into other text (UTF-7 smuggles markup and line breaks past
# filters) or are not mail charsets at all.
_REFUSED_CODECS = {"utf-7", "unicode-escape", "raw-unicode-escape", "punycode", "idna", "undefined"}
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SPACE = re.compile("[\\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]+")
_MAILBOX = re.compile(r"[!#-'*+\-/-9=?A-Z^-~]+(?:\.[!#-'*+\-/-9=?A-Z^-~]+)*@[A-Za-z0-9.\-\[\]:]+")
_MESSAGE_ID = re.compile(r"<[^<>\s\x00-\x1f\x7f]+>")
_STATUS = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")
_TOO_FREQUENT = ("FREQ=SECONDLY", "FREQ=MINUTELY")
_TOKEN = re.compile(r"[A-Z][A-Z-]*")
MAX_HOPS = 50  # Received headers, as Postfix's hopcount_limit
# RFC 2045 §6.1; x-token encodings (and uuencode) are nothing a calendar client writes.
_ENCODINGS = ("7bit", "8bit", "binary", "quoted-printable", "base64")
# RFC 5545 §3.2.12, by component (see _check_partstats).
_PARTSTATS = {
    "VEVENT": {"NEEDS-ACTION", "ACCEPTED", "DECLINED", "TENTATIVE", "DELEGATED"},
    "VTODO": {"NEEDS-ACTION", "ACCEPTED", "DECLINED", "TENTATIVE", "DELEGATED", "COMPLETED", "IN-PROCESS"},
}
_BLANKS = re.compile(r"[ \t]+")
_BEGIN = b"BEGIN:VCALENDAR"


Found = tuple[str, icalendar.Calendar]  # METHOD, calendar


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 2_000_000        # whole message
    max_parts: int = 200              # MIME parts in total
    max_depth: int = 8                # multipart nesting
    max_calendar_bytes: int = 1_000_000
    max_components: int = 1_000       # BEGIN: lines in one calendar
    max_attendees: int = 1_000        # ATTENDEE lines in one calendar
    max_lines: int = 100_000          # whole message: the parser's cost is per line (an average of 20 bytes)


class Kind(enum.Enum):
    ITIP = "itip"
    BOUNCE = "bounce"
    AUTO_REPLY = "auto-reply"
    NO_CALENDAR = "no-calendar"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Bounce:
    """A delivery status notification (RFC 3464) about a message we sent."""

    failed: bool                      # some recipient's Action is "failed"
    recipients: tuple[str, ...]       # failed Final-Recipient and Original-Recipient, as "mailto:…"
    status: str                       # first failed recipient's Status ("5.1.1"), "" if none
    diagnostic: str                   # its Diagnostic-Code text, one line, ≤ 200 characters
    original_message_id: str | None
    original_calendar: icalendar.Calendar | None


@dataclass(frozen=True)
class MailOrigin:
    """It came by mail: the message as received, its envelope, and what mail authentication said about
    its From domain (None: authentication did not run)."""

    raw: bytes = field(repr=False)
    message_id: str | None = None
    subject: str = ""
    mail_from: str = ""               # envelope sender; "" for the null sender <>
    recipients: tuple[str, ...] = ()  # envelope recipients
    verdict: Verdict | None = None


@dataclass(frozen=True)
class PageOrigin:
    """It was given on the RSVP page: the reply token in the link proved the guest, as a reply address does
    for mail, so there is no From to check and no mail to authenticate."""

    token: ReplyToken
    client: str                       # the browser's address


Origin = MailOrigin | PageOrigin


@dataclass(frozen=True)
class Inbound:
    """One scheduling message from outside, by mail or from the RSVP page: what it says, and where it came
    from (``origin``), which is all triage needs to decide who may change what."""

    kind: Kind
    reason: str                       # why REJECTED / NO_CALENDAR / AUTO_REPLY / BOUNCE; "" for ITIP
    method: str | None
    calendar: icalendar.Calendar | None
    from_address: str | None          # who it says it is from: the From header; on the page, the token's guest
    origin: Origin
    bounce: Bounce | None = None

    def authenticated(self, verdict: Verdict | None) -> Inbound:
        """This mail with mail authentication's verdict on it."""
        assert isinstance(self.origin, MailOrigin)
        return dataclasses.replace(self, origin=dataclasses.replace(self.origin, verdict=verdict))


class _Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def extract(raw: bytes, limits: Limits = Limits(), *, mail_from: str = "",
            recipients: tuple[str, ...] = ()) -> Inbound:
    """Classify one inbound email and, for an iTIP message, return its validated calendar; ``mail_from``
    and ``recipients``: its envelope, kept in the origin."""
    sender = message_id = None
    subject = ""
    found: Found | None = None
    bounce = None
    try:
        message = _parse(raw, limits)
        leaves = _leaves(message, limits)
        _check_headers(message)
        sender, message_id, subject = _sender(message), _message_id(message), _subject(message)
        kind, reason, found, bounce = _classify(message, leaves, limits)
    except _Rejected as exc:
        kind, reason = Kind.REJECTED, exc.reason
    except Exception as exc:  # hostile input must never take the listener down; a bug here is logged
        logger.warning("inbound message could not be read: %s", _one_line(repr(exc)))
        logger.debug("inbound message could not be read", exc_info=True)
        kind, reason, found, bounce = Kind.REJECTED, "the message could not be read", None, None
    method, calendar = found if found is not None else (None, None)
    return Inbound(kind, reason, method, calendar, sender,
                   MailOrigin(raw, message_id, subject, mail_from, tuple(recipients)), bounce)


# --- MIME ---------------------------------------------------------------------------------------------

def _parse(raw: bytes, limits: Limits) -> Message:
    """compat32 keeps header values as written: broken real mail still parses, and no header parser runs
    on hostile input unless we ask for that header."""
    if len(raw) > limits.max_bytes:
        raise _Rejected(f"the message is larger than {limits.max_bytes} bytes")
    if not raw.strip():
        raise _Rejected("the message is empty")
    if raw.count(b"\n") + raw.count(b"\r") - raw.count(b"\r\n") > limits.max_lines:  # the parser's line ends
        raise _Rejected(f"the message has more than {limits.max_lines} lines")
    if len(_CONTENT_TYPE_LINE.findall(raw)) > _PARTS_BEFORE_PARSE * limits.max_parts:
        raise _Rejected(f"the message has more than {limits.max_parts} MIME parts")
    parser = BytesFeedParser(policy=compat32.clone(message_factory=_part_counter(limits.max_parts)))
    parser.feed(bytes(raw))
    return parser.close()


def _part_counter(max_parts: int) -> Callable[..., Message]:
    """A message factory that stops the parser at the first part over the limit, nested or not."""
    made = 0

    def new_part(policy=compat32) -> Message:
        nonlocal made
        made += 1
        if made > max_parts:
            raise _Rejected(f"the message has more than {max_parts} MIME parts")
        return Message(policy=policy)
    return new_part


def _leaves(message: Message, limits: Limits) -> list[tuple[Message, bool]]:
    """Every non-container part in document order, with whether it is inside a quoted message.

    Also the cap on header fields, before anything looks one up (each look-up reads them all).
    """
    leaves = []
    stack = [(message, 0, False)]
    while stack:
        part, depth, quoted = stack.pop()
        if depth > limits.max_depth:
            raise _Rejected(f"the message nests MIME parts more than {limits.max_depth} deep")
        if len(part) > _MAX_HEADERS:
            raise _Rejected(f"a MIME part has more than {_MAX_HEADERS} header fields")
        if part.is_multipart():
            inside = quoted or part.get_content_maintype() == "message"
            stack.extend((child, depth + 1, inside) for child in reversed(part.get_payload()))
        else:
            leaves.append((part, quoted))
    return leaves


def _check_headers(message: Message) -> None:
    """Refuse mail whose author is ambiguous or that is going round in a loop."""
    senders = len(_headers(message, "From"))
    if senders > 1:
        raise _Rejected(f"the message has {senders} From headers, so its author is unknown "
                        "(RFC 5322 allows one; DMARC, RFC 7489 §6.6.1, refuses such mail)")
    hops = len(_headers(message, "Received"))
    if hops > MAX_HOPS:
        raise _Rejected(f"the message passed through {hops} mail servers (more than {MAX_HOPS} Received "
                        "headers): a mail loop")


def _param(part: Message, name: str) -> str:
    value = part.get_param(name)
    if isinstance(value, tuple):  # RFC 2231
        value = collapse_rfc2231_value(value)
    return str(value or "").strip()


def _headers(message: Message, name: str) -> list[str]:
    """A header's values as written, 8-bit bytes read as UTF-8."""
    return [value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            for key, value in message.raw_items() if key.lower() == name.lower()]


def _header(message: Message, name: str) -> str:
    found = _headers(message, name)
    return found[0] if found else ""


def _one_line(text: str, limit: int = _TEXT_LIMIT) -> str:
    return _SPACE.sub(" ", text).strip()[:limit]


def _sender(message: Message) -> str | None:
    """The From address; None when there is none, several, or it is not a plain mailbox."""
    found = _headers(message, "From")
    if len(found) != 1 or len(found[0]) > _HEADER_LIMIT or _comment_depth(found[0]) > _MAX_NESTING:
        return None
    mailboxes = {address for _, address in getaddresses(found) if _MAILBOX.fullmatch(address)}
    return normalize(mailboxes.pop()) if len(mailboxes) == 1 else None


def _comment_depth(text: str) -> int:
    """How deep "(comments)" nest, at most: the standard address parser recurses once per level."""
    depth = deepest = 0
    for char in text:
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth = max(depth - 1, 0)
    return deepest


def _message_id(message: Message) -> str | None:
    match = _MESSAGE_ID.search(_header(message, "Message-ID")[:_HEADER_LIMIT])
    return match.group() if match else None


def _subject(message: Message) -> str:
    raw = _header(message, "Subject")[:_HEADER_LIMIT]
    try:
        text = str(make_header(decode_header(raw)))
    except Exception:  # unknown charset or broken encoded-word: show it as written
        text = raw
    return _one_line(text)


# --- classification -----------------------------------------------------------------------------------

def _classify(message: Message, leaves: list[tuple[Message, bool]],
              limits: Limits) -> tuple[Kind, str, Found | None, Bounce | None]:
    if _is_delivery_report(message):
        bounce = _bounce(message, limits)
        if bounce.failed:
            return Kind.BOUNCE, f"the message reports a failed delivery ({bounce.status or 'no status'})", None, bounce
        return Kind.BOUNCE, "the message is a delivery status report without a failure", None, bounce
    auto = _auto_reply(message)
    if auto:
        return Kind.AUTO_REPLY, f"the message is an automatic reply ({auto})", None, None
    found = _itip(leaves, limits)
    if found is None:
        return Kind.NO_CALENDAR, "the message carries no calendar", None, None
    return Kind.ITIP, "", found, None


def _is_delivery_report(message: Message) -> bool:
    """RFC 3464 bounces quote the invitation they return: they are never the guest's answer."""
    return (message.get_content_type() == "multipart/report"
            and _param(message, "report-type").lower() == "delivery-status")


def _auto_reply(message: Message) -> str:
    """The header that marks an auto-reply (RFC 3834 and common vendor headers), "" if none.

    ``Auto-Submitted: auto-generated`` is not one: Google Calendar sends people's real answers with it.
    """
    if _header(message, "Auto-Submitted").split(";")[0].strip().lower() == "auto-replied":
        return "Auto-Submitted: auto-replied"
    for name in ("X-Autoreply", "X-Autorespond"):
        if _headers(message, name):
            return name
    if _header(message, "Precedence").strip().lower() == "auto_reply":
        return "Precedence: auto_reply"
    return ""


def _itip(leaves: list[tuple[Message, bool]], limits: Limits) -> Found | None:
    """The message's calendar: the first inline text/calendar part, else the .ics attachments if they agree.

    Parts inside a quoted message (message/rfc822) are someone else's and are skipped.
    """
    own = [part for part, quoted in leaves if not quoted]
    inline = next((part for part in own if part.get_content_type() == "text/calendar"), None)
    if inline is not None:
        return _read(inline, limits)
    found = None
    for part in filter(_is_ics, own):
        method, calendar = _read(part, limits)
        if found is None:
            found = method, calendar
        elif method != found[0] or calendar.to_ical() != found[1].to_ical():
            raise _Rejected("the message attaches different calendars and none is inline (text/calendar)")
    return found


def _is_ics(part: Message) -> bool:
    ctype = part.get_content_type()
    if ctype == "application/ics" or str(part.get_filename() or "").strip().lower().endswith(".ics"):
        return True
    if ctype != "application/octet-stream":
        return False
    payload = part.get_payload(decode=True)  # a sniff: some programs send any attachment as octet-stream
    return isinstance(payload, bytes) and payload[:64].lstrip(b"\xef\xbb\xbf \t\r\n").upper().startswith(_BEGIN)


# --- the calendar -------------------------------------------------------------------------------------

def _read(part: Message, limits: Limits) -> Found:
    data = _payload(part)
    if not data.strip():
        raise _Rejected("the calendar part is empty")
    if len(data) > limits.max_calendar_bytes:
        raise _Rejected(f"the calendar is larger than {limits.max_calendar_bytes} bytes")
    text = _decode(data, part)
    if "\ufeff" in text:
        raise _Rejected("the calendar part has a byte order mark (BOM): not iCalendar text")
    if "\x00" in text:
        raise _Rejected("the calendar part has NUL characters: not iCalendar text")
    _check_lines(text, limits)
    try:
        with _zones_of_this_message_only():
            calendar = icalendar.Calendar.from_ical(text)
    except Exception as exc:  # the parser's reason is the useful part
        raise _Rejected(f"the calendar is malformed: {_one_line(str(exc))}") from None
    if not isinstance(calendar, icalendar.Calendar):
        raise _Rejected("the calendar part holds no VCALENDAR")
    _check_parsed(calendar)
    _check_partstats(calendar)
    method = _method(calendar, _param(part, "method"))
    replace(calendar, "METHOD", method)
    return method, calendar


def _payload(part: Message) -> bytes:
    """The part's bytes, decoded strictly: the ``email`` package skips what it cannot decode, so a
    damaged calendar would be read as another, shorter one."""
    encoding = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower() or "7bit"
    if encoding not in _ENCODINGS:
        raise _Rejected(f"the calendar part's Content-Transfer-Encoding {_one_line(encoding, 40)!r} is unknown")
    if encoding != "base64":
        data = part.get_payload(decode=True)
        return data if isinstance(data, bytes) else b""
    text = part.get_payload()
    if not isinstance(text, str):
        return b""
    try:
        return base64.b64decode("".join(text.split()).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise _Rejected("the calendar part's base64 is broken") from None


@contextlib.contextmanager
def _zones_of_this_message_only() -> Iterator[None]:
    """icalendar caches every VTIMEZONE whose TZID it does not know, process-wide, first definition
    winning: a forged mail defining "Custom/Zone" as +13:00 would shift every later calendar, anyone's,
    using that name. The zones a message defines serve its own times (already resolved when parsing
    returns) and are forgotten afterwards. The cache is icalendar's private attribute: without it
    (another icalendar version), nothing is done."""
    cache = getattr(tzp, "_TZP__tz_cache", None)
    known = set(cache) if isinstance(cache, dict) else set()
    try:
        yield
    finally:
        if isinstance(cache, dict):
            for tzid in set(cache) - known:
                cache.pop(tzid, None)


def _decode(data: bytes, part: Message) -> str:
    """The part's text in its declared charset; undeclared (or ASCII) bytes are UTF-8, else Latin-1."""
    declared = _param(part, "charset").lower()
    try:
        codec = codecs.lookup(declared).name if declared else "ascii"
    except (LookupError, ValueError, TypeError):
        raise _Rejected(f"the calendar's charset {_one_line(declared, 40)!r} is unknown") from None
    if codec in _REFUSED_CODECS:
        raise _Rejected(f"the calendar's charset {codec} is not accepted")
    if codec == "ascii":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):  # LookupError: a codec that is not a text encoding
        raise _Rejected(f"the calendar is not valid {codec} text") from None


def _check_lines(text: str, limits: Limits) -> None:
    """Counts on icalendar's own unfolded lines, so nothing is parsed that would exceed a limit."""
    try:
        lines = Contentlines.from_ical(text)
    except Exception as exc:
        raise _Rejected(f"the calendar is malformed: {_one_line(str(exc))}") from None
    components = attendees = depth = 0
    for line in lines:
        name = _BLANKS.sub("", line.split(":", 1)[0].split(";", 1)[0].strip()).upper()
        if name == "BEGIN":
            components += 1
            depth += 1
            if components > limits.max_components:
                raise _Rejected(f"the calendar has more than {limits.max_components} components")
            if depth > _MAX_NESTING:
                raise _Rejected(f"the calendar nests components more than {_MAX_NESTING} deep")
        elif name == "END":
            depth -= 1
        elif name == "ATTENDEE":
            attendees += 1
            if attendees > limits.max_attendees:
                raise _Rejected(f"the calendar has more than {limits.max_attendees} attendees")
        elif name in ("RRULE", "EXRULE"):
            rule = _BLANKS.sub("", line).upper()
            if any(freq in rule for freq in _TOO_FREQUENT):
                raise _Rejected("the calendar repeats every second or minute: not a meeting")


def _check_parsed(calendar: icalendar.Calendar) -> None:
    """Lines icalendar dropped, and control characters that could break a mail header or a log line."""
    for component in calendar.walk():
        for name, error in component.errors:
            if name is None or not name.upper().startswith("X-"):  # a broken X- property is only ignored
                raise _Rejected(f"the calendar is malformed: {_one_line(error)}")
        for name in component:
            for prop in values(component, name):
                texts = [str(prop)] if name in ("ATTENDEE", "ORGANIZER") else []
                for value in getattr(prop, "params", {}).values():
                    texts.extend(str(item) for item in (value if isinstance(value, (list, tuple)) else [value]))
                if any(_CONTROL.search(text) for text in texts):
                    raise _Rejected(f"the calendar's {name} has a control character in a parameter or address")


def _check_partstats(calendar: icalendar.Calendar) -> None:
    """Every PARTSTAT must be one RFC 5545 defines for its component.

    RFC 5545 also allows x-names and IANA tokens registered later, but tells clients to read any value
    they do not know as NEEDS-ACTION: such a value is no answer. A REPLY exists to carry the attendee's
    answer (RFC 5546 §3.2.3), and storing an unreadable one would put a value in the organizer's event
    that no client can show. So an empty value, an x-name (``X-FOO``) or any token not defined for the
    component (``COMPLETED`` on an event) is refused, and the mail goes to the quarantine with the reason.
    """
    for component in scheduled(calendar):
        for attendee in values(component, "ATTENDEE"):
            partstat = getattr(attendee, "params", {}).get("PARTSTAT")
            if partstat is not None and (not isinstance(partstat, str)
                                         or partstat.upper() not in _PARTSTATS.get(component.name, ())):
                shown = _one_line(str(partstat), 40)
                raise _Rejected(f"the calendar's ATTENDEE {normalize(str(attendee))} has PARTSTAT={shown}, "
                                f"which is no answer to a {component.name} (RFC 5545 §3.2.12)")


def _method(calendar: icalendar.Calendar, content_type_method: str) -> str:
    """The body's METHOD; the Content-Type ``method`` parameter only when the body has none."""
    written = {str(value).strip().upper() for value in values(calendar, "METHOD")}
    if len(written) > 1:
        raise _Rejected("the calendar has two different METHODs")
    method = written.pop() if written else content_type_method.upper()
    if not method:
        raise _Rejected("the calendar has no METHOD")
    if method not in METHODS:
        shown = method if _TOKEN.fullmatch(method) else "?"
        raise _Rejected(f"the calendar's METHOD {shown[:40]} is not an iTIP method")
    if method == "REPLY":
        people = set()
        for component in scheduled(calendar):
            found = addresses(component)
            if len(found) != 1:
                raise _Rejected("a REPLY names exactly one attendee (RFC 5546 §3.2.3)")
            people.update(found)
        if len(people) > 1:
            raise _Rejected("a REPLY names exactly one attendee (RFC 5546 §3.2.3)")
    return method


# --- bounces ------------------------------------------------------------------------------------------

def _bounce(report: Message, limits: Limits) -> Bounce:
    """Read an RFC 3464 report: per-recipient field groups, then the quoted original or its headers."""
    groups: list[Message] = []
    original = None
    for child in report.get_payload() if report.is_multipart() else []:
        ctype = child.get_content_type()
        if ctype == "message/delivery-status" and child.is_multipart():
            groups = [group for group in child.get_payload() if _header(group, "Action")]
        elif original is None and ctype in ("message/rfc822", "message/global") and child.is_multipart():
            original = child.get_payload(0)
        elif original is None and ctype == "text/rfc822-headers":
            payload = child.get_payload(decode=True)
            if isinstance(payload, bytes):
                original = HeaderParser(policy=compat32).parsestr(payload.decode("utf-8", "replace"),
                                                                  headersonly=True)
    failed = [group for group in groups if _header(group, "Action").strip().lower().startswith("failed")]
    recipients: list[str] = []
    for group in failed:
        for field in ("Final-Recipient", "Original-Recipient"):
            address = _header(group, field).split(";", 1)[-1].strip().strip("<>")
            if _MAILBOX.fullmatch(address) and normalize(address) not in recipients:
                recipients.append(normalize(address))
    first = failed[0] if failed else None
    status = _STATUS.search(_header(first, "Status")) if first is not None else None
    diagnostic = _header(first, "Diagnostic-Code").split(";", 1)[-1] if first is not None else ""
    return Bounce(failed=bool(failed), recipients=tuple(recipients), status=status.group() if status else "",
                  diagnostic=_one_line(diagnostic),
                  original_message_id=_message_id(original) if original is not None else None,
                  original_calendar=_original_calendar(original, limits))


def _original_calendar(original: Message | None, limits: Limits) -> icalendar.Calendar | None:
    if original is None:
        return None
    try:
        found = _itip(_leaves(original, limits), limits)
    except _Rejected:
        return None
    return found[1] if found else None
