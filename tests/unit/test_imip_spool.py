# SPDX-License-Identifier: GPL-3.0-or-later
"""The outbound spool and the sender's retry policy, with a scripted relay (no network)."""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import icalendar
import pytest

from invito.plugins.imip.sender import Sender
from invito.plugins.imip.smtp import Delivery, Outcome, SmtpSettings, Stage
from invito.plugins.imip.spool import OutboundSpool, SpoolEntry
from invito.plugins.itip import ITipMessage

SETTINGS = SmtpSettings(host="relay.example.com", sender="invito@cal.example.com")
GREYLISTED = Outcome(Delivery.TEMPORARY, "451 4.7.1 greylisted", Stage.RECIPIENT, 451)
RELAY_DOWN = Outcome(Delivery.TEMPORARY, "cannot reach relay.example.com:587: Connection refused", Stage.RELAY)
SENT = Outcome(Delivery.SENT, "accepted by relay.example.com:587")


class ScriptedRelay:
    """Answers each send with the next scripted outcome (the last one repeats) and records the recipients."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes = list(outcomes)
        self.sent_to: list[str] = []
        self.closed = 0

    def send(self, msg: EmailMessage, from_addr: str, to_addr: str) -> Outcome:
        self.sent_to.append(to_addr)
        return self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]

    def close(self) -> None:
        self.closed += 1


def build(entry: SpoolEntry) -> EmailMessage:
    if entry.uid.startswith("broken"):
        raise ValueError("no VEVENT in the calendar")
    msg = EmailMessage()
    msg["Subject"] = entry.uid
    msg.set_content(entry.ics)
    return msg


def queue(spool: OutboundSpool, uid: str, guest: str = "guest@partner.example.org") -> str:
    cal = icalendar.Calendar.from_ical("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nMETHOD:REQUEST\r\n"
                                       f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20300101T000000Z\r\n"
                                       "END:VEVENT\r\nEND:VCALENDAR\r\n")
    message = ITipMessage("REQUEST", uid, "mailto:alice@example.com", (f"mailto:{guest}",), cal)
    entry_id = spool.prepare(message, [f"mailto:{guest}"])
    spool.commit([entry_id])
    return entry_id


class Outcomes(list):
    def __call__(self, entry: SpoolEntry, status: str, detail: str) -> None:
        self.append((entry.uid, status, detail))


@pytest.fixture
def spool(tmp_path: Path) -> OutboundSpool:
    return OutboundSpool(str(tmp_path / "outbound"))


def sender(spool: OutboundSpool, relay: ScriptedRelay, outcomes: Outcomes | None = None,
           settings: SmtpSettings = SETTINGS, **options: float) -> Sender:
    return Sender(OutboundSpool(spool.folder), settings, build, outcomes if outcomes is not None else Outcomes(),
                  transport=relay, **options)


def reason(spool: OutboundSpool, entry_id: str) -> str:
    return (Path(spool.failed) / f"{entry_id}.reason").read_text()


def test_prepared_entries_wait_for_commit_and_state_survives_a_new_spool_object(spool: OutboundSpool) -> None:
    entry_id = queue(spool, "m1")
    discarded = spool.prepare(ITipMessage("CANCEL", "m2", "mailto:alice@example.com", (), icalendar.Calendar()),
                              ["mailto:x@partner.example.org"])
    spool.discard([discarded])
    [entry] = spool.queued()
    assert (entry.id, entry.attempts, entry.next_try, entry.last_error) == (entry_id, 0, 0.0, "")
    spool.update(dataclasses.replace(entry, attempts=3, next_try=1234.5, last_error="451 later"))
    [reread] = OutboundSpool(spool.folder).queued()
    assert (reread.attempts, reread.next_try, reread.last_error, reread.ics) == (3, 1234.5, "451 later", entry.ics)
    assert sorted(p.name for p in Path(spool.queue).iterdir()) == [f"{entry_id}.json"]  # no temporary left
    assert spool.due(1234.0) == [] and spool.due(1234.5) == [reread]


def test_temporary_failures_back_off_exponentially_up_to_the_cap(spool: OutboundSpool) -> None:
    queue(spool, "m1")
    outcomes = Outcomes()
    s = sender(spool, ScriptedRelay(GREYLISTED), outcomes)
    now = spool.queued()[0].created
    delays = []
    for _ in range(8):
        assert s.process_due(now) == 0
        [entry] = spool.queued()
        delays.append(entry.next_try - now)
        assert s.process_due(entry.next_try - 1) == 0  # not due yet: nothing is tried
        now = entry.next_try
    assert [round(d) for d in delays] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert (entry.attempts, entry.last_error) == (8, "451 4.7.1 greylisted")
    assert outcomes == []  # still pending: the organizer's copy keeps 1.0


def test_a_restarted_sender_resumes_where_the_last_one_stopped(spool: OutboundSpool) -> None:
    queue(spool, "m1")
    now = spool.queued()[0].created
    sender(spool, ScriptedRelay(GREYLISTED)).process_due(now)
    relay, outcomes = ScriptedRelay(GREYLISTED, SENT), Outcomes()
    restarted = sender(spool, relay, outcomes)  # new objects on the same folder, as after a restart
    assert restarted.process_due(now + 59) == 0 and relay.sent_to == []
    restarted.process_due(now + 60)
    [entry] = spool.queued()
    assert (entry.attempts, entry.next_try) == (2, now + 60 + 120)  # the count went on: 2nd delay
    assert restarted.process_due(entry.next_try) == 1
    assert spool.queued() == [] and outcomes == [("m1", "1.1", "accepted by relay.example.com:587")]
    assert relay.sent_to == ["guest@partner.example.org"] * 2  # mailto: is not part of the mailbox


def test_gives_up_after_the_give_up_age(spool: OutboundSpool) -> None:
    entry_id = queue(spool, "m1")
    created = spool.queued()[0].created
    outcomes = Outcomes()
    s = sender(spool, ScriptedRelay(GREYLISTED), outcomes, give_up=86400)
    s.process_due(created)
    s.process_due(created + 86399)
    [entry] = spool.queued()
    assert outcomes == [] and entry.next_try > created + 86400
    s.process_due(entry.next_try)  # the first try past the give-up age
    assert spool.queued() == []
    assert outcomes == [("m1", "5.1", "gave up after 3 attempts: 451 4.7.1 greylisted")]
    assert reason(spool, f"{entry_id}-guest@partner.example.org") == "gave up after 3 attempts: 451 4.7.1 greylisted\n"
    assert json.loads((Path(spool.failed) / f"{entry_id}-guest@partner.example.org.json").read_text())["uid"] == "m1"


@pytest.mark.parametrize("outcome,status", [
    (Outcome(Delivery.PERMANENT, "550 5.1.1 no such user", Stage.RECIPIENT, 550), "5.2"),
    (Outcome(Delivery.PERMANENT, "550 5.7.1 relaying denied", Stage.RECIPIENT, 550), "5.3"),
    (Outcome(Delivery.PERMANENT, "554 5.6.0 message content refused", Stage.MESSAGE, 554), "5.3"),
])
def test_permanent_refusals_fail_at_once_with_a_schedule_status(spool: OutboundSpool, outcome: Outcome,
                                                                 status: str) -> None:
    entry_id = queue(spool, "m1")
    outcomes = Outcomes()
    assert sender(spool, ScriptedRelay(outcome), outcomes).process_due(spool.queued()[0].created) == 0
    assert outcomes == [("m1", status, outcome.detail)]
    assert spool.queued() == [] and reason(spool, f"{entry_id}-guest@partner.example.org") == outcome.detail + "\n"


def test_an_entry_that_cannot_be_built_is_moved_aside_and_the_rest_flow(
        spool: OutboundSpool, caplog: pytest.LogCaptureFixture) -> None:
    broken = queue(spool, "broken-1", guest="a@partner.example.org")
    queue(spool, "m2", guest="b@partner.example.org")
    relay, outcomes = ScriptedRelay(SENT), Outcomes()
    with caplog.at_level(logging.ERROR, logger="invito.imip"):
        assert sender(spool, relay, outcomes).process_due(spool.queued()[-1].created) == 1
    assert relay.sent_to == ["b@partner.example.org"]
    assert [o[:2] for o in outcomes] == [("broken-1", "5.1"), ("m2", "1.1")]
    assert "no VEVENT in the calendar" in reason(spool, f"{broken}-a@partner.example.org")
    assert (Path(spool.failed) / f"{broken}-a@partner.example.org.json").exists() and spool.queued() == []
    assert "REQUEST uid=broken-1 to=mailto:a@partner.example.org: failed" in caplog.text


def test_an_unreadable_spool_file_is_moved_aside(spool: OutboundSpool) -> None:
    queue(spool, "m1")
    Path(spool.queue, "0-garbage.json").write_text("{not json")
    assert [e.uid for e in spool.queued()] == ["m1"]
    assert "unreadable spool file" in reason(spool, "0-garbage")


def test_a_failing_callback_does_not_stop_the_batch(spool: OutboundSpool) -> None:
    queue(spool, "m1")
    queue(spool, "m2")

    def on_outcome(entry: SpoolEntry, status: str, detail: str) -> None:
        raise OSError("storage is read-only")

    s = Sender(spool, SETTINGS, build, on_outcome, transport=ScriptedRelay(SENT))
    assert s.process_due(spool.queued()[-1].created) == 2
    assert spool.queued() == []  # sent is sent: never mailed twice


def test_an_unusable_relay_defers_the_batch_after_one_try_and_costs_no_attempt(spool: OutboundSpool) -> None:
    for uid in ("m1", "m2", "m3"):
        queue(spool, uid)
    relay = ScriptedRelay(RELAY_DOWN)
    now = spool.queued()[-1].created
    s = sender(spool, relay)
    assert s.process_due(now) == 0
    assert len(relay.sent_to) == 1 and relay.closed == 1
    # What `invito queue list` shows: why they wait; their own attempts and next try are untouched.
    assert [(e.attempts, e.next_try, e.last_error, e.stage) for e in OutboundSpool(spool.folder).queued()] == [
        (0, 0.0, RELAY_DOWN.detail, "relay")] * 3


def probes(spool: OutboundSpool, relay: ScriptedRelay, s: Sender, start: float, until: float) -> list[float]:
    """The times, stepping a second from ``start`` to ``until``, at which ``s`` tried the relay."""
    tried = []
    for t in range(int(until - start) + 1):
        before = len(relay.sent_to)
        s.process_due(start + t)
        if len(relay.sent_to) > before:
            tried.append(float(t))
    return tried


def test_while_the_relay_is_down_it_is_probed_every_probe_interval_with_one_warning(
        spool: OutboundSpool, caplog: pytest.LogCaptureFixture) -> None:
    for uid in ("m1", "m2"):
        queue(spool, uid)
    relay = ScriptedRelay(RELAY_DOWN)
    s = sender(spool, relay, probe_every=15)
    start = spool.queued()[-1].created
    with caplog.at_level(logging.INFO, logger="invito.imip"):
        assert probes(spool, relay, s, start, start + 60) == [0, 15, 30, 45, 60]
    assert relay.sent_to == ["guest@partner.example.org"] * 5  # each probe is one try of the oldest
    assert [r.getMessage() for r in caplog.records] == [
        "relay relay.example.com:587 unreachable: cannot reach relay.example.com:587: Connection refused; "
        "2 messages wait; probing every 15 s"]
    assert [(e.attempts, e.next_try) for e in spool.queued()] == [(0, 0.0)] * 2


def test_a_new_reason_while_the_relay_is_down_is_said_once_more(
        spool: OutboundSpool, caplog: pytest.LogCaptureFixture) -> None:
    """The admin fixed the network, and now the login fails: that is news, a repeat of it is not."""
    queue(spool, "m1")
    login = Outcome(Delivery.TEMPORARY, "relay.example.com:587 refused the login as invito: 535 5.7.8 bad "
                    "credentials", Stage.RELAY, 535)
    relay = ScriptedRelay(RELAY_DOWN, login)
    s = sender(spool, relay, probe_every=15)
    start = spool.queued()[0].created
    with caplog.at_level(logging.WARNING, logger="invito.imip"):
        assert probes(spool, relay, s, start, start + 45) == [0, 15, 30, 45]
    assert [r.getMessage().split(" unreachable: ")[1].split(";")[0] for r in caplog.records] == [
        RELAY_DOWN.detail, login.detail]
    [entry] = spool.queued()
    assert (entry.attempts, entry.last_error) == (0, login.detail)


def test_when_the_relay_answers_everything_waiting_goes_at_once_oldest_first(
        spool: OutboundSpool, caplog: pytest.LogCaptureFixture) -> None:
    queue(spool, "m1", guest="a@partner.example.org")
    greylisted = queue(spool, "m2", guest="b@partner.example.org")
    queue(spool, "m3", guest="c@partner.example.org")
    start = spool.queued()[-1].created
    s = sender(spool, ScriptedRelay(SENT, GREYLISTED, SENT), probe_every=15)
    s.process_due(start)  # m2's guest is greylisted: its own backoff of 60 s
    [m2] = spool.queued()
    assert (m2.id, m2.next_try, m2.stage) == (greylisted, start + 60, "recipient")
    for uid in ("m4", "m5"):
        queue(spool, uid, guest=f"{uid}@partner.example.org")
    relay, outcomes = ScriptedRelay(RELAY_DOWN, RELAY_DOWN, SENT), Outcomes()
    s.transport, s.on_outcome = relay, outcomes
    s.process_due(start + 1)  # the relay went down: m4 tried, m5 held
    s.process_due(start + 16)  # a probe: still down
    with caplog.at_level(logging.INFO, logger="invito.imip"):
        assert s.process_due(start + 31) == 2  # back: both go now, m2's guest waits for its own time
    assert relay.sent_to == ["m4@partner.example.org"] * 3 + ["m5@partner.example.org"]
    assert [o[:2] for o in outcomes] == [("m4", "1.1"), ("m5", "1.1")]
    assert "relay relay.example.com:587 back; sending 2 waiting messages" in caplog.text
    [left] = spool.queued()
    assert (left.id, left.attempts, left.next_try, left.last_error) == (greylisted, 1, start + 60, GREYLISTED.detail)


def test_a_recipients_4xx_during_a_probe_means_the_relay_is_back(spool: OutboundSpool) -> None:
    queue(spool, "m1", guest="a@partner.example.org")
    queue(spool, "m2", guest="b@partner.example.org")
    now = spool.queued()[-1].created
    relay = ScriptedRelay(RELAY_DOWN, GREYLISTED, SENT)
    s = sender(spool, relay, probe_every=15)
    s.process_due(now)
    assert s.process_due(now + 15) == 1 and s.outage is None
    [left] = spool.queued()
    assert (left.uid, left.attempts, left.next_try) == ("m1", 1, now + 15 + 60)


def test_at_start_a_relay_outages_old_backoff_is_dropped_and_a_4xx_backoff_kept(spool: OutboundSpool) -> None:
    """A queue left by a run that saw the relay down, and by the version before, which pushed every
    message's next try back for a relay outage and did not record why."""
    queue(spool, "m1", guest="a@partner.example.org")
    queue(spool, "m2", guest="b@partner.example.org")
    queue(spool, "m3", guest="c@partner.example.org")
    now = spool.queued()[-1].created
    a, b, c = spool.queued()
    spool.update(dataclasses.replace(a, attempts=3, next_try=now + 3600, last_error=RELAY_DOWN.detail, stage="relay"))
    spool.update(dataclasses.replace(b, attempts=2, next_try=now + 3600, last_error=GREYLISTED.detail,
                                     stage="recipient"))
    older = json.loads(Path(spool.queue, f"{c.id}.json").read_text())
    older["recipients"]["mailto:c@partner.example.org"] = {"attempts": 7, "next_try": now + 3600,
                                                           "last_error": RELAY_DOWN.detail}
    Path(spool.queue, f"{c.id}.json").write_text(json.dumps(older))
    relay = ScriptedRelay(SENT)
    assert sender(spool, relay).process_due(now) == 2  # a new sender: a restart
    assert relay.sent_to == ["a@partner.example.org", "c@partner.example.org"]
    [left] = spool.queued()
    assert (left.uid, left.next_try) == ("m2", now + 3600)


