# SPDX-License-Identifier: GPL-3.0-or-later
"""vdirsyncer 0.21, a real sync client, keeps the organizer's calendar in a local folder: an edit synced
and a local delete synced right after reach the guest as an update and a CANCEL. (When the sender
rewrote the event after mailing, vdirsyncer saw a remote change and brought the deleted event back.)"""
from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.conftest import PASSWORD, Server, start, stop
from tests.e2e.mailsink import MailSink
from tests.e2e.test_crash_safety import http
from tests.e2e.test_invitations_by_mail import calendar_part, mail_settings, to
from tests.e2e.test_scheduling import calendar, event

VDIRSYNCER = str(Path(sys.executable).parent / "vdirsyncer")
GUEST = "grace@client.example.net"


@pytest.fixture
def synced(tmp_path: Path, relay: tuple[int, MailSink]) -> Iterator[tuple[Server, MailSink, Path, Path]]:
    """A server with a relay, alice's calendar, and a vdirsyncer config pairing it with a local folder."""
    proc, srv = start(tmp_path, mail_settings(relay[0]))
    try:
        calendar(srv, "alice")
        local = tmp_path / "local"
        local.mkdir()
        config = tmp_path / "vdirsyncer.conf"
        config.write_text(f"""[general]
status_path = "{tmp_path / 'vdirsyncer-status'}/"

[pair alice]
a = "alice_local"
b = "alice_remote"
collections = null

[storage alice_local]
type = "filesystem"
path = "{local}/"
fileext = ".ics"

[storage alice_remote]
type = "caldav"
url = "{srv.url}alice/work/"
username = "alice"
password = "{PASSWORD}"
""")
        vdirsyncer(config, "discover")
        yield srv, relay[1], local, config
    finally:
        stop(proc)


def vdirsyncer(config: Path, command: str) -> None:
    result = subprocess.run([VDIRSYNCER, "-c", str(config), command], capture_output=True, text=True,
                            timeout=60, input="")
    assert result.returncode == 0, result.stdout + result.stderr


def sync(config: Path) -> None:
    vdirsyncer(config, "sync")


def methods_for(sink: MailSink, uid: str) -> list[str]:
    return [calendar_part(m)[0] for m in to(sink.received, GUEST)
            if uid in calendar_part(m)[1].to_ical().decode()]


# Another room, or another time (Invito's note of a move is kept out of the stored object), each with
# SEQUENCE raised as calendar programs do for a change guests must hear of.
EDITS = {
    "room": (("SEQUENCE:0", "SEQUENCE:1\r\nLOCATION:Sala Verde"),),
    "time": (("SEQUENCE:0", "SEQUENCE:1"), ("DTSTART:20301010T090000Z", "DTSTART:20301010T110000Z"),
             ("DTEND:20301010T100000Z", "DTEND:20301010T120000Z")),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_edit_then_delete_reaches_the_guest_as_a_cancel(synced: tuple[Server, MailSink, Path, Path],
                                                         edit: str) -> None:
    srv, sink, local, config = synced
    uid = str(uuid.uuid4())
    guest = f"ATTENDEE;CN=Grace;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{GUEST}"
    (local / f"{uid}.ics").write_text(event(uid, attendees=(), extra=guest + "\r\nSEQUENCE:0"), newline="")
    (local / "lunch.ics").write_text(event("lunch", summary="Lunch", attendees=()), newline="")  # not alone
    sync(config)
    sink.wait_for(1)
    sync(config)  # the next periodic sync brings the server's copy (with SCHEDULE-STATUS) home
    stored = local / f"{uid}.ics"
    assert "SCHEDULE-STATUS=1.1" in stored.read_text()

    text = stored.read_text()
    for before, after in EDITS[edit]:
        assert before in text
        text = text.replace(before, after)
    stored.write_text(text, newline="")
    sync(config)
    sink.wait_for(2)  # the update went out: the sender is done with this event
    assert methods_for(sink, uid) == ["REQUEST", "REQUEST"]

    stored.unlink()  # right after the synced edit
    sync(config)
    sink.wait_for(3)
    assert methods_for(sink, uid) == ["REQUEST", "REQUEST", "CANCEL"]
    assert http(srv, "GET", f"alice/work/{uid}.ics")[0] == 404
    sync(config)  # nothing comes back
    assert [p.name for p in local.glob("*.ics")] == ["lunch.ics"]
