# SPDX-License-Identifier: GPL-3.0-or-later
"""The outbound spool: one file per iTIP message, written inside the storage write.

Two phases keep the spool and the stored events in step: ``prepare`` writes the file under ``tmp/``
(fsynced) before the event is stored; ``commit`` renames it into ``queue/`` once the event write
succeeded, ``discard`` removes it when the write failed. A committed change therefore always has its
messages and a rejected one never does. A message to 50 guests is one file (its calendar serialized once,
one fsync): the PUT that invites them stays cheap.

A kill between the event write and ``commit`` would store the event without its messages; the storage
layer's transaction journal (``invito.storage.transaction``) names both, so start-up recovery commits or
discards what a kill left in ``tmp/``.

The file keeps each recipient's delivery state (attempts, next try, last error and what it was about:
the relay's, or this recipient's or message's, see ``SpoolEntry.ready_at``; files written before that
``stage`` was kept stay readable, their wait taken for a relay outage's). The sender works on
:class:`SpoolEntry` values, one per (message, recipient): it rewrites a recipient's state by atomic
replace, so a restart resumes exactly where it stopped. Every final outcome (sent, refused, gave up) is
appended to ``outcomes/<day>.jsonl`` (:meth:`OutboundSpool.record`) BEFORE the recipient leaves the queue:
that log, not the client's event, is the record of routine progress, and a kill in between at worst sends
a message twice, never loses its outcome (a power cut can lose the log lines of the batch being sent,
which ``sync`` fsyncs at its end, before the queue's removals). A recipient the relay accepted is dropped from the file (deleted
when none is left); one that will never be reached moves to ``failed/<id>-<address>.json``, next to a
``.reason`` file saying why, where an admin can read it or move it back into ``queue/`` to try again.

This module alone reads and writes these files: ``invito queue`` lists, shows, retries and drops messages
through :class:`OutboundSpool`'s admin methods, under the same lock as the sender's updates.
"""
from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator

import icalendar

from invito.plugins import durable
from invito.plugins.itip import verbatim
from invito.plugins.itip.model import ITipMessage

logger = logging.getLogger("invito.imip")


# One event per queue folder and process: the storage layer's spool object and the sender's may differ.
_ARRIVED: dict[str, threading.Event] = {}
_ARRIVED_LOCK = threading.Lock()


@dataclass(frozen=True)
class SpoolEntry:
    """One recipient of one queued message, with that recipient's delivery state."""
    id: str                  # the message file's id
    method: str
    uid: str
    sender: str
    recipient: str
    ics: str
    created: float
    changes: tuple[str, ...] = ()  # what an update changed (time, location...), for the email body
    notes: tuple[tuple[str, str], ...] = ()  # for a user's notification: ("from", who really sent it)...
    attempts: int = 0        # delivery attempts that failed temporarily, for this recipient or message
    next_try: float = 0.0    # epoch seconds; 0: as soon as possible
    last_error: str = ""
    stage: str | None = ""   # what ``last_error`` was about (an ``smtp.Stage`` value); "": no failure yet;
                             # None: the file is older than this field, so the wait may be a relay outage's
    after_failure: bool = False  # requeued by an admin after failing: the event shows a 5.x to correct
    mail: bytes = b""        # FORWARD: the complete message to send as it is (``ics`` is then empty)

    @property
    def ready_at(self) -> float:
        """When the sender may try this recipient: its own backoff holds it only after a failure about
        itself (a recipient's or the message's 4xx). One held by the relay, or by an older version's
        backoff for a relay outage (which it did not tell from a 4xx), goes as soon as the relay takes mail."""
        return self.next_try if self.stage not in (None, RELAY_STAGE) else 0.0


FORWARD = "FORWARD"  # not iTIP: a guest's plain reply passed on to the organizer (see ``prepare_mail``)
RELAY_STAGE = "relay"  # ``smtp.Stage.RELAY.value``, spelled here so the spool does not depend on SMTP
_STATE = ("attempts", "next_try", "last_error", "stage")  # "stage" last: files from before it lack it
_NEW_STATE = {"attempts": 0, "next_try": 0.0, "last_error": "", "stage": ""}


