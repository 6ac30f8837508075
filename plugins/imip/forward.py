# SPDX-License-Identifier: GPL-3.0-or-later
"""A guest's plain reply to their reply address, passed on to the organizer.

Invitations name the guest's reply-token address as Reply-To, so that mail programs which answer an
invitation by "reply" (Gnus, aerc) reach Invito. A person pressing "reply" writes to the organizer,
though ("Thanks, I'll be there"): such a mail, without a calendar, goes on to the organizer as a new
message From "<guest> via Invito", Reply-To the guest (whom the token names, whatever the mail claims),
with the guest's text and attachments as written. What no person wrote is never passed on: auto-replies,
list and bulk mail, bounces (an empty envelope sender) and our own forwards coming back (a loop, known by
:data:`FORWARDED`). Pure: bytes in, bytes or a reason out.
"""
from __future__ import annotations

import email
import email.policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone

from invito.plugins.imip.i18n import Localizer
from invito.plugins.imip.mime import _address, _mailbox, _one_line

FORWARDED = "X-Invito-Forwarded"  # on every forward: one that comes back to a reply address is a loop
_NAME_LIMIT = 80
_SUBJECT_LIMIT = 300
_LIST_PRECEDENCE = ("bulk", "junk", "list", "auto_reply")
_AUTOMATIC = ("X-Autoreply", "X-Autorespond", "List-Id", "List-Unsubscribe")


def refusal(raw: bytes, envelope_sender: str) -> str | None:
    """Why the mail must not be forwarded (it is not a person writing), or None."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if message.get(FORWARDED) is not None:
        return f"a mail loop: Invito forwarded this message before ({FORWARDED})"
    if not envelope_sender.strip("<> "):
        return "an automatic message (empty envelope sender): not forwarded"
    auto = str(message.get("Auto-Submitted", "no")).split(";")[0].strip().lower()
    if auto != "no":
        return f"an automatic message (Auto-Submitted: {_one_line(auto, 40)}): not forwarded"
    precedence = str(message.get("Precedence", "")).strip().lower()
    if precedence in _LIST_PRECEDENCE:
        return f"an automatic or list message (Precedence: {precedence}): not forwarded"
    for name in _AUTOMATIC:
        if message.get(name) is not None:
            return f"an automatic or list message ({name}): not forwarded"
    return None


def forward(raw: bytes, *, guest: str, guest_name: str, organizer: str, title: str, sender: str,
            language: str, tag: str, now: datetime | None = None) -> bytes:
    """The guest's mail ``raw`` as a message to ``organizer``: its body (every MIME part) as written, new
    headers. ``tag`` (a short, non-reversible name of the reply token) marks it as ours; ``title`` is the
    stored event's, for a mail without a subject. ValueError if an address is not a mail address."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    subject = _one_line(str(message.get("Subject", "")), _SUBJECT_LIMIT)
    for name in {key.lower() for key in message.keys()}:
        if not (name.startswith("content-") or name == "mime-version"):
            del message[name]
    own = _mailbox(sender)
    shown = Localizer(language).text("via", name=_one_line(guest_name, _NAME_LIMIT) or _mailbox(guest).addr_spec)
    message["From"] = Address(display_name=_one_line(shown, _NAME_LIMIT + 20), username=own.username,
                              domain=own.domain)
    message["Reply-To"] = _address(guest_name, guest)
    message["To"] = _address("", organizer)
    message["Subject"] = subject or _one_line("Re: " + title, _SUBJECT_LIMIT)
    message["Date"] = format_datetime(now or datetime.now(timezone.utc))
    message["Message-ID"] = make_msgid(domain=own.domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: the organizer's vacation responder stays quiet
    message[FORWARDED] = tag
    if "MIME-Version" not in message:
        message["MIME-Version"] = "1.0"
    return message.as_bytes(policy=email.policy.SMTP)
