# SPDX-License-Identifier: GPL-3.0-or-later
"""What to do with one inbound message (an email for one envelope recipient, or an answer given on the RSVP
page): pure, so every rule is unit-tested.

Identity never comes from what the mail says about itself. A reply token (the envelope recipient) names
the organizer, the event and the guest it was given to; in direct mode the recipient is a user of this
server. The calendar must agree with that identity: the replying ATTENDEE is the token's guest, the event
is the token's event, an invitation names the recipient as attendee. The From header is only checked
against it (people answer from aliases: ``from_mismatch``), and mail authentication, when configured,
must vouch for the From domain. An answer given on the RSVP page has no From and no mail to authenticate:
the token in its link is its identity, checked like a reply address. Anything that does not fit is
quarantined with a reason, never applied.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

import icalendar

from invito.plugins.imip.authentication import PASS
from invito.plugins.imip.extract import Inbound, Kind, PageOrigin
from invito.plugins.imip.tokens import ReplyToken, set_organizer_address
from invito.plugins.itip.address import normalize
from invito.plugins.itip.components import addresses, organizer, scheduled

# Methods an attendee sends to the organizer, and those an organizer sends to attendees (RFC 5546 §1.4).
FROM_ATTENDEE = ("REPLY", "COUNTER", "REFRESH")
FROM_ORGANIZER = ("REQUEST", "CANCEL", "DECLINECOUNTER")
APPLE_COMMENT = "X-CALENDARSERVER-PRIVATE-COMMENT"


class Action(enum.Enum):
    REPLY = "reply"            # record the guest's answer in the organizer's event
    COUNTER = "counter"        # the organizer's inbox and a notification; the event is unchanged
    REFRESH = "refresh"        # send the guest the current invitation again
    DELIVER = "deliver"        # an external organizer's message to a user: their inbox and calendar
    BOUNCE = "bounce"          # our invitation could not be delivered: the guest's SCHEDULE-STATUS
    STRANGER = "stranger"      # someone else answers by a guest's address: kept aside; the organizer is told
                               # when they are not invited at all (a party crasher), never added
    QUARANTINE = "quarantine"  # kept aside for an admin, with the reason


@dataclass(frozen=True)
class Recipient:
    """The envelope recipient, resolved: a reply token, or (direct mode) an internal user's address."""
    address: str
    token: ReplyToken | None = None
    user: str | None = None

    @classmethod
    def link(cls, token: ReplyToken) -> Recipient:
        """Whom an answer given on the RSVP page is for: no envelope, only its link's token."""
        return cls("", token=token)


@dataclass(frozen=True)
class Policy:
    from_mismatch: str = "flag"   # flag | quarantine
    authentication: str = "off"   # off | flag | require


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    user: str | None = None        # whose data changes: the organizer, or (DELIVER) the attendee
    uid: str | None = None
    organizer: str | None = None   # the organizer's real calendar address
    guest: str | None = None       # the external attendee, or (DELIVER) the recipient's address
    calendar: icalendar.Calendar | None = None  # the message as it is to be applied (ORGANIZER restored)
    notes: tuple[tuple[str, str], ...] = ()     # for the organizer: ("from", address), ("authentication", why)
    status: str = ""               # BOUNCE: the SCHEDULE-STATUS to record


def quarantine(reason: str, **known: object) -> Decision:
    return Decision(Action.QUARANTINE, reason, **known)  # type: ignore[arg-type]


def triage(mail: Inbound, recipient: Recipient, policy: Policy, user_for: Callable[[str], str | None],
           token_for: Callable[[str], ReplyToken | None]) -> Decision:
    """Decide for ``mail`` as delivered to ``recipient``.

    ``user_for``: the internal user owning a calendar address, if any; ``token_for``: the reply token
    behind an address, if it is one.
    """
    if isinstance(mail.origin, PageOrigin) and recipient.token != mail.origin.token:
        return quarantine("an answer given on the RSVP page counts only for the reply token of its link")
    if mail.kind is Kind.BOUNCE:
        return _bounce(mail, recipient, user_for, token_for)
    if mail.kind is not Kind.ITIP or mail.calendar is None or mail.method is None:
        return quarantine(mail.reason or "no iTIP message in the mail")
    if mail.method in FROM_ATTENDEE:
        return _from_attendee(mail, recipient, policy, user_for)
    if mail.method in FROM_ORGANIZER:
        return _from_organizer(mail, recipient, policy, user_for, token_for)
    return quarantine(f"METHOD {mail.method} is not accepted by mail")


