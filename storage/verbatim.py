# SPDX-License-Identifier: GPL-3.0-or-later
"""Stored objects keep the client's own text.

Two libraries stand between a client's text and what we store, and both lose data when they re-serialize.
Radicale parses every calendar object with vobject and, where it builds an item from that parse, stores
and serves vobject's re-serialization, which is lossy: an unknown or X- property is cut at its first comma
(``X-APPLE-STRUCTURED-LOCATION:geo:45.46,9.19`` becomes ``geo:45.46``), and so is a URI-valued CONFERENCE.
That happens twice: the item a PUT hands to ``Collection.upload``, and the item cache Radicale fills on a
cache miss when reading a file back. Here both take their text from the bytes themselves; vobject still
derives what Radicale needs from the same text (UID, component kind, time range, ETag of our text).

icalendar, which scheduling works with, keeps X- properties but merges list values (``RESOURCES:A,B``
becomes one resource ``A\\,B``) and escapes structured ones (``REQUEST-STATUS:2.0;Success``). So a copy
scheduling changed is written by :func:`render`: every line whose meaning scheduling left alone is the
source's own line, byte for byte; only lines scheduling changed or added are icalendar's.
"""
from __future__ import annotations

import functools
import os
import re
from typing import Iterable

import icalendar
import radicale.item as radicale_item
import vobject
from radicale.storage import multifilesystem

_LINE_END = re.compile(r"\r\n|\r|\n")
_FOLDED_LINES = re.compile(r"[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*")
_FOLD = re.compile(r"\r?\n[ \t]")

Component = icalendar.cal.component.Component
Key = tuple[str, ...]  # a top-level component: kind, UID or TZID, RECURRENCE-ID


def canonical_lines(text: str) -> str:
    """``text`` with every line ending CRLF (RFC 5545 §3.1), whatever the client used; nothing else
    changes."""
    text = _LINE_END.sub("\r\n", text)
    return text if text.endswith("\r\n") else text + "\r\n"


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


def render(calendar: icalendar.Calendar, sources: Iterable[str]) -> str:
    """``calendar`` as text, each line taken verbatim from ``sources`` (the texts it was derived from,
    most relevant first) where one of them holds a line of the same meaning in the same component."""
    originals: dict[Key, dict[str, list[str]]] = {}
    for source in sources:
        for key, lines in _originals(source).items():
            for canonical, raws in lines.items():
                originals.setdefault(key, {}).setdefault(canonical, []).extend(raws)
    out: list[str] = []
    _emit(calendar, ("VCALENDAR",), "", originals, out)
    return "".join(out)


def _key(comp: Component) -> Key:
    """Which top-level component ``comp`` is, across copies of an event (VCALENDAR itself: its name)."""
    if comp.name == "VCALENDAR":
        return ("VCALENDAR",)
    rid = comp.get("RECURRENCE-ID")
    return (comp.name, str(comp.get("UID", comp.get("TZID", ""))), rid.to_ical().decode() if rid is not None else "")


def _canonical(comp: Component, name: str, value: object) -> icalendar.parser.Contentline:
    """One property as icalendar writes it, unfolded (folding would only cost time: it is a key)."""
    return comp.content_line(name, value, sorted=True)


def _properties(comp: Component) -> list[tuple[str, object]]:
    return [(name, v) for name in comp.keys() for v in (comp[name] if isinstance(comp[name], list) else [comp[name]])]


def _emit(comp: Component, key: Key, inner: str, originals: dict[Key, dict[str, list[str]]],
          out: list[str]) -> None:
    out.append("BEGIN:%s\r\n" % comp.name)
    known = originals.get(key, {})
    for name, value in _properties(comp):
        line = _canonical(comp, name, value)
        raws = known.get(inner + line)
        out.append(raws.pop(0) if raws else line.to_ical().decode() + "\r\n")
    for sub in comp.subcomponents:
        if comp.name == "VCALENDAR":
            _emit(sub, _key(sub), "", originals, out)
        else:
            _emit(sub, key, inner + sub.name + "|", originals, out)
    out.append("END:%s\r\n" % comp.name)


