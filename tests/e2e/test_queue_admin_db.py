# SPDX-License-Identifier: GPL-3.0-or-later
"""`invito queue` against the database (``[invito] database``), in its own process, as an admin runs it:
the same scenario is filled into the filesystem spools and into a real PostgreSQL, and every subcommand
prints the same on both (ids and times aside), and changes the database as it changes the spools."""
from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from invito.plugins.imip.inbound_spool import PageAnswer
from invito.storage.pg.db import Database
from invito.storage.pg.inbound import InboundQueue
from invito.storage.pg.outbox import Outbox
from tests.e2e.conftest import free_port, write_config
from tests.e2e.test_queue_admin import RAW, entry, greylisted, inbound, invite, outbound, queue, section

pytestmark = pytest.mark.only_backend("postgresql")  # these tests set up their own database

REPLY = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nMETHOD:REPLY\r\nBEGIN:VEVENT\r\nUID:review-1\r\n"
         "DTSTAMP:20300101T000000Z\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:guest@partner.example.org\r\n"
         "END:VEVENT\r\nEND:VCALENDAR\r\n")
ANSWER = PageAnswer(REPLY, "mailto:guest@partner.example.org", "mailto:alice@example.com", "review-1",
                    "a1b2c3d4e5f6", "192.0.2.9")
ID = re.compile(r"\d{19}-[0-9a-f]{32}")
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@dataclasses.dataclass
class Filled:
    """A backend holding the scenario: its config and the ids of what it made, in the order made."""
    config: Path
    review: str       # REQUEST review-1 to bob (due now) and guest (greylisted)
    standup: str      # CANCEL standup-2 whose only guest failed
    mail: str         # a quarantined mail
    answer: str       # a quarantined RSVP page answer

    @property
    def failed(self) -> str:
        return f"{self.standup}-gone@partner.example.org"


def fill_files(tmp: Path) -> Filled:
    config = write_config(tmp, 5232, {"invito": {"database": ""}})  # the spools, beside this module's database
    spool, mails = outbound(config), inbound(config)
    review = invite(spool, "review-1", "bob@other.example.net", "guest@partner.example.org")
    greylisted(spool, review, "guest@partner.example.org")
    standup = invite(spool, "standup-2", "gone@partner.example.org", method="CANCEL")
    spool.fail(entry(spool, standup, "gone@partner.example.org"), "550 5.1.1 no such user")
    mail = mails.accept(RAW, "guest@partner.example.org", ["invito+tok@example.com"], "192.0.2.7:4711")
    mails.quarantine(mail, "no event with UID review-1 here")
    answer = mails.set_aside_answer(ANSWER, "the event changed since the page was opened")
    return Filled(config, review, standup, mail.id, answer.id)


def fill_database(tmp: Path, db: Database) -> Filled:
    config = write_config(tmp, 5232, {"invito": {"database": db.url}})
    outbox, mails = Outbox(db), InboundQueue(db)
    with db.write():
        review = invite(outbox, "review-1", "bob@other.example.net", "guest@partner.example.org")  # type: ignore[arg-type]
    [guest] = [e for e in outbox.claim(time.time()) if e.recipient == "mailto:guest@partner.example.org"]
    outbox.update(dataclasses.replace(guest, attempts=2, next_try=4102444800.0, stage="recipient",
                                      last_error="451 4.7.1 greylisted,\n try later"))
    with db.write():
        standup = invite(outbox, "standup-2", "gone@partner.example.org", method="CANCEL")  # type: ignore[arg-type]
    [gone] = [e for e in outbox.claim(time.time()) if e.uid == "standup-2"]
    outbox.fail(gone, "550 5.1.1 no such user")
    outbox.update(entry(outbox, review, "bob@other.example.net"))  # its lease released, its state unchanged
    mail = mails.accept(RAW, "guest@partner.example.org", ["invito+tok@example.com"], "192.0.2.7:4711")
    with db.write():
        mails.quarantine(mails.claim(), "no event with UID review-1 here")
    answer = mails.set_aside_answer(ANSWER, "the event changed since the page was opened")
    return Filled(config, review, standup, mail.id, answer.id)


@pytest.fixture
def db(database: str) -> Iterator[Database]:
    db = Database(database, max_size=3)
    yield db
    db.close()


@pytest.fixture
def both(tmp_path: Path, db: Database) -> tuple[Filled, Filled]:
    (tmp_path / "files").mkdir()
    (tmp_path / "db").mkdir()
    return fill_files(tmp_path / "files"), fill_database(tmp_path / "db", db)


def same(run: Callable[[Filled], list[str]], both: tuple[Filled, Filled]) -> list[str]:
    """What ``run`` prints on the database, asserted equal to what it prints on the files once each
    backend's ids (numbered in order of appearance) and times are set aside."""
    files, database = (_normalized("\n".join(run(filled))) for filled in both)
    assert database == files
    return database.splitlines()


def _normalized(output: str) -> str:
    ids: dict[str, str] = {}
    output = ID.sub(lambda m: ids.setdefault(m.group(), f"<id{len(ids) + 1}>"), output)
    return TIME.sub("<time>", output)


