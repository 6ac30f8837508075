# SPDX-License-Identifier: GPL-3.0-or-later
"""Comparing two iCalendar texts as a client would: same properties, parameters and values.

Independent of every iCalendar library the server uses (that is what is under test): the text is unfolded
and split into content lines (RFC 5545 §3.1) by hand, each line becomes (name, parameters, value) with
RFC 6868 escapes in parameter values decoded and parameter quoting dropped, and each component becomes a
multiset of its lines plus its subcomponents, so order and folding do not matter and everything else does.
``Allowed`` names what scheduling may change; ``differences`` lists everything else that changed.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

Params = tuple[tuple[str, tuple[str, ...]], ...]
Line = tuple[str, Params, str]

_FOLD = re.compile(r"\r?\n[ \t]")
_CARET = re.compile(r"\^(.)")
_CARET_MEANS = {"n": "\n", "'": '"', "^": "^"}


@dataclass
class Component:
    name: str
    lines: Counter = field(default_factory=Counter)
    children: list["Component"] = field(default_factory=list)

    def key(self) -> tuple[str, str, str]:
        """What identifies a subcomponent among its siblings: its kind, UID or TZID, RECURRENCE-ID."""
        ident = {name: value for name, _, value in self.lines if name in ("UID", "TZID", "RECURRENCE-ID")}
        return (self.name, ident.get("UID") or ident.get("TZID", ""), ident.get("RECURRENCE-ID", ""))


@dataclass(frozen=True)
class Allowed:
    """What scheduling may change in a copy; everything else must be as the client sent it."""
    # Names ending in "-" are prefixes (X-INVITO-: all of our bookkeeping).
    properties: frozenset[str] = frozenset()  # e.g. SEQUENCE, DTSTAMP, METHOD
    params: frozenset[str] = frozenset()  # e.g. SCHEDULE-STATUS
    answers_of: frozenset[str] = frozenset()  # addresses whose PARTSTAT/RSVP may change
    components: frozenset[str] = frozenset()  # subcomponents a copy need not carry (the organizer's VALARMs)
    only: frozenset[str] = frozenset()  # compare only these top-level subcomponents (deliveries: VEVENT)

    def __or__(self, other: "Allowed") -> "Allowed":
        return Allowed(self.properties | other.properties, self.params | other.params,
                       self.answers_of | other.answers_of, self.components | other.components,
                       self.only | other.only)

    def ignores_param(self, name: str) -> bool:
        return _named(name, self.params)

    def ignores_property(self, name: str) -> bool:
        return _named(name, self.properties)


def _named(name: str, names: frozenset[str]) -> bool:
    return any(name == n or (n.endswith("-") and name.startswith(n)) for n in names)


def content_line(line: str) -> Line:
    """One unfolded content line as (NAME, sorted parameters, raw value)."""
    i = 0
    while i < len(line) and line[i] not in ";:":
        i += 1
    name = line[:i].upper()
    params: list[tuple[str, tuple[str, ...]]] = []
    while i < len(line) and line[i] == ";":
        j = line.index("=", i)
        pname = line[i + 1:j].upper()
        i = j + 1
        values = []
        while True:
            if line[i:i + 1] == '"':
                end = line.index('"', i + 1)
                values.append(line[i + 1:end])
                i = end + 1
            else:
                end = i
                while end < len(line) and line[end] not in ',;:':
                    end += 1
                values.append(line[i:end])
                i = end
            if line[i:i + 1] != ",":
                break
            i += 1
        params.append((pname, tuple(sorted(_CARET.sub(lambda m: _CARET_MEANS.get(m[1], m[0]), v)
                                           for v in values))))
    if line[i:i + 1] != ":":
        raise ValueError("not a content line: %r" % line)
    return name, tuple(sorted(params)), line[i + 1:]


def parse(text: str) -> Component:
    """The VCALENDAR in ``text`` as nested components."""
    root = Component("")
    stack = [root]
    for raw in _FOLD.sub("", text).splitlines():
        if not raw.strip():
            continue
        name, params, value = content_line(raw)
        if name == "BEGIN":
            child = Component(value.upper())
            stack[-1].children.append(child)
            stack.append(child)
        elif name == "END":
            if stack[-1].name != value.upper() or len(stack) == 1:
                raise ValueError("END:%s does not close %s" % (value, stack[-1].name))
            stack.pop()
        else:
            stack[-1].lines[(name, params, value)] += 1
    if len(stack) != 1 or [c.name for c in root.children] != ["VCALENDAR"]:
        raise ValueError("not one complete VCALENDAR")
    return root.children[0]


def _address(value: str) -> str:
    return value.lower().removeprefix("mailto:")


def _normalized(comp: Component, allowed: Allowed) -> Component:
    lines: Counter = Counter()
    for (name, params, value), count in comp.lines.items():
        if allowed.ignores_property(name):
            continue
        drop = {"PARTSTAT", "RSVP"} if name == "ATTENDEE" and _address(value) in allowed.answers_of else set()
        kept = tuple((p, v) for p, v in params if not allowed.ignores_param(p) and p not in drop)
        lines[(name, kept, value)] += count
    children = [_normalized(c, allowed) for c in comp.children if c.name not in allowed.components]
    return Component(comp.name, lines, children)


def _describe(line: Line) -> str:
    name, params, value = line
    return name + "".join(";%s=%s" % (p, ",".join(v)) for p, v in params) + ":" + value


def _diff(sent: Component, got: Component, where: str, out: list[str]) -> None:
    for line in (sent.lines - got.lines).elements():
        out.append("%s: lost or changed   %s" % (where, _describe(line)))
    for line in (got.lines - sent.lines).elements():
        out.append("%s: added or changed  %s" % (where, _describe(line)))
    theirs: dict[tuple[str, str, str], list[Component]] = {}
    for child in got.children:
        theirs.setdefault(child.key(), []).append(child)
    for child in sent.children:
        matches = theirs.get(child.key())
        if not matches:
            out.append("%s: lost component %s %s" % (where, child.name, child.key()[1:]))
            continue
        # Among same-key siblings (alarms have no UID), pair with the closest one.
        best = min(matches, key=lambda m: _count(child, m))
        matches.remove(best)
        _diff(child, best, "%s/%s" % (where, child.name), out)
    for rest in theirs.values():
        for child in rest:
            out.append("%s: added component %s %s" % (where, child.name, child.key()[1:]))


def _count(a: Component, b: Component) -> int:
    found: list[str] = []
    _diff(a, b, "", found)
    return len(found)


def differences(sent: str, got: str, allowed: Allowed = Allowed()) -> list[str]:
    """What differs between the text a client sent and a copy of it, beyond what ``allowed`` permits;
    empty when every property, parameter and value survived."""
    a, b = _normalized(parse(sent), allowed), _normalized(parse(got), allowed)
    if allowed.only:
        a = Component(a.name, Counter(), [c for c in a.children if c.name in allowed.only])
        b = Component(b.name, Counter(), [c for c in b.children if c.name in allowed.only])
    out: list[str] = []
    _diff(a, b, a.name, out)
    return out
