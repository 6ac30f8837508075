# SPDX-License-Identifier: GPL-3.0-or-later
"""Which recurring series Radicale may walk, and how far a request asks it to.

Radicale answers an expand REPORT (``C:expand``), a ``free-busy-query`` REPORT and a time-range prefilter
by walking each series from its DTSTART one occurrence at a time, with no bound on the steps before the
queried window: a ``FREQ=SECONDLY`` rule begun in 2020 takes hours to reach 2026, and the interpreter is
pinned for everyone meanwhile. Invito's own walks are bounded (``plugins.itip.recurrence``); Radicale's are
judged here first by :func:`~invito.plugins.itip.recurrence.walk_cost`. A REPORT that makes Radicale walk
series up to a moment says so with :func:`walking_until`; the collection then leaves out the series too
costly to walk that far (see ``Collection.get_filtered``).
"""
from __future__ import annotations

import contextlib
import contextvars
from datetime import datetime
from typing import Iterator

import icalendar
import radicale.item as radicale_item

from invito.plugins.itip.components import scheduled
from invito.plugins.itip.recurrence import MAX_STEPS, walk_cost

_UNTIL: contextvars.ContextVar[datetime | None] = contextvars.ContextVar("walking_until", default=None)


@contextlib.contextmanager
def walking_until(end: datetime | None) -> Iterator[None]:
    """Within the block (one REPORT), Radicale walks every series it is given up to ``end`` (aware);
    None: it walks none beyond what its prefilter needs."""
    token = _UNTIL.set(end)
    try:
        yield
    finally:
        _UNTIL.reset(token)


def walked_until() -> datetime | None:
    """How far the current request makes Radicale walk series, if it expands them or reads free-busy."""
    return _UNTIL.get()


def costly(item: radicale_item.Item, until: datetime) -> bool:
    """Whether walking ``item``'s recurrence rules from DTSTART up to ``until`` (aware) exceeds the budget."""
    if "RRULE" not in item.serialize():
        return False
    try:
        cal = icalendar.Calendar.from_ical(item.serialize())
    except ValueError:  # Radicale read it; let its own code judge
        return False
    return any(walk_cost(comp, until) > MAX_STEPS for comp in scheduled(cal) if "RRULE" in comp)
