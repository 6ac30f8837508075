# SPDX-License-Identifier: GPL-3.0-or-later
"""Inbound iMIP: real mail from other programs yields its iTIP message; hostile mail is refused, fast."""
from __future__ import annotations

import base64
import quopri
import random
import time
from pathlib import Path

import pytest

from invito.plugins.imip.authentication import DKIM_METHOD, PASS, Verdict
from invito.plugins.imip.extract import Inbound, Kind, Limits, MailOrigin, extract
from invito.plugins.itip.address import normalize
from invito.plugins.itip.components import attendees, param, scheduled

SAMPLES = Path(__file__).parents[3] / "shared" / "imip-samples"
FAST = 0.5  # seconds: each hostile message must be refused well within this on a busy 2-core machine
GUEST = "guest@partner.org"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def headers(extra: str = "") -> str:
    return (f"From: Guest <{GUEST}>\r\nTo: alice@example.com\r\nSubject: Accepted: Planning\r\n"
            f"Message-ID: <m1@partner.org>\r\n{extra}MIME-Version: 1.0\r\n")


def single(body: bytes, content_type: str = "text/calendar; charset=utf-8; method=REPLY", cte: str = "8bit",
           extra: str = "") -> bytes:
    """A message whose whole body is one part (as Outlook 2010 sends invitations)."""
    return headers(extra).encode() + part(body, content_type, cte)


def multipart(*parts: bytes, subtype: str = "mixed", boundary: str = "b0", extra: str = "") -> bytes:
    """``parts`` are complete parts: their own headers, a blank line, then the body."""
    body = b"".join(b"--%s\r\n%s\r\n" % (boundary.encode(), part) for part in parts)
    return (headers(extra) + f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n').encode() + body \
        + b"--%s--\r\n" % boundary.encode()


def part(body: bytes, content_type: str, cte: str = "8bit", extra: str = "") -> bytes:
    return f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {cte}\r\n{extra}\r\n".encode() + body


def ics(*lines: str, method: str | None = "REPLY", uid: str = "u1@example.com",
        attendee: str = f"ATTENDEE;CN=Guest;PARTSTAT=ACCEPTED:mailto:{GUEST}") -> bytes:
    head = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Test//EN"] + ([f"METHOD:{method}"] if method else [])
    event = ["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20300901T120000Z", "DTSTART:20301010T090000Z",
             "ORGANIZER:mailto:alice@example.com", attendee, *lines, "END:VEVENT"]
    return ("\r\n".join([*head, *event, "END:VCALENDAR"]) + "\r\n").encode()


def timed(raw: bytes) -> Inbound:
    start = time.perf_counter()
    result = extract(raw)
    assert time.perf_counter() - start < FAST
    return result


def refused(raw: bytes, reason: str) -> Inbound:
    result = timed(raw)
    assert result.kind is Kind.REJECTED, result.reason
    assert reason in result.reason
    assert result.calendar is None and result.method is None
    return result


def answers(result: Inbound) -> dict[str, dict[str, str]]:
    """UID → {attendee: PARTSTAT} for each scheduled component."""
    return {str(comp["UID"]): {normalize(str(a)): param(a, "PARTSTAT", "NEEDS-ACTION") for a in attendees(comp)}
            for comp in scheduled(result.calendar)}


# --- real mail ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, method, uid, attendee, partstat", [
    ("01-google-reply-accept.eml", "REPLY", "14ef516ad2e6ce325d5c8efcf9d7ddbfa30f9d15", "tcataldo@gmail.com",
     "ACCEPTED"),
    ("03-ios-iphone-reply-accept.eml", "REPLY", "b84ce20", "admin@willow.vmw", "ACCEPTED"),
    ("04-outlook-mac-reply-accept.eml", "REPLY", "f1394aba7ca8b9474af204a4d88934b7c7aa2191", "admin@willow.vmw",
     "ACCEPTED"),
    ("05-android-email-reply-accept.eml", "REPLY", "6C5861338FC94376B376095E9884760B" + "0" * 32,
     "david.phan@blue-mind.net", "ACCEPTED"),
    ("06-bluemind-mapi-outlook-reply-no-organizer.eml", "REPLY", "a0bd6c5b-dc96-49a0-ae45-089843c839df",
     "lucie.takvorian@blue-mind.net", "ACCEPTED"),
    ("07-outlook2010-request-bare-text-calendar.eml", "REQUEST",
     "040000008200E00074C5B7101A82E00800000000C0DB025FCCB1CD0100000000000000001000000072FF529313A7EF4BAB4F711E6967F2CE",
     "david.phan@blue-mind.net", "NEEDS-ACTION"),
    ("08-outlook-mac-request-attendee-uppercase.eml", "REQUEST", "A93D8AAF-53FE-40D1-990B-C056E13727F2",
     "tom@willow.vmw", "NEEDS-ACTION"),
    ("09-lotus-notes-request-octet-stream-ics.eml", "REQUEST", "354EFA3054F1F02FC1257A56003AB3AD-Lotus_Notes_Generated",
     "thomas.cataldo@blue-mind.fr", "NEEDS-ACTION"),
    ("10-apple-ical3-mail-reply-no-method-param.eml", "REPLY", "1E71F9C8-AEDA-48EB-98D0-76E898F6BB5C",
     "xyzzy@example.com", "ACCEPTED"),
    ("12-outlook-com-exchange2010-request.eml", "REQUEST", "1F0BD3F6FEFC421AAA5BE992D6992B6A", "bob@example.org",
     "NEEDS-ACTION"),
    ("13-thunderbird-lightning-reply-accept.eml", "REPLY", "4f0162146d61cb2c06cbe2abf94636f4526abe16",
     "tine20admin@caldav.net", "ACCEPTED"),
])
def test_real_mail_yields_its_itip_message(name: str, method: str, uid: str, attendee: str, partstat: str) -> None:
    result = timed(sample(name))
    assert (result.kind, result.reason, result.method) == (Kind.ITIP, "", method)
    assert str(result.calendar["METHOD"]) == method
    assert answers(result)[uid]["mailto:" + attendee] == partstat
    assert result.from_address and result.from_address.startswith("mailto:") and result.origin.message_id
    if method == "REPLY":
        assert [len(attendees(comp)) for comp in scheduled(result.calendar)] == [1]


