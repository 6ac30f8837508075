# SPDX-License-Identifier: GPL-3.0-or-later
"""A calendar written with the lines of the texts it was made from.

icalendar, which scheduling works with, keeps X- properties but merges list values (``RESOURCES:A,B``
becomes one resource ``A\\,B``) and escapes structured ones (``REQUEST-STATUS:2.0;Success``). So a calendar
scheduling changed is written by :func:`render`: every line whose meaning scheduling left alone is the
source's own line, byte for byte; only lines scheduling changed or added are icalendar's. Both the copies
Invito stores and the iMIP mail to guests are written this way. Pure: text in, text out.
"""
from __future__ import annotations

import collections
import re
import threading
from typing import Iterable, Iterator

import icalendar

LINE_END = re.compile(r"\r\n|\r|\n")
_FOLDED_LINES = re.compile(r"[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*")
FOLD = re.compile(r"\r?\n[ \t]")

Component = icalendar.cal.component.Component
Key = tuple[str, ...]  # a top-level component: kind, UID or TZID, RECURRENCE-ID
Originals = dict[Key, dict[str, list[str]]]  # raw lines of each component, by their meaning


def canonical_lines(text: str) -> str:
    """``text`` with every line ending CRLF (RFC 5545 §3.1), whatever the client used; nothing else
    changes."""
    text = LINE_END.sub("\r\n", text)
    return text if text.endswith("\r\n") else text + "\r\n"


def render(calendar: icalendar.Calendar, sources: Iterable[str]) -> str:
    """``calendar`` as text, each line taken verbatim from ``sources`` (the texts it was derived from,
    most relevant first) where one of them holds a line of the same meaning in the same component."""
    originals: Originals = {}
    for source in sources:
        for key, lines in _originals(source).items():
            for canonical, raws in lines.items():
                originals.setdefault(key, {}).setdefault(canonical, []).extend(raws)
    out: list[str] = []
    written: Originals = {}
    _emit(calendar, ("VCALENDAR",), "", originals, out, written)
    text = "".join(out)
    _known.remember(text, written)  # the next change to this copy (the next guest's answer) starts from it
    return text


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


def _emit(comp: Component, key: Key, inner: str, originals: Originals, out: list[str], written: Originals) -> None:
    """Write ``comp``; ``written`` gets each line by its meaning, as ``_originals`` would find it."""
    out.append("BEGIN:%s\r\n" % comp.name)
    known = originals.get(key, {})
    lines = written.setdefault(key, {})
    for name, value in _properties(comp):
        line = _canonical(comp, name, value)
        raws = known.get(inner + line)
        out.append(raws.pop(0) if raws else line.to_ical().decode() + "\r\n")
        lines.setdefault(inner + line, []).append(out[-1])
    for sub in comp.subcomponents:
        if comp.name == "VCALENDAR":
            _emit(sub, _key(sub), "", originals, out, written)
        else:
            _emit(sub, key, inner + sub.name + "|", originals, out, written)
    out.append("END:%s\r\n" % comp.name)


class _Known:
    """The raw lines by meaning of recently seen texts (read-only once kept): one PUT renders the
    organizer's text once per delivered copy, and a text ``render`` wrote is the source of the next change
    to that copy (1,000 guests answering one event), which so never parses it again."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._texts: collections.OrderedDict[str, Originals] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str) -> Originals | None:
        with self._lock:
            found = self._texts.get(text)
            if found is not None:
                self._texts.move_to_end(text)
            return found

    def remember(self, text: str, originals: Originals) -> None:
        with self._lock:
            self._texts[text] = originals
            self._texts.move_to_end(text)
            while len(self._texts) > self._size:
                self._texts.popitem(last=False)


_known = _Known(64)


def _originals(text: str) -> Originals:
    """Each component's raw lines (folded as written, CRLF-ended) by their icalendar meaning (kept)."""
    found = _known.get(text)
    if found is None:
        found = _parsed_originals(text)
        _known.remember(text, found)
    return found


def _parsed_originals(text: str) -> Originals:
    """Each component's raw lines (folded as written, CRLF-ended) by their icalendar meaning.

    icalendar parses ``text`` into the same components in the same order, and each property's values in
    the order of their lines; pairing the two gives every raw line its canonical form. A property whose
    line count does not match its parse (icalendar dropped or merged something) keeps no raw lines.
    """
    try:
        parsed = icalendar.Calendar.from_ical(text)
    except ValueError:
        return {}
    raw_tree = raw_components(text)
    if raw_tree is None:
        return {}
    found: Originals = {}

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

    return found if pair(parsed, raw_tree, ("VCALENDAR",), "") else {}


def content_lines(text: str) -> Iterator[tuple[str, str, str]]:
    """Each content line of ``text`` as (raw: folded as written, unfolded, property name in capitals)."""
    for match in _FOLDED_LINES.finditer(text):
        raw = match.group(0)
        if raw.strip():
            unfolded = FOLD.sub("", raw)
            yield raw, unfolded, re.split(r"[;:]", unfolded, maxsplit=1)[0].upper()


def raw_components(text: str) -> tuple[str, dict[str, list[str]], list] | None:
    """The one VCALENDAR of ``text`` as (name, raw lines by property name, subcomponents); None if the
    structure is not what a parser would accept."""
    root: tuple[str, dict[str, list[str]], list] = ("", {}, [])
    stack = [root]
    for raw, unfolded, name in content_lines(text):
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
