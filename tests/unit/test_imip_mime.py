# SPDX-License-Identifier: GPL-3.0-or-later
"""iMIP composition: the mail a guest's program turns into an invitation, parsed back as the guest gets it."""
from __future__ import annotations

import base64
import email
import re
from datetime import datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage

import icalendar
import pytest

from invito.plugins.imip import i18n
from invito.plugins.imip.mime import Sender, compose, prepare

from tests.unit.itip_helpers import ROME

SENDER = Sender("invito@cal.example.com")
GUEST = "mailto:guest@partner.org"
WHEN = datetime(2030, 9, 1, 12, 0, tzinfo=timezone.utc)
PDF = b"%PDF-1.4\x00\xff\xfe binary \r\n bytes"
NOTES = b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n"  # a file that must not pose as the invitation


def ics(*event_lines: str, method: str = "REQUEST", tz: str = ROME, calendar_lines: str = "") -> icalendar.Calendar:
    text = ("BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//Invito//iTIP//EN\n" + (f"METHOD:{method}\n" if method else "")
            + calendar_lines + tz + "".join(event_lines) + "END:VCALENDAR\n")
    return icalendar.Calendar.from_ical(text.replace("\n", "\r\n"))


def event(*lines: str, start: str = "DTSTART;TZID=Europe/Rome:20301010T090000",
          end: str = "DTEND;TZID=Europe/Rome:20301010T100000", summary: str = "Planning", sequence: int = 0,
          stamp: str = "20300901T120000Z", attendees: bool = True) -> str:
    people = ["ORGANIZER;CN=Alice Rossi:mailto:alice@example.com",
              "ATTENDEE;CN=Alice Rossi;PARTSTAT=ACCEPTED:mailto:alice@example.com",
              "ATTENDEE;CN=Guest One;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;SCHEDULE-STATUS=1.0:mailto:guest@partner.org",
              "ATTENDEE;CN=Carol Bianchi;PARTSTAT=TENTATIVE;X-INVITO-COMMENT=private:mailto:carol@other.net"]
    head = ["BEGIN:VEVENT", "UID:m1@example.com", f"DTSTAMP:{stamp}", f"SEQUENCE:{sequence}", start, end,
            f"SUMMARY:{summary}"]
    return "\n".join([*head, *(people if attendees else []), *lines, "END:VEVENT", ""])


def mail(cal: icalendar.Calendar, recipient: str = GUEST, **options) -> email.message.EmailMessage:
    """Compose, serialize and parse back, as the guest's mail program receives it."""
    options.setdefault("sender", SENDER)
    options.setdefault("message_date", WHEN)
    built = compose(cal, recipient, **options)
    assert isinstance(built, EmailMessage)
    return email.message_from_bytes(built.as_bytes(), policy=policy.default)


def calendars(msg: email.message.EmailMessage) -> dict[str, bytes]:
    return {p.get_content_type(): p.get_payload(decode=True) for p in msg.walk()
            if p.get_content_type() in ("text/calendar", "application/ics")}


def calendar_sent(msg: email.message.EmailMessage) -> icalendar.Calendar:
    return icalendar.Calendar.from_ical(calendars(msg)["text/calendar"])


def text_body(msg: email.message.EmailMessage) -> str:
    return msg.get_body(("plain",)).get_content()


def html_body(msg: email.message.EmailMessage) -> str:
    return msg.get_body(("html",)).get_content()


def attendee_addresses(cal: icalendar.Calendar) -> list[str]:
    return [str(a).lower() for ev in cal.walk("VEVENT") for a in _list(ev.get("ATTENDEE"))]


def _list(value: object) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


# --- structure and the calendar that is sent ----------------------------------------------------------------