def test_google_reply_sent_twice_is_one_reply_despite_auto_generated() -> None:
    raw = sample("01-google-reply-accept.eml")
    assert raw.count(b"Content-Type: text/calendar") + raw.count(b"Content-Type: application/ics") == 2
    assert b"Auto-Submitted: auto-generated" in raw  # Google's real answers carry it: not an auto-reply
    result = timed(raw)
    assert len(scheduled(result.calendar)) == 1
    assert result.from_address == "mailto:tcataldo@gmail.com"
    assert result.origin.subject == "Accepted: Avec tcataldo@gmail.com @ Wed May 30 11:00 - 12:00 (Thomas Cataldo)"


def test_google_counter_body_method_wins_and_the_disagreeing_attachment_is_not_merged() -> None:
    result = timed(sample("02-google-counter-method-mismatch.eml"))
    assert result.method == "COUNTER"  # Content-Type says method=REPLY
    assert answers(result) == {"36da4919-6cf5-4ce9-aa18-6e56c1da2298": {"mailto:max@gmail.com": "TENTATIVE"}}
    assert str(result.calendar.walk("VEVENT")[0]["ORGANIZER"]) == "mailto:max.mustermann@bluemind.net"
    assert result.origin.subject.startswith("Nouvel horaire proposé: Invite BM")


def test_iphone_comment_survives() -> None:
    event = timed(sample("03-ios-iphone-reply-accept.eml")).calendar.walk("VEVENT")[0]
    assert str(event["X-CALENDARSERVER-PRIVATE-COMMENT"]).startswith("Annotation")


def test_lotus_notes_text_calendar_wins_over_the_octet_stream_copy() -> None:
    raw = sample("09-lotus-notes-request-octet-stream-ics.eml")
    uid = b"UID:354EFA3054F1F02FC1257A56003AB3AD-Lotus_Notes_Generated"
    assert raw.count(uid) == 2
    head, tail = raw.rsplit(uid, 1)  # the attachment comes last: make it a different event
    result = timed(head + b"UID:other-event" + tail)
    assert (result.kind, result.method) == (Kind.ITIP, "REQUEST")
    assert list(answers(result)) == ["354EFA3054F1F02FC1257A56003AB3AD-Lotus_Notes_Generated"]


def test_dsn_bounce_is_never_itip_and_names_the_failed_recipient() -> None:
    result = timed(sample("11-dsn-bounce-containing-request.eml"))
    assert (result.kind, result.method, result.calendar) == (Kind.BOUNCE, None, None)
    bounce = result.bounce
    assert bounce.failed and bounce.recipients == ("mailto:nonexistant@example.com",)
    assert bounce.status == "5.0.0"
    assert "550 5.1.1 unknown or illegal alias" in bounce.diagnostic and "\n" not in bounce.diagnostic
    assert bounce.original_message_id == "<20080812191939.51369.1538816694.0@plugh.example.com>"
    assert [str(c["UID"]) for c in scheduled(bounce.original_calendar)] == ["1E71F9C8-AEDA-48EB-98D0-76E898F6BB5C"]
    assert str(bounce.original_calendar["METHOD"]) == "REQUEST"


