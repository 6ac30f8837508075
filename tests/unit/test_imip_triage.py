# SPDX-License-Identifier: GPL-3.0-or-later
"""Inbound iMIP triage: who a mail may change, decided from the envelope recipient, never from the mail's
own claims; everything that does not fit is quarantined with a reason."""
from __future__ import annotations

import icalendar
import pytest

from invito.plugins.imip.authentication import DKIM_METHOD, FAIL, NONE, PASS, Verdict
from invito.plugins.imip.extract import Bounce, Inbound, Kind, MailOrigin, PageOrigin
from invito.plugins.imip.tokens import ReplyToken
from invito.plugins.imip.triage import Action, Decision, Policy, Recipient, triage
from invito.plugins.itip.components import addresses, organizer, param, scheduled

UID = "evt-1@example.com"
ALICE = "mailto:alice@example.com"              # user alice, the organizer of our events
ALICE_ALIAS = "mailto:alice.rossi@example.com"  # another address of user alice
BOB = "mailto:bob@example.com"                  # user bob
GUEST = "mailto:guest@partner.org"              # the external guest a reply token was given to
OTHER = "mailto:other@partner.org"              # another external address
BOSS = "mailto:boss@partner.org"                # an external organizer inviting our users
MALLORY = "mailto:mallory@evil.example"

TOKEN = ReplyToken("a" * 32, ALICE, UID, GUEST)
TOKEN_BOX = f"invito+{'a' * 32}@cal.example.com"   # the envelope recipient, as the listener sees it
TOKEN_ADDRESS = "mailto:" + TOKEN_BOX             # the ORGANIZER written into the guest's invitation
OTHER_TOKEN = ReplyToken("b" * 32, ALICE, "evt-2@example.com", OTHER)
OTHER_TOKEN_ADDRESS = f"mailto:invito+{'b' * 32}@cal.example.com"
GONE_TOKEN = ReplyToken("c" * 32, "mailto:gone@example.com", UID, GUEST)  # organizer no longer a user

USERS = {ALICE: "alice", ALICE_ALIAS: "alice", BOB: "bob"}
TOKENS = {TOKEN_ADDRESS: TOKEN, OTHER_TOKEN_ADDRESS: OTHER_TOKEN}

AT_TOKEN = Recipient(TOKEN_BOX, token=TOKEN)
AT_ALICE = Recipient("alice@example.com", user="alice")
UNKNOWN = object()  # "use the default for this method"


def token_for(address: str) -> ReplyToken | None:
    """Strict on purpose: triage must hand over normalized addresses."""
    return TOKENS.get(address)


# -- building messages ---------------------------------------------------------------------------------

def vevent(uid: str | None = UID, organizer: str | None = TOKEN_ADDRESS, attendees: tuple[str, ...] = (GUEST,),
           partstat: str = "ACCEPTED", name: str = "VEVENT", rid: str | None = None) -> str:
    lines = [f"BEGIN:{name}", "DTSTAMP:20300901T120000Z", "DTSTART:20301010T090000Z"]
    lines += [f"UID:{uid}"] if uid is not None else []
    lines += [f"RECURRENCE-ID:{rid}"] if rid else []
    lines += [f"ORGANIZER;CN=Alice Rossi:{organizer}"] if organizer else []
    lines += [f"ATTENDEE;CN=Someone;PARTSTAT={partstat}:{a}" for a in attendees]
    return "\r\n".join([*lines, f"END:{name}", ""])


def calendar(method: str, *components: str) -> icalendar.Calendar:
    return icalendar.Calendar.from_ical("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\n"
                                        f"METHOD:{method}\r\n" + "".join(components) + "END:VCALENDAR\r\n")


def itip(method: str, *components: str, from_address: object = UNKNOWN, **event: object) -> Inbound:
    """An iTIP mail as extract returns it: ``components``, or one VEVENT built from ``event``."""
    cal = calendar(method, *(components or (vevent(**event),)))  # type: ignore[arg-type]
    if from_address is UNKNOWN:
        from_address = BOSS if method in ("REQUEST", "CANCEL", "DECLINECOUNTER") else GUEST
    return Inbound(Kind.ITIP, "", method, cal, from_address,  # type: ignore[arg-type]
                   MailOrigin(b"", "<m1@partner.org>", "Accepted: Planning"))


