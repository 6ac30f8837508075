# SPDX-License-Identifier: GPL-3.0-or-later
"""`invito queue` as an admin runs it: queues filled by the real queue classes of the module's backend (the
spools, or the database's outbox and inbound queue), the command in its own process."""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import icalendar
import pytest

from invito.plugins.imip.inbound_spool import ABANDONED_AFTER, InboundEntry, InboundSpool
from invito.plugins.imip.spool import OutboundSpool, SpoolEntry
from invito.plugins.itip.model import ITipMessage
from invito.server import cli
from invito.server.config import load
from invito.storage import backend
from invito.storage.pg.inbound import InboundMail, InboundQueue
from invito.storage.pg.outbox import Outbox
from tests.e2e.conftest import INVITO, Server, write_config
from tests.e2e.test_scheduling import attendee, calendar, copy_of, event

QUEUE = [*INVITO, "queue"]
LATER = 4102444800.0  # 2100-01-01 00:00:00 UTC
RAW = b"From: guest@partner.example.org\r\nSubject: Accepted: Review\r\n\r\nsee you\r\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, 5232)


def queue(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*QUEUE, *args, "--config", str(config)], capture_output=True, text=True, timeout=30,
                          cwd=config.parent, env={**os.environ, "TZ": "UTC"})


_outboxes: dict[Path, OutboundSpool | Outbox] = {}  # one per config: the database's leases are its holder's


def outbound(config: Path) -> OutboundSpool | Outbox:
    """``config``'s outbound queue, as its server's sender holds it."""
    if config not in _outboxes:
        _outboxes[config] = backend.outbound(load(str(config)))
    return _outboxes[config]


def inbound(config: Path) -> InboundSpool | InboundQueue:
    return backend.inbound(load(str(config)))


@pytest.fixture(autouse=True)
def _forget_outboxes() -> Iterator[None]:
    yield
    _outboxes.clear()


def scheduling_write(spool: OutboundSpool | Outbox) -> contextlib.AbstractContextManager:
    """Where the server queues a message: the database's outbox inside the write that schedules (the
    spool's prepared file is committed after it)."""
    return spool.db.write() if isinstance(spool, Outbox) else contextlib.nullcontext()


