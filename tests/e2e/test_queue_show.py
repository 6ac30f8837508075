# SPDX-License-Identifier: GPL-3.0-or-later
"""`invito queue show` as a new admin runs it: no relay configured, an invitation to a guest outside waits,
and the admin looks at what the guest will receive."""
from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from invito.plugins.imip.spool import OutboundSpool
from tests.e2e.conftest import INVITO, Server, start, stop, write_config
from tests.e2e.test_queue_admin import QUEUE, entry, inbound, invite, outbound, quarantined, queue, scheduling_write, \
    section
from tests.e2e.test_scheduling import calendar, event

GUEST = "guest@partner.example.org"
OTHER = "other@partner.example.org"
AGENDA = b"%PDF-1.4 the agenda of the quarterly review\n" * 40
# Binary ATTACH lines are long: folded at 75 octets as clients write them.
_ATTACH = "ATTACH;FMTTYPE=application/pdf;ENCODING=BASE64;VALUE=BINARY;X-FILENAME=agenda.pdf:" + \
    base64.b64encode(AGENDA).decode("ascii")
ATTACH = "\r\n ".join(_ATTACH[i:i + 74] for i in range(0, len(_ATTACH), 74))


@pytest.fixture(scope="module")
def waiting(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[tuple[Server, str]]:
    """A server without [smtp] host; alice invited bob (inside) and two guests outside, whose invitation
    waits. Yields the server and the waiting message's id, as `invito queue list` shows it."""
    proc, srv = start(tmp_path_factory.mktemp("show"))
    try:
        calendar(srv, "alice").save_event(event("review-7", summary="Quarterly review", attendees=("bob",),
                                                extra="\r\n".join([
                                                    f"ATTENDEE;CN=Gina Guest;PARTSTAT=NEEDS-ACTION:mailto:{GUEST}",
                                                    f"ATTENDEE;CN=Otto Other;PARTSTAT=NEEDS-ACTION:mailto:{OTHER}",
                                                    "LOCATION:Room 4", ATTACH])))
        listed = queue(srv.config, "list")
        assert listed.returncode == 0, listed.stderr
        [_, *rows] = section(listed.stdout, "Outbound (waiting)")
        assert [row[1:4] for row in rows] == [[GUEST, "REQUEST", "review-7"], [OTHER, "REQUEST", "review-7"]]
        yield srv, rows[0][0]
    finally:
        stop(proc)


def parts(output: str) -> dict[str, list[str]]:
    """The printed message cut at its ``--- name ---`` lines: "head" (title and headers), then each part."""
    found: dict[str, list[str]] = {"head": []}
    current = found["head"]
    for line in output.splitlines():
        if line.startswith("--- ") and line.endswith(" ---"):
            current = found.setdefault(line[4:-4], [])
        else:
            current.append(line)
    return found


def test_show_prints_the_waiting_invitation_as_the_guest_gets_it(waiting: tuple[Server, str]) -> None:
    srv, message = waiting
    result = queue(srv.config, "show", message)
    assert result.returncode == 0, result.stderr
    shown = parts(result.stdout)
    head = shown["head"]
    assert head[0] == f"Outbound message {message} (outbound, waiting): REQUEST uid=review-7 to {GUEST}"
    assert f"  also to: {OTHER} (`--to ADDRESS` shows theirs)" in head
    assert "  note: [smtp] sender is empty; From shows invito@sender-not-set.invalid until it is set" in head
    assert "From: Alice via Invito <invito@sender-not-set.invalid>" in head
    assert "To: Gina Guest <guest@partner.example.org>" in head
    assert "Reply-To: Alice <alice@example.com>" in head
    assert "Subject: Invitation: Quarterly review @ Thu, 10 Oct 2030 09:00 (UTC)" in head
    assert any(line.startswith("Date: ") for line in head)
    text = "\n".join(shown["text/plain"])
    assert "Quarterly review" in text and "Where: Room 4" in text
    assert "Thursday, 10 October 2030, 09:00 – 10:00 (Coordinated Universal Time)" in text
    calendar_part = shown["text/calendar; method=REQUEST"]
    assert calendar_part[0] == "BEGIN:VCALENDAR" and "METHOD:REQUEST" in calendar_part[:4]
    assert "SUMMARY:Quarterly review" in calendar_part and calendar_part[-1] == "END:VCALENDAR"
    assert not any(line.startswith("ATTACH") for line in calendar_part)  # it travels as a mail attachment
    html_line = [name for name in shown if name.startswith("text/html: ")]
    assert html_line and html_line[0].endswith(" bytes; `--html FILE` writes it for a browser")
    attachments = [line.split() for line in shown["attachments"]]
    assert ["invite.ics", "application/ics"] == attachments[0][:2]
    assert ["agenda.pdf", "application/pdf", str(len(AGENDA)), "bytes"] in attachments
    assert base64.b64encode(AGENDA[:30]).decode()[:20] not in result.stdout  # named, not dumped


def test_show_to_another_guest_prints_their_copy(waiting: tuple[Server, str]) -> None:
    srv, message = waiting
    result = queue(srv.config, "show", message[:20], "--to", f"mailto:{OTHER.upper()}")
    assert result.returncode == 0, result.stderr
    head = parts(result.stdout)["head"]
    assert head[0].endswith(f"to {OTHER}") and f"  also to: {GUEST} (`--to ADDRESS` shows theirs)" in head
    assert "To: Otto Other <other@partner.example.org>" in head
    unknown = queue(srv.config, "show", message, "--to", "nobody@partner.example.org")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == (f"invito: {message} does not go to nobody@partner.example.org; its recipients: "
                              f"{GUEST}, {OTHER}\n")


def test_show_html_writes_the_html_body_for_a_browser(waiting: tuple[Server, str], tmp_path: Path) -> None:
    srv, message = waiting
    target = tmp_path / "invitation.html"
    result = queue(srv.config, "show", message, "--html", str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(f"\n\nwrote the HTML body to {target}; open it in a browser\n")
    html = target.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and "Quarterly review" in html
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "SUMMARY:Quarterly review" in result.stdout  # the message is printed as without --html


def test_show_leaves_the_spool_as_it_was(waiting: tuple[Server, str]) -> None:
    srv, message = waiting
    spool = outbound(srv.config)
    before = spool.read_waiting(message)
    if isinstance(spool, OutboundSpool):
        queue_file = Path(spool.queue, message + ".json")
        file_before = queue_file.read_bytes()
    assert queue(srv.config, "show", message).returncode == 0
    assert spool.read_waiting(message) == before and spool.waiting_ids() == {message}
    if isinstance(spool, OutboundSpool):  # byte for byte, and no temporary file beside it
        assert queue_file.read_bytes() == file_before
        assert os.listdir(queue_file.parent) == [queue_file.name]


def test_queue_help_lists_show() -> None:
    result = subprocess.run([*INVITO, "queue", "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "show ID [--to ADDRESS] [--html FILE]" in result.stdout
    assert "show" in subprocess.run([*INVITO, "queue", "show", "--help"], capture_output=True, text=True,
                                    timeout=30).stdout.split("\n", 1)[0]


# -- entries that are not waiting ----------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, 5232)


def test_show_failed_prints_the_message_and_why_it_failed(config: Path) -> None:
    spool = outbound(config)
    message = invite(spool, "review-1", GUEST)
    spool.fail(entry(spool, message, GUEST), "550 5.1.1 no such user")
    failed_id = f"{message}-{GUEST}"
    result = queue(config, "show", failed_id)
    assert result.returncode == 0, result.stderr
    shown = parts(result.stdout)
    assert shown["head"][:2] == [f"Outbound message {failed_id} (outbound, failed): REQUEST uid=review-1 to {GUEST}",
                                 "  failed: 550 5.1.1 no such user"]
    assert f"To: {GUEST}" in shown["head"]
    assert "METHOD:REQUEST" in shown["text/calendar; method=REQUEST"]


def test_show_of_a_forwarded_reply_prints_it_as_it_goes(config: Path) -> None:
    spool = outbound(config)
    with scheduling_write(spool):
        forward = spool.prepare_mail("review-1", f"mailto:{GUEST}", "mailto:alice@example.com",
                                     b"From: Invito <invito@cal.example.com>\r\nTo: alice@example.com\r\n"
                                     b"Subject: Re: Review\r\n\r\nsee you there\r\n")
    spool.commit([forward])
    result = queue(config, "show", forward)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"Outbound message {forward} (outbound, waiting): FORWARD uid=review-1 to "
                             "alice@example.com\n\nFrom: Invito <invito@cal.example.com>\nTo: alice@example.com\n"
                             "Subject: Re: Review\n\n--- text/plain ---\nsee you there\n")


def test_show_piped_into_a_reader_that_stopped_exits_quietly(waiting: tuple[Server, str]) -> None:
    """`invito queue show ID | head`: the reader is gone before the message is printed."""
    srv, message = waiting
    command = subprocess.Popen([*QUEUE, "show", message, "--config", str(srv.config)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert command.stdout is not None and command.stderr is not None
    command.stdout.close()  # before the command writes: no reader is left for its output
    assert (command.wait(timeout=30), command.stderr.read()) == (0, "")


def test_show_quarantined_prints_the_mail_as_it_arrived(config: Path) -> None:
    mail = quarantined(config, "no event with UID review-1 here")
    result = queue(config, "show", mail.id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        "  reason: no event with UID review-1 here", "",
        "From: guest@partner.example.org", "Subject: Accepted: Review", "",
        "--- text/plain ---", "see you"]
    assert result.stdout.startswith(f"Inbound mail {mail.id} (inbound, quarantined): from guest@partner.example.org "
                                    "to invito+tok@example.com, received ")


@pytest.mark.only_backend("files")  # a quarantined mail's file lost beside its envelope; a database row is whole
def test_show_quarantined_without_its_mail_says_what_show_can_show(config: Path) -> None:
    mail = quarantined(config, "no event")
    folder = Path(inbound(config).quarantined)
    (folder / (mail.id + ".eml")).unlink()
    result = queue(config, "show", mail.id)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"invito: cannot show {mail.id}: {mail.id}.eml, the mail itself, is missing from "
                             f"{folder}; `show` shows a quarantined mail, a waiting or a failed outbound message; "
                             f"`invito queue drop {mail.id}` removes what is left\n")


def test_show_of_an_unknown_id_exits_1(config: Path) -> None:
    invite(outbound(config), "review-1", GUEST)
    result = queue(config, "show", "999999999-nothing")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "invito: no queued, failed or quarantined message with id 999999999-nothing\n"


def test_show_html_of_a_mail_without_html_says_so(config: Path, tmp_path: Path) -> None:
    mail = quarantined(config, "no event")
    result = queue(config, "show", mail.id, "--html", str(tmp_path / "x.html"))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"invito: {mail.id} has no HTML body to write; `invito queue show {mail.id}` "
                             "prints its text\n")
    assert not (tmp_path / "x.html").exists()


@pytest.mark.only_backend("files")  # damaged spool files; the database's rows have a schema
def test_show_of_an_unreadable_or_uncomposable_message_says_why(config: Path) -> None:
    spool = outbound(config)
    os.makedirs(spool.queue)
    Path(spool.queue, "1700000000000000000-broken.json").write_text("{not json")
    broken = queue(config, "show", "1700000000000000000-broken")
    assert (broken.returncode, broken.stdout) == (1, "")
    assert broken.stderr.startswith(f"invito: cannot show 1700000000000000000-broken: {spool.queue}/"
                                    "1700000000000000000-broken.json is not a readable spool file (")
    assert broken.stderr.endswith("); `invito queue drop 1700000000000000000-broken` removes it\n")

    message = invite(spool, "review-1", GUEST)
    path = Path(spool.queue, message + ".json")
    path.write_text(json.dumps({**json.loads(path.read_text()), "ics": "garbage"}))
    garbled = queue(config, "show", message)
    assert (garbled.returncode, garbled.stdout) == (1, "")
    assert garbled.stderr.startswith(f"invito: cannot show {message}: the message cannot be composed (")
    assert garbled.stderr.endswith("); the sender will fail it\n")