def test_request_has_the_shape_mail_programs_show_as_an_invitation() -> None:
    msg = mail(ics(event(f"ATTACH;VALUE=BINARY;ENCODING=BASE64;FMTTYPE=application/pdf;FILENAME=agenda.pdf:"
                         f"{base64.b64encode(PDF).decode()}")))
    assert msg.get_content_type() == "multipart/mixed"
    top = list(msg.iter_parts())
    assert [p.get_content_type() for p in top] == ["multipart/alternative", "application/ics", "application/pdf"]
    assert [p.get_content_type() for p in top[0].iter_parts()] == ["text/plain", "text/html", "text/calendar"]
    inline = list(top[0].iter_parts())[2]
    assert inline.get_param("method") == "REQUEST" and inline.get_content_charset() == "utf-8"
    assert inline["Content-Transfer-Encoding"] == "base64"
    raw = inline.get_payload(decode=True)
    assert raw.count(b"\r\n") == raw.count(b"\n")  # iCalendar's CRLF line ends arrive intact
    assert top[1].get_filename() == "invite.ics" and top[1].get_content_disposition() == "attachment"
    assert top[1].get_payload(decode=True) == raw
    assert top[2].get_filename() == "agenda.pdf" and top[2].get_payload(decode=True) == PDF
    for part in msg.walk():
        assert part["Content-Transfer-Encoding"] in (None, "7bit", "base64", "quoted-printable")


def test_calendar_has_one_method_its_timezone_and_nothing_private() -> None:
    cal = ics(event("X-MOZ-SNOOZE-TIME:20301010T080000Z", "X-MICROSOFT-CDO-BUSYSTATUS:BUSY",
                    "BEGIN:VALARM", "ACTION:DISPLAY", "TRIGGER:-PT15M", "DESCRIPTION:Reminder", "END:VALARM"),
              calendar_lines="METHOD:REQUEST\nX-WR-CALNAME:Alice's private calendar\n")
    assert len(cal["METHOD"]) == 2  # the input repeats it
    msg = mail(cal)
    for content_type, data in calendars(msg).items():
        text = data.decode()
        assert text.count("METHOD:") == 1 and "METHOD:REQUEST" in text, content_type
        sent = icalendar.Calendar.from_ical(data)
        assert [tz["TZID"] for tz in sent.walk("VTIMEZONE")] == ["Europe/Rome"]
        for forbidden in ("VALARM", "X-INVITO", "SCHEDULE-STATUS", "X-MOZ-SNOOZE", "X-WR-CALNAME"):
            assert forbidden not in text, (content_type, forbidden)
        assert "X-MICROSOFT-CDO-BUSYSTATUS:BUSY" in text  # Outlook's busy status is for every attendee
        assert sorted(attendee_addresses(sent)) == ["mailto:alice@example.com", "mailto:carol@other.net",
                                                    "mailto:guest@partner.org"]


def test_missing_vtimezone_is_generated_for_an_iana_zone() -> None:
    sent = calendar_sent(mail(ics(event(), tz="")))
    assert [str(tz["TZID"]) for tz in sent.walk("VTIMEZONE")] == ["Europe/Rome"]
    start = sent.walk("VEVENT")[0].decoded("DTSTART")
    assert start.utcoffset() == timedelta(hours=2)  # the generated zone covers the event's date (summer time)


def test_only_used_timezones_travel_and_a_series_gets_years_of_rules() -> None:
    in_utc = calendar_sent(mail(ics(event(start="DTSTART:20301010T090000Z", end="DTEND:20301010T100000Z"))))
    assert in_utc.walk("VTIMEZONE") == []  # ROME is in the input but nothing uses it
    series = calendar_sent(mail(ics(event("RRULE:FREQ=WEEKLY"), tz="")))
    zone = series.walk("VTIMEZONE")[0].to_ical()
    assert b"2039" in zone  # an endless weekly series: summer time is right for years, not just this week


def test_binary_attachments_leave_the_calendar_uri_attachments_stay() -> None:
    msg = mail(ics(event(
        f"ATTACH;VALUE=BINARY;ENCODING=BASE64;FMTTYPE=application/pdf;X-FILENAME=../../agenda.pdf:"
        f"{base64.b64encode(PDF).decode()}",
        f"ATTACH;VALUE=BINARY;ENCODING=BASE64;FMTTYPE=text/calendar:{base64.b64encode(NOTES).decode()}",
        "ATTACH;FMTTYPE=text/html;FILENAME=spec.html:https://docs.example.org/spec",
        "ATTACH:javascript:alert(1)")))
    files = [(p.get_filename(), p.get_content_type(), p.get_payload(decode=True)) for p in msg.iter_attachments()]
    assert files == [("invite.ics", "application/ics", calendars(msg)["application/ics"]),
                     ("agenda.pdf", "application/pdf", PDF),
                     ("attachment-2.bin", "application/octet-stream", NOTES)]  # never a second text/calendar
    assert sum(p.get_content_type() == "text/calendar" for p in msg.walk()) == 1
    sent = calendar_sent(msg)
    assert [str(a) for a in _list(sent.walk("VEVENT")[0].get("ATTACH"))] == ["https://docs.example.org/spec",
                                                                             "javascript:alert(1)"]
    assert b"BINARY" not in calendars(msg)["text/calendar"]
    assert '<a href="https://docs.example.org/spec"' in html_body(msg)
    assert 'href="javascript' not in html_body(msg)
    assert "spec.html: https://docs.example.org/spec" in text_body(msg)
    assert "agenda.pdf (attached)" in text_body(msg)