# -- a guest writes to an organizer of ours ------------------------------------------------------------

def _from_attendee(mail: Inbound, recipient: Recipient, policy: Policy,
                   user_for: Callable[[str], str | None]) -> Decision:
    assert mail.calendar is not None and mail.method is not None
    comps = scheduled(mail.calendar)
    uids = {str(c.get("UID", "")) for c in comps}
    if len(uids) != 1 or not next(iter(uids)):
        return quarantine("the message must be about exactly one event (one UID)")
    uid = uids.pop()
    if recipient.token is not None:
        token = recipient.token
        if uid != token.uid:
            return quarantine(f"the reply is about event {uid}, but its address was given for {token.uid}",
                              uid=uid)
        organizer_address, guest = token.organizer, token.guest
    elif recipient.user is not None:
        # The user may have been mailed at another of their addresses than the one organizing the event.
        theirs = {o for c in comps if (o := organizer(c)) and user_for(o) == recipient.user}
        organizer_address = theirs.pop() if len(theirs) == 1 else normalize(recipient.address)
        guest = _replying(mail)
        if guest is None:
            return quarantine("the message does not say which attendee sends it", uid=uid)
    else:
        return quarantine("the recipient is neither a reply address nor a user", uid=uid)
    known = dict(uid=uid, organizer=organizer_address, guest=guest)
    if user_for(guest) is not None:
        return quarantine(f"{guest} is a user here: their answers never come by mail", **known)
    user = user_for(organizer_address)
    if user is None:
        return quarantine(f"the organizer {organizer_address} is not a user here", **known)
    # Clients copy the ORGANIZER they were sent (the reply address) or leave it out (Outlook).
    unexpected = {organizer(c) for c in comps} - {None, organizer_address, normalize(recipient.address)}
    if unexpected:
        return quarantine(f"the message names {', '.join(sorted(map(str, unexpected)))} as organizer, "
                          f"not {organizer_address}", **known)
    if mail.method in ("REPLY", "REFRESH"):
        replying = {a for c in comps for a in addresses(c)}
        if replying != {guest}:
            reason = (f"the {mail.method} is from {', '.join(sorted(replying)) or 'nobody'}, "
                      f"but this address was given to {guest}")
            if mail.method == "REPLY" and len(replying) == 1 and user_for(next(iter(replying))) is None:
                calendar = mail.calendar.copy(recursive=True)
                set_organizer_address(calendar, organizer_address)
                return Decision(Action.STRANGER, reason, user=user, uid=uid, organizer=organizer_address,
                                guest=replying.pop(), calendar=calendar)
            return quarantine(reason, **known)
    elif guest not in {a for c in comps for a in addresses(c)}:
        return quarantine(f"the proposal does not name {guest} among its attendees", **known)
    # Without a token the mail alone says who answers: when authentication is on, only the authenticated
    # From can vouch for that, so it must be the guest.
    strict = recipient.token is None and policy.authentication != "off"
    notes, refusal = _sender_notes(mail, guest, Policy("quarantine", policy.authentication) if strict else policy)
    if refusal:
        return quarantine(refusal, user=user, **known)
    calendar = mail.calendar.copy(recursive=True)
    set_organizer_address(calendar, organizer_address)  # the token address back to the organizer's own
    for comp in scheduled(calendar):  # Apple's clients put the guest's note there
        note = str(comp.get(APPLE_COMMENT, "")).strip()
        if note and "COMMENT" not in comp:
            comp.add("COMMENT", note)
    action = {"REPLY": Action.REPLY, "COUNTER": Action.COUNTER, "REFRESH": Action.REFRESH}[mail.method]
    return Decision(action, f"{mail.method} from {guest}", user=user, calendar=calendar, notes=notes, **known)


def _replying(mail: Inbound) -> str | None:
    """Direct mode: the attendee a REPLY or REFRESH names (one, checked by extract); for a COUNTER, the
    sender among the attendees."""
    assert mail.calendar is not None
    named = {a for c in scheduled(mail.calendar) for a in addresses(c)}
    if len(named) == 1:
        return named.pop()
    return mail.from_address if mail.from_address in named else None


# -- an external organizer writes to a user ------------------------------------------------------------