class OutboundSpool:
    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._tmp = os.path.join(folder, "tmp")
        self.queue = os.path.join(folder, "queue")
        self.failed = os.path.join(folder, "failed")
        self.outcomes = os.path.join(folder, "outcomes")
        self._unsynced: set[str] = set()  # outcome logs written since the last ``sync``
        self.durable = True  # False while the storage layer defers syncing to one flush (deferred_sync)

    # -- the storage layer's side ------------------------------------------------------------------

    def prepare(self, message: ITipMessage, recipients: list[str], changes: tuple[str, ...] = (),
                notes: tuple[tuple[str, str], ...] = (), sources: tuple[str, ...] = ()) -> str:
        return self._write_prepared(itip_record(message, recipients, changes, notes, sources))

    def prepare_mail(self, uid: str, sender: str, recipient: str, mail: bytes) -> str:
        """A complete message (a guest's forwarded reply about event ``uid``, from ``sender``) queued like
        the iTIP ones: the same durability, retries and ``invito queue``."""
        return self._write_prepared(mail_record(uid, sender, recipient, mail))

    def _write_prepared(self, record: dict) -> str:
        os.makedirs(self._tmp, exist_ok=True)
        durable.write_new(os.path.join(self._tmp, record["id"] + ".json"), _encode(record), sync=self.durable)
        return record["id"]

    def enqueue(self, record: dict, *, after_failure: bool = False) -> str:
        """Queue a message that belongs to no storage write (an admin's retry; ``record`` from
        ``itip_record`` or ``mail_record``): straight into ``queue/`` by an atomic rename, never through
        ``tmp/``, whose leftovers start-up recovery discards."""
        if after_failure:
            record["after_failure"] = True
        os.makedirs(self.queue, exist_ok=True)
        durable.write_atomically(self._queued(record["id"]), _encode(record), sync=True, sync_folder=True,
                                 temporary=self._rewriting(record["id"]))
        self.arrived.set()
        return record["id"]

    def prepared(self) -> set[str]:
        """Ids waiting in ``tmp/`` for their storage write's commit (or, after a kill, for recovery)."""
        try:
            return {n[:-len(".json")] for n in os.listdir(self._tmp) if n.endswith(".json")}
        except FileNotFoundError:
            return set()

    def journal_folder(self) -> str:
        """Where the storage layer keeps its transaction journals, beside the prepared files they name."""
        os.makedirs(self._tmp, exist_ok=True)
        return self._tmp

    @property
    def arrived(self) -> threading.Event:
        """Set whenever messages are committed, so the sender in this process wakes at once."""
        return arrival_event(self.queue)

    def commit(self, ids: list[str]) -> None:
        if not ids:
            return
        os.makedirs(self.queue, exist_ok=True)
        for entry_id in ids:
            with contextlib.suppress(FileNotFoundError):  # recovery: renamed before the kill
                os.rename(os.path.join(self._tmp, entry_id + ".json"), self._queued(entry_id))
        if self.durable:
            durable.fsync_folder(self.queue)
        self.arrived.set()

    def discard(self, ids: list[str]) -> None:
        for entry_id in ids:
            try:
                os.remove(os.path.join(self._tmp, entry_id + ".json"))
            except FileNotFoundError:
                pass

    # -- the sender's side -------------------------------------------------------------------------

    def queued(self) -> list[SpoolEntry]:
        """Entries waiting to be sent, oldest message first. An unreadable file is moved to ``failed/``."""
        try:
            names = sorted(n for n in os.listdir(self.queue) if n.endswith(".json"))
        except FileNotFoundError:
            return []
        entries = []
        for name in names:
            entry_id = name[:-len(".json")]
            try:
                record = self._read(entry_id)
                entries.extend(entries_of(record))
            except FileNotFoundError:  # sent or moved aside meanwhile
                continue
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                reason = "unreadable spool file: %s" % e
                logger.error("outbound spool %s: %s", name, reason)
                self._move_aside(entry_id, entry_id, reason)
        return entries

    def due(self, now: float) -> list[SpoolEntry]:
        """Entries the sender may try at ``now``, oldest first (see ``SpoolEntry.ready_at``)."""
        return [entry for entry in self.queued() if entry.ready_at <= now]

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Excludes every other read-modify-write of queued and failed files, in any process: the sender's
        state updates and `invito queue` (which would otherwise bring back a message it just dropped, or
        lose a retry). New messages are new files: ``prepare`` and ``commit`` need no lock."""
        os.makedirs(self.folder, exist_ok=True)
        with open(os.path.join(self.folder, ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield

    def update(self, entry: SpoolEntry) -> None:
        """Persist one recipient's new delivery state: atomic replace, fsynced, so restarts resume."""
        with self.locked():
            try:
                record = self._read(entry.id)
            except FileNotFoundError:  # an admin dropped it meanwhile (`invito queue drop`)
                return
            record["recipients"][entry.recipient] = {key: getattr(entry, key) for key in _STATE}
            self._rewrite(record, sync=True)

    def record(self, entry: SpoolEntry, status: str, detail: str) -> None:
        """Append a recipient's final outcome to today's outcome log: called before the recipient leaves
        the queue, so after a kill at any point the log or the queue tells what became of it. Written
        through at once (a killed process loses nothing); fsynced by ``sync``, once per batch before the
        queue's removals, as fsyncing 500 lines one by one took longer than sending the mail."""
        os.makedirs(self.outcomes, exist_ok=True)
        now = time.time()
        line = _encode({"time": now, "id": entry.id, "method": entry.method, "uid": entry.uid,
                        "sender": entry.sender, "recipient": entry.recipient, "status": status,
                        "detail": detail}) + b"\n"
        path = os.path.join(self.outcomes, time.strftime("%Y-%m-%d", time.gmtime(now)) + ".jsonl")
        durable.append(path, line, sync=False)
        self._unsynced.add(path)

    def recorded(self) -> list[dict]:
        """Every outcome in the log, oldest first; a line torn by a kill is skipped."""
        try:
            names = sorted(n for n in os.listdir(self.outcomes) if n.endswith(".jsonl"))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            with open(os.path.join(self.outcomes, name), "rb") as f:
                for line in f:
                    with contextlib.suppress(ValueError):
                        found.append(json.loads(line))
        return found

    def prune(self, keep_days: float, now: float) -> None:
        """Forget outcome logs older than ``keep_days``: the log is for recent questions, not an archive."""
        cutoff = time.strftime("%Y-%m-%d", time.gmtime(now - keep_days * 86400))
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.outcomes):
                if name.endswith(".jsonl") and name[:-len(".jsonl")] < cutoff:
                    os.remove(os.path.join(self.outcomes, name))

    def remove(self, entry: SpoolEntry) -> None:
        """Forget a recipient the relay accepted (its outcome ``record``ed first). Not synced one by one:
        ``sync`` once after a batch."""
        with self.locked():
            try:
                record = self._read(entry.id)
            except FileNotFoundError:
                return
            record["recipients"].pop(entry.recipient, None)
            self._rewrite(record, sync=False)

    def together(self, work: Callable[[], None]) -> None:
        """``work`` writes the organizers' statuses, then records outcomes and removes recipients: here
        simply one after the other (the status write takes the storage lock itself); a kill between sends
        those messages again and writes their status again."""
        work()

    def sync(self) -> None:
        """The outcomes recorded since the last call, then the queue's removals, onto the disk."""
        unsynced, self._unsynced = self._unsynced, set()
        for path in sorted(unsynced):
            durable.fsync_file(path)
        if os.path.isdir(self.queue):
            durable.fsync_folder(self.queue)

    def fail(self, entry: SpoolEntry, reason: str) -> None:
        """Move a recipient that will never be reached to ``failed/``, with a ``.reason`` file beside it."""
        with self.locked():
            try:
                record = self._read(entry.id)
            except FileNotFoundError:
                return
            single = dict(record, recipients={entry.recipient: record["recipients"].get(entry.recipient, _NEW_STATE)})
            failed = failed_id(entry.id, entry.recipient)
            os.makedirs(self.failed, exist_ok=True)
            # The reason first: a crash in between leaves the recipient queued (tried again), never reasonless.
            durable.write_new(self._failed(failed, ".reason"), (reason + "\n").encode("utf-8"), sync=True)
            durable.write_new(self._failed(failed), _encode(single), sync=True)
            durable.fsync_folder(self.failed)
            record["recipients"].pop(entry.recipient, None)
            self._rewrite(record, sync=True)

    # -- the admin's side (`invito queue`): call these under ``locked`` --------------------------------

    def waiting_ids(self) -> set[str]:
        """The ids of the messages in ``queue/``."""
        return stems(self.queue, ".json")

    def failed_ids(self) -> set[str]:
        """The ids of the recipients in ``failed/`` (``<message id>-<address>``)."""
        return stems(self.failed, ".json")

    def failed_messages(self) -> list["FailedMessage"]:
        """Every failed recipient, by id; one whose file is unreadable is still listed, with what it does
        not say left unknown."""
        found = []
        for failed_id in sorted(self.failed_ids()):
            with contextlib.suppress(FileNotFoundError):  # retried or dropped meanwhile
                found.append(FailedMessage(failed_id, _summary(read_record_or_none(self._failed(failed_id))),
                                           self.failed_reason(failed_id)))
        return found

    def failed_reason(self, failed_id: str) -> str:
        """Why the sender gave up on a failed recipient: the first line of its ``.reason`` file."""
        return first_line(self._failed(failed_id, ".reason"))

    def read_waiting(self, entry_id: str) -> list[SpoolEntry]:
        """A waiting message's recipients; raises ``UnreadableFile`` for a damaged file."""
        return self._entries(self._queued(entry_id))

    def read_failed(self, failed_id: str) -> list[SpoolEntry]:
        """A failed recipient's message (one entry); raises ``UnreadableFile`` for a damaged file."""
        return self._entries(self._failed(failed_id))

    def send_now(self, entry_id: str) -> list[str]:
        """A waiting message's next try becomes "now" for every recipient (attempts and last error stay);
        returns the recipients."""
        path = self._queued(entry_id)
        try:
            record = read_record(path)
            for state in record["recipients"].values():
                state["next_try"] = 0.0
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise UnreadableFile(path, e) from e
        self._rewrite(record, sync=True)
        return list(record["recipients"])

    def requeue(self, failed_id: str) -> tuple[str, str]:
        """A failed recipient goes back into the queue as a new message, with fresh attempts and give-up
        age; returns (the new message's id, the recipient)."""
        path = self._failed(failed_id)
        try:
            [entry] = entries_of(read_record(path))
            new = requeued(entry)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise UnreadableFile(path, e) from e
        new_id = self.enqueue(new, after_failure=True)
        remove_files(path, self._failed(failed_id, ".reason"))
        durable.fsync_folder(self.failed)
        return new_id, entry.recipient

    def drop(self, entry_id: str, status: str, detail: str) -> tuple["MessageSummary", list[SpoolEntry]]:
        """Forget a waiting message, its recipients' outcome (``status``, ``detail``) recorded first;
        returns what it was and its recipients (none when the file was damaged)."""
        path = self._queued(entry_id)
        record = read_record_or_none(path)  # read once: for the description and for the recipients
        entries: list[SpoolEntry] = []
        with contextlib.suppress(KeyError, TypeError, AttributeError):  # a damaged record names no guests
            entries = entries_of(record) if record is not None else []
        for entry in entries:
            self.record(entry, status, detail)
        self.sync()
        os.remove(path)
        durable.fsync_folder(self.queue)
        return _summary(record), entries

    def drop_failed(self, failed_id: str) -> "MessageSummary":
        """Forget a failed recipient; returns what it was."""
        path = self._failed(failed_id)
        summary = _summary(read_record_or_none(path))
        remove_files(path, self._failed(failed_id, ".reason"))
        return summary

    def _entries(self, path: str) -> list[SpoolEntry]:
        try:
            entries = entries_of(read_record(path))
            if not entries:
                raise ValueError("no recipients")
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise UnreadableFile(path, e) from e
        return entries

    def _failed(self, failed_id: str, suffix: str = ".json") -> str:
        return os.path.join(self.failed, failed_id + suffix)

    def _read(self, entry_id: str) -> dict:
        with open(self._queued(entry_id), encoding="utf-8") as f:
            record = json.load(f)
        if not isinstance(record.get("recipients"), dict):
            raise ValueError("no recipients")
        return record

    def _rewrite(self, record: dict, *, sync: bool) -> None:
        path = self._queued(record["id"])
        if not record["recipients"]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        else:
            durable.write_atomically(path, _encode(record), sync=sync, temporary=self._rewriting(record["id"]))
        if sync:
            durable.fsync_folder(self.queue)

    def _move_aside(self, entry_id: str, failed_id: str, reason: str) -> None:
        os.makedirs(self.failed, exist_ok=True)
        durable.write_new(self._failed(failed_id, ".reason"), (reason + "\n").encode("utf-8"), sync=True)
        with contextlib.suppress(FileNotFoundError):
            os.rename(self._queued(entry_id), self._failed(failed_id))
        durable.fsync_folder(self.failed)
        durable.fsync_folder(self.queue)

    def _queued(self, entry_id: str) -> str:
        return os.path.join(self.queue, entry_id + ".json")

    def _rewriting(self, entry_id: str) -> str:
        """The one temporary file a rewrite of a queued message goes through (under ``locked``): not
        ``*.json``, so never listed as an entry."""
        return os.path.join(self.queue, ".%s.tmp" % entry_id)


