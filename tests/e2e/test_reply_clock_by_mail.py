# SPDX-License-Identifier: GPL-3.0-or-later
"""A guest whose mail program stamps its REPLY in 2099 can still change their mind by a later answer:
real `invito serve`, the invitation it mailed, replies over SMTP to its listener on 127.0.0.1."""
from __future__ import annotations

from tests.e2e.conftest import Server
from tests.e2e.mailsink import MailSink
from tests.e2e.test_replies_by_mail import GRACE, answer, invite, replying, send, wait_partstat  # noqa: F401


def test_a_later_answer_wins_over_a_reply_from_the_future(replying: tuple[Server, MailSink, int]) -> None:
    srv, sink, port = replying
    uid, invitations = invite(srv, sink)
    to_address, raw = answer(invitations[GRACE], GRACE, "ACCEPTED", stamp="20991231T000000Z")
    send(port, to_address, raw)
    wait_partstat(srv, uid, GRACE, "ACCEPTED")
    to_address, raw = answer(invitations[GRACE], GRACE, "DECLINED")  # stamped now, by a right clock
    send(port, to_address, raw)
    wait_partstat(srv, uid, GRACE, "DECLINED")