def invite(spool: OutboundSpool | Outbox, uid: str, *guests: str, method: str = "REQUEST") -> str:
    calendar = icalendar.Calendar.from_ical(
        f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nMETHOD:{method}\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n"
        "DTSTAMP:20300101T000000Z\r\nDTSTART:20300102T100000Z\r\nSUMMARY:Review\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    recipients = [f"mailto:{guest}" for guest in guests]
    with scheduling_write(spool):
        entry_id = spool.prepare(ITipMessage(method, uid, "mailto:alice@example.com", tuple(recipients), calendar),
                                 recipients, changes=("time",), notes=(("from", "alice@example.com"),))
    spool.commit([entry_id])
    return entry_id


def entry(spool: OutboundSpool | Outbox, entry_id: str, guest: str) -> SpoolEntry:
    [found] = [e for e in spool.queued() if e.id == entry_id and e.recipient == f"mailto:{guest}"]
    return found


def greylisted(spool: OutboundSpool | Outbox, entry_id: str, guest: str) -> None:
    if isinstance(spool, Outbox):  # the database's sender writes a try's outcome only for what it claimed
        spool.claim(time.time())
    spool.update(SpoolEntry(**{**entry(spool, entry_id, guest).__dict__, "attempts": 2, "next_try": LATER,
                               "last_error": "451 4.7.1 greylisted,\n try later"}))


def quarantined(config: Path, reason: str) -> InboundEntry | InboundMail:
    spool = inbound(config)
    accepted = spool.accept(RAW, "guest@partner.example.org", ["invito+tok@example.com"], "192.0.2.7:4711")
    spool.quarantine(accepted, reason)
    return accepted


def section(output: str, title: str) -> list[list[str]]:
    """The rows of one section of `list` (header included), cells split where two spaces separate them."""
    lines = output.split(title + "\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return [re.split(r" {2,}", line.strip()) for line in lines]


def files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


# -- list ----------------------------------------------------------------------------------------------


def test_list_on_empty_spools_says_none_in_each_section(config: Path) -> None:
    result = queue(config, "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("Outbound (waiting)\n  none\n\nOutbound (failed)\n  none\n\n"
                             "Outbound (done)\n  none\n\nInbound (quarantine)\n  none\n")


def test_list_shows_waiting_failed_and_quarantined(config: Path) -> None:
    spool = outbound(config)
    review = invite(spool, "review-1", "Bob@Other.example.net", "guest@partner.example.org")
    greylisted(spool, review, "guest@partner.example.org")
    cancel = invite(spool, "standup-2", "gone@partner.example.org", method="CANCEL")
    spool.fail(entry(spool, cancel, "gone@partner.example.org"), "550 5.1.1 no such user\nsecond line")
    mail = quarantined(config, "no event with UID review-1 here")

    result = queue(config)  # list is the default action
    assert result.returncode == 0, result.stderr
    assert section(result.stdout, "Outbound (waiting)") == [
        ["ID", "RECIPIENT", "METHOD", "UID", "ATTEMPTS", "NEXT TRY", "LAST ERROR"],
        [review, "Bob@Other.example.net", "REQUEST", "review-1", "0", "now"],
        [review, "guest@partner.example.org", "REQUEST", "review-1", "2", "2100-01-01 00:00:00",
         "451 4.7.1 greylisted, try later"]]
    assert section(result.stdout, "Outbound (failed)") == [
        ["ID", "RECIPIENT", "METHOD", "UID", "REASON"],
        [f"{cancel}-gone@partner.example.org", "gone@partner.example.org", "CANCEL", "standup-2",
         "550 5.1.1 no such user"]]
    assert section(result.stdout, "Inbound (quarantine)") == [
        ["ID", "FROM", "TO", "RECEIVED", "REASON"],
        [mail.id, "guest@partner.example.org", "invito+tok@example.com", utc(mail.received),
         "no event with UID review-1 here"]]


def test_config_may_come_before_the_action(config: Path) -> None:
    invite(outbound(config), "review-1", "guest@partner.example.org")
    result = subprocess.run([*QUEUE, "--config", str(config), "list"], capture_output=True, text=True, timeout=30,
                            cwd=config.parent)
    assert result.returncode == 0, result.stderr
    assert "guest@partner.example.org" in section(result.stdout, "Outbound (waiting)")[1]


# -- retry ---------------------------------------------------------------------------------------------


def test_retry_failed_puts_the_recipient_back_in_the_queue_with_fresh_state(config: Path) -> None:
    spool = outbound(config)
    message = invite(spool, "review-1", "guest@partner.example.org")
    greylisted(spool, message, "guest@partner.example.org")
    failed = entry(spool, message, "guest@partner.example.org")
    spool.fail(failed, "gave up after 9 attempts: 451 4.7.1 greylisted")
    failed_id = f"{message}-guest@partner.example.org"
    assert spool.queued() == []

    result = queue(config, "retry", failed_id)
    assert result.returncode == 0, result.stderr
    [again] = spool.due(time.time())  # what the sender picks up next
    assert result.stdout == f"{failed_id}: back in the queue as {again.id}, to guest@partner.example.org\n"
    assert again.id != message
    assert (again.recipient, again.attempts, again.next_try, again.last_error) == (
        "mailto:guest@partner.example.org", 0, 0.0, "")
    assert (again.method, again.uid, again.sender, again.changes, again.notes) == (
        "REQUEST", "review-1", "mailto:alice@example.com", ("time",), (("from", "alice@example.com"),))
    assert icalendar.Calendar.from_ical(again.ics) == icalendar.Calendar.from_ical(failed.ics)
    assert again.created > failed.created  # the give-up age starts again
    assert spool.failed_ids() == set() and spool.waiting_ids() == {again.id}


def test_retry_waiting_sends_every_recipient_now(config: Path) -> None:
    spool = outbound(config)
    message = invite(spool, "review-1", "bob@other.example.net", "guest@partner.example.org")
    other = invite(spool, "other-2", "carol@partner.example.org")
    greylisted(spool, message, "guest@partner.example.org")
    greylisted(spool, message, "bob@other.example.net")
    greylisted(spool, other, "carol@partner.example.org")

    result = queue(config, "retry", message)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{message}: next try set to now for bob@other.example.net, guest@partner.example.org\n"
    due = spool.due(time.time())
    assert sorted((e.id, e.recipient, e.attempts, e.last_error) for e in due) == [
        (message, "mailto:bob@other.example.net", 2, "451 4.7.1 greylisted,\n try later"),
        (message, "mailto:guest@partner.example.org", 2, "451 4.7.1 greylisted,\n try later")]
    assert entry(spool, other, "carol@partner.example.org").next_try == LATER
    assert spool.waiting_ids() == {message, other}
    if isinstance(spool, OutboundSpool):
        assert files(Path(spool.queue)) == sorted([message + ".json", other + ".json"])  # no temporary file left


def test_retry_all_resends_every_waiting_and_failed_message_with_a_count(config: Path) -> None:
    spool = outbound(config)
    waiting = invite(spool, "review-1", "guest@partner.example.org")
    greylisted(spool, waiting, "guest@partner.example.org")
    failing = invite(spool, "other-2", "carol@partner.example.org")
    spool.fail(entry(spool, failing, "carol@partner.example.org"), "550 5.1.1 no such user")
    kept = quarantined(config, "not a reply")  # refused mail is not retried in bulk: each has its reason

    result = queue(config, "retry", "all")
    assert result.returncode == 0, result.stderr
    [again] = [e for e in spool.due(time.time()) if e.uid == "other-2"]
    assert result.stdout.splitlines() == [
        f"[1/2] {waiting}: next try set to now for guest@partner.example.org",
        f"[2/2] {failing}-carol@partner.example.org: back in the queue as {again.id}, to carol@partner.example.org",
        "2 of 2 outbound messages retried"]
    assert sorted(e.uid for e in spool.due(time.time())) == ["other-2", "review-1"]
    assert inbound(config).quarantined_ids() == {kept.id} and inbound(config).quarantined_mail(kept.id) == RAW
    assert inbound(config).quarantined_entry(kept.id).reason == "not a reply"
    assert queue(config, "retry", "all").stdout.endswith("\n2 of 2 outbound messages retried\n")  # both waiting
    assert queue(config, "drop", waiting).returncode == 0 and queue(config, "drop", again.id).returncode == 0
    assert queue(config, "retry", "all").stdout == "0 of 0 outbound messages retried: nothing waits or failed\n"


def test_retry_quarantined_puts_the_mail_back_in_the_inbound_queue(config: Path) -> None:
    mail = quarantined(config, "no event with UID review-1 here")
    spool = inbound(config)
    result = queue(config, "retry", mail.id)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{mail.id}: back in the inbound queue, to be processed again\n"
    [pending] = spool.pending()
    assert pending == mail
    assert pending.raw() == RAW
    assert spool.quarantined_ids() == set()


@pytest.mark.only_backend("files")  # a damaged spool file; the database's rows have a schema
def test_retry_of_an_unreadable_failed_file_says_to_drop_it(config: Path) -> None:
    spool = outbound(config)
    os.makedirs(spool.queue)
    Path(spool.queue, "1700000000000000000-broken.json").write_text("{not json")
    assert spool.queued() == []  # the sender moves it aside, to failed/

    listed = queue(config, "list")
    assert listed.returncode == 0, listed.stderr
    [_, row] = section(listed.stdout, "Outbound (failed)")
    assert row[:4] == ["1700000000000000000-broken", "?", "?", "?"]
    assert row[4].startswith("unreadable spool file: ")
    result = queue(config, "retry", "1700000000000000000-broken")
    assert result.returncode == 1
    assert result.stderr.startswith(f"invito: cannot retry 1700000000000000000-broken: "
                                    f"{spool.failed}/1700000000000000000-broken.json is not a readable spool file (")
    assert result.stderr.endswith("); `invito queue drop 1700000000000000000-broken` removes it\n")
    dropped = queue(config, "drop", "1700000000000000000-broken")
    assert dropped.returncode == 0, dropped.stderr
    assert dropped.stdout == "dropped 1700000000000000000-broken: ? uid=? to ?\n"
    assert files(Path(spool.failed)) == []


@pytest.mark.only_backend("files")  # a quarantined entry's two files, one lost; a database row is whole
@pytest.mark.parametrize("missing", [".eml", ".json"])
def test_retry_of_a_quarantined_mail_missing_a_file_says_to_drop_it(config: Path, missing: str) -> None:
    mail = quarantined(config, "no event")
    folder = Path(inbound(config).quarantined)
    (folder / (mail.id + missing)).unlink()
    result = queue(config, "retry", mail.id)
    assert result.returncode == 1
    assert result.stderr == (f"invito: cannot retry {mail.id}: {mail.id}{missing} is missing from {folder}; "
                             f"`invito queue drop {mail.id}` removes what is left\n")
    assert queue(config, "drop", mail.id).returncode == 0
    assert files(folder) == []


# -- drop ----------------------------------------------------------------------------------------------


def test_drop_waiting_removes_every_recipient_of_that_message_only(config: Path) -> None:
    spool = outbound(config)
    message = invite(spool, "review-1", "bob@other.example.net", "guest@partner.example.org")
    other = invite(spool, "other-2", "carol@partner.example.org")
    result = queue(config, "drop", message)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"dropped {message}: REQUEST uid=review-1 to bob@other.example.net, "
                             "guest@partner.example.org\n")
    assert [(e.id, e.recipient) for e in spool.queued()] == [(other, "mailto:carol@partner.example.org")]


def test_drop_failed(config: Path) -> None:
    spool = outbound(config)
    message = invite(spool, "review-1", "guest@partner.example.org")
    spool.fail(entry(spool, message, "guest@partner.example.org"), "550 5.1.1 no such user")
    result = queue(config, "drop", f"{message}-guest@partner.example.org")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"dropped {message}-guest@partner.example.org: REQUEST uid=review-1 to "
                             "guest@partner.example.org\n")
    assert spool.failed_ids() == set()