@pytest.mark.parametrize("name, method, uid, attendee, partstat", [
    ("14-exchange2010-request-single-instance-only.ics", "REQUEST",
     "040000008200E00074C5B7101A82E0080000000060C9996DFC1BD301000000000000000010000000FFBCF26484A5714B9FAB976702B5075D",
     "sclever@tine20.org", "NEEDS-ACTION"),
    ("15-google-reply-organizer-without-mailto.ics", "REPLY", "62050f080e53ca8e00353ff0a89c6c6aa4af3dec",
     "mail@corneliusweiss.de", "ACCEPTED"),
])
def test_bare_calendars_as_attachments(name: str, method: str, uid: str, attendee: str, partstat: str) -> None:
    data = sample(name)
    raw = multipart(part(b"See the invitation.\r\n", "text/plain; charset=utf-8"),
                    part(base64.encodebytes(data), "application/octet-stream; name=invite.ics", cte="base64",
                         extra="Content-Disposition: attachment; filename=invite.ics\r\n"))
    result = timed(raw)
    assert (result.kind, result.method) == (Kind.ITIP, method)
    assert answers(result)[uid]["mailto:" + attendee] == partstat
    if name.startswith("14"):
        assert "RECURRENCE-ID" in scheduled(result.calendar)[0]


# --- how calendars are found --------------------------------------------------------------------------

def test_attached_copies_that_agree_are_one_and_that_disagree_are_refused() -> None:
    same = multipart(part(ics(), "application/ics; name=a.ics"), part(ics(), "text/plain; name=b.ics", cte="7bit"))
    assert list(answers(timed(same))) == ["u1@example.com"]
    differ = multipart(part(ics(), "application/ics; name=a.ics"), part(ics(uid="u2"), "application/ics; name=b.ics"))
    refused(differ, "different calendars")


def test_content_type_method_is_used_only_when_the_body_has_none() -> None:
    assert timed(single(ics(method=None), "text/calendar; method=reply")).method == "REPLY"
    refused(single(ics(method=None), "text/calendar"), "no METHOD")
    refused(single(ics(method="FROB")), "not an iTIP method")


def test_quoted_invitation_in_a_forwarded_mail_is_not_itip() -> None:
    forwarded = part(single(ics(method="REQUEST")), "message/rfc822", cte="7bit")
    assert timed(multipart(part(b"FYI\r\n", "text/plain"), forwarded)).kind is Kind.NO_CALENDAR


def test_charsets() -> None:
    latin = ics(attendee=f"ATTENDEE;CN=José;PARTSTAT=ACCEPTED:mailto:{GUEST}")
    undeclared = single(latin.replace("é".encode(), b"\xe9"), "text/calendar; method=REPLY")
    assert str(timed(undeclared).calendar.walk("VEVENT")[0]["ATTENDEE"].params["CN"]) == "José"
    assert timed(single(latin.decode().encode("utf-16"), "text/calendar; charset=utf-16")).kind is Kind.ITIP
    refused(single(latin.replace("é".encode(), b"\xe9")), "not valid utf-8")  # declared utf-8, is not
    refused(single(ics(), "text/calendar; charset=x-klingon"), "unknown")
    refused(single(ics(), "text/calendar; charset=zlib"), "not valid")  # a codec, not a charset


def test_auto_reply_with_a_calendar_and_a_plain_mail() -> None:
    result = timed(single(ics(), extra="Auto-Submitted: auto-replied; owner-email=guest@partner.org\r\n"))
    assert (result.kind, result.calendar) == (Kind.AUTO_REPLY, None)
    assert "auto-replied" in result.reason
    assert timed(single(ics(), extra="X-Autoreply: yes\r\n")).kind is Kind.AUTO_REPLY
    assert timed(single(ics(), extra="Precedence: auto_reply\r\n")).kind is Kind.AUTO_REPLY
    assert timed(single(ics(), extra="X-Auto-Response-Suppress: All\r\n")).kind is Kind.ITIP
    plain = timed(single(b"See you there.\r\n", "text/plain; charset=utf-8"))
    assert (plain.kind, plain.reason) == (Kind.NO_CALENDAR, "the message carries no calendar")