def invitation(**event: object) -> Inbound:
    """An external organizer's REQUEST naming alice."""
    event = {"organizer": BOSS, "attendees": (BOSS, ALICE, OTHER), "partstat": "NEEDS-ACTION", **event}
    return itip("REQUEST", **event)


def run(mail: Inbound, recipient: Recipient = AT_TOKEN, verdict: Verdict | None = None,
        policy: Policy = Policy()) -> Decision:
    """Triage ``mail`` as mail authentication (``verdict``, None: it did not run) left it."""
    return triage(mail.authenticated(verdict), recipient, policy, USERS.get, token_for)


def quarantined(decision: Decision, *reason: str) -> None:
    assert decision.action is Action.QUARANTINE, decision
    assert decision.calendar is None and decision.status == ""
    for part in reason:
        assert part in decision.reason, decision.reason


# -- a guest answers through a reply token ---------------------------------------------------------------

def test_token_reply_is_applied_to_the_organizers_event_with_the_real_organizer_restored() -> None:
    mail = itip("REPLY")
    before = mail.calendar.to_ical()
    decision = run(mail)
    assert decision.action is Action.REPLY
    assert (decision.user, decision.uid, decision.organizer, decision.guest) == ("alice", UID, ALICE, GUEST)
    assert decision.reason == f"REPLY from {GUEST}"
    assert decision.notes == () and decision.status == ""
    comp = scheduled(decision.calendar)[0]
    assert organizer(comp) == ALICE
    assert str(comp["ORGANIZER"].params["CN"]) == "Alice Rossi"
    assert addresses(comp) == [GUEST] and param(comp["ATTENDEE"], "PARTSTAT") == "ACCEPTED"
    assert str(decision.calendar["METHOD"]) == "REPLY"
    # the mail itself is untouched: the spool keeps what was received
    assert decision.calendar is not mail.calendar
    assert mail.calendar.to_ical() == before
    assert organizer(scheduled(mail.calendar)[0]) == TOKEN_ADDRESS


@pytest.mark.parametrize("written,expected", [
    (TOKEN_ADDRESS, ALICE),                                   # copied from the invitation, as sent
    ("MAILTO:" + TOKEN_BOX.upper(), ALICE),                   # a mail system upper-cased it
    (ALICE, ALICE),                                           # the organizer's real address
    ("MAILTO:Alice@Example.COM", ALICE),
    (None, None),                                             # Outlook leaves ORGANIZER out: none is added
])
def test_token_reply_organizer_forms_accepted(written: str | None, expected: str | None) -> None:
    decision = run(itip("REPLY", organizer=written))
    assert decision.action is Action.REPLY
    assert decision.organizer == ALICE
    assert [organizer(c) for c in scheduled(decision.calendar)] == [expected]


def test_token_reply_with_overrides_rewrites_every_organizer() -> None:
    mail = itip("REPLY", vevent(organizer=TOKEN_ADDRESS),
                vevent(organizer=None, rid="20301017T090000Z"),
                vevent(organizer="MAILTO:" + TOKEN_BOX.upper(), rid="20301024T090000Z", partstat="DECLINED"))
    decision = run(mail)
    assert decision.action is Action.REPLY
    assert [organizer(c) for c in scheduled(decision.calendar)] == [ALICE, None, ALICE]
    assert [organizer(c) for c in scheduled(mail.calendar)] == [TOKEN_ADDRESS, None, TOKEN_ADDRESS]


@pytest.mark.parametrize("attendee,recipient_box", [
    ("MAILTO:Guest@Partner.ORG", TOKEN_BOX),              # the guest's client changed the case
    (GUEST, TOKEN_BOX.upper()),                           # the envelope recipient upper-cased
    ("mailto:GUEST@partner.org", "<" + TOKEN_BOX + ">"),
])
def test_token_reply_address_case_does_not_matter(attendee: str, recipient_box: str) -> None:
    decision = run(itip("REPLY", attendees=(attendee,)), Recipient(recipient_box, token=TOKEN))
    assert decision.action is Action.REPLY
    assert decision.guest == GUEST and decision.notes == ()