class UnreadableFile(ValueError):
    """A spool file that is not what its format says (damaged, hand-edited); the admin may drop it."""

    def __init__(self, path: str, problem: BaseException) -> None:
        super().__init__(f"{path} is not a readable spool file ({problem})")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class MessageSummary:
    """What a message file says it is, as far as it can be read; None: not said (or unreadable)."""
    recipients: tuple[str, ...] | None
    method: str | None
    uid: str | None


@dataclass(frozen=True)
class FailedMessage:
    """A recipient the sender gave up on, as ``failed/`` keeps it."""
    id: str
    message: MessageSummary
    reason: str


def entries_of(record: dict) -> list[SpoolEntry]:
    """A queued message file's recipients, one entry each."""
    common = {key: record[key] for key in ("id", "method", "uid", "sender", "ics", "created")}
    return [SpoolEntry(**common, recipient=recipient, changes=tuple(record.get("changes", ())),
                       notes=tuple((str(k), str(v)) for k, v in record.get("notes", ())),
                       after_failure=bool(record.get("after_failure", False)),
                       mail=base64.b64decode(record.get("mail", "")),
                       **{key: state[key] for key in _STATE[:-1]}, stage=state.get("stage"))
            for recipient, state in record["recipients"].items()]


def itip_record(message: ITipMessage, recipients: list[str], changes: tuple[str, ...] = (),
                notes: tuple[tuple[str, str], ...] = (), sources: tuple[str, ...] = ()) -> dict:
    """A new message file for ``message`` to ``recipients``, each with fresh delivery state; its calendar
    written with the lines of ``sources`` (the texts it was made from: the organizer's client text) that
    it did not change, so that the guest receives the client's values, not icalendar's rewriting."""
    ics = verbatim.render(message.calendar, sources) if sources else message.calendar.to_ical().decode("utf-8")
    return {"id": _new_id(), "method": message.method, "uid": message.uid, "sender": message.sender,
            "ics": ics, "created": time.time(),
            "changes": list(changes), "notes": [list(n) for n in notes],
            "recipients": {r: dict(_NEW_STATE) for r in recipients}}


