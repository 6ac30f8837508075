# SPDX-License-Identifier: GPL-3.0-or-later
"""Error answers: plain-text reasons, and RFC 4918/6638 precondition bodies with the reason attached."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from radicale import types, xmlutils


def refusal(status: int, reason: str) -> types.WSGIResponse:
    return status, {"Content-Type": "text/plain; charset=utf-8"}, reason + "\n", None


def precondition(status: int, name: str, reason: str, encoding: str = "utf-8") -> types.WSGIResponse:
    """``<D:error><C:name/><D:responsedescription>reason</...></D:error>``."""
    error = xmlutils.webdav_error("C:%s" % name)
    ET.SubElement(error, xmlutils.make_clark("D:responsedescription")).text = reason
    body = xmlutils.pretty_xml(error).encode(encoding)
    return status, {"Content-Type": "text/xml; charset=%s" % encoding}, body, None
