# SPDX-License-Identifier: GPL-3.0-or-later
"""vobject 0.9.9 can read but not write a base64 property other than ATTACH; Radicale refuses the PUT.

Radicale serializes every PUT's parse with vobject (for its size check and ETag) before storage sees it.
vobject decodes an ``ENCODING=BASE64`` value of a text-like property (RFC 7986 ``IMAGE;VALUE=BINARY``,
``X-`` properties) to bytes, then fails encoding it again (``bytes`` has no ``encode``), so such an event
is answered 400 although it is valid. We store the client's own text anyway (see ``verbatim``); this only
lets vobject finish. Applied once, on import of the storage module.
"""
from __future__ import annotations

import base64

from vobject.icalendar import TextBehavior

_encode = TextBehavior.encode.__func__  # type: ignore[attr-defined]


def _encode_bytes_too(cls: type[TextBehavior], line) -> None:
    encoding = getattr(line, "encoding_param", None)
    if not line.encoded and isinstance(line.value, bytes) and str(encoding).upper() == cls.base64string:
        line.value = base64.b64encode(line.value).decode("ascii")
        line.encoded = True
        return
    _encode(cls, line)


TextBehavior.encode = classmethod(_encode_bytes_too)  # type: ignore[method-assign]
