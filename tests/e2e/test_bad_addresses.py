# SPDX-License-Identifier: GPL-3.0-or-later
"""ATTENDEEs mail cannot reach get SCHEDULE-STATUS 3.7 ("Invalid calendar user", RFC 5546) in the PUT itself,
and nothing is queued for them; the valid guests of the same event are invited as usual."""
from __future__ import annotations

import subprocess
import uuid
from typing import Iterator

import pytest

from tests.e2e.conftest import INVITO, Server, free_port, queues, start, stop
from tests.e2e.mailsink import MailSink, start_sink
from tests.e2e.test_invitations_by_mail import mail_settings
from tests.e2e.test_scheduling import attendee, calendar, copy_of, event

GUEST = "mailto:gino@partner.example.org"
BAD = ("mailto:not an address", "mailto:nobody", "foo:bar")


@pytest.fixture(scope="module")
def mailing(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[tuple[Server, MailSink]]:
    port = free_port()
    controller, sink = start_sink(port)
    proc, srv = start(tmp_path_factory.mktemp("bad-addresses"), mail_settings(port))
    try:
        yield srv, sink
    finally:
        stop(proc)
        controller.stop()


def _spooled(srv: Server) -> list[str]:
    """Every recipient of every message in the outbound queue, waiting or failed."""
    with queues(srv) as spools:
        return [*(entry.recipient for entry in spools.outbound.queued()),
                *(r for failed in spools.outbound.failed_messages() for r in failed.message.recipients or ())]


def test_unusable_addresses_get_3_7_at_once_and_no_mail(mailing: tuple[Server, MailSink]) -> None:
    srv, sink = mailing
    uid = str(uuid.uuid4())
    lines = "\r\n".join(f"ATTENDEE;CN=Someone;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:{a}" for a in (*BAD, GUEST))
    cal = calendar(srv, "alice")
    cal.save_event(event(uid, attendees=("bob",), extra=lines))

    stored = copy_of(srv, "alice", uid)  # right after the PUT
    for address in BAD:
        assert attendee(stored, address).params["SCHEDULE-STATUS"] == "3.7", address
    assert attendee(stored, "mailto:bob@example.com").params["SCHEDULE-STATUS"] == "1.2"
    assert attendee(stored, GUEST).params["SCHEDULE-STATUS"].startswith("1.")
    assert set(_spooled(srv)) <= {GUEST}

    received = sink.wait_for(1)  # the valid guest's invitation goes out
    assert [r.recipients for r in received] == [["gino@partner.example.org"]]

    obj = cal.event_by_uid(uid)  # an update: still nobody else is mailed, the statuses stay
    obj.data = obj.data.replace("SUMMARY:Planning", "SUMMARY:Planning, moved")
    obj.save()
    received = sink.wait_for(2)
    assert [r.recipients for r in received] == [["gino@partner.example.org"]] * 2
    stored = copy_of(srv, "alice", uid)
    assert [attendee(stored, a).params["SCHEDULE-STATUS"] for a in BAD] == ["3.7"] * 3
    listing = subprocess.run([*INVITO, "queue", "list", "--config", str(srv.config)],
                             capture_output=True, text=True, check=True).stdout
    assert not any(word in listing for word in ("nobody", "not an address", "foo:bar"))
    assert set(_spooled(srv)) <= {GUEST}
