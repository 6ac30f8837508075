# SPDX-License-Identifier: GPL-3.0-or-later
"""How far a REPORT makes Radicale walk recurring series: to the end of its ``C:expand`` window, or of
its ``free-busy-query`` time range. Other REPORTs walk only as far as Radicale's time-range check, which
the collection bounds on its own (see ``storage.walks``)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime

from radicale import xmlutils
from radicale.item import filter as radicale_filter


def walked_until(body: bytes) -> datetime | None:
    """The moment (aware) up to which answering ``body`` walks each series; None when it expands none."""
    if b"expand" not in body and b"free-busy-query" not in body:
        return None
    try:
        root = ET.fromstring(body)
        if root.tag == xmlutils.make_clark("C:free-busy-query"):
            element = root.find(xmlutils.make_clark("C:time-range"))
        else:
            element = root.find(".//" + xmlutils.make_clark("C:expand"))
            if element is not None and element.get("end") is None:
                return None  # Radicale refuses an expand without its window
        if element is None:
            return None  # Radicale answers such a request with an error of its own
        return radicale_filter.parse_time_range(element)[1]  # no end: the end of time
    except (ET.ParseError, ValueError):
        return None