def test_headers_are_single_line_and_from_must_be_one_mailbox() -> None:
    raw = single(ics()).replace(b"Subject: Accepted: Planning", b"Subject: =?utf-8?q?Yes=0D=0ABcc:_x?=")
    result = timed(raw)
    assert result.origin.subject == "Yes Bcc: x"
    assert (result.from_address, result.origin.message_id) == ("mailto:" + GUEST, "<m1@partner.org>")
    two = raw.replace(f"From: Guest <{GUEST}>".encode(), b"From: a@x.org, b@y.org")
    assert timed(two).from_address is None
    nested_comments = raw.replace(b"From: Guest", b"From: " + b"(" * 3_000 + b"Guest")  # the stdlib parser recurses
    assert (timed(nested_comments).kind, timed(nested_comments).from_address) == (Kind.ITIP, None)


def test_delayed_delivery_report_is_a_bounce_without_failure() -> None:
    status = part(b"Reporting-MTA: dns; mx.partner.org\r\n\r\nFinal-Recipient: rfc822; guest@partner.org\r\n"
                  b"Action: delayed\r\nStatus: 4.4.1\r\n", "message/delivery-status", cte="7bit")
    raw = multipart(part(b"Still trying.\r\n", "text/plain"), status,
                    part(b"Message-ID: <sent@example.com>\r\nSubject: x\r\n", "text/rfc822-headers", cte="7bit"),
                    subtype='report; report-type="delivery-status"')
    result = timed(raw)
    assert result.kind is Kind.BOUNCE
    assert (result.bounce.failed, result.bounce.recipients, result.bounce.status) == (False, (), "")
    assert (result.bounce.original_message_id, result.bounce.original_calendar) == ("<sent@example.com>", None)


# --- hostile mail -------------------------------------------------------------------------------------

def test_oversized_message_is_refused_unparsed() -> None:
    refused(b"X" * (Limits().max_bytes + 1), "larger than")
    assert "larger than 100 bytes" in extract(single(ics()), Limits(max_bytes=100)).reason


def test_floods_of_lines_or_header_fields_are_refused() -> None:
    refused(single(b"x\r\n" * 600_000, "text/plain"), "more than 100000 lines")
    refused(single(b"x\r" * 600_000, "text/plain"), "more than 100000 lines")  # the parser splits on bare CR too
    refused(single(ics(), extra="Received: by mx.partner.org\r\n" * 1_500), "header fields")


def nested(depth: int) -> bytes:
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (i, i) for i in range(depth))
    closing = b"".join(b"\r\n--n%d--" % i for i in reversed(range(depth)))
    return headers().encode() + opening + part(ics(), "text/calendar; charset=utf-8") + closing + b"\r\n"


def test_deep_nesting_is_refused() -> None:
    refused(nested(10_000), "MIME parts")
    refused(nested(Limits().max_depth + 1), "deep")
    assert timed(nested(Limits().max_depth - 1)).kind is Kind.ITIP


def test_too_many_parts_are_refused_with_or_without_headers() -> None:
    refused(multipart(*[part(b"x", "text/plain")] * 5_000, part(ics(), "text/calendar")), "MIME parts")
    refused(multipart(*[b"\r\nx"] * 5_000, part(ics(), "text/calendar")), "MIME parts")  # headerless parts


def test_hostile_calendars_are_refused() -> None:
    refused(single(ics().decode().encode("utf-7"), "text/calendar; charset=utf-7"), "utf-7")
    refused(single(ics().replace(b"DTSTART:20301010T090000Z", b"DTSTART 20301010T090000Z")), "malformed")
    refused(single(ics().replace(b"END:VCALENDAR\r\n", b"")), "malformed")
    refused(single(ics("RRULE:FREQ=SECONDLY;COUNT=5", method="REQUEST")), "every second or minute")
    refused(single(ics("RRULE:FREQ=MINUTELY", method="REQUEST")), "every second or minute")
    refused(single(ics().replace(b"METHOD:REPLY", b"METHOD:REPLY\r\nMETHOD:REQUEST")), "two different METHODs")
    refused(single(ics("ATTENDEE;PARTSTAT=DECLINED:mailto:other@partner.org")), "exactly one attendee")
    refused(single(ics(method=None).replace(b"ATTENDEE", b"X-NOT-ATTENDEE")), "exactly one attendee")
    refused(single(ics(method="REQUEST").replace(b"\r\nBEGIN:VEVENT", b"\r\nBEGIN:X\r\n" * 9 + b"BEGIN:VEVENT")),
            "more than 8 deep")


