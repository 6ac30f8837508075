# SPDX-License-Identifier: GPL-3.0-or-later
"""`invito migrate-to-db` as an admin runs it: a data folder made by a real filesystem `invito serve`
(events with internal and external guests, a relay that refuses some of them, mail to the listener), then
the command as a subprocess, twice, and the database read back through Invito's own database modules."""
from __future__ import annotations

import re
import subprocess
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest
import requests

from invito.plugins.imip.inbound_spool import InboundSpool, PageAnswer
from invito.plugins.imip.spool import OutboundSpool
from invito.plugins.imip.tokens import ReplyTokens
from invito.server.config import load
from invito.storage.pg import db as pg_db
from invito.storage.pg.dav import Storage
from invito.storage.pg.inbound import InboundQueue
from invito.storage.pg.outbox import Outbox
from invito.storage.pg.side_records import SideRecords
from invito.storage.side_records import SideRecords as FolderSideRecords, digest
from invito.storage.pg.tokens import DatabaseReplyTokens
from tests.e2e.conftest import INVITO, PASSWORD, Server, free_port, start, stop, write_config
from tests.e2e.mailsink import MailSink
from tests.e2e.test_invitations_by_mail import review
from tests.e2e.test_replies_by_mail import GINO, GRACE, inbound_settings, quarantined, send, wait_listening, wire
from tests.e2e.test_scheduling import calendar, set_partstat

pytestmark = pytest.mark.only_backend("files")  # these tests set up a data folder, copied into a database of their own

SYNC = ('<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:"><D:sync-token/><D:sync-level>1</D:sync-level>'
        '<D:prop><D:getetag/></D:prop></D:sync-collection>')


def migrate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INVITO, "migrate-to-db", "--config", str(config)], capture_output=True, text=True,
                          timeout=120)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def served(root: Path) -> list[Path]:
    """The collection folders Radicale serves under ``root`` (homes, calendars, inboxes…; not its caches)."""
    return [d for d in root.rglob("*") if d.is_dir() and not any(p.startswith(".") for p in d.relative_to(root).parts)]