@pytest.mark.parametrize("mail,reason,uid", [
    pytest.param(itip("REPLY", attendees=(GUEST, OTHER)), (f"from {GUEST}, {OTHER}, but",), UID,
                 id="two-attendees"),
    pytest.param(itip("REPLY", attendees=()), ("the REPLY is from nobody",), UID, id="no-attendee"),
    pytest.param(itip("REPLY", uid="evt-2@example.com"),
                 ("about event evt-2@example.com, but its address was given for " + UID,), "evt-2@example.com",
                 id="other-uid"),
    pytest.param(itip("REPLY", organizer=MALLORY), (f"names {MALLORY} as organizer, not {ALICE}",), UID,
                 id="third-party-organizer"),
    pytest.param(itip("REPLY", organizer=BOB), (f"names {BOB} as organizer",), UID, id="another-users-organizer"),
    pytest.param(itip("REPLY", organizer=OTHER_TOKEN_ADDRESS), (f"names {OTHER_TOKEN_ADDRESS} as organizer",),
                 UID, id="another-reply-address-as-organizer"),
    pytest.param(itip("REPLY", vevent(), vevent(organizer=MALLORY, rid="20301017T090000Z")),
                 (f"names {MALLORY} as organizer",), UID, id="third-party-organizer-in-an-override"),
    pytest.param(itip("REPLY", vevent(), vevent(uid="evt-2@example.com")), ("exactly one event (one UID)",), None,
                 id="two-uids"),
    pytest.param(itip("REPLY", uid=None), ("exactly one event (one UID)",), None, id="no-uid"),
    pytest.param(itip("REPLY", name="VJOURNAL"), ("exactly one event (one UID)",), None, id="no-event"),
])
def test_token_reply_that_does_not_fit_the_token_is_quarantined(mail: Inbound, reason: tuple[str, ...],
                                                                uid: str | None) -> None:
    decision = run(mail)
    quarantined(decision, *reason)
    assert decision.uid == uid
    assert decision.user is None


def test_token_for_an_organizer_who_is_no_longer_a_user_is_quarantined() -> None:
    decision = run(itip("REPLY"), Recipient(TOKEN_BOX, token=GONE_TOKEN))
    quarantined(decision, "the organizer mailto:gone@example.com is not a user here")
    assert (decision.uid, decision.organizer, decision.guest) == (UID, "mailto:gone@example.com", GUEST)


def test_a_recipient_that_is_neither_token_nor_user_is_quarantined() -> None:
    quarantined(run(itip("REPLY"), Recipient("nobody@example.com")), "neither a reply address nor a user")


# -- COUNTER and REFRESH through a reply token ---------------------------------------------------------

def test_token_counter_goes_to_the_organizer_unchanged_but_with_the_real_organizer() -> None:
    mail = itip("COUNTER", attendees=(ALICE, GUEST, OTHER), partstat="NEEDS-ACTION")
    decision = run(mail)
    assert decision.action is Action.COUNTER
    assert (decision.user, decision.uid, decision.organizer, decision.guest) == ("alice", UID, ALICE, GUEST)
    assert decision.reason == f"COUNTER from {GUEST}"
    assert organizer(scheduled(decision.calendar)[0]) == ALICE
    assert organizer(scheduled(mail.calendar)[0]) == TOKEN_ADDRESS


def test_token_counter_must_name_the_guest() -> None:
    decision = run(itip("COUNTER", attendees=(ALICE, OTHER)))
    quarantined(decision, f"the proposal does not name {GUEST} among its attendees")
    assert (decision.uid, decision.organizer, decision.guest) == (UID, ALICE, GUEST)


def test_token_refresh_asks_for_the_invitation_again() -> None:
    decision = run(itip("REFRESH", partstat="NEEDS-ACTION"))
    assert decision.action is Action.REFRESH
    assert (decision.user, decision.uid, decision.organizer, decision.guest) == ("alice", UID, ALICE, GUEST)
    assert organizer(scheduled(decision.calendar)[0]) == ALICE


@pytest.mark.parametrize("attendees", [(OTHER,), (GUEST, OTHER), ()])
def test_token_refresh_from_someone_else_is_quarantined(attendees: tuple[str, ...]) -> None:
    quarantined(run(itip("REFRESH", attendees=attendees)), "the REFRESH is from", f"given to {GUEST}")


# -- who sent it: From and mail authentication, for both directions ----------------------------------------

# (mail factory, recipient, the action when it fits, the address the From header should carry)
DIRECTIONS = {
    "token-reply": (lambda sender: itip("REPLY", from_address=sender), AT_TOKEN, Action.REPLY, GUEST),
    "direct-reply": (lambda sender: itip("REPLY", organizer=ALICE, from_address=sender), AT_ALICE, Action.REPLY,
                     GUEST),
    "token-counter": (lambda sender: itip("COUNTER", attendees=(ALICE, GUEST), from_address=sender), AT_TOKEN,
                      Action.COUNTER, GUEST),
    "invitation": (lambda sender: invitation(from_address=sender), AT_ALICE, Action.DELIVER, BOSS),
}