def test_drop_quarantined(config: Path) -> None:
    mail = quarantined(config, "no event")
    result = queue(config, "drop", mail.id)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"dropped {mail.id}: mail from guest@partner.example.org to invito+tok@example.com, "
                             f"received {utc(mail.received)}\n")
    assert inbound(config).quarantined_ids() == set()
    assert inbound(config).pending() == []


def test_a_message_id_means_the_waiting_message_not_its_failed_recipients(config: Path) -> None:
    spool = outbound(config)
    message = invite(spool, "review-1", "guest@partner.example.org", "bob@other.example.net")
    spool.fail(entry(spool, message, "bob@other.example.net"), "550 5.1.1 no such user")
    result = queue(config, "drop", message)
    assert result.returncode == 0, result.stderr
    assert spool.queued() == []
    assert spool.failed_ids() == {f"{message}-bob@other.example.net"}
    assert spool.failed_reason(f"{message}-bob@other.example.net") == "550 5.1.1 no such user"


# -- ids -----------------------------------------------------------------------------------------------


def test_a_unique_prefix_names_the_message(config: Path) -> None:
    mail = quarantined(config, "no event")
    invite(outbound(config), "review-1", "guest@partner.example.org")
    prefix = mail.id[:len(mail.id.split("-")[0]) + 5]  # the timestamp and a little of the random part
    result = queue(config, "retry", prefix)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{mail.id}: back in the inbound queue, to be processed again\n"


