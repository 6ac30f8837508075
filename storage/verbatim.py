# SPDX-License-Identifier: GPL-3.0-or-later
"""Stored objects keep the client's own text.

Two libraries stand between a client's text and what we store, and both lose data when they re-serialize.
Radicale parses every calendar object with vobject and, where it builds an item from that parse, stores
and serves vobject's re-serialization, which is lossy: an unknown or X- property is cut at its first comma
(``X-APPLE-STRUCTURED-LOCATION:geo:45.46,9.19`` becomes ``geo:45.46``), and so is a URI-valued CONFERENCE.
That happens twice: the item a PUT hands to ``Collection.upload``, and the item cache Radicale fills on a
cache miss when reading a file back. Here both take their text from the bytes themselves; vobject still
derives what Radicale needs from the same text (UID, component kind, time range, ETag of our text).

icalendar, which scheduling works with, loses list and structured values when it writes; a copy
scheduling changed is written by :func:`~invito.plugins.itip.verbatim.render` (kept there, where the mail
to guests uses it too), which keeps every line scheduling left alone.
"""
from __future__ import annotations

import functools
import os
import re

import radicale.item as radicale_item
import vobject
from radicale.storage import multifilesystem

from invito.plugins.itip.verbatim import FOLD, canonical_lines, content_lines, raw_components, render  # noqa: F401 (render: storage's API)


def as_sent(collection_path: str, item: radicale_item.Item, text: str) -> radicale_item.Item:
    """``item`` (Radicale's parse of a client's PUT) carrying the client's ``text`` instead of vobject's
    serialization of it; what Radicale derived from the parse is kept."""
    return radicale_item.Item(collection_path=collection_path, text=canonical_lines(text), uid=item.uid,
                              name=item.name, component_name=item.component_name, time_range=item.time_range)


def item(collection_path: str, text: str) -> radicale_item.Item:
    """An item of ``text`` (a copy Invito writes) whose UID and time range Radicale derives as it does for
    a client's PUT, after fixing the client quirks it knows (Evolution's DATE EXDATEs on a DATE-TIME
    series, which it could not otherwise compare); the text stays as it is. No RRULE limit: the event
    was accepted already."""
    vobject_items = radicale_item.read_components(text)
    radicale_item.check_and_sanitize_items(vobject_items, max_vevent_rrule_occurrence=0, tag="VCALENDAR")
    return as_sent(collection_path, radicale_item.Item(collection_path=collection_path,
                                                       vobject_item=vobject_items[0]), text)


class VerbatimCacheCollection(multifilesystem.Collection):
    """Radicale's item cache holding the file's own text.

    On a cache miss Radicale parses the file and caches an item built from the parse alone, whose text
    (served by GET, REPORT and sync-collection from then on) and ETag are vobject's. We cache the file's
    text instead, with the UID and time range Radicale derived from it.
    """

    def _store_item_cache(self, href: str, item: radicale_item.Item, cache_hash: str = ""):
        if item._text is None:  # built from vobject: Radicale's read path (``_get``) on a cache miss
            with open(os.path.join(self._filesystem_path, href), "rb") as f:
                raw = f.read()
            if self._storage._use_mtime_and_size_for_item_cache or self._item_cache_hash(raw) == cache_hash:
                item = radicale_item.Item(collection=self, text=raw.decode(self._encoding), uid=item.uid,
                                          name=item.name, component_name=item.component_name,
                                          time_range=item.time_range)
        return super()._store_item_cache(href, item, cache_hash)


_TZID = re.compile(r';TZID=("[^"]*"|[^;:]*)', re.IGNORECASE)


def objects_by_uid(text: str) -> dict[str, str]:
    """A whole calendar (PUT on a collection) as one object text per UID, made of the client's own lines:
    the calendar's properties, the VTIMEZONEs the object uses and its components. Radicale splits such a
    PUT the same way, but writes vobject's serialization of each part."""
    header: list[str] = []
    zones: dict[str, list[str]] = {}
    objects: dict[str, list[list[str]]] = {}
    block: list[str] = []
    depth = 0
    for raw, _, name in content_lines(text):
        depth -= name == "END"
        if depth == 1 and name not in ("BEGIN", "END") and not block:
            header.append(canonical_lines(raw))
        elif depth >= 1:
            block.append(raw)
        depth += name == "BEGIN"
        if depth == 1 and name == "END" and block:
            _file_block(block, zones, objects)
            block = []
    texts = {}
    for uid, blocks in objects.items():
        used = dict.fromkeys(t.strip('"') for b in blocks for line in b for t in _TZID.findall(FOLD.sub("", line)))
        parts = [*header, *(line for t in used for line in zones.get(t, ())), *(l for b in blocks for l in b)]
        texts[uid] = "BEGIN:VCALENDAR\r\n" + "".join(canonical_lines(p) for p in parts) + "END:VCALENDAR\r\n"
    return texts


def _file_block(block: list[str], zones: dict[str, list[str]], objects: dict[str, list[list[str]]]) -> None:
    """One top-level component's raw lines: a VTIMEZONE by its TZID, anything else by its UID."""
    props = {}
    depth = 0
    for raw in block:
        unfolded = FOLD.sub("", raw)
        name = re.split(r"[;:]", unfolded, maxsplit=1)[0].upper()
        depth += (name == "BEGIN") - (name == "END")
        if depth == 1 and name not in ("BEGIN", "END"):
            props.setdefault(name, unfolded.split(":", 1)[-1].strip())
    if "TZID" in props and FOLD.sub("", block[0]).upper().startswith("BEGIN:VTIMEZONE"):
        zones[props["TZID"]] = block
    elif "UID" in props:
        objects.setdefault(props["UID"], []).append(block)


def restore(rewritten: str, stored: str) -> str:
    """``rewritten`` (vobject's serialization of something made from ``stored``, e.g. the instances of a
    REPORT's expand) with each line that is vobject's rendering of a line of ``stored`` put back as
    stored; lines vobject made anew (an instance's DTSTART, RECURRENCE-ID) stay."""
    originals = _vobject_forms(stored)
    out = []
    for raw, unfolded, _ in content_lines(rewritten):
        out.append(originals.get(unfolded, canonical_lines(raw)))
    return "".join(out)


@functools.lru_cache(maxsize=64)
def _vobject_forms(text: str) -> dict[str, str]:
    """Each raw line of ``text`` (folded, CRLF-ended) by the unfolded line vobject writes for it."""
    raw_tree = raw_components(text)
    try:
        parsed = vobject.readOne(text)
    except Exception:  # vobject's parse errors have no common base; then nothing can be restored
        return {}
    if raw_tree is None:
        return {}
    forms: dict[str, str] = {}

    def pair(comp, raw: tuple[str, dict[str, list[str]], list]) -> None:
        _, raw_lines, raw_subs = raw
        for name, children in comp.contents.items():
            subs = [s for s in raw_subs if s[0] == name.upper()]
            raws = raw_lines.get(name.upper(), [])
            for k, child in enumerate(children):
                if isinstance(child, vobject.base.Component):
                    if k < len(subs):
                        pair(child, subs[k])
                elif len(raws) == len(children):
                    try:
                        forms.setdefault(FOLD.sub("", child.serialize()).rstrip("\r\n"), raws[k])
                    except Exception:  # a line vobject cannot write back: it is never in its output either
                        continue

    pair(parsed, raw_tree)
    return forms