@pytest.fixture(params=sorted(DIRECTIONS))
def direction(request: pytest.FixtureRequest) -> tuple:
    return DIRECTIONS[request.param]


@pytest.mark.parametrize("sender,mismatch,notes,refusal", [
    ("expected", "flag", (), None),
    ("expected", "quarantine", (), None),
    (OTHER, "flag", (("from", OTHER),), None),            # people answer from an alias: applied, flagged
    (OTHER, "quarantine", None, f"sent from {OTHER}, not from {{expected}}"),
    (None, "flag", (("from", "an unreadable From address"),), None),
    (None, "quarantine", None, "sent from an unreadable From address, not from {expected}"),
])
def test_from_mismatch(direction: tuple, sender: str | None, mismatch: str, notes: tuple | None,
                       refusal: str | None) -> None:
    make, recipient, action, expected = direction
    decision = run(make(expected if sender == "expected" else sender), recipient,
                   policy=Policy(from_mismatch=mismatch))
    if refusal is None:
        assert decision.action is action
        assert decision.notes == notes
    else:
        quarantined(decision)
        assert decision.reason == refusal.format(expected=expected)
        assert decision.user is not None  # the organizer (or invited user) is known, for the admin
        assert decision.notes == ()


FAILED = Verdict(FAIL, DKIM_METHOD, "dkim=fail header.d=partner.org (signature does not verify)")
NO_EVIDENCE = Verdict(NONE, DKIM_METHOD, "no DKIM signature")
PASSED = Verdict(PASS, DKIM_METHOD, "dkim=pass header.d=partner.org (aligned with From partner.org)")


@pytest.mark.parametrize("mode,verdict,notes,refusal", [
    ("off", None, (), None),
    ("off", FAILED, (), None),                         # off: a verdict, if any, is not looked at
    ("flag", PASSED, (), None),
    ("flag", FAILED, (("authentication", FAILED.detail),), None),
    ("flag", NO_EVIDENCE, (("authentication", "no DKIM signature"),), None),
    ("flag", None, (("authentication", "not checked"),), None),
    ("require", PASSED, (), None),
    ("require", FAILED, None, "mail authentication did not pass: " + FAILED.detail),
    ("require", NO_EVIDENCE, None, "mail authentication did not pass: no DKIM signature"),
    ("require", None, None, "mail authentication did not pass: not checked"),
])
def test_authentication(direction: tuple, mode: str, verdict: Verdict | None, notes: tuple | None,
                        refusal: str | None) -> None:
    make, recipient, action, expected = direction
    decision = run(make(expected), recipient, verdict, Policy(authentication=mode))
    if refusal is None:
        assert decision.action is action
        assert decision.notes == notes
    else:
        quarantined(decision)
        assert decision.reason == refusal


def test_from_and_authentication_notes_together_in_order(direction: tuple) -> None:
    make, recipient, action, expected = direction
    decision = run(make(MALLORY), recipient, FAILED, Policy("flag", "flag"))
    if recipient.token is None and action is Action.REPLY:
        # Direct mode: no token says who answers, so with authentication on the From must be the guest.
        quarantined(decision)
        assert decision.reason == f"sent from {MALLORY}, not from {expected}"
        return
    assert decision.action is action
    assert decision.notes == (("from", MALLORY), ("authentication", FAILED.detail))


def test_from_refusal_is_the_reason_given_when_both_refuse(direction: tuple) -> None:
    make, recipient, _, expected = direction
    decision = run(make(MALLORY), recipient, FAILED, Policy("quarantine", "require"))
    quarantined(decision)
    assert decision.reason == f"sent from {MALLORY}, not from {expected}"


# -- direct mode: a guest answers to the organizer's own address -----------------------------------------

@pytest.mark.parametrize("written", [ALICE, "MAILTO:ALICE@example.com", None])
def test_direct_reply_names_its_guest_in_the_attendee(written: str | None) -> None:
    mail = itip("REPLY", organizer=written)
    decision = run(mail, AT_ALICE)
    assert decision.action is Action.REPLY
    assert (decision.user, decision.uid, decision.organizer, decision.guest) == ("alice", UID, ALICE, GUEST)
    assert [organizer(c) for c in scheduled(decision.calendar)] == [ALICE if written else None]


