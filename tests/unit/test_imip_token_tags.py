# SPDX-License-Identifier: GPL-3.0-or-later
"""A reply token is also the guest's RSVP key: logs name it by a short tag that cannot be turned back."""
from __future__ import annotations

import logging
import smtplib
from pathlib import Path

import pytest

from invito.plugins.imip.inbound_spool import InboundSpool
from invito.plugins.imip.listener import Listener, ListenerSettings
from invito.plugins.imip.tokens import ReplyTokens, redact, tag


def test_a_token_in_an_address_is_replaced_by_its_tag(tmp_path: Path) -> None:
    token = ReplyTokens(str(tmp_path)).issue("mailto:alice@example.com", "uid-1", "mailto:g@partner.org").token
    shown = redact(f"invito+{token}@cal.example.com")
    assert shown == f"invito+{tag(token)}@cal.example.com" and token not in shown
    assert tag(token) == tag(token.upper()) and len(tag(token)) == len("tok-") + 10  # stable, short
    assert redact("alice@example.com, 20261203T120000Z") == "alice@example.com, 20261203T120000Z"


def test_the_listener_logs_the_tag_never_the_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token = ReplyTokens(str(tmp_path / "tokens")).issue("mailto:alice@example.com", "u", "mailto:g@p.org").token
    address = f"invito+{token}@cal.example.com"
    listener = Listener(ListenerSettings(port=0), InboundSpool(str(tmp_path / "inbound")), lambda a: a == address)
    listener.start()
    caplog.set_level(logging.INFO, logger="invito.imip")
    try:
        with smtplib.SMTP("127.0.0.1", listener.port, timeout=5) as smtp:
            smtp.sendmail("g@p.org", [address], b"Subject: yes\r\n\r\nyes\r\n")
            smtp.ehlo()
            smtp.mail("g@p.org")
            assert smtp.rcpt(f"invito+{token[::-1]}@cal.example.com")[0] == 550  # a near miss, refused
    finally:
        listener.stop()
    assert f"invito+{tag(token)}@cal.example.com" in caplog.text and "accepted" in caplog.text
    assert token not in caplog.text and token[::-1] not in caplog.text