def test_an_ambiguous_prefix_lists_the_matches(config: Path) -> None:
    spool = outbound(config)
    first = invite(spool, "review-1", "guest@partner.example.org")
    mail = quarantined(config, "no event")
    prefix = os.path.commonprefix([first, mail.id])
    assert len(prefix) >= 8  # ids start with the time: made within seconds of each other, they share a lot
    result = queue(config, "drop", prefix)
    assert result.returncode == 1
    assert result.stderr == (f"invito: id {prefix} is ambiguous; it starts 2 ids, give more of it:\n"
                             f"  {first} (outbound, waiting)\n  {mail.id} (inbound, quarantined)\n")
    assert [e.id for e in spool.queued()] == [first]  # nothing dropped


def test_unknown_and_too_short_ids_exit_1(config: Path) -> None:
    invite(outbound(config), "review-1", "guest@partner.example.org")
    unknown = queue(config, "retry", "999999999-nothing")
    assert unknown.returncode == 1
    assert unknown.stderr == "invito: no queued, failed or quarantined message with id 999999999-nothing\n"
    short = queue(config, "drop", "1")
    assert short.returncode == 1
    assert short.stderr == ("invito: id '1' is too short: give the whole id or at least its first 8 characters, "
                            "as `invito queue list` shows them\n")
    assert len(outbound(config).queued()) == 1