def test_direct_reply_to_an_alias_is_for_that_address() -> None:
    decision = run(itip("REPLY", organizer=ALICE_ALIAS), Recipient("Alice.Rossi@example.com", user="alice"))
    assert decision.action is Action.REPLY
    assert (decision.user, decision.organizer, decision.guest) == ("alice", ALICE_ALIAS, GUEST)


@pytest.mark.parametrize("mail,reason", [
    pytest.param(itip("REPLY", organizer=MALLORY), f"names {MALLORY} as organizer, not {ALICE}", id="other-organizer"),
    pytest.param(itip("REPLY", organizer=TOKEN_ADDRESS), f"names {TOKEN_ADDRESS} as organizer",
                 id="reply-address-organizer"),
    pytest.param(itip("REPLY", vevent(organizer=ALICE), vevent(organizer=ALICE, uid="evt-2@example.com")),
                 "exactly one event", id="two-uids"),
    pytest.param(itip("REPLY", organizer=ALICE, attendees=()), "does not say which attendee sends it",
                 id="no-attendee"),
    pytest.param(itip("REPLY", organizer=ALICE, attendees=(GUEST, OTHER), from_address=MALLORY),
                 "does not say which attendee sends it", id="two-attendees-neither-the-sender"),
    pytest.param(itip("REPLY", organizer=ALICE, attendees=(GUEST, OTHER)), f"the REPLY is from {GUEST}, {OTHER}",
                 id="two-attendees"),
])
def test_direct_reply_that_does_not_fit_is_quarantined(mail: Inbound, reason: str) -> None:
    quarantined(run(mail, AT_ALICE), reason)


def test_direct_counter_is_from_the_sender_among_the_attendees() -> None:
    mail = itip("COUNTER", organizer=ALICE, attendees=(ALICE, GUEST, OTHER), from_address=OTHER)
    decision = run(mail, AT_ALICE)
    assert decision.action is Action.COUNTER
    assert (decision.user, decision.organizer, decision.guest) == ("alice", ALICE, OTHER)
    assert decision.notes == ()


def test_direct_counter_from_a_stranger_is_quarantined() -> None:
    mail = itip("COUNTER", organizer=ALICE, attendees=(ALICE, GUEST, OTHER), from_address=MALLORY)
    quarantined(run(mail, AT_ALICE), "does not say which attendee sends it")


def test_direct_refresh() -> None:
    decision = run(itip("REFRESH", organizer=ALICE, attendees=(GUEST,)), AT_ALICE)
    assert decision.action is Action.REFRESH
    assert (decision.user, decision.organizer, decision.guest) == ("alice", ALICE, GUEST)


@pytest.mark.parametrize("attendee", [BOB, ALICE])
def test_direct_reply_claiming_to_be_from_a_user_here_is_quarantined(attendee: str) -> None:
    mail = itip("REPLY", organizer=ALICE, attendees=(attendee,), from_address=attendee, partstat="DECLINED")
    quarantined(run(mail, AT_ALICE), "is a user here")


# -- direct mode: an external organizer invites a user ------------------------------------------------------

@pytest.mark.parametrize("method", ["REQUEST", "CANCEL"])
def test_external_invitation_is_delivered_to_the_user_it_names(method: str) -> None:
    mail = itip(method, organizer=BOSS, attendees=(BOSS, ALICE, OTHER), partstat="NEEDS-ACTION")
    decision = run(mail, AT_ALICE)
    assert decision.action is Action.DELIVER
    assert (decision.user, decision.uid, decision.organizer, decision.guest) == ("alice", UID, BOSS, ALICE)
    assert decision.reason == f"{method} from {BOSS}"
    assert decision.calendar is mail.calendar and decision.notes == ()
    assert organizer(scheduled(mail.calendar)[0]) == BOSS


def test_external_invitation_address_case_does_not_matter() -> None:
    mail = invitation(organizer="MAILTO:Boss@Partner.ORG", attendees=("MAILTO:ALICE@EXAMPLE.COM",))
    decision = run(mail, Recipient("Alice@Example.COM", user="alice"))
    assert decision.action is Action.DELIVER
    assert (decision.organizer, decision.guest) == (BOSS, ALICE)


def test_external_invitation_to_the_users_other_address() -> None:
    decision = run(invitation(attendees=(BOSS, ALICE_ALIAS)), AT_ALICE)
    assert decision.action is Action.DELIVER
    assert (decision.user, decision.guest) == ("alice", ALICE_ALIAS)


