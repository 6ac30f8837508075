# SPDX-License-Identifier: GPL-3.0-or-later
"""Error answers: plain-text reasons, and RFC 4918/6638 precondition bodies with the reason attached."""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

from radicale import types, xmlutils

from invito.storage.request import SchedulingRefused

logger = logging.getLogger("invito.http")


def refusal(status: int, reason: str) -> types.WSGIResponse:
    return status, {"Content-Type": "text/plain; charset=utf-8"}, reason + "\n", None


def precondition(status: int, name: str, reason: str, encoding: str = "utf-8",
                 href: str | None = None) -> types.WSGIResponse:
    """``<D:error><C:name/><D:responsedescription>reason</...></D:error>``; ``name`` may carry its own
    namespace prefix (``CR:…``), and ``href`` names the resource in the way (RFC 4791 §5.3.2.1)."""
    error = xmlutils.webdav_error(name if ":" in name else "C:%s" % name)
    if href is not None:
        ET.SubElement(error[0], xmlutils.make_clark("D:href")).text = href
    ET.SubElement(error, xmlutils.make_clark("D:responsedescription")).text = reason
    body = xmlutils.pretty_xml(error).encode(encoding)
    return status, {"Content-Type": "text/xml; charset=%s" % encoding}, body, None


def refused(why: SchedulingRefused, path: str, encoding: str = "utf-8") -> types.WSGIResponse:
    """A write the scheduling rules refused, as the client must see it."""
    logger.info("refused write of %s: %s", path, why.reason)
    if why.precondition is None:
        return refusal(why.status, why.reason)
    return precondition(why.status, why.precondition, why.reason, encoding)