def test_unparsable_attendee_line_is_not_silently_dropped() -> None:
    # icalendar skips a broken line inside VEVENT and only records it: the reply would lose its answer
    raw = single(ics(attendee=f'ATTENDEE;CN="Guest;PARTSTAT=ACCEPTED:mailto:{GUEST}'))
    assert "malformed" in refused(raw, "").reason


def overrides(count: int) -> bytes:
    instance = "BEGIN:VEVENT\r\nUID:u1\r\nRECURRENCE-ID:20300101T000000Z\r\nDTSTAMP:20300101T000000Z\r\nEND:VEVENT\r\n"
    return ics(method="REQUEST").replace(b"END:VCALENDAR", (instance * count).encode() + b"END:VCALENDAR")


def test_calendar_size_components_and_attendees_are_capped() -> None:
    refused(single(base64.encodebytes(overrides(20_000)), cte="base64"), "larger than")
    refused(single(overrides(Limits().max_components)), "more than 1000 components")
    many = "\r\n".join(f"ATTENDEE:mailto:g{i}@partner.org" for i in range(Limits().max_attendees))
    refused(single(ics(many, method="REQUEST")), "more than 1000 attendees")


@pytest.mark.parametrize("cn, cte", [
    ('"Guest^nBcc: evil@x.org"', "8bit"),        # RFC 6868 caret escape: icalendar decodes it to LF
    ('"Guest\u2028Bcc: evil@x.org"', "8bit"),    # Unicode line separator
    ('"Guest\rBcc: evil@x.org"', "quoted-printable"),  # a bare CR arriving as =0D
])
def test_line_breaks_in_parameters_are_refused(cn: str, cte: str) -> None:
    body = ics(attendee=f"ATTENDEE;CN={cn};PARTSTAT=ACCEPTED:mailto:{GUEST}")
    result = refused(single(quopri.encodestring(body) if cte == "quoted-printable" else body, cte=cte), "")
    assert "control character" in result.reason or "malformed" in result.reason


def test_any_bytes_give_an_answer_never_an_exception() -> None:
    refused(b"", "empty")
    refused(b"\r\n \r\n", "empty")
    rng = random.Random(6047)
    assert timed(rng.randbytes(50_000)).kind in (Kind.NO_CALENDAR, Kind.REJECTED)
    real = sample("02-google-counter-method-mismatch.eml")
    for cut in range(0, len(real), 397):  # every truncation of a real message, and random byte damage
        assert isinstance(extract(real[:cut]).kind, Kind)
        damaged = bytearray(real)
        for _ in range(20):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        assert isinstance(extract(bytes(damaged)).kind, Kind)


def test_a_mail_cannot_redefine_a_custom_time_zone_for_later_calendars() -> None:
    """icalendar caches unknown TZIDs process-wide; each mail's own VTIMEZONE must serve only that mail."""
    def mail(offset: str) -> bytes:
        calendar = (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nMETHOD:REPLY\r\nBEGIN:VTIMEZONE\r\nTZID:Custom/Zone\r\n"
            f"BEGIN:STANDARD\r\nDTSTART:19700101T000000\r\nTZOFFSETFROM:{offset}\r\nTZOFFSETTO:{offset}\r\n"
            "END:STANDARD\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:u\r\nDTSTAMP:20300101T000000Z\r\n"
            "DTSTART;TZID=Custom/Zone:20301010T090000\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:g@x.org\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n")
        return ("From: g@x.org\r\nTo: a@b.c\r\nSubject: s\r\nContent-Type: text/calendar; method=REPLY\r\n\r\n"
                + calendar).encode()

    hostile, honest = extract(mail("+1300")), extract(mail("-0500"))
    offsets = [m.calendar.walk("VEVENT")[0].decoded("DTSTART").utcoffset().total_seconds() / 3600
               for m in (hostile, honest)]
    assert offsets == [13, -5]


def test_the_mail_is_its_own_origin_with_its_envelope_and_no_verdict_yet() -> None:
    raw = single(ics())
    result = extract(raw, mail_from="bounces@partner.org", recipients=("invito+x@cal.example.com",))
    assert result.origin == MailOrigin(raw, "<m1@partner.org>", "Accepted: Planning", "bounces@partner.org",
                                       ("invito+x@cal.example.com",), None)
    verdict = Verdict(PASS, DKIM_METHOD, "dkim=pass")
    assert result.authenticated(verdict).origin.verdict == verdict and result.origin.verdict is None
    assert extract(b"").origin == MailOrigin(b"")  # refused mail keeps where it came from too