def test_declinecounter_need_not_name_the_user() -> None:
    mail = itip("DECLINECOUNTER", organizer=BOSS, attendees=())
    decision = run(mail, AT_ALICE)
    assert decision.action is Action.DELIVER
    assert (decision.user, decision.organizer, decision.guest) == ("alice", BOSS, ALICE)


@pytest.mark.parametrize("mail,recipient,reason", [
    pytest.param(invitation(), AT_TOKEN, "a REQUEST sent to a reply address: only replies are accepted there",
                 id="request-to-a-reply-address"),
    pytest.param(itip("CANCEL", organizer=BOSS, attendees=(GUEST,)), AT_TOKEN, "a CANCEL sent to a reply address",
                 id="cancel-to-a-reply-address"),
    pytest.param(invitation(organizer=BOB), AT_ALICE, f"{BOB} is a user here: their invitations never come by mail",
                 id="internal-organizer"),
    pytest.param(invitation(organizer="MAILTO:Alice@Example.com"), AT_ALICE, f"{ALICE} is a user here",
                 id="the-user-herself-as-organizer"),
    pytest.param(invitation(attendees=(BOSS, OTHER, BOB)), AT_ALICE,
                 "the REQUEST does not name alice@example.com as an attendee", id="recipient-not-named"),
    pytest.param(invitation(organizer=None), AT_ALICE, "exactly one ORGANIZER", id="no-organizer"),
    pytest.param(invitation(organizer=None, attendees=(BOSS, ALICE)), AT_ALICE, "exactly one ORGANIZER",
                 id="no-organizer-but-named"),
    pytest.param(itip("REQUEST", vevent(organizer=BOSS, attendees=(ALICE,)),
                      vevent(organizer=OTHER, attendees=(ALICE,), rid="20301017T090000Z")), AT_ALICE,
                 "exactly one ORGANIZER", id="two-organizers"),
    pytest.param(itip("REQUEST", vevent(organizer=BOSS, attendees=(ALICE,)),
                      vevent(organizer=BOSS, attendees=(ALICE,), uid="evt-2@example.com")), AT_ALICE,
                 "exactly one event (one UID)", id="two-uids"),
    pytest.param(invitation(uid=None), AT_ALICE, "exactly one event (one UID)", id="no-uid"),
])
def test_external_invitation_that_does_not_fit_is_quarantined(mail: Inbound, recipient: Recipient,
                                                              reason: str) -> None:
    decision = run(mail, recipient)
    quarantined(decision, reason)
    assert decision.user is None


def test_invitation_naming_one_of_our_reply_addresses_as_organizer_is_quarantined() -> None:
    decision = run(invitation(organizer=TOKEN_ADDRESS, attendees=(GUEST, ALICE)), AT_ALICE)
    quarantined(decision)


# -- what is not an iTIP message we take --------------------------------------------------------------

@pytest.mark.parametrize("method", ["ADD", "PUBLISH"])
@pytest.mark.parametrize("recipient", [AT_TOKEN, AT_ALICE], ids=["token", "direct"])
def test_unsupported_methods_are_quarantined(method: str, recipient: Recipient) -> None:
    mail = itip(method, organizer=BOSS, attendees=(ALICE, GUEST))
    decision = run(mail, recipient)
    quarantined(decision)
    assert decision.reason == f"METHOD {method} is not accepted by mail"


@pytest.mark.parametrize("kind,reason", [
    (Kind.REJECTED, "the calendar is malformed: Content line could not be parsed"),
    (Kind.NO_CALENDAR, "the message carries no calendar"),
    (Kind.AUTO_REPLY, "the message is an automatic reply (Auto-Submitted: auto-replied)"),
])
@pytest.mark.parametrize("recipient", [AT_TOKEN, AT_ALICE], ids=["token", "direct"])
def test_mail_without_an_itip_message_is_quarantined_with_the_extractors_reason(
        kind: Kind, reason: str, recipient: Recipient) -> None:
    mail = Inbound(kind, reason, None, None, GUEST, MailOrigin(b"", "<m1@partner.org>", "Out of office"))
    decision = run(mail, recipient, PASSED, Policy("flag", "require"))
    quarantined(decision)
    assert decision.reason == reason