# --- what the guest reads -----------------------------------------------------------------------------------

def test_request_body_and_headers_in_english() -> None:
    msg = mail(ics(event("LOCATION:Sala Verde", "DESCRIPTION:Agenda:\\n1. budget",
                         "URL:https://intranet.example.com/m1",
                         "CONFERENCE;VALUE=URI;FEATURE=VIDEO;LABEL=Video call:https://meet.example.com/abc",
                         "X-GOOGLE-CONFERENCE:https://meet.google.com/xyz")))
    assert msg["Subject"] == "Invitation: Planning @ Thu, 10 Oct 2030 09:00 (CEST)"
    assert msg["From"].addresses[0].display_name == "Alice Rossi via Invito"
    assert msg["From"].addresses[0].addr_spec == "invito@cal.example.com"
    assert str(msg["Reply-To"]) == "Alice Rossi <alice@example.com>"
    assert str(msg["To"]) == "Guest One <guest@partner.org>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Date"].datetime == WHEN
    text = text_body(msg)
    for expected in ("Alice Rossi has invited you to an event",
                     "Thursday, 10 October 2030, 09:00 – 10:00 (Central European Summer Time)",
                     "Where: Sala Verde", "Organizer: Alice Rossi <alice@example.com>",
                     "Carol Bianchi <carol@other.net> (maybe)", "Agenda:\n1. budget",
                     "Video call: https://meet.example.com/abc", "Join the meeting: https://meet.google.com/xyz",
                     "Event page: https://intranet.example.com/m1", "Accept, Maybe or Decline"):
        assert expected in text, expected
    assert "Guest One" not in text.split("Guests:")[1].split("Links:")[0]  # the reader is not a "guest" of theirs
    html = html_body(msg)
    assert '<a href="https://meet.example.com/abc"' in html and "Central European Summer Time" in html


def test_italian_subject_dates_and_labels() -> None:
    msg = mail(ics(event("LOCATION:Sala Verde")), language="it")
    assert msg["Subject"] == "Invito: Planning @ gio 10 ott 2030 09:00 (CEST)"
    assert msg["From"].addresses[0].display_name == "Alice Rossi tramite Invito"
    text = text_body(msg)
    for expected in ("Alice Rossi ti ha invitato a un evento", "giovedì 10 ottobre 2030, 09:00 – 10:00",
                     "Ora legale dell’Europa centrale", "Dove: Sala Verde", "Organizzatore:",
                     "Carol Bianchi <carol@other.net> (forse)"):
        assert expected in text, expected
    assert '<html lang="it">' in html_body(msg)


@pytest.mark.parametrize("start, end, body, subject", [
    ("DTSTART;VALUE=DATE:20301010", "DTEND;VALUE=DATE:20301011", "Thursday, 10 October 2030 (all day)",
     "Thu, 10 Oct 2030"),
    ("DTSTART;VALUE=DATE:20301010", "DTEND;VALUE=DATE:20301013",
     "Thursday, 10 October 2030 – Saturday, 12 October 2030", "Thu, 10 Oct 2030"),
    ("DTSTART;TZID=Europe/Rome:20301010T220000", "DTEND;TZID=Europe/Rome:20301011T020000",
     "Thursday, 10 October 2030, 22:00 – Friday, 11 October 2030, 02:00 (Central European Summer Time)",
     "Thu, 10 Oct 2030 22:00 (CEST)"),
    ("DTSTART:20301210T090000Z", "DURATION:PT30M", "Tuesday, 10 December 2030, 09:00 – 09:30 (Coordinated "
     "Universal Time)", "Tue, 10 Dec 2030 09:00 (UTC)"),
])
def test_all_day_multi_day_and_utc_events(start: str, end: str, body: str, subject: str) -> None:
    msg = mail(ics(event(start=start, end=end)))
    assert body in text_body(msg)
    assert msg["Subject"] == f"Invitation: Planning @ {subject}"