@functools.lru_cache(maxsize=64)  # one PUT renders the organizer's text once per delivered copy; read-only
def _originals(text: str) -> dict[Key, dict[str, list[str]]]:
    """Each component's raw lines (folded as written, CRLF-ended) by their icalendar meaning.

    icalendar parses ``text`` into the same components in the same order, and each property's values in
    the order of their lines; pairing the two gives every raw line its canonical form. A property whose
    line count does not match its parse (icalendar dropped or merged something) keeps no raw lines.
    """
    try:
        parsed = icalendar.Calendar.from_ical(text)
    except ValueError:
        return {}
    raw_components = _raw_components(text)
    if raw_components is None:
        return {}
    found: dict[Key, dict[str, list[str]]] = {}

    def pair(comp: Component, raw: tuple[str, dict[str, list[str]], list], key: Key, inner: str) -> bool:
        name, raw_lines, raw_subs = raw
        if name != comp.name or len(raw_subs) != len(comp.subcomponents):
            return False
        lines = found.setdefault(key, {})
        for prop in comp.keys():
            values = comp[prop] if isinstance(comp[prop], list) else [comp[prop]]
            raws = raw_lines.get(prop.upper(), [])
            if len(raws) == len(values):
                for value, raw_line in zip(values, raws):
                    lines.setdefault(inner + _canonical(comp, prop, value), []).append(raw_line)
        for sub, raw_sub in zip(comp.subcomponents, raw_subs):
            top = comp.name == "VCALENDAR"
            if not pair(sub, raw_sub, _key(sub) if top else key, "" if top else inner + sub.name + "|"):
                return False
        return True

    return found if pair(parsed, raw_components, ("VCALENDAR",), "") else {}


def _raw_components(text: str) -> tuple[str, dict[str, list[str]], list] | None:
    """The one VCALENDAR of ``text`` as (name, raw lines by property name, subcomponents); None if the
    structure is not what a parser would accept."""
    root: tuple[str, dict[str, list[str]], list] = ("", {}, [])
    stack = [root]
    for match in _FOLDED_LINES.finditer(text):
        raw = match.group(0)
        if not raw.strip():
            continue
        unfolded = _FOLD.sub("", raw)
        name = re.split(r"[;:]", unfolded, maxsplit=1)[0].upper()
        value = unfolded.split(":", 1)[-1].strip().upper()
        if name == "BEGIN":
            child: tuple[str, dict[str, list[str]], list] = (value, {}, [])
            stack[-1][2].append(child)
            stack.append(child)
        elif name == "END":
            if len(stack) == 1 or stack[-1][0] != value:
                return None
            stack.pop()
        else:
            stack[-1][1].setdefault(name, []).append(canonical_lines(raw))
    return root[2][0] if len(stack) == 1 and len(root[2]) == 1 else None


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
    for match in _FOLDED_LINES.finditer(text):
        raw = match.group(0)
        if not raw.strip():
            continue
        unfolded = _FOLD.sub("", raw)
        name = re.split(r"[;:]", unfolded, maxsplit=1)[0].upper()
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
        used = dict.fromkeys(t.strip('"') for b in blocks for line in b for t in _TZID.findall(_FOLD.sub("", line)))
        parts = [*header, *(line for t in used for line in zones.get(t, ())), *(l for b in blocks for l in b)]
        texts[uid] = "BEGIN:VCALENDAR\r\n" + "".join(canonical_lines(p) for p in parts) + "END:VCALENDAR\r\n"
    return texts


def _file_block(block: list[str], zones: dict[str, list[str]], objects: dict[str, list[list[str]]]) -> None:
    """One top-level component's raw lines: a VTIMEZONE by its TZID, anything else by its UID."""
    props = {}
    depth = 0
    for raw in block:
        unfolded = _FOLD.sub("", raw)
        name = re.split(r"[;:]", unfolded, maxsplit=1)[0].upper()
        depth += (name == "BEGIN") - (name == "END")
        if depth == 1 and name not in ("BEGIN", "END"):
            props.setdefault(name, unfolded.split(":", 1)[-1].strip())
    if "TZID" in props and _FOLD.sub("", block[0]).upper().startswith("BEGIN:VTIMEZONE"):
        zones[props["TZID"]] = block
    elif "UID" in props:
        objects.setdefault(props["UID"], []).append(block)


def restore(rewritten: str, stored: str) -> str:
    """``rewritten`` (vobject's serialization of something made from ``stored``, e.g. the instances of a
    REPORT's expand) with each line that is vobject's rendering of a line of ``stored`` put back as
    stored; lines vobject made anew (an instance's DTSTART, RECURRENCE-ID) stay."""
    originals = _vobject_forms(stored)
    out = []
    for match in _FOLDED_LINES.finditer(rewritten):
        raw = match.group(0)
        if raw.strip():
            out.append(originals.get(_FOLD.sub("", raw), canonical_lines(raw)))
    return "".join(out)


@functools.lru_cache(maxsize=64)
def _vobject_forms(text: str) -> dict[str, str]:
    """Each raw line of ``text`` (folded, CRLF-ended) by the unfolded line vobject writes for it."""
    raw_tree = _raw_components(text)
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
                        forms.setdefault(_FOLD.sub("", child.serialize()).rstrip("\r\n"), raws[k])
                    except Exception:  # a line vobject cannot write back: it is never in its output either
                        continue

    pair(parsed, raw_tree)
    return forms