def test_itip_kind_without_calendar_is_quarantined() -> None:
    mail = Inbound(Kind.ITIP, "", "REPLY", None, GUEST, MailOrigin(b""))
    decision = run(mail)
    quarantined(decision)
    assert decision.reason == "no iTIP message in the mail"


# -- delivery reports about our invitations -----------------------------------------------------------------

def bounce(failed: bool = True, recipients: tuple[str, ...] = (GUEST,), status: str = "5.1.1",
           diagnostic: str = "smtp; 550 5.1.1 User unknown", original: icalendar.Calendar | None = None,
           reason: str = "the message reports a failed delivery (5.1.1)") -> Inbound:
    report = Bounce(failed, recipients, status, diagnostic, "<inv@example.com>" if original else None, original)
    return Inbound(Kind.BOUNCE, reason, None, None, "mailto:mailer-daemon@partner.org",
                   MailOrigin(b"", "<dsn@partner.org>", "Undelivered Mail Returned to Sender"), report)


def sent_invitation(*components: str) -> icalendar.Calendar:
    """An invitation as we mailed it, quoted in a bounce."""
    return calendar("REQUEST", *(components or (vevent(partstat="NEEDS-ACTION", attendees=(ALICE, GUEST)),)))


@pytest.mark.parametrize("status,schedule_status", [
    ("5.1.1", "5.2"),    # no such mailbox: an invalid calendar user
    ("5.1.2", "5.2"),    # no such domain
    ("5.1.10", "5.2"),   # null MX
    ("5.2.2", "5.1"),    # mailbox full: could not be delivered
    ("5.7.1", "5.1"),
    ("5.10.1", "5.1"),   # not a 5.1.x
    ("4.4.7", "5.1"),    # given up after retries
    ("", "5.1"),
])
def test_bounce_to_a_reply_address_marks_the_guest(status: str, schedule_status: str) -> None:
    decision = run(bounce(status=status, diagnostic="User unknown"))
    assert decision.action is Action.BOUNCE
    assert (decision.user, decision.uid, decision.organizer, decision.guest) == ("alice", UID, ALICE, GUEST)
    assert decision.status == schedule_status
    assert decision.reason.split() == f"delivery to {GUEST} failed: {status} User unknown".split()
    assert decision.calendar is None


def test_bounce_reason_without_status_or_diagnostic() -> None:
    decision = run(bounce(status="", diagnostic=""))
    assert decision.action is Action.BOUNCE
    assert decision.reason == f"delivery to {GUEST} failed"


def test_bounce_to_a_reply_address_trusts_the_token_over_the_quoted_calendar() -> None:
    quoted = sent_invitation(vevent(uid="evt-9@example.com", organizer=BOB, attendees=(OTHER,)))
    decision = run(bounce(recipients=(OTHER,), original=quoted))
    assert decision.action is Action.BOUNCE
    assert (decision.user, decision.uid, decision.guest) == ("alice", UID, GUEST)


@pytest.mark.parametrize("written", [TOKEN_ADDRESS, "MAILTO:" + TOKEN_BOX.upper()])
def test_bounce_quoting_an_invitation_with_a_reply_address_is_resolved_through_it(written: str) -> None:
    quoted = sent_invitation(vevent(organizer=written, attendees=(GUEST,), partstat="NEEDS-ACTION"))
    decision = run(bounce(recipients=(GUEST,), original=quoted), Recipient("alice@example.com", user="alice"))
    assert decision.action is Action.BOUNCE
    assert (decision.user, decision.uid, decision.organizer, decision.guest) == ("alice", UID, ALICE, GUEST)
    assert decision.status == "5.2"


def test_bounce_quoting_a_plain_invitation_finds_the_failed_attendee() -> None:
    quoted = sent_invitation(vevent(organizer=ALICE, attendees=(ALICE, OTHER, GUEST), partstat="NEEDS-ACTION"))
    decision = run(bounce(recipients=("mailto:postmaster@partner.org", GUEST), status="5.2.2", original=quoted),
                   AT_ALICE)
    assert decision.action is Action.BOUNCE
    assert (decision.user, decision.uid, decision.organizer, decision.guest) == ("alice", UID, ALICE, GUEST)
    assert decision.status == "5.1"


NO_MATCH = "a delivery failure that matches no invitation we sent"


