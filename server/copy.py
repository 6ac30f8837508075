# SPDX-License-Identifier: GPL-3.0-or-later
"""WebDAV COPY (RFC 4918 §9.8) of one calendar object, which plain Radicale does not offer.

The copy is a write of the source's stored text, exactly, to the destination through the same storage
path as a PUT (``Collection.upload``), so scheduling runs once, in the name of the destination calendar's
owner, with every PUT rule: a scheduling object copied within its owner's home would put its UID there
twice and is refused (RFC 6638 §3.2.4.1 ``unique-scheduling-object-resource``) before any message is
planned; copied into a calendar of someone else who may write there, it is that user's object as if PUT.
Collections are not copied (Radicale does not MOVE them either); the scheduling inbox and outbox hold
messages, not calendar objects, and take part in neither end.
"""
from __future__ import annotations

import logging
import posixpath
from http import client
from urllib.parse import unquote, urlparse

from radicale import httputils, pathutils, storage, types, utils, xmlutils
from radicale import item as radicale_item
from radicale.app.base import Access, ApplicationBase

from invito.server import errors
from invito.storage import layout
from invito.storage.request import SchedulingRefused, WriteRequest, write_request

logger = logging.getLogger("invito.http")

# RFC 4791 §5.3.2.1 and RFC 6352 §6.3.2.1: the precondition a collection of that kind names.
_DATA_PRECONDITION = {"VCALENDAR": "C:supported-calendar-data", "VADDRESSBOOK": "CR:supported-address-data"}
_UID_PRECONDITION = {"VCALENDAR": "C:no-uid-conflict", "VADDRESSBOOK": "CR:no-uid-conflict"}


def path_of(url: str, base_prefix: str) -> str:
    """The storage path a Destination URL names (its host is checked by :func:`destination`)."""
    path = unquote(urlparse(url).path)
    if base_prefix and path.startswith(base_prefix):
        path = path[len(base_prefix):]
    return pathutils.sanitize_path(path)


def destination(environ: types.WSGIEnviron, base_prefix: str) -> str | types.WSGIResponse:
    """The Destination header as a path on this server, or the answer to give instead."""
    raw = environ.get("HTTP_DESTINATION", "")
    if not raw:
        return errors.refusal(400, "COPY needs a Destination header.")
    url = urlparse(unquote(raw))
    if url.netloc:
        netloc = url.netloc if url.port is not None else url.netloc + (":443" if url.scheme == "https" else ":80")
        if netloc != utils.get_server_netloc(environ, force_port=True):
            return httputils.REMOTE_DESTINATION
    if not (pathutils.sanitize_path(url.path) + "/").startswith(base_prefix + "/"):
        return httputils.NOT_ALLOWED
    return path_of(raw, base_prefix)


class ApplicationPartCopy(ApplicationBase):

    def do_COPY(self, environ: types.WSGIEnviron, base_prefix: str, path: str, user: str,
                user_groups: set, request_info: dict) -> types.WSGIResponse:
        to_path = destination(environ, base_prefix)
        if not isinstance(to_path, str):
            return to_path
        if any(layout.is_inbox(p) or layout.is_outbox(p) for p in (path, to_path)):
            return errors.refusal(403, "Items cannot be copied into or out of a scheduling inbox or outbox.")
        if pathutils.strip_path(to_path) == pathutils.strip_path(path):
            return errors.refusal(403, "The source and the destination of a COPY are the same resource.")
        access = Access(self._rights, user, user_groups, path)
        to_access = Access(self._rights, user, user_groups, to_path)
        if not access.check("r") or not to_access.check("w"):
            return httputils.NOT_ALLOWED
        overwrite = environ.get("HTTP_OVERWRITE", "T").upper() != "F"  # RFC 4918 §10.6: T when absent

        with self._storage.acquire_lock("w", user, path=path, request="COPY", to_path=to_path, actor=user):
            item = next(iter(self._storage.discover(path)), None)
            if item is None:
                return httputils.NOT_FOUND
            if isinstance(item, storage.BaseCollection):
                return errors.refusal(403, "Only calendar objects can be copied, not collections.")
            if not access.check("r", item) or not to_access.check("w", item):
                return httputils.NOT_ALLOWED
            to_item = next(iter(self._storage.discover(to_path)), None)
            if isinstance(to_item, storage.BaseCollection):
                return errors.refusal(403, "The destination is a collection.")
            to_collection = next(iter(self._storage.discover(pathutils.parent_path(to_path))), None)
            if not isinstance(to_collection, storage.BaseCollection):
                return errors.refusal(409, "The destination's collection does not exist.")
            if to_item is not None and not overwrite:
                return errors.refusal(412, "The destination exists and Overwrite is F.")
            refusal = self._copy_refusal(item, to_item, to_collection, base_prefix)
            if refusal is not None:
                return refusal
            request = WriteRequest(user=user, user_groups=frozenset(user_groups))
            copied = radicale_item.Item(collection_path=to_collection.path, text=item.serialize())
            try:
                with write_request(request):
                    uploaded, _ = to_collection.upload(posixpath.basename(pathutils.strip_path(to_path)), copied)
            except SchedulingRefused as why:
                return errors.refused(why, to_path, self._encoding)
            except ValueError as e:
                logger.warning("COPY %s to %s refused: %s", path, to_path, e)
                return errors.refusal(400, "The object cannot be stored there: %s" % e)
        logger.info("COPY %s to %s uid=%s: %s", path, to_path, item.uid, "overwritten" if to_item else "created")
        headers = {} if request.rewritten else {"ETag": uploaded.etag}
        if request.schedule_tag:
            headers["Schedule-Tag"] = '"%s"' % request.schedule_tag
        return client.NO_CONTENT if to_item is not None else client.CREATED, headers, None, None

    def _copy_refusal(self, item: radicale_item.Item, to_item: radicale_item.Item | None,
                      to_collection: storage.BaseCollection, base_prefix: str) -> types.WSGIResponse | None:
        """The CalDAV/CardDAV preconditions of the destination collection, checked before any write."""
        source_tag = item.collection.tag if item.collection is not None else ""
        if to_collection.tag != source_tag or not source_tag:
            precondition = _DATA_PRECONDITION.get(to_collection.tag)
            reason = "a %s object does not belong in this collection" % (item.component_name or "non-calendar")
            if precondition is None:
                return errors.refusal(403, reason)
            return errors.precondition(403, precondition, reason, self._encoding)
        components = to_collection.get_meta("C:supported-calendar-component-set")
        if source_tag == "VCALENDAR" and components and item.component_name not in components.split(","):
            return errors.precondition(403, "C:supported-calendar-component",
                                       "this calendar takes %s only" % components, self._encoding)
        in_the_way = to_item.href if to_item is not None and to_item.uid != item.uid else None
        if to_item is None:
            in_the_way = to_collection.href_for_uid(item.uid)  # type: ignore[attr-defined]
        if in_the_way is None:
            return None
        href = xmlutils.make_href(base_prefix, pathutils.unstrip_path(
            posixpath.join(to_collection.path, in_the_way)))
        return errors.precondition(403, _UID_PRECONDITION[source_tag],
                                   "UID %s is already used by %s in this collection" % (item.uid, in_the_way),
                                   self._encoding, href)
