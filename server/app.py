# SPDX-License-Identifier: GPL-3.0-or-later
"""Invito's WSGI application: Radicale plus the RFC 6638 surface.

Radicale's handlers do the WebDAV work; we wrap them to advertise ``calendar-auto-schedule`` (and that
this is Invito, for `invito check`), guard the scheduling inbox/outbox, pass scheduling headers to the
storage layer (where scheduling happens, inside the write lock) and turn its answers into HTTP:
Schedule-Tag, no strong ETag for rewritten objects, and RFC 6638 precondition errors. COPY, which
Radicale lacks, is :mod:`invito.server.copy`.
"""
from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from http import client
from typing import Iterable

import icalendar
from radicale import app, httputils, pathutils, types
from radicale import item as radicale_item

from invito.plugins.rsvp import links
from invito.server import copy, errors, expanded, identity, outbox, properties, report_window
from invito.server.rerun import ApplicationPartRerun
from invito.server.rsvp import RsvpPages
from invito.storage import Storage, layout, walks
from invito.storage.request import SchedulingRefused, WriteRequest, write_request

DAV_HEADERS = f"{httputils.DAV_HEADERS}, calendar-auto-schedule, {identity.DAV_TOKEN}"


class InvitoApplication(ApplicationPartRerun, copy.ApplicationPartCopy, app.Application):
    _storage: Storage

    def __init__(self, configuration) -> None:
        super().__init__(configuration)
        if not isinstance(self._storage, Storage):
            raise RuntimeError("[storage] type must be invito.storage for scheduling (got %r)"
                               % configuration.get("storage", "type"))
        self._rsvp = RsvpPages(configuration, self._storage)

    def __call__(self, environ: types.WSGIEnviron, start_response: types.WSGIStartResponse) -> Iterable[bytes]:
        """The guests' RSVP pages need no login and speak HTML: they are served before Radicale's
        authentication and DAV handling; everything else is Radicale's (and ours below)."""
        if not environ.get("PATH_INFO", "").startswith(links.PREFIX):
            return super().__call__(environ, start_response)
        status, headers, body = self._rsvp(environ)
        start_response("%d %s" % (status, client.responses.get(status, "")), list(headers.items()))
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    # -- discovery ---------------------------------------------------------------------------------

    def do_OPTIONS(self, environ: types.WSGIEnviron, base_prefix: str, path: str, user: str,
                   user_groups: set, request_info: dict) -> types.WSGIResponse:
        return _with_dav(super().do_OPTIONS(environ, base_prefix, path, user, user_groups, request_info))

    def do_PROPFIND(self, environ: types.WSGIEnviron, base_prefix: str, path: str, user: str,
                    user_groups: set, request_info: dict) -> types.WSGIResponse:
        self._storage.ensure_scheduling_collections(user)
        return _with_dav(self._with_scheduling_properties(super().do_PROPFIND(
            environ, base_prefix, path, user, user_groups, request_info), base_prefix, user, request_info))

    # -- writes --------------------------------------------------------------------------------------

    def do_PUT(self, environ: types.WSGIEnviron, base_prefix: str, path: str, user: str,
               user_groups: set, request_info: dict) -> types.WSGIResponse:
        if layout.is_outbox(path) or layout.scheduling_collection(path) or layout.is_inbox(path):
            return errors.refusal(403, "Clients cannot write into a scheduling inbox or outbox.")
        body = _buffer_body(environ)
        request = WriteRequest(user=user, user_groups=frozenset(user_groups),
                               if_schedule_tag_match=environ.get("HTTP_IF_SCHEDULE_TAG_MATCH"),
                               client_text=_decoded(self.configuration, environ, body))
        try:
            with write_request(request):
                status, headers, answer, xml_request = super().do_PUT(
                    environ, base_prefix, path, user, user_groups, request_info)
        except SchedulingRefused as refusal:
            return errors.refused(refusal, path, self._encoding)
        if status == client.BAD_REQUEST:
            return errors.refusal(400, "Invalid calendar data: %s" % _why_invalid(body))
        if status in (client.CREATED, client.NO_CONTENT) and request.schedule_tag:
            headers = dict(headers)
            headers["Schedule-Tag"] = '"%s"' % request.schedule_tag
            if request.rewritten:  # RFC 4791 §5.3.4: not what the client sent, so no strong ETag
                headers.pop("ETag", None)
        return status, headers, answer, xml_request

    def do_DELETE(self, environ: types.WSGIEnviron, base_prefix: str, path: str, user: str,
                  user_groups: set, request_info: dict) -> types.WSGIResponse:
        if layout.scheduling_collection(path):
            return errors.refusal(403, "The scheduling inbox and outbox cannot be deleted.")
        try:
            with write_request(WriteRequest(user=user, user_groups=frozenset(user_groups))):
                return super().do_DELETE(environ, base_prefix, path, user, user_groups, request_info)
        except SchedulingRefused as refusal:
            return errors.refused(refusal, path, self._encoding)

    def do_MKCALENDAR(self, environ: types.WSGIEnviron, base_prefix: str, path: str, user: str,
                      user_groups: set, request_info: dict) -> types.WSGIResponse:
        if layout.scheduling_collection(path):
            return errors.refusal(403, "The scheduling inbox and outbox are managed by the server.")
        return super().do_MKCALENDAR(environ, base_prefix, path, user, user_groups, request_info)

    def do_MKCOL(self, environ: types.WSGIEnviron, base_prefix: str, path: str, user: str,
                 user_groups: set, request_info: dict) -> types.WSGIResponse:
        if layout.scheduling_collection(path):
            return errors.refusal(403, "The scheduling inbox and outbox are managed by the server.")
        return super().do_MKCOL(environ, base_prefix, path, user, user_groups, request_info)

    def do_MOVE(self, environ: types.WSGIEnviron, base_prefix: str, path: str, user: str,
                user_groups: set, request_info: dict) -> types.WSGIResponse:
        destination = environ.get("HTTP_DESTINATION", "")
        if any(layout.is_inbox(p) or layout.is_outbox(p) for p in (path, copy.path_of(destination, base_prefix))):
            return errors.refusal(403, "Items cannot be moved into or out of a scheduling inbox or outbox.")
        return super().do_MOVE(environ, base_prefix, path, user, user_groups, request_info)

    # -- reads ---------------------------------------------------------------------------------------

    def do_GET(self, environ: types.WSGIEnviron, base_prefix: str, path: str, user: str,
               user_groups: set, request_info: dict) -> types.WSGIResponse:
        status, headers, answer, xml_request = super().do_GET(
            environ, base_prefix, path, user, user_groups, request_info)
        if status == client.OK and isinstance(answer, (str, bytes)) and path.endswith(".ics"):
            tag = properties.schedule_tag_of(answer)
            if tag:
                headers = dict(headers)
                headers["Schedule-Tag"] = tag
        return status, headers, answer, xml_request

    def do_REPORT(self, environ: types.WSGIEnviron, base_prefix: str, path: str, user: str,
                  user_groups: set, request_info: dict) -> types.WSGIResponse:
        """calendar-multiget and calendar-query answer ``C:schedule-tag`` too (RFC 6638 §3.3); an expand
        REPORT answers with the stored lines (see ``expanded``)."""
        body = _buffer_body(environ)
        with walks.walking_until(report_window.walked_until(body)):  # dense old series are left out
            answer = super().do_REPORT(environ, base_prefix, path, user, user_groups, request_info)
        return self._with_scheduling_properties(answer, base_prefix, user, request_info,
                                                expand=expanded.asks_expand(body))

    def do_POST(self, environ: types.WSGIEnviron, base_prefix: str, path: str, user: str,
                user_groups: set, request_info: dict) -> types.WSGIResponse:
        if not layout.is_outbox(path):
            return super().do_POST(environ, base_prefix, path, user, user_groups, request_info)
        self._storage.ensure_scheduling_collections(user)
        if not user or layout.outbox_path(user) != pathutils.unstrip_path(pathutils.strip_path(path), True):
            return errors.refusal(403, "POST only to your own scheduling outbox.")
        body = _buffer_body(environ).decode(self._encoding, "replace")
        return outbox.post(self._storage, user, body, self._encoding)

    # -- helpers -------------------------------------------------------------------------------------

    def _with_scheduling_properties(self, response: types.WSGIResponse, base_prefix: str, user: str,
                                    request_info: dict, expand: bool = False) -> types.WSGIResponse:
        """One parse of a multistatus answer for what Radicale cannot say itself: scheduling properties,
        and (``expand``) expanded instances rebuilt from the stored lines."""
        status, headers, answer, xml_request = response
        if status != client.MULTI_STATUS or not answer:
            return response
        multistatus = ET.fromstring(answer)
        with self._storage.acquire_lock("r", user):
            if expand:
                expanded.restore(multistatus, base_prefix, self._storage)
            properties.rewrite(multistatus, base_prefix, self._storage)
        return status, headers, self._xml_response(multistatus, request_info), xml_request


