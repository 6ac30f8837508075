# SPDX-License-Identifier: GPL-3.0-or-later
"""The real iMIP messages in ``../shared/imip-samples/`` as they travel by mail, and the organizer's event
each reply answers, built from the sample itself so the two agree on UID, times and addresses."""
from __future__ import annotations

import email
import email.policy
import re
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "imip-samples"

_UNFOLD = re.compile(r"\r?\n[ \t]")
_COPIED = ("UID", "DTSTART", "DTEND", "DURATION", "RRULE", "RECURRENCE-ID", "SUMMARY")


def raw(name: str, sender: str = "", to: str = "") -> bytes:
    """Sample ``name`` ready to send: CRLF line ends as SMTP carries mail (smtplib sends bytes unchanged, the
    files mix both); a bare .ics goes inside a minimal mail from ``sender`` to ``to``."""
    data = (SAMPLES / name).read_bytes()
    if name.endswith(".ics"):
        method = re.search(rb"^METHOD:(\w+)", data, re.MULTILINE)
        assert method is not None, name
        head = (f"From: {sender}\nTo: {to}\nSubject: {name}\nMIME-Version: 1.0\n"
                f"Content-Type: text/calendar; charset=UTF-8; method={method.group(1).decode()}\n"
                "Content-Transfer-Encoding: 8bit\n\n")
        data = head.encode() + data.rstrip() + b"\n"
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def calendar_text(name: str) -> str:
    """The sample's calendar, unfolded, LF line ends: the first text/calendar part of a mail."""
    data = (SAMPLES / name).read_bytes()
    if not name.endswith(".ics"):
        message = email.message_from_bytes(data, policy=email.policy.compat32)
        part = next(p for p in message.walk() if p.get_content_type() == "text/calendar")
        data = part.get_payload(decode=True)
    return _UNFOLD.sub("", data.decode("utf-8").replace("\r\n", "\n"))


def _property(line: str) -> str:
    return re.split(r"[;:]", line, maxsplit=1)[0].upper()


def _address(line: str) -> str:
    """The address of an ATTENDEE line as an organizer's client writes it: ``mailto:`` + lower case (every
    sample writes a mailto: URI; parameters before it may hold colons, e.g. a quoted DIR)."""
    return "mailto:" + line[line.lower().rindex("mailto:") + len("mailto:"):].strip().lower()


def organizer_event(name: str, organizer: str, **overrides: str) -> str:
    """The organizer's copy of the event sample ``name`` is about: the sample's UID, times, recurrence,
    SEQUENCE (0 when it has none) and time zones, ``organizer`` as ORGANIZER and the sample's attendees
    not yet answered. ``overrides``: whole property lines by name, e.g. ``DTSTART="DTSTART:…"``."""
    text = calendar_text(name)
    zones = re.findall(r"^BEGIN:VTIMEZONE\n.*?^END:VTIMEZONE\n", text, re.MULTILINE | re.DOTALL)
    event = re.search(r"^BEGIN:VEVENT\n(.*?)^END:VEVENT", text, re.MULTILINE | re.DOTALL)
    assert event is not None, name
    alarms = re.compile(r"^BEGIN:VALARM\n.*?^END:VALARM\n", re.MULTILINE | re.DOTALL)
    lines = alarms.sub("", event.group(1)).splitlines()
    kept = {_property(line): line for line in lines if _property(line) in _COPIED}
    kept.update({key.replace("_", "-"): value for key, value in overrides.items()})
    sequence = next((line.split(":", 1)[1] for line in lines if _property(line) == "SEQUENCE"), "0")
    guests = [f"ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:{_address(line)}"
              for line in lines if _property(line) == "ATTENDEE"]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return "\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Invito tests//EN",
        *(line for zone in zones for line in zone.splitlines()),
        "BEGIN:VEVENT", *kept.values(), f"DTSTAMP:{stamp}", f"SEQUENCE:{sequence}",
        f"ORGANIZER:{organizer}", *guests, "END:VEVENT", "END:VCALENDAR", ""])