def _from_organizer(mail: Inbound, recipient: Recipient, policy: Policy, user_for: Callable[[str], str | None],
                    token_for: Callable[[str], ReplyToken | None]) -> Decision:
    assert mail.calendar is not None
    comps = scheduled(mail.calendar)
    uids = {str(c.get("UID", "")) for c in comps}
    uid = next(iter(uids)) if len(uids) == 1 else None
    if uid is None or not uid:
        return quarantine("the message must be about exactly one event (one UID)")
    if recipient.user is None:
        return quarantine(f"a {mail.method} sent to a reply address: only replies are accepted there", uid=uid)
    organizers = {organizer(c) for c in comps} - {None}
    if len(organizers) != 1:
        return quarantine("the message must name exactly one ORGANIZER", uid=uid)
    organizer_address = organizers.pop()
    if user_for(organizer_address) is not None or token_for(organizer_address) is not None:
        # A reply address stands for one of our organizers too (a guest forwarding our invitation).
        return quarantine(f"{organizer_address} is a user here: their invitations never come by mail", uid=uid)
    mine = {a for c in comps for a in addresses(c) if user_for(a) == recipient.user}
    if mail.method != "DECLINECOUNTER" and not mine:
        return quarantine(f"the {mail.method} does not name {recipient.address} as an attendee", uid=uid)
    attendee = normalize(recipient.address) if normalize(recipient.address) in mine or not mine \
        else sorted(mine)[0]
    known = dict(uid=uid, organizer=organizer_address, guest=attendee)
    notes, refusal = _sender_notes(mail, organizer_address, policy)
    if refusal:
        return quarantine(refusal, user=recipient.user, **known)
    return Decision(Action.DELIVER, f"{mail.method} from {organizer_address}", user=recipient.user,
                    calendar=mail.calendar, notes=notes, **known)


# -- checks shared by both directions ------------------------------------------------------------------

def _sender_notes(mail: Inbound, expected: str, policy: Policy) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """What the organizer should know about who sent it; or why policy refuses it. Nothing for an answer
    given on the page: its link's token, already checked, says who gives it."""
    if isinstance(mail.origin, PageOrigin):
        return (), None
    verdict = mail.origin.verdict
    notes: list[tuple[str, str]] = []
    if mail.from_address != expected:
        sender = mail.from_address or "an unreadable From address"
        if policy.from_mismatch == "quarantine":
            return (), f"sent from {sender}, not from {expected}"
        notes.append(("from", sender))
    if policy.authentication != "off" and (verdict is None or verdict.result != PASS):
        why = verdict.detail if verdict is not None else "not checked"
        if policy.authentication == "require":
            return (), f"mail authentication did not pass: {why}"
        notes.append(("authentication", why))
    return tuple(notes), None


# -- delivery reports ----------------------------------------------------------------------------------

def _bounce(mail: Inbound, recipient: Recipient, user_for: Callable[[str], str | None],
            token_for: Callable[[str], ReplyToken | None]) -> Decision:
    report = mail.bounce
    if report is None or not report.failed:
        return quarantine(mail.reason or "a delivery report that reports no failure")
    found = _bounced_invitation(report.original_calendar, report.recipients, recipient.token, token_for)
    if found is None:
        return quarantine("a delivery failure that matches no invitation we sent")
    organizer_address, uid, guest = found
    user = user_for(organizer_address)
    if user is None:
        return quarantine(f"a delivery failure for {organizer_address}, who is not a user here")
    status = "5.2" if report.status.startswith("5.1.") else "5.1"  # 5.1.x: no such mailbox
    detail = " ".join(filter(None, (report.status, report.diagnostic)))
    return Decision(Action.BOUNCE, f"delivery to {guest} failed: {detail}".rstrip(": "),
                    user=user, uid=uid, organizer=organizer_address, guest=guest, status=status)


def _bounced_invitation(original: icalendar.Calendar | None, failed: tuple[str, ...], token: ReplyToken | None,
                        token_for: Callable[[str], ReplyToken | None]) -> tuple[str, str, str] | None:
    """(organizer, UID, guest) of the invitation a bounce is about: from the reply token it was sent to
    (our envelope sender), else from the invitation it quotes (its ORGANIZER token, or UID and the failed
    recipient among its attendees)."""
    if token is None and original is not None:
        named = {organizer(c) for c in scheduled(original)} - {None}
        token = next((t for t in map(token_for, sorted(named)) if t is not None), None)
        if token is None:
            uids = {str(c.get("UID", "")) for c in scheduled(original)}
            guests = [r for r in failed if any(r in addresses(c) for c in scheduled(original))]
            if len(named) == 1 and len(uids) == 1 and guests:
                return named.pop(), uids.pop(), guests[0]
    return (token.organizer, token.uid, token.guest) if token is not None else None
