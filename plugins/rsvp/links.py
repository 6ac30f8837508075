# SPDX-License-Identifier: GPL-3.0-or-later
"""RSVP links and forms: what a guest's link names, and proof that a form was one we served.

A link is ``/.invito/rsvp/<reply-token>`` for the whole event, or ``/.invito/rsvp/<reply-token>/<occurrence>``
for one occurrence, the occurrence written ``<RECURRENCE-ID in UTC>.<signature>``: the reply token already
names (and proves) the organizer, the event and the guest, the signature binds the occurrence to it. The
answer buttons in the email add ``?answer=accept|tentative|decline`` (shown preselected, never applied
by a GET: link scanners "click" every link) and ``lang``.

The page's form carries a timestamp signed with the token and occurrence, so a POST can only follow a page
we served for that very link, within ``FORM_MAX_AGE``.
"""
from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Callable
from urllib.parse import urlencode

PREFIX = "/.invito/rsvp/"
ANSWERS = {"accept": "ACCEPTED", "tentative": "TENTATIVE", "decline": "DECLINED"}  # link word → PARTSTAT
FORM_MAX_AGE = 12 * 3600  # seconds a page may stay open before its form must be reloaded

Sign = Callable[..., str]  # ReplyTokens.sign: a MAC of its string arguments

_PATH = re.compile(r"([a-z2-7]{32})(?:/([0-9]{8}(?:T[0-9]{6}Z?)?)\.([a-z2-7]{16}))?/?", re.IGNORECASE)


@dataclass(frozen=True)
class Link:
    token: str
    instance: str | None = None  # the occurrence's RECURRENCE-ID key (``itip.components.key_of``); None: all


def parse(path: str, sign: Sign) -> Link | None:
    """The link a request path names; None when it is malformed or its occurrence was not signed by us."""
    if not path.startswith(PREFIX):
        return None
    match = _PATH.fullmatch(path[len(PREFIX):])
    if match is None:
        return None
    token, instance, signature = match.group(1).lower(), match.group(2), match.group(3)
    if instance is not None:  # mail systems may change the case of what they do not understand
        instance = instance.upper()
        if not hmac.compare_digest(signature.lower(), _instance_signature(token, instance, sign)):
            return None
    return Link(token, instance)


def path_of(link: Link, sign: Sign) -> str:
    if link.instance is None:
        return PREFIX + link.token
    return f"{PREFIX}{link.token}/{link.instance}.{_instance_signature(link.token, link.instance, sign)}"


def url(public_url: str, link: Link, sign: Sign, answer: str | None = None, language: str | None = None) -> str:
    """The absolute link for the email: ``answer`` one of :data:`ANSWERS`' words, ``language`` the mail's."""
    query = {k: v for k, v in (("answer", answer), ("lang", language)) if v}
    return public_url.rstrip("/") + path_of(link, sign) + ("?" + urlencode(query) if query else "")


def rid_of(instance: str) -> date | datetime:
    """The RECURRENCE-ID value an occurrence key stands for (UTC, floating, or a date)."""
    if len(instance) == 8:
        return datetime.strptime(instance, "%Y%m%d").date()
    moment = datetime.strptime(instance[:15], "%Y%m%dT%H%M%S")
    return moment.replace(tzinfo=timezone.utc) if instance.endswith("Z") else moment


def form_stamp(link: Link, sign: Sign, now: float) -> str:
    issued = str(int(now))
    return f"{issued}.{_form_signature(link, issued, sign)}"


def form_valid(stamp: str, link: Link, sign: Sign, now: float) -> bool:
    """Whether ``stamp`` came from :func:`form_stamp` for ``link`` less than ``FORM_MAX_AGE`` ago."""
    issued, _, signature = stamp.partition(".")
    if not issued.isdigit() or not 0 <= now - int(issued) <= FORM_MAX_AGE:
        return False
    return hmac.compare_digest(signature, _form_signature(link, issued, sign))


def _instance_signature(token: str, instance: str, sign: Sign) -> str:
    return sign("rsvp-occurrence", token, instance)


def _form_signature(link: Link, issued: str, sign: Sign) -> str:
    return sign("rsvp-form", link.token, link.instance or "", issued)