@pytest.mark.parametrize("rule, language, expected", [
    ("FREQ=WEEKLY;BYDAY=TH,FR;COUNT=10", "en", "Repeats every week on Thursday and Friday, 10 times"),
    ("FREQ=WEEKLY;BYDAY=TH,FR;COUNT=10", "it", "Si ripete ogni settimana di giovedì e venerdì, 10 volte"),
    ("FREQ=DAILY;INTERVAL=2;UNTIL=20301231", "en", "Repeats every 2 days, until Tuesday, 31 December 2030"),
    ("FREQ=MONTHLY;BYMONTHDAY=10", "it", "Si ripete ogni mese il giorno 10"),
    ("FREQ=MONTHLY;BYDAY=2TU", "en", "Repeats every month\n"),  # no words for "second Tuesday": frequency only
    ("FREQ=YEARLY;BYMONTH=10;BYSETPOS=1", "en", "Repeats every year\n"),
])
def test_recurrence_in_words(rule: str, language: str, expected: str) -> None:
    assert expected in text_body(mail(ics(event(f"RRULE:{rule}")), language=language))


def test_update_says_what_changed() -> None:
    cal = ics(event(sequence=1))
    msg = mail(cal, changes=["time", "location"])
    assert msg["Subject"].startswith("Updated invitation: Planning @ ")
    assert "What changed: time and location" in text_body(msg)
    assert "Alice Rossi has updated this event" in text_body(msg)
    italian = mail(cal, changes=["time", "location"], language="it")
    assert italian["Subject"].startswith("Invito aggiornato: Planning @ ")
    assert "Cosa è cambiato: orario e luogo" in text_body(italian)


def test_cancel() -> None:
    cal = ics(event("STATUS:CANCELLED", sequence=2), method="CANCEL")
    msg = mail(cal)
    assert msg["Subject"] == "Cancelled: Planning @ Thu, 10 Oct 2030 09:00 (CEST)"
    assert calendars(msg)["text/calendar"].count(b"METHOD:CANCEL") == 1
    assert msg.get_body(("plain",)).get_content_type() == "text/plain"
    assert [p.get_param("method") for p in msg.walk() if p.get_content_type() == "text/calendar"] == ["CANCEL"]
    assert "Alice Rossi has cancelled this event" in text_body(msg)
    assert "Accept, Maybe or Decline" not in text_body(msg)
    assert mail(cal, language="it")["Subject"].startswith("Annullato: Planning @ ")


def test_cancel_of_one_occurrence_names_it() -> None:
    one = "\n".join(["BEGIN:VEVENT", "UID:m1@example.com", "DTSTAMP:20300901T120000Z", "SEQUENCE:1",
                     "RECURRENCE-ID;TZID=Europe/Rome:20301017T090000", "DTSTART;TZID=Europe/Rome:20301017T090000",
                     "SUMMARY:Planning", "ORGANIZER;CN=Alice Rossi:mailto:alice@example.com",
                     "ATTENDEE;CN=Guest One:mailto:guest@partner.org", "END:VEVENT", ""])
    text = text_body(mail(ics(one, method="CANCEL")))
    assert "Alice Rossi has cancelled these occurrences of the event" in text
    assert "Thursday, 17 October 2030, 09:00 (Central European Summer Time)" in text


REPLY_EVENT = "\n".join(["BEGIN:VEVENT", "UID:ext-1@partner.org", "DTSTAMP:20300902T080000Z", "SEQUENCE:0",
                         "DTSTART;TZID=Europe/Rome:20301010T090000", "SUMMARY:Partner sync",
                         "ORGANIZER;CN=Paula Partner:mailto:paula@partner.org",
                         "ATTENDEE;CN=Bob Verdi;PARTSTAT={partstat}:mailto:bob@example.com",
                         "COMMENT:See you there", "END:VEVENT", ""])


