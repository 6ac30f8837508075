# SPDX-License-Identifier: GPL-3.0-or-later
"""An answer on the RSVP page that cannot be recorded is kept for the admin as the answer it is: `invito
queue list` and `show` show who gave it for which event and why it was refused, `retry` gives it again once
what refused it is fixed. A real server on 127.0.0.1, the page over HTTP, `invito` in its own process."""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import INVITO, Server, free_port, quarantined_entries, queues, start, stop
from tests.e2e.mailsink import MailSink
from tests.e2e.test_queue_admin import section
from tests.e2e.test_replies_by_mail import wait_listening, wait_partstat
from tests.e2e.test_rsvp_page import GRACE, answer_links, invite, partstat, post_answer, rsvp_settings

GRACE_LOGIN = GRACE.removeprefix("mailto:")


def invito(srv: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INVITO, *args, "--config", str(srv.config)], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "TZ": "UTC"})


def quarantine(srv: Server) -> list[str]:
    """The ids of what ``srv``'s quarantine holds."""
    return [entry.id for entry in quarantined_entries(srv)]


def kept_answer(srv: Server) -> str:
    """The id of the one quarantined entry, an answer kept as what it is: no made-up mail beside it."""
    [entry] = quarantined_entries(srv)
    assert entry.answer is not None
    with queues(srv) as spools, pytest.raises(FileNotFoundError):
        spools.inbound.quarantined_mail(entry.id)
    return entry.id


def test_a_refused_page_answer_is_kept_shown_and_given_again(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    port, listen = free_port(), free_port()
    settings = rsvp_settings(relay[0], port)
    settings["imip"]["listen"] = f"127.0.0.1:{listen}"  # the processor that gives a released answer again
    proc, srv = start(tmp_path, settings, port=port)
    try:
        wait_listening(listen)
        uid, mails = invite(srv, relay[1])
        # Meanwhile Grace got an account here: a user's answers never come from outside.
        (tmp_path / "grace-password").write_text("another-pw-456\n")
        assert invito(srv, "user", "add", GRACE_LOGIN, "--password-file", str(tmp_path / "grace-password")
                      ).returncode == 0
        response = post_answer(srv, answer_links(mails[GRACE])["decline"], "DECLINED", comment="Sorry I am away")
        assert response.status_code == 409
        assert partstat(srv, uid, GRACE) == "NEEDS-ACTION"

        entry_id = kept_answer(srv)  # the answer and why: no made-up mail
        refusal = f"{GRACE} is a user here: their answers never come by mail"
        listed = invito(srv, "queue", "list")
        assert listed.returncode == 0, listed.stderr
        [header, row] = section(listed.stdout, "Inbound (quarantine)")
        assert header == ["ID", "FROM", "TO", "RECEIVED", "REASON"]
        assert (row[:3], row[4]) == ([entry_id, GRACE_LOGIN, "RSVP page"], refusal)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row[3])

        shown = invito(srv, "queue", "show", entry_id[:12])
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0] == (f"Inbound answer {entry_id} (inbound, quarantined): given on the RSVP page by "
                            f"{GRACE_LOGIN} for uid={uid}, received {row[3]}")
        assert re.fullmatch(r"  link tok-[0-9a-f]{10}, browser 127\.0\.0\.1", lines[1])
        assert lines[2:4] == [f"  reason: {refusal}", ""]
        calendar = shown.stdout.replace("\r", "").replace("\n ", "")  # unfolded
        assert "METHOD:REPLY" in calendar and f"UID:{uid}" in calendar and "COMMENT:Sorry I am away" in calendar
        assert re.search(r"ATTENDEE;[^\n]*PARTSTAT=DECLINED[^\n]*:" + re.escape(GRACE), calendar)
        token = re.search(r"/rsvp/([a-z2-7]{32})", answer_links(mails[GRACE])["decline"]).group(1)
        assert token not in shown.stdout and token not in listed.stdout  # the link is the guest's key

        # The admin removes the account given by mistake and gives the answer again.
        assert invito(srv, "user", "remove", GRACE_LOGIN).returncode == 0
        retried = invito(srv, "queue", "retry", entry_id)
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout == f"{entry_id}: back in the inbound queue, to be processed again\n"
        wait_partstat(srv, uid, GRACE, "DECLINED")
        assert quarantine(srv) == []
        deadline = time.monotonic() + 10
        applied = f"inbound {entry_id} uid={uid} attendee={GRACE}: REPLY from {GRACE}: applied\n"
        while applied not in srv.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert applied in srv.log.read_text()
    finally:
        stop(proc)


def test_a_kept_answer_is_dropped_with_what_it_was(tmp_path: Path, relay: tuple[int, MailSink]) -> None:
    port = free_port()
    proc, srv = start(tmp_path, rsvp_settings(relay[0], port), port=port)
    try:
        uid, mails = invite(srv, relay[1])
        (tmp_path / "grace-password").write_text("another-pw-456\n")
        assert invito(srv, "user", "add", GRACE_LOGIN, "--password-file", str(tmp_path / "grace-password")
                      ).returncode == 0
        assert post_answer(srv, answer_links(mails[GRACE])["accept"], "ACCEPTED").status_code == 409
        entry_id = kept_answer(srv)
        dropped = invito(srv, "queue", "drop", entry_id)
        assert dropped.returncode == 0, dropped.stderr
        assert re.fullmatch(rf"dropped {entry_id}: answer given on the RSVP page by {re.escape(GRACE_LOGIN)}, "
                            r"received \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\n", dropped.stdout)
        assert quarantine(srv) == []
        assert partstat(srv, uid, GRACE) == "NEEDS-ACTION"
    finally:
        stop(proc)