@pytest.mark.parametrize("mail,recipient,reason", [
    pytest.param(bounce(), AT_ALICE, NO_MATCH, id="no-token-nothing-quoted"),
    pytest.param(bounce(recipients=(MALLORY,), original=sent_invitation(vevent(organizer=ALICE))), AT_ALICE,
                 NO_MATCH, id="failed-recipient-not-invited"),
    pytest.param(bounce(recipients=(), original=sent_invitation(vevent(organizer=ALICE))), AT_ALICE,
                 NO_MATCH, id="no-failed-recipient"),
    pytest.param(bounce(original=sent_invitation(vevent(organizer=ALICE), vevent(organizer=ALICE, uid="evt-2"))),
                 AT_ALICE, NO_MATCH, id="quoted-two-uids"),
    pytest.param(bounce(original=sent_invitation(vevent(organizer=ALICE),
                                                 vevent(organizer=BOB, rid="20301017T090000Z"))), AT_ALICE,
                 NO_MATCH, id="quoted-two-organizers"),
    pytest.param(bounce(original=sent_invitation(vevent(organizer=None))), AT_ALICE,
                 NO_MATCH, id="quoted-without-organizer"),
    pytest.param(bounce(original=sent_invitation(vevent(organizer=BOSS))), AT_ALICE,
                 f"a delivery failure for {BOSS}, who is not a user here", id="quoted-external-organizer"),
    pytest.param(bounce(), Recipient(TOKEN_BOX, token=GONE_TOKEN),
                 "a delivery failure for mailto:gone@example.com, who is not a user here", id="token-organizer-gone"),
    pytest.param(bounce(failed=False, status="4.4.1", reason="the message is a delivery status report without a "
                        "failure"), AT_TOKEN, "the message is a delivery status report without a failure",
                 id="delayed"),
    pytest.param(Inbound(Kind.BOUNCE, "", None, None, None, MailOrigin(b"")), AT_TOKEN,
                 "a delivery report that reports no failure", id="no-report"),
])
def test_bounce_that_cannot_be_placed_is_quarantined(mail: Inbound, recipient: Recipient, reason: str) -> None:
    decision = run(mail, recipient)
    quarantined(decision)
    assert decision.reason == reason
    assert decision.user is None and decision.guest is None



def test_direct_reply_mailed_to_another_address_of_the_organizer() -> None:
    """Mail routed to the user by an alias (e.g. a copy to alice@invito.example.com) still answers the event
    she organizes as alice@example.com."""
    alias = "mailto:alice@invito.example.com"
    users = {**USERS, alias: "alice"}
    mail = itip("REPLY", organizer=ALICE, attendees=(GUEST,), from_address=GUEST)
    decision = triage(mail, Recipient(alias, user="alice"), Policy(), users.get, lambda _: None)
    assert decision.action is Action.REPLY
    assert (decision.user, decision.organizer, decision.guest) == ("alice", ALICE, GUEST)


# -- answers given on the RSVP page ----------------------------------------------------------------------

def on_page(token: ReplyToken = TOKEN, **event: object) -> Inbound:
    """A REPLY as the RSVP page gives it: from the token's guest, the organizer's own address copied."""
    mail = itip("REPLY", **{"organizer": token.organizer, "attendees": (token.guest,), "uid": token.uid, **event})
    return Inbound(Kind.ITIP, "", "REPLY", mail.calendar, token.guest, PageOrigin(token, "192.0.2.7"))


def test_a_page_answer_is_proved_by_its_token_not_by_mail_authentication() -> None:
    """Policies that refuse unauthenticated mail do not apply: there is no From and no mail, the link's token
    says who answers."""
    decision = triage(on_page(), Recipient.link(TOKEN), Policy("quarantine", "require"), USERS.get, token_for)
    assert decision.action is Action.REPLY
    assert (decision.user, decision.uid, decision.organizer, decision.guest) == ("alice", UID, ALICE, GUEST)
    assert decision.notes == ()


def test_a_page_answer_counts_only_for_its_links_token() -> None:
    decision = triage(on_page(), Recipient.link(OTHER_TOKEN), Policy(), USERS.get, token_for)
    quarantined(decision, "counts only for the reply token of its link")
    decision = triage(on_page(), AT_ALICE, Policy(), USERS.get, token_for)  # never as mail to a user
    quarantined(decision, "counts only for the reply token of its link")


def test_a_page_answer_about_another_event_than_its_tokens_is_quarantined() -> None:
    decision = triage(on_page(uid="evt-2@example.com"), Recipient.link(TOKEN), Policy(), USERS.get, token_for)
    quarantined(decision, f"about event evt-2@example.com, but its address was given for {UID}")