@pytest.mark.parametrize("partstat, language, subject, headline", [
    ("ACCEPTED", "en", "Accepted: Partner sync", "Bob Verdi accepted: Partner sync"),
    ("DECLINED", "en", "Declined: Partner sync", "Bob Verdi declined: Partner sync"),
    ("TENTATIVE", "en", "Tentative: Partner sync", "Bob Verdi tentatively accepted: Partner sync"),
    ("ACCEPTED", "it", "Accettato: Partner sync", "Bob Verdi ha accettato: Partner sync"),
    ("DECLINED", "it", "Rifiutato: Partner sync", "Bob Verdi ha rifiutato: Partner sync"),
])
def test_reply_to_an_external_organizer(partstat: str, language: str, subject: str, headline: str) -> None:
    msg = mail(ics(REPLY_EVENT.format(partstat=partstat), method="REPLY"), "mailto:paula@partner.org",
               language=language, hide_attendees=True)
    assert msg["Subject"].startswith(subject + " @ ")
    assert msg["From"].addresses[0].display_name.startswith("Bob Verdi ")
    assert str(msg["Reply-To"]) == "Bob Verdi <bob@example.com>"
    assert str(msg["To"]) == "Paula Partner <paula@partner.org>"
    assert text_body(msg).startswith(headline + "\n")
    assert "See you there" in text_body(msg)
    assert "Bob Verdi" in text_body(msg).split("-- \n")[1] and "Paula Partner" in text_body(msg).split("-- \n")[1]
    sent = calendar_sent(msg)
    assert sent["METHOD"] == "REPLY" and attendee_addresses(sent) == ["mailto:bob@example.com"]


def test_hidden_guest_list_leaves_organizer_and_reader_only() -> None:
    override = event(start="DTSTART;TZID=Europe/Rome:20301017T110000", end="DTEND;TZID=Europe/Rome:20301017T120000")
    override = override.replace("SEQUENCE:0", "SEQUENCE:0\nRECURRENCE-ID;TZID=Europe/Rome:20301017T090000")
    msg = mail(ics(event("RRULE:FREQ=WEEKLY"), override), hide_attendees=True)
    for data in calendars(msg).values():
        sent = icalendar.Calendar.from_ical(data)
        assert attendee_addresses(sent) == ["mailto:guest@partner.org"] * 2  # master and the moved instance
        assert [str(e["ORGANIZER"]) for e in sent.walk("VEVENT")] == ["mailto:alice@example.com"] * 2
    for body in (text_body(msg), html_body(msg)):
        assert "carol" not in body.lower() and "Carol" not in body
        assert "alice@example.com" in body
    assert "The organizer has hidden the guest list." in text_body(msg)


def test_organizer_address_overrides_reply_to_and_body() -> None:
    cal = ics(event().replace("ORGANIZER;CN=Alice Rossi:mailto:alice@example.com",
                              "ORGANIZER;CN=Alice Rossi:mailto:invito+tok123@cal.example.com"))
    msg = mail(cal, organizer_address="mailto:alice@example.com")
    assert str(msg["Reply-To"]) == "Alice Rossi <alice@example.com>"
    assert "Organizer: Alice Rossi <alice@example.com>" in text_body(msg)
    assert "invito+tok123" not in text_body(msg)
    assert b"invito+tok123@cal.example.com" in calendars(msg)["text/calendar"]  # replies still come to us


@pytest.mark.parametrize("hide", [False, True])
@pytest.mark.parametrize("organizer_cn", ["Al", "Alessandra Maria Teresa Bianchi-Rossi di Sant'Agata (Ufficio Acquisti)"])
def test_each_guest_of_a_prepared_message_gets_their_own_reply_address(hide: bool, organizer_cn: str) -> None:
    """Composed once for many guests, each guest's calendar names their own reply address as ORGANIZER,
    however the line folds fell, in the master and in every instance."""
    override = event(start="DTSTART;TZID=Europe/Rome:20301017T110000", end="DTEND;TZID=Europe/Rome:20301017T120000")
    override = override.replace("SEQUENCE:0", "SEQUENCE:0\nRECURRENCE-ID;TZID=Europe/Rome:20301017T090000")
    cal = ics(event("RRULE:FREQ=WEEKLY"), override)
    for comp in cal.walk("VEVENT"):
        comp["ORGANIZER"].params["CN"] = organizer_cn
    prepared = prepare(cal)
    guests = {"mailto:guest@partner.org": "a" * 32, "mailto:carol@other.net": "b" * 32}
    for guest, token in guests.items():
        address = f"mailto:invito+{token}@cal.example.com"
        msg = mail(prepared, guest, hide_attendees=hide, reply_address=address,
                   organizer_address="mailto:alice@example.com")
        for data in calendars(msg).values():
            sent = icalendar.Calendar.from_ical(data)
            organizers = [e["ORGANIZER"] for e in sent.walk("VEVENT")]
            assert [str(o) for o in organizers] == [address] * 2
            assert [str(o.params["CN"]) for o in organizers] == [organizer_cn] * 2
            assert max(len(line) for line in data.split(b"\r\n")) <= 75  # still folded as iCalendar wants
    assert [str(e["ORGANIZER"]) for e in prepared.calendar.walk("VEVENT")] == ["mailto:alice@example.com"] * 2