def test_an_older_versions_relay_backoff_shows_as_now_once_the_relay_holds_it(spool: OutboundSpool) -> None:
    entry_id = queue(spool, "m1")
    now = spool.queued()[0].created
    older = json.loads(Path(spool.queue, f"{entry_id}.json").read_text())
    older["recipients"]["mailto:guest@partner.example.org"] = {"attempts": 7, "next_try": now + 3600,
                                                               "last_error": "451 4.3.0 try later"}
    Path(spool.queue, f"{entry_id}.json").write_text(json.dumps(older))
    sender(spool, ScriptedRelay(RELAY_DOWN)).process_due(now)
    [entry] = spool.queued()
    assert (entry.attempts, entry.next_try, entry.last_error, entry.stage) == (7, 0.0, RELAY_DOWN.detail, "relay")


def test_a_relay_down_past_the_give_up_age_fails_the_messages_with_5_1(spool: OutboundSpool) -> None:
    entry_id = queue(spool, "m1")
    queue(spool, "m2")
    created = spool.queued()[-1].created
    outcomes = Outcomes()
    s = sender(spool, ScriptedRelay(RELAY_DOWN), outcomes, give_up=86400, probe_every=15)
    s.process_due(created)
    s.process_due(created + 86399)
    assert outcomes == [] and len(spool.queued()) == 2
    s.process_due(created + 86400)  # before the next probe: nothing happens
    assert outcomes == []
    s.process_due(created + 86399 + 15)  # the first probe past the give-up age
    assert spool.queued() == []
    assert [o[:2] for o in outcomes] == [("m1", "5.1"), ("m2", "5.1")]
    assert reason(spool, f"{entry_id}-guest@partner.example.org") == f"gave up after 1 day: {RELAY_DOWN.detail}\n"