# -- failures ------------------------------------------------------------------------------------------


def test_invalid_config_exits_2_with_the_problem(tmp_path: Path) -> None:
    config = tmp_path / "invito.conf"
    config.write_text("[invito]\ndata_folder = data\n[scheduling]\ndomian = example.com\n")
    result = queue(config, "list")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (f"{config}: unknown key 'domian' in [scheduling]; allowed keys: domain, addresses, "
                             "external_invites, hide_attendees, language, ldap_address_attributes, "
                             "ldap_cache_seconds, ldap_timeout\n")


@pytest.mark.only_backend("files")  # the spool's folders; the database has none
def test_an_unusable_spool_folder_exits_1_naming_it(config: Path) -> None:
    spool = Path(outbound(config).folder)
    spool.mkdir(parents=True)
    (spool / "queue").write_text("not a folder")
    result = queue(config, "list")
    assert result.returncode == 1
    assert result.stderr == f"invito: cannot use the mail spool: {spool / 'queue'}: Not a directory\n"


# -- beside a running sender ---------------------------------------------------------------------------
# The sender holds the spool's lock while it rewrites a queue file; the command, in its own process, waits.


def while_the_sender_holds_the_lock(spool: OutboundSpool, config: Path, act: Callable[[], None],
                                    *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command while the test holds the lock as the sender would, doing ``act`` meanwhile."""
    with spool.locked():
        command = subprocess.Popen([*QUEUE, *args, "--config", str(config)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert command.poll() is None  # waiting for the lock
        act()
    out, err = command.communicate(timeout=30)
    return subprocess.CompletedProcess(command.args, command.returncode, out, err)


@pytest.mark.only_backend("files")  # the spool's lock file; on the database see test_pg_queue_admin's row locks
def test_retry_waiting_keeps_what_the_sender_wrote_meanwhile(config: Path) -> None:
    spool = outbound(config)
    message = invite(spool, "review-1", "guest@partner.example.org", "bob@other.example.net")
    greylisted(spool, message, "guest@partner.example.org")
    sent = entry(spool, message, "bob@other.example.net")
    done = while_the_sender_holds_the_lock(spool, config, lambda: remove_unlocked(spool, sent), "retry", message)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{message}: next try set to now for guest@partner.example.org\n"
    [left] = spool.queued()  # bob, sent meanwhile, is not queued again
    assert (left.recipient, left.attempts, left.next_try) == ("mailto:guest@partner.example.org", 2, 0.0)
    assert files(Path(spool.queue)) == [message + ".json"]


@pytest.mark.only_backend("files")  # the spool's lock file; on the database see test_pg_queue_admin's row locks
def test_retry_waiting_of_a_message_sent_meanwhile_says_so(config: Path) -> None:
    spool = outbound(config)
    message = invite(spool, "review-1", "guest@partner.example.org")
    sent = entry(spool, message, "guest@partner.example.org")
    done = while_the_sender_holds_the_lock(spool, config, lambda: remove_unlocked(spool, sent), "retry", message)
    assert done.returncode == 1
    assert done.stderr == (f"invito: {message} changed while this command ran (it was outbound, "
                           "waiting); `invito queue list` shows where it is now\n")
    assert files(Path(spool.queue)) == []  # not recreated, no temporary file left


def remove_unlocked(spool: OutboundSpool, sent: SpoolEntry) -> None:
    """What ``OutboundSpool.remove`` does, inside the lock this test already holds."""
    record = json.loads(Path(spool.queue, sent.id + ".json").read_text())
    record["recipients"].pop(sent.recipient)
    path = Path(spool.queue, sent.id + ".json")
    if record["recipients"]:
        path.write_text(json.dumps(record))
    else:
        path.unlink()


@pytest.mark.only_backend("files")  # the spool's two renames and its leftover cleanup; a row changes state at once
def test_retry_quarantined_is_not_taken_for_a_leftover_by_the_processor(config: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    mail = quarantined(config, "no event")
    spool = inbound(config)
    hours_ago = time.time() - 2 * ABANDONED_AFTER  # retried long after it arrived
    os.utime(Path(spool.quarantined, mail.id + ".eml"), (hours_ago, hours_ago))
    original = os.rename

    def rename(source: str, target: str) -> None:  # the processor looks at the queue between the two moves
        monkeypatch.setattr(os, "rename", original)
        original(source, target)
        assert spool.pending() == []

    monkeypatch.setattr(os, "rename", rename)
    assert cli.main(["queue", "retry", mail.id, "--config", str(config)]) == 0
    capsys.readouterr()
    [pending] = spool.pending()
    assert pending.raw() == RAW


def test_dropping_a_waiting_invitation_tells_the_organizers_event(server: Server) -> None:
    """No relay: the invitation waits (SCHEDULE-STATUS 1.0); dropped while `invito serve` runs, the guest's
    status in alice's event says it was not delivered (5.1), and no other guest's changes."""
    uid = "dropped-1"
    calendar(server, "alice").save_event(event(uid, attendees=("bob",), extra="\r\n".join(
        ["ATTENDEE;CN=Guest;PARTSTAT=NEEDS-ACTION:mailto:guest@partner.example.org",
         "ATTENDEE;CN=Other;PARTSTAT=NEEDS-ACTION:mailto:other@partner.example.org"])))
    assert attendee(copy_of(server, "alice", uid), "mailto:guest@partner.example.org").params[
        "SCHEDULE-STATUS"] == "1.0"
    [waiting] = outbound(server.config).queued()[:1]
    assert queue(server.config, "drop", waiting.id).returncode == 0
    stored = copy_of(server, "alice", uid)
    assert attendee(stored, "mailto:guest@partner.example.org").params["SCHEDULE-STATUS"] == "5.1"
    assert attendee(stored, "mailto:other@partner.example.org").params["SCHEDULE-STATUS"] == "5.1"  # same message
    assert attendee(stored, "mailto:bob@example.com").params["SCHEDULE-STATUS"] == "1.2"  # delivered inside