def wait(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def filesystem_sync_token(srv: Server, user: str, collection: str) -> str:
    answer = requests.request("REPORT", f"{srv.url}{user}/{collection}/", data=SYNC, auth=(user, PASSWORD),
                              headers={"Content-Type": "application/xml", "Depth": "1"}, timeout=10)
    assert answer.status_code == 207, answer.text
    return re.search(r"<(?:\w+:)?sync-token>([^<]+)</(?:\w+:)?sync-token>", answer.text).group(1)


def build_folder(tmp: Path, relay: tuple[int, MailSink]) -> tuple[Server, str, str]:
    """A data folder as a real server leaves it: Alice invites Bob (internal), Grace (the relay says
    "try later": waiting, with attempts) and Gino (the relay refuses him: failed); Grace's auto-reply
    arrives at the listener (quarantined); then, the server stopped, one mail accepted by the spool waits
    unprocessed and an answer refused on the RSVP page is set aside. Bob accepts in his calendar. Returns the server, the event's UID and a filesystem sync token of Alice's calendar."""
    port, sink = relay
    sink.refuse.update({GINO[len("mailto:"):]: "550 5.1.1 no such user",
                        GRACE[len("mailto:"):]: "451 4.7.1 try again later"})
    listen = free_port()
    proc, srv = start(tmp, inbound_settings(port, listen))
    try:
        wait_listening(listen)
        uid = str(uuid.uuid4())
        calendar(srv, "alice").save_event(review(uid))
        set_partstat(srv, "bob", uid, "ACCEPTED")  # Alice's copy gets bookkeeping: a side record
        outbound = OutboundSpool(str(srv.data / "spool" / "outbound"))
        wait(lambda: outbound.failed_ids() and any(e.attempts >= 1 for e in outbound.queued()),
             "a failed and a retried delivery")
        token_file = next((srv.data / "imip" / "tokens").glob("*.json"))
        address = f"invito+{token_file.stem}@cal.example.com"
        away = EmailMessage()  # an auto-reply: never answered, set aside
        away["From"], away["To"], away["Subject"] = "grace@client.example.net", address, "Out of office"
        away["Auto-Submitted"] = "auto-replied"
        away.set_content("I am away.")
        send(listen, address, wire(away))
        quarantined(srv, 1)
        token = filesystem_sync_token(srv, "alice", "work")
    finally:
        stop(proc)
    InboundSpool(str(srv.data / "spool" / "inbound")).accept(
        b"From: grace@client.example.net\r\nSubject: later\r\n\r\nhello\r\n", "grace@client.example.net",
        ["invito@cal.example.com"], "127.0.0.1:2525")
    InboundSpool(str(srv.data / "spool" / "inbound")).set_aside_answer(
        PageAnswer("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", GRACE, "mailto:alice@example.com", uid, "tok-0123456789",
                   "127.0.0.1"), "the event changed meanwhile")
    return srv, uid, token


def test_a_data_folder_is_copied_whole_and_a_second_run_copies_nothing(tmp_path: Path, relay, database: str) -> None:
    srv, uid, fs_token = build_folder(tmp_path, relay)
    folder_tokens = ReplyTokens(str(srv.data / "imip" / "tokens"))
    tokens = [folder_tokens.lookup(p.stem) for p in (srv.data / "imip" / "tokens").glob("*.json")]
    assert tokens, "the sender issued no reply token"
    signed = folder_tokens.sign("rsvp-link", uid)
    outbound = OutboundSpool(str(srv.data / "spool" / "outbound"))
    waiting = outbound.queued()
    [failed_id] = outbound.failed_ids()
    inbound = InboundSpool(str(srv.data / "spool" / "inbound"))
    [pending] = inbound.pending()
    [aside] = [e for e in inbound.quarantined_entries() if e.answer is None]
    [page] = [e for e in inbound.quarantined_entries() if e.answer is not None]
    config = write_config(tmp_path, free_port(), {"invito": {"database": database}})
    before = snapshot(srv.data)

    first = migrate(config)
    assert first.returncode == 0, first.stderr
    folders = served(srv.data / "collections" / "collection-root")
    files = [f for d in folders for f in d.iterdir() if f.is_file() and not f.name.startswith(".")]
    assert f"copied {len(folders)} collections, {len(files)} items" in first.stdout, first.stdout
    assert f"{len(tokens)} reply tokens" in first.stdout and "1 failed" in first.stdout
    assert "1 side records" in first.stdout and "1 inbound pending, 2 quarantined" in first.stdout
    assert "set [invito] database" in first.stdout and "backup" in first.stdout

    second = migrate(config)
    assert second.returncode == 0, second.stderr
    assert "copied 0 collections, 0 items" in second.stdout and "nothing new" in second.stdout, second.stdout
    assert snapshot(srv.data) == before  # the folder is the backup: never changed

    configuration = load(str(config))
    database_ = pg_db.Database(database)
    try:
        storage = Storage(configuration)
        with storage.acquire_lock("r"):
            for user in ("alice", "bob"):
                home, *inside = list(storage.discover(f"/{user}/", depth="1"))
                assert home.path == user
            found = list(storage.discover("/alice/work/", depth="1"))
            work, items = found[0], found[1:]
            assert work.get_meta("tag") == "VCALENDAR"
            on_disk = {p.name: p.read_bytes().decode() for p in (srv.data / "collections" / "collection-root"
                                                                  / "alice" / "work").iterdir() if p.is_file() and not p.name.startswith(".")}
            assert {item.href: item.serialize() for item in items} == on_disk  # byte for byte
            [event] = items
            assert event.uid == uid and event.component_name == "VEVENT"
            assert any(i.uid == uid for c in storage.discover("/bob/", depth="1") if hasattr(c, "get_all")
                       for i in c.get_all())  # Bob's copy of the invitation
            with pytest.raises(ValueError):  # the client's old token: 403 valid-sync-token, it resyncs
                work.sync(fs_token)
            assert set(work.sync("")[1]) == set(on_disk)

        version = digest(on_disk[event.href])
        bookkeeping = FolderSideRecords(str(srv.data / "collections" / "collection-root"), lambda: False)
        assert bookkeeping.get("alice", uid, version)  # Bob's acceptance left one
        assert SideRecords(database_).get("alice", uid, version) == bookkeeping.get("alice", uid, version)

        db_tokens = DatabaseReplyTokens(database_)
        assert all(db_tokens.lookup(t.token) == t for t in tokens)
        assert db_tokens.sign("rsvp-link", uid) == signed  # a link signed before the switch still verifies

        assert {(e.id, e.recipient, e.attempts, e.next_try, e.stage) for e in Outbox(database_).queued()} == \
            {(e.id, e.recipient, e.attempts, e.next_try, e.stage) for e in waiting}
        with psycopg.connect(database) as conn:
            [(recipient, reason)] = conn.execute("SELECT recipient, reason FROM invito_outbox_delivery "
                                                 "WHERE state = 'failed'").fetchall()
            assert recipient == GINO and reason == outbound.failed_reason(failed_id)
            [(quarantined_id, kept_reason, raw)] = conn.execute(
                "SELECT id, reason, raw FROM invito_inbound WHERE state = 'quarantined' AND kind = 'mail'").fetchall()
            assert (quarantined_id, kept_reason) == (aside.id, aside.reason)
            assert bytes(raw) == inbound.quarantined_mail(aside.id)
        # The answer refused on the RSVP page is a quarantined answer there too, under its own id.
        assert InboundQueue(database_).quarantined_answer(page.id) == inbound.quarantined_answer(page.id)
        [mail] = InboundQueue(database_).pending()
        assert (mail.id, mail.raw(), mail.peer) == (pending.id, pending.raw(), pending.peer)
    finally:
        database_.close()
        pg_db.close_shared()


def test_a_database_signing_with_another_secret_is_refused(tmp_path: Path, relay, database: str) -> None:
    srv, _, _ = build_folder(tmp_path, relay)
    other = pg_db.Database(database)
    try:
        DatabaseReplyTokens(other).issue("mailto:dora@example.com", "elsewhere", "mailto:x@example.org")
    finally:
        other.close()
    refused = migrate(write_config(tmp_path, free_port(), {"invito": {"database": database}}))
    assert refused.returncode == 1
    assert "another secret" in refused.stderr and "Nothing was copied" in refused.stderr
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM dav_item").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM invito_reply_token").fetchone()[0] == 1


