# SPDX-License-Identifier: GPL-3.0-or-later
"""External guests: who may invite them, and which invitations become mail (the outbound queue as
`invito queue` sees it)."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.conftest import Server, outbound_entries, start, stop
from tests.e2e.test_scheduling import attendee, calendar, copy_of, event

GUEST = "mailto:guest@partner.example.org"


@pytest.fixture
def restricted(tmp_path: Path) -> Iterator[Server]:
    proc, srv = start(tmp_path, {"scheduling": {"external_invites": "bob"}})
    try:
        yield srv
    finally:
        stop(proc)


def queued(srv: Server) -> list[list[str]]:
    """The recipients of each message waiting in ``srv``'s outbound queue."""
    recipients: dict[str, list[str]] = {}
    for entry in outbound_entries(srv):
        recipients.setdefault(entry.id, []).append(entry.recipient)
    return list(recipients.values())


def test_only_allowed_organizers_invite_externals(restricted: Server) -> None:
    uid = str(uuid.uuid4())
    calendar(restricted, "alice").save_event(event(uid, extra=f"ATTENDEE:{GUEST}"))  # the PUT succeeds
    copy = copy_of(restricted, "alice", uid)
    assert attendee(copy, GUEST).params["SCHEDULE-STATUS"] == "3.8"
    assert attendee(copy, "mailto:bob@example.com").params["SCHEDULE-STATUS"] == "1.2"  # internal still works
    assert queued(restricted) == []

    calendar(restricted, "bob").save_event(event(str(uuid.uuid4()), organizer="bob", attendees=("carol",),
                                                 extra=f"ATTENDEE:{GUEST}"))
    assert queued(restricted) == [["mailto:guest@partner.example.org"]]


def test_rooms_and_past_events_get_no_mail(server: Server) -> None:
    cal = calendar(server, "alice")
    cal.save_event(event(str(uuid.uuid4()), extra="ATTENDEE;CUTYPE=ROOM:mailto:room-3@rooms.example.org"))
    cal.save_event(event(str(uuid.uuid4()), start="20200101T090000Z", end="20200101T100000Z",
                         extra=f"ATTENDEE:{GUEST}"))
    assert queued(server) == []
