# SPDX-License-Identifier: GPL-3.0-or-later
"""REPORT answers with ``C:expand`` keep the stored lines.

Radicale writes each expanded instance with vobject, which cuts unknown and X- values at their first
comma; every other answer serves the stored text as it is. We post-process the multistatus of an expand
REPORT: in each calendar-data, lines that are vobject's rendering of a stored line become that line again.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING
from urllib.parse import unquote

from radicale import item as radicale_item, pathutils, xmlutils

from invito.storage import verbatim

if TYPE_CHECKING:
    from invito.storage import Storage

CALENDAR_DATA = xmlutils.make_clark("C:calendar-data")


def asks_expand(body: bytes) -> bool:
    """Whether a REPORT body asks for expanded instances (cheap: parsed only when it may)."""
    if b"expand" not in body:
        return False
    try:
        return ET.fromstring(body).find(".//" + xmlutils.make_clark("C:expand")) is not None
    except ET.ParseError:
        return False


def restore(multistatus: ET.Element, base_prefix: str, storage: "Storage") -> None:
    """Put stored lines back into each expanded calendar-data of ``multistatus``. Read lock held."""
    for response in multistatus.iter(xmlutils.make_clark("D:response")):
        data = response.find(".//" + CALENDAR_DATA)
        href = response.findtext(xmlutils.make_clark("D:href"))
        if data is None or not data.text or not href:
            continue
        path = unquote(href)
        if base_prefix and path.startswith(base_prefix):
            path = path[len(base_prefix):]
        item = next(iter(storage.discover(pathutils.sanitize_path(path))), None)
        if isinstance(item, radicale_item.Item):
            data.text = verbatim.restore(data.text, item.serialize())