# --- hostile input ------------------------------------------------------------------------------------------

def test_hostile_summary_and_names_cannot_inject_headers_or_html() -> None:
    hostile = "Hi\\nBcc: victim@example.net\\n<script>alert(1)</script> & co"
    cal = ics(event("LOCATION:<img src=x onerror=alert(1)>", summary=hostile)
              .replace("CN=Alice Rossi", 'CN="Eve^nBcc: x@evil.example <b>"')
              .replace("CN=Guest One", 'CN="Guest^nX-Injected: 1"'))
    built = compose(cal, GUEST, sender=SENDER, message_date=WHEN)
    raw = built.as_bytes()
    head = raw.split(b"\n\n", 1)[0]
    assert not re.search(rb"^(bcc|x-injected):", head, re.IGNORECASE | re.MULTILINE)
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert sorted(set(k.lower() for k in msg.keys())) == sorted(
        ["auto-submitted", "content-class", "content-language", "content-type", "date", "from", "message-id",
         "mime-version", "reply-to", "subject", "to"])
    assert "\n" not in msg["Subject"] and "Bcc: victim@example.net" in msg["Subject"]
    assert [a.addr_spec for a in msg["From"].addresses] == ["invito@cal.example.com"]
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [("Guest X-Injected: 1",
                                                                             "guest@partner.org")]
    assert [a.addr_spec for a in msg["Reply-To"].addresses] == ["alice@example.com"]
    html = html_body(msg)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<b>" not in html


def test_unusable_input_is_refused() -> None:
    with pytest.raises(ValueError):
        compose(ics(event(), method=""), GUEST, sender=SENDER)
    with pytest.raises(ValueError):
        compose(ics(event(), method="PUBLISH"), GUEST, sender=SENDER)
    with pytest.raises(ValueError):
        compose(ics(event()), "mailto:guest@partner.org>\r\nBcc: x@y.z", sender=SENDER)


# --- Message-ID ---------------------------------------------------------------------------------------------

def test_message_id_is_stable_for_the_same_message_only() -> None:
    def mid(cal: icalendar.Calendar, recipient: str = GUEST) -> str:
        return compose(cal, recipient, sender=SENDER, message_date=WHEN)["Message-ID"]

    first = mid(ics(event()))
    assert re.fullmatch(r"<[0-9a-f]{40}@cal\.example\.com>", first)
    assert mid(ics(event())) == first  # built again from the spool: the same message
    others = {mid(ics(event()), "mailto:carol@other.net"), mid(ics(event(sequence=1))),
              mid(ics(event("STATUS:CANCELLED"), method="CANCEL")), mid(ics(event(stamp="20300902T120000Z")))}
    assert first not in others and len(others) == 4


# --- language choice and the string tables ------------------------------------------------------------------

@pytest.mark.parametrize("attendee, default, chosen", [
    ("it-IT", "en", "it"), ("it_IT", "en", "it"), ("IT", "en", "it"), ("en-US", "it", "en"),
    (None, "it", "it"), ("fr", "it", "it"), ("fr-FR", "de", "en"), ("", "en", "en"),
])
def test_choose_language(attendee: str | None, default: str, chosen: str) -> None:
    assert i18n.choose(attendee, default) == chosen


def test_every_language_has_every_string_with_the_same_placeholders() -> None:
    fields = {lang: {k: sorted(re.findall(r"{(\w+)}", v)) for k, v in texts.items()}
              for lang, texts in i18n.TEXTS.items()}
    assert set(fields) == set(i18n.SUPPORTED)
    for lang in i18n.SUPPORTED:
        assert fields[lang] == fields["en"], lang