def test_a_run_killed_midway_is_finished_by_the_next(tmp_path: Path, relay, database: str) -> None:
    srv, _, _ = build_folder(tmp_path, relay)
    config = write_config(tmp_path, free_port(), {"invito": {"database": database}})
    broken = srv.data / "collections" / "collection-root" / "alice" / "work" / "broken.ics"
    items = len([f for d in served(srv.data / "collections" / "collection-root") for f in d.iterdir()
                 if f.is_file() and not f.name.startswith(".")])
    broken.write_text("BEGIN:VCALENDAR\r\nthis is no calendar\r\n")  # a hand-edited file, say
    with psycopg.connect(database) as blocker, psycopg.connect(database, autocommit=True) as watcher:
        blocker.execute("LOCK TABLE invito_outbox_message IN ACCESS EXCLUSIVE MODE")  # the spools must wait
        run = subprocess.Popen([*INVITO, "migrate-to-db", "--config", str(config)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        try:
            wait(lambda: watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                         "AND datname = current_database()").fetchone()[0] > 0,
                 "the copy to wait for the outbox")
            assert watcher.execute("SELECT count(*) FROM dav_item").fetchone()[0] == items  # collections done
        finally:
            run.kill()
            run.wait()
        blocker.rollback()
    again = migrate(config)
    assert again.returncode == 0, again.stderr
    assert "copied 0 collections, 0 items" in again.stdout and "1 messages waiting, 1 failed" in again.stdout, \
        again.stdout
    assert f"not copied: {broken} is no calendar object" in again.stdout
    assert "nothing new" in migrate(config).stdout