def ok(config: Path, *args: str) -> str:
    result = queue(config, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_list_prints_what_the_spools_print(both: tuple[Filled, Filled]) -> None:
    lines = same(lambda f: [ok(f.config, "list")], both)
    assert ["<id1>", "guest@partner.example.org", "REQUEST", "review-1", "2", "<time>",
            "451 4.7.1 greylisted, try later"] in [re.split(r" {2,}", line.strip()) for line in lines]
    _, database = both
    rows = section(ok(database.config), "Inbound (quarantine)")[1:]
    assert [[row[0], *row[1:3], row[4]] for row in rows] == [
        [database.mail, "guest@partner.example.org", "invito+tok@example.com", "no event with UID review-1 here"],
        [database.answer, "guest@partner.example.org", "RSVP page", "the event changed since the page was opened"]]


def test_show_prints_what_the_spools_print(both: tuple[Filled, Filled]) -> None:
    def shown(f: Filled) -> list[str]:
        outputs = [ok(f.config, "show", f.review, "--to", "guest@partner.example.org"), ok(f.config, "show", f.failed),
                   ok(f.config, "show", f.mail), ok(f.config, "show", f.answer)]
        # The preview's own Date and Message-ID, and the MIME boundaries, differ from one composition to the next.
        return [line for output in outputs for line in output.splitlines()
                if not line.startswith(("Date:", "Message-ID:")) and "==========" not in line]
    lines = same(shown, both)
    assert any(line.startswith("Inbound answer <id") and "given on the RSVP page by guest@partner.example.org" in line
               for line in lines)
    assert "  failed: 550 5.1.1 no such user" in lines


def test_retry_of_each_kind_prints_what_the_spools_print_and_wakes_the_database(both: tuple[Filled, Filled],
                                                                                 db: Database) -> None:
    lines = same(lambda f: [ok(f.config, "retry", f.review), ok(f.config, "retry", f.failed),
                            ok(f.config, "retry", f.mail[:-1]), ok(f.config, "retry", f.answer)], both)
    assert lines[0] == "<id1>: next try set to now for bob@other.example.net, guest@partner.example.org"
    _, filled = both
    sender = Outbox(db)
    due = {(e.uid, e.recipient, e.attempts, e.after_failure) for e in sender.claim(time.time())}
    assert due == {("review-1", "mailto:bob@other.example.net", 0, False),
                   ("review-1", "mailto:guest@partner.example.org", 2, False),
                   ("standup-2", "mailto:gone@partner.example.org", 0, True)}
    assert sender.failed_ids() == set()
    pending = InboundQueue(db).pending()
    assert [(p.id, p.answer) for p in pending] == [(filled.mail, None), (filled.answer, ANSWER)]


def test_retry_all_prints_what_the_spools_print(both: tuple[Filled, Filled]) -> None:
    lines = same(lambda f: [ok(f.config, "retry", "all")], both)
    assert lines[-1] == "2 of 2 outbound messages retried"


def test_drop_of_each_kind_prints_what_the_spools_print(both: tuple[Filled, Filled], db: Database) -> None:
    lines = same(lambda f: [ok(f.config, "drop", f.review), ok(f.config, "drop", f.failed),
                            ok(f.config, "drop", f.mail), ok(f.config, "drop", f.answer), ok(f.config, "list")], both)
    assert lines[0] == ("dropped <id1>: REQUEST uid=review-1 to bob@other.example.net, guest@partner.example.org")
    assert Outbox(db).waiting_ids() == set() and InboundQueue(db).quarantined_ids() == set()
    assert sorted((o["recipient"], o["status"], o["detail"]) for o in Outbox(db).recorded()) == [
        ("mailto:bob@other.example.net", "5.1", "dropped by the admin"),
        ("mailto:guest@partner.example.org", "5.1", "dropped by the admin")]


def test_unknown_and_ambiguous_ids_exit_1_on_the_database(both: tuple[Filled, Filled]) -> None:
    _, filled = both
    unknown = queue(filled.config, "drop", "1700000000-nothing")
    assert unknown.returncode == 1 and "no queued, failed or quarantined message with id 1700000000-nothing" in \
        unknown.stderr
    ambiguous = queue(filled.config, "show", filled.review[:8])  # every id made this second starts so
    assert ambiguous.returncode == 1 and "is ambiguous" in ambiguous.stderr


def test_the_url_may_come_from_database_file(tmp_path: Path, db: Database) -> None:
    secret = tmp_path / "database.url"
    secret.write_text(db.url + "\n")
    config = write_config(tmp_path, 5232, {"invito": {"database": "", "database_file": str(secret)}})
    answer = InboundQueue(db).set_aside_answer(ANSWER, "the event changed since the page was opened")
    assert section(ok(config, "list"), "Inbound (quarantine)")[1][:3] == [answer.id, "guest@partner.example.org",
                                                                          "RSVP page"]
    assert not (tmp_path / "data" / "spool").exists()  # nothing went to the filesystem


def test_a_database_that_does_not_answer_exits_1_naming_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, 5232, {"invito": {"database": f"postgresql://invito:pw-secret@127.0.0.1:{free_port()}/x"}})
    started = time.monotonic()
    result = queue(config, "list")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("invito: cannot use the database: connection") and "127.0.0.1" in result.stderr
    assert "pw-secret" not in result.stderr and time.monotonic() - started < 20


def test_an_unreadable_database_file_is_a_configuration_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, 5232, {"invito": {"database": "", "database_file": str(tmp_path / "missing.url")}})
    result = queue(config, "list")
    assert result.returncode == 2 and "[invito] database_file" in result.stderr and "missing.url" in result.stderr