def requeued(entry: SpoolEntry) -> dict:
    """A new message for a failed recipient an admin retries: fresh id, attempts and give-up age; its
    calendar written as it was (its own text is the source of every line it keeps)."""
    if entry.method == FORWARD:  # a guest's forwarded plain reply: the message itself
        return mail_record(entry.uid, entry.sender, entry.recipient, entry.mail)
    message = ITipMessage(entry.method, entry.uid, entry.sender, (entry.recipient,),
                          icalendar.Calendar.from_ical(entry.ics))
    return itip_record(message, [entry.recipient], entry.changes, entry.notes, (entry.ics,))


def mail_record(uid: str, sender: str, recipient: str, mail: bytes) -> dict:
    """A new file for a complete message (FORWARD) about event ``uid``."""
    return {"id": _new_id(), "method": FORWARD, "uid": uid, "sender": sender, "ics": "", "created": time.time(),
            "mail": base64.b64encode(mail).decode("ascii"), "recipients": {recipient: dict(_NEW_STATE)}}


def first_line(path: str) -> str:
    """The first non-blank line of a ``.reason`` file, for the admin."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return next((line.strip() for line in f if line.strip()), "(empty reason file)")
    except FileNotFoundError:
        return "(no reason file)"


def stems(folder: str, *suffixes: str) -> set[str]:
    """The names in ``folder`` ending in one of ``suffixes``, without it; hidden (temporary) files left out."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return set()
    return {name[:-len(suffix)] for name in names for suffix in suffixes
            if name.endswith(suffix) and not name.startswith(".")}


