# SPDX-License-Identifier: GPL-3.0-or-later
"""The RSVP page, ``/.invito/rsvp/<token>[/<occurrence>]``: guests answer an invitation in a web browser.

A GET only shows: the event as the organizer's copy has it now, the guest's answer so far and a form with
Accept / Maybe / Decline, so mail scanners that follow every link change nothing. A POST must carry the
form's signed timestamp and, when the browser sends one, our Origin; it becomes the REPLY a mail client
would send and goes through ``Processor.answer`` like an emailed reply, as an ``Inbound`` whose origin is
the page: the same triage (the link's token proves the guest), the same ``Storage.receive`` (Schedule-Tag
kept, inbox copy, organizer notification). A refused answer is kept in the inbound quarantine as the answer
it is, for an admin to see and release. Then it redirects back to the
page (POST/redirect/GET), which shows the recorded answer. Links that no longer lead anywhere get a page
saying why; every client address has a request budget; no page needs JavaScript.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http import client
from typing import Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import icalendar
from radicale.config import Configuration

from invito.plugins.imip import mime
from invito.plugins.imip.i18n import SUPPORTED, Localizer, choose
from invito.plugins.imip.inbound_spool import PageAnswer
from invito.plugins.imip.tokens import ReplyToken
from invito.plugins.imip.triage import Recipient
from invito.plugins.itip.components import attendee_language
from invito.plugins.rsvp import links
from invito.plugins.rsvp.answer import (COMMENT_LIMIT, PARTSTATS, Assessment, State, assess, changed_since,
                                        given_on_page, reply, seen)
from invito.plugins.rsvp.ratelimit import RateLimiter
from invito.server.inbound import Processor
from invito.storage import Storage

logger = logging.getLogger("invito.rsvp")

Response = tuple[int, dict[str, str], bytes]

MAX_FORM_BYTES = 16384
_TEMPLATES = os.path.join(os.path.dirname(links.__file__), "templates")
_PAGE = mime.template_environment(autoescape=True, folder=_TEMPLATES).get_template("page.html")
_LANGUAGE_NAMES = {"en": "English", "it": "Italiano"}
_STATUS = {State.GONE: 410, State.CANCELLED: 410, State.OVER: 410, State.NOT_INVITED: 403, State.TOO_COMPLEX: 422}
_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    # The token in the URL is the guest's key: never sent to other sites, never framed, nothing to run.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    client: str
    origin: str | None
    own_origin: str
    accept_language: str


@dataclass(frozen=True)
class _Visit:
    """A request for a link that may be answered, with what it names."""
    request: _Request
    language: str
    link: links.Link
    token: ReplyToken
    calendar: icalendar.Calendar  # the organizer's copy, as stored now
    assessment: Assessment


class RsvpPages:
    """Serves the RSVP pages of one server; thread-safe (the rate limiter locks, storage takes its locks)."""

    def __init__(self, configuration: Configuration, storage: Storage,
                 clock: Callable[[], float] = time.time) -> None:
        self._processor = Processor(configuration, storage)  # the one path of answers from outside
        self._storage = storage
        self._tokens = self._processor.tokens
        self._public_origin = _origin(configuration.get("rsvp", "public_url"))
        self._limiter = RateLimiter(configuration.get("rsvp", "requests_per_minute"))
        self._proxies = frozenset(configuration.get("rsvp", "trusted_proxies"))
        self._language = configuration.get("scheduling", "language")
        self._clock = clock

    def __call__(self, environ: dict) -> Response:
        request = self._request(environ)
        if request is None:
            return _plain(413 if environ.get("REQUEST_METHOD") == "POST" else 405)
        wait = self._limiter.allow(request.client)
        if wait:
            logger.info("rsvp: %s is over its request budget", request.client)
            status, headers, body = self._state_page(request, "busy", 429, None, seconds=int(wait) + 1)
            return status, {**headers, "Retry-After": str(int(wait) + 1)}, body
        try:
            return self._respond(request)
        except Exception:  # a bug must show a page, not a traceback; the log keeps the details
            logger.exception("rsvp: unexpected error on %s", request.method)
            return self._page(request, 500, Localizer(_language(request, None, self._language)),
                              error="rsvp.error.internal")

    # -- the flow ------------------------------------------------------------------------------------

    def _respond(self, request: _Request) -> Response:
        link = links.parse(request.path, self._tokens.sign)
        token = self._tokens.lookup(link.token) if link is not None else None
        if link is None or token is None:
            return self._state_page(request, "unknown", 404, None)
        organizer = self._storage.directory.user_for(token.organizer)
        calendar = self._storage.read_event(organizer, token.uid) if organizer else None
        now = datetime.fromtimestamp(self._clock(), timezone.utc)
        assessment = assess(calendar, token.guest, link.instance, now)
        language = _language(request, attendee_language(assessment.components, token.guest), self._language)
        if assessment.state is not State.OPEN or calendar is None:
            return self._state_page(request, assessment.state.value, _STATUS[assessment.state], language)
        visit = _Visit(request, language, link, token, calendar, assessment)
        if request.method == "POST":
            return self._post(visit, now)
        answered = request.query.get("done") == "1"
        chosen = links.ANSWERS.get(request.query.get("answer", "").lower()) if not answered else None
        return self._open_page(visit, 200, chosen=chosen, answered=answered)

    def _post(self, visit: _Visit, now: datetime) -> Response:
        """The form sent: checked, then the answer given, then back to the page (POST/redirect/GET)."""
        request, token = visit.request, visit.token
        if not self._form_trusted(request, visit.link):
            logger.info("rsvp uid=%s attendee=%s: refused a form that is stale or from elsewhere (origin %s)",
                        token.uid, token.guest, request.origin)
            return self._open_page(visit, 403, error="rsvp.error.form")
        if changed_since(visit.assessment, request.form.get("seen", "")):
            logger.info("rsvp uid=%s attendee=%s: the time changed since the page was shown; shown again",
                        token.uid, token.guest)
            return self._open_page(visit, 409, error="rsvp.error.changed")
        partstat = request.form.get("answer", "").upper()
        if partstat not in PARTSTATS:
            return self._open_page(visit, 400, error="rsvp.error.answer")
        if self._answer(visit, partstat, request.form.get("comment", ""), now):
            return self._open_page(visit, 409, error="rsvp.error.not_applied")
        location = links.path_of(visit.link, self._tokens.sign) + "?" + urlencode({"done": "1",
                                                                                   "lang": visit.language})
        return 303, {"Location": location, "Cache-Control": "no-store", "Content-Length": "0"}, b""

    def _answer(self, visit: _Visit, partstat: str, comment: str, now: datetime) -> str | None:
        """Send the guest's REPLY down the emailed replies' path; what went wrong, or None. A refused
        answer is kept in the inbound quarantine as the answer it is, for the admin to see and release."""
        token, client = visit.token, visit.request.client
        message = reply(visit.calendar, visit.assessment, token.guest, partstat, comment, now)
        problem = self._processor.answer(given_on_page(message, token, client), Recipient.link(token),
                                         "rsvp " + partstat)
        if problem:
            self._processor.spool.set_aside_answer(PageAnswer.of(message.to_ical().decode(), token, client), problem)
        return problem

    def _form_trusted(self, request: _Request, link: links.Link) -> bool:
        """The form is one we served for this link, recently, and the browser posted it from our pages."""
        if request.origin is not None and request.origin not in {request.own_origin, self._public_origin}:
            return False
        return links.form_valid(request.form.get("form", ""), link, self._tokens.sign, self._clock())

    # -- pages ---------------------------------------------------------------------------------------

    def _open_page(self, visit: _Visit, status: int, *, chosen: str | None = None, answered: bool = False,
                   error: str | None = None) -> Response:
        """The event and the form; ``chosen``: the answer picked in the email; ``answered``: just sent."""
        loc, assessment = Localizer(visit.language), visit.assessment
        event = mime.page_details(assessment.components, visit.calendar, visit.token.guest, loc)
        answer_word = loc.text("status." + assessment.answer) if loc.has("status." + assessment.answer) else \
            assessment.answer
        notice = None
        if answered:
            organizer = event["organizer"]
            notice = loc.text("rsvp.thanks", answer=loc.text("rsvp." + assessment.answer)
                              if assessment.answer in PARTSTATS else answer_word,
                              organizer=organizer.display if organizer else "") + " " + loc.text("rsvp.change")
        elif chosen:
            notice = loc.text("rsvp.chosen", answer=loc.text("rsvp." + chosen))
        recurring = any("RRULE" in c or "RDATE" in c for c in assessment.components)
        scope = "rsvp.scope.occurrence" if visit.link.instance else "rsvp.scope.series" if recurring else None
        form = {
            "action": links.path_of(visit.link, self._tokens.sign),
            "stamp": links.form_stamp(visit.link, self._tokens.sign, self._clock()),
            "seen": seen(assessment),
            "current": loc.text("rsvp.current", answer=answer_word),
            "scope": loc.text(scope) if scope else "",
            "comment_limit": COMMENT_LIMIT,
            "buttons": [{"value": p, "label": loc.text("rsvp." + p), "chosen": p == chosen} for p in PARTSTATS],
        }
        return self._page(visit.request, status, loc, heading=str(event["title"]), event=event, form=form,
                          notice=notice, error=error)

    def _state_page(self, request: _Request, state: str, status: int, language: str | None,
                    **values: object) -> Response:
        loc = Localizer(language or _language(request, None, self._language))
        return self._page(request, status, loc, heading=loc.text(f"rsvp.{state}.title"),
                          explanation=loc.text(f"rsvp.{state}.text", **values))

    def _page(self, request: _Request, status: int, loc: Localizer, *, heading: str = "", explanation: str = "",
              event: dict | None = None, form: dict | None = None, notice: str | None = None,
              error: str | None = None) -> Response:
        language = loc.language
        query = {k: v for k, v in request.query.items() if k == "answer"}
        html = _PAGE.render(
            language=language, t=loc.text, heading=heading or loc.text("rsvp.page"), explanation=explanation,
            event=event, form=form, notice=notice, error=loc.text(error) if error else None,
            colors={"ACCEPTED": mime.ACCEPT_COLOR, "TENTATIVE": mime.MAYBE_COLOR, "DECLINED": mime.DECLINE_COLOR},
            languages=[{"code": code, "name": _LANGUAGE_NAMES[code],
                        "href": "?" + urlencode({**query, "lang": code})} for code in SUPPORTED])
        body = html.encode("utf-8")
        return status, {**_HEADERS, "Content-Language": language, "Content-Length": str(len(body))}, body

    # -- the request ---------------------------------------------------------------------------------

    def _request(self, environ: dict) -> _Request | None:
        """The parts of the request the pages use; None for a method they do not take or a form too large."""
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if method not in ("GET", "HEAD", "POST"):
            return None
        form: dict[str, str] = {}
        if method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return None
            if not 0 <= length <= MAX_FORM_BYTES:
                return None
            body = environ["wsgi.input"].read(length) if length else b""
            form = _fields(body.decode("utf-8", "replace"))
        scheme = environ.get("wsgi.url_scheme", "http")
        return _Request(method="GET" if method == "HEAD" else method, path=environ.get("PATH_INFO", ""),
                        query=_fields(environ.get("QUERY_STRING", "")), form=form,
                        client=_client(environ, self._proxies), origin=environ.get("HTTP_ORIGIN"),
                        own_origin=f"{scheme}://{environ.get('HTTP_HOST', '')}".lower(),
                        accept_language=environ.get("HTTP_ACCEPT_LANGUAGE", ""))


def _fields(text: str) -> dict[str, str]:
    """The first value of each field of a query string or form."""
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True, max_num_fields=20).items()} \
        if text else {}


def _client(environ: dict, proxies: frozenset[str]) -> str:
    """The client's address: the peer, or behind trusted proxies the last address they were not."""
    address = environ.get("REMOTE_ADDR", "")
    forwarded = [a.strip() for a in environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
    while address in proxies and forwarded:
        address = forwarded.pop()
    return address


def _language(request: _Request, attendee_language: str | None, default: str) -> str:
    """The ``lang`` asked for (the email's language, or the page's language links), else the browser's
    first supported language, else the attendee's LANGUAGE, else the server's default."""
    asked = request.form.get("lang") or request.query.get("lang")
    if asked in SUPPORTED:
        return asked
    for tag in _preferred(request.accept_language):
        primary = re.split(r"[-_]", tag, maxsplit=1)[0].lower()
        if primary in SUPPORTED:
            return primary
    return choose(attendee_language, default)


def _preferred(header: str) -> list[str]:
    """Accept-Language tags, most preferred first."""
    weighted = []
    for index, item in enumerate(header.split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        match = re.search(r"q=([0-9.]+)", params)
        weight = float(match.group(1)) if match and re.fullmatch(r"[01](\.[0-9]{0,3})?", match.group(1)) else 1.0
        if tag and weight > 0:
            weighted.append((-weight, index, tag.strip()))
    return [tag for _, _, tag in sorted(weighted)]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def _plain(status: int) -> Response:
    body = f"{status} {client.responses.get(status, '')}\n".encode()
    return status, {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body))}, body