def test_the_sender_sleeps_until_the_next_probe_not_the_next_entry(spool: OutboundSpool) -> None:
    queue(spool, "m1")
    now = spool.queued()[0].created
    s = sender(spool, ScriptedRelay(RELAY_DOWN), probe_every=15)
    assert s._until_next(now) == 0.0  # nothing tried yet: at once
    s.process_due(now)
    assert s._until_next(now + 5) == pytest.approx(10.0)
    [entry] = spool.queued()
    spool.update(dataclasses.replace(entry, next_try=now + 100, stage="recipient"))  # its own backoff is later
    assert s._until_next(now + 5) == pytest.approx(95.0)


def test_without_a_relay_mail_waits_and_the_admin_is_told_once(
        spool: OutboundSpool, caplog: pytest.LogCaptureFixture) -> None:
    queue(spool, "m1")
    relay = ScriptedRelay(SENT)
    s = sender(spool, relay, settings=SmtpSettings(sender="invito@cal.example.com"), warn_every=600)
    now = spool.queued()[0].created
    with caplog.at_level(logging.WARNING, logger="invito.imip"):
        for t in (now, now + 1, now + 700):
            assert s.process_due(t) == 0
        queue(spool, "m2")
        s.process_due(now + 701)  # new mail, but a reminder went out less than 600 s ago
        s.process_due(now + 1301)
        s.process_due(now + 5000)  # nothing new since the last reminder
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "[smtp] host is empty: 1 invitation(s) wait" in warnings[0] and "sender" in warnings[0]
    assert "2 invitation(s)" in warnings[1]
    assert relay.sent_to == [] and len(spool.queued()) == 2