def read_record(path: str) -> dict:
    """The JSON object in ``path``; ValueError when it holds something else."""
    with open(path, "rb") as f:
        record = json.loads(f.read())
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds no JSON object")
    return record


def read_record_or_none(path: str) -> dict | None:
    """The JSON object in ``path``; None if it is unreadable. FileNotFoundError passes: the caller decides."""
    try:
        return read_record(path)
    except ValueError:
        return None


def remove_files(*paths: str) -> None:
    """Remove what exists of ``paths``."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _summary(record: dict | None) -> MessageSummary:
    if record is None:
        return MessageSummary(None, None, None)
    recipients = record.get("recipients")
    return MessageSummary(tuple(map(str, recipients)) if isinstance(recipients, dict) else None,
                          str(record["method"]) if "method" in record else None,
                          str(record["uid"]) if "uid" in record else None)


def _new_id() -> str:
    return "%d-%s" % (time.time_ns(), uuid.uuid4().hex)


def failed_id(entry_id: str, recipient: str) -> str:
    """The id of message ``entry_id``'s failed ``recipient``, as the admin names it (and ``failed/`` its file)."""
    return "%s-%s" % (entry_id, _file_safe(recipient))


def _file_safe(recipient: str) -> str:
    """``mailto:Guest@x.org`` → ``guest@x.org``: readable in failed/, never a path."""
    address = recipient[len("mailto:"):] if recipient.lower().startswith("mailto:") else recipient
    return re.sub(r"[^a-z0-9@._+-]", "_", address.lower())[:200]


def _encode(record: dict) -> bytes:
    return json.dumps(record).encode("utf-8")


def arrival_event(queue: str) -> threading.Event:
    """The one event per queue folder in this process, set when something arrives in it."""
    with _ARRIVED_LOCK:
        return _ARRIVED.setdefault(os.path.abspath(queue), threading.Event())


def out_of_space(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a full disk or quota: nothing wrong with what was being
    written, which must be kept and tried again once there is room, never refused or set aside."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False