def _with_dav(response: types.WSGIResponse) -> types.WSGIResponse:
    """Advertise calendar-auto-schedule and Invito's token; other answers pass untouched (Radicale compares
    them by identity of content, e.g. NOT_ALLOWED → 401 for anonymous clients)."""
    status, headers, answer, xml_request = response
    if "DAV" not in dict(headers):
        return response
    return status, {**dict(headers), "DAV": DAV_HEADERS}, answer, xml_request


def _buffer_body(environ: types.WSGIEnviron) -> bytes:
    """Read the body once and put it back, so Radicale reads it as usual and we can explain errors."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _decoded(configuration, environ: types.WSGIEnviron, body: bytes) -> str | None:
    """The body as Radicale's PUT handler decodes it (same charset rules), so the stored text is the
    client's; None when it cannot be decoded (Radicale then refuses the PUT itself)."""
    try:
        return httputils.decode_request(configuration, environ, body)
    except UnicodeDecodeError:
        return None


def _why_invalid(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
        components = radicale_item.read_components(text)
        if len(components) != 1:
            return "expected exactly one VCALENDAR, found %d" % len(components)
        icalendar.Calendar.from_ical(text)
    except Exception as e:  # any parser's complaint is the reason we give
        return str(e) or type(e).__name__
    return "the calendar object is not acceptable (check UID and component types)"
