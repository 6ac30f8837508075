# SPDX-License-Identifier: GPL-3.0-or-later
"""Calendar user addresses: every spelling of one person compares equal, other URIs keep their case."""
from __future__ import annotations

import pytest

from invito.plugins.itip import normalize

CASES = {
    "upper-case scheme and address": ("MAILTO:Bob@X.com", "mailto:bob@x.com"),
    "already canonical": ("mailto:bob@x.com", "mailto:bob@x.com"),
    "bare e-mail address": ("bob@x.com", "mailto:bob@x.com"),
    "angle brackets and blanks": (" <bob@x.com>", "mailto:bob@x.com"),
    "display name with angle brackets": ("Bob Smith <Bob@X.com>", "mailto:bob@x.com"),
    "blank after the scheme": ("mailto: Bob@X.com \r\n", "mailto:bob@x.com"),
    "mixed-case scheme": ("MailTo:bob@x.com", "mailto:bob@x.com"),
    "urn keeps its case": ("URN:uuid:0A1B-C2", "urn:uuid:0A1B-C2"),
    "http keeps its path case": (" HTTP://Example.com/Principals/Bob ", "http://Example.com/Principals/Bob"),
    "empty": ("  ", ""),
}


@pytest.mark.parametrize("value,expected", CASES.values(), ids=CASES.keys())
def test_normalize(value: str, expected: str) -> None:
    assert normalize(value) == expected


def test_normalize_is_idempotent() -> None:
    for value, _ in CASES.values():
        assert normalize(normalize(value)) == normalize(value)