def test_one_file_per_message_with_state_per_recipient(spool: OutboundSpool) -> None:
    """A message to several guests is one file; each guest's delivery state is its own."""
    message = ITipMessage("REQUEST", "m9", "mailto:alice@example.com", (), icalendar.Calendar())
    entry_id = spool.prepare(message, ["mailto:a@x.org", "mailto:b@x.org", "mailto:c@x.org"], ("time",))
    spool.commit([entry_id])
    a, b, c = spool.queued()
    assert [e.recipient for e in (a, b, c)] == ["mailto:a@x.org", "mailto:b@x.org", "mailto:c@x.org"]
    assert a.changes == ("time",)
    spool.remove(a)
    spool.update(dataclasses.replace(b, attempts=1, next_try=99.0, last_error="451 later"))
    spool.fail(c, "550 no such user")
    [left] = spool.queued()
    assert (left.recipient, left.attempts, left.last_error) == ("mailto:b@x.org", 1, "451 later")
    assert reason(spool, f"{entry_id}-c@x.org") == "550 no such user\n"
    spool.remove(left)
    assert spool.queued() == [] and list(Path(spool.queue).iterdir()) == []


def test_the_running_sender_notices_a_retry_made_by_another_process(spool: OutboundSpool) -> None:
    """`invito queue retry` runs in its own process: it cannot wake the sender, but it changes the queue."""
    queue(spool, "m1")
    [entry] = spool.queued()
    spool.update(dataclasses.replace(entry, attempts=5, next_try=entry.created + 3000, last_error="451 later"))
    relay = ScriptedRelay(SENT)
    stop, nobody_sets_this = threading.Event(), threading.Event()
    worker = threading.Thread(target=sender(spool, relay).run, args=(stop, nobody_sets_this))
    worker.start()
    try:
        time.sleep(0.3)
        assert relay.sent_to == []  # due in 50 minutes
        [entry] = OutboundSpool(spool.folder).queued()
        OutboundSpool(spool.folder).update(dataclasses.replace(entry, next_try=0))  # what `retry` does
        deadline = time.monotonic() + 5
        while not relay.sent_to:
            assert time.monotonic() < deadline, "the sender slept through the retry"
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(5)
    assert len(relay.sent_to) == 1
