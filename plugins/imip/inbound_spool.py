# SPDX-License-Identifier: GPL-3.0-or-later
"""The inbound spool: every message the listener accepted, on disk before the sender hears "250".

An entry is two files in ``queue/``: ``<id>.eml`` (the message exactly as received) and ``<id>.json`` (its
envelope). Both are written and fsynced under ``tmp/`` and renamed into ``queue/`` message first, envelope
last, so an entry exists exactly when its ``.json`` does: a crash at any point leaves either a complete
entry or leftovers that nobody acknowledged (the sending server got no reply and sends again), which
``pending`` ignores and, once they are clearly abandoned, removes. A write that fails (a full disk)
removes its own partial files at once, so they never crowd out the next message.

``done`` removes the envelope first, then the message. It does not fsync: after a power cut the worst
case is a message processed twice, which applying an iTIP reply tolerates. ``quarantine`` moves an entry
that cannot be processed to ``quarantine/`` with a ``.reason`` file an admin can read; nothing there is
ever deleted by Invito on its own: ``invito queue`` lists, shows, releases and drops quarantined entries
through this class's admin methods, so this module alone knows the files.

A message that crashes or hangs its processing would otherwise be tried again after every restart. So
``start`` counts, in ``<id>.attempts`` beside the entry, the processing runs that began and never reached
``finish``; that file is written before processing begins, so a crash, a kill or a restart of a hung
server counts, and the processor sets the message aside once the count reaches ``MAX_UNFINISHED``. It is
not fsynced: a process crash keeps it (the kernel has it), and a power cut at worst forgets one attempt.

An answer given on the RSVP page and refused there is no mail: ``set_aside_answer`` keeps it in
``quarantine/`` as what it is, one record ``<id>.json`` (the answer's calendar text, who gave it for which
event, the link's token by its tag, the browser's address; no ``.eml``) beside its ``.reason``. It reads
back through ``quarantined_answer``; released into ``queue/``, it is an :class:`InboundEntry` whose
``answer`` is set, processed again like any entry there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass

from invito.plugins import durable
from invito.plugins.imip.spool import arrival_event, first_line, read_record_or_none, remove_files, stems
from invito.plugins.imip.tokens import ReplyToken, redact, tag

logger = logging.getLogger("invito.imip")

# Leftovers younger than this may be another thread's write in progress: only older ones are removed.
ABANDONED_AFTER = 3600.0
# Processing runs of one message that may end in a crash or a kill before it is set aside.
MAX_UNFINISHED = 2


@dataclass(frozen=True)
class PageAnswer:
    """An answer given on the RSVP page, as the quarantine keeps it. The link's token is the guest's key,
    so only its tag is kept: the token is found again from the organizer, event and guest it was issued for."""

    calendar: str               # the REPLY, as iCalendar text
    guest: str
    organizer: str
    uid: str
    token_tag: str              # tokens.tag() of the link's token, as the log names it
    client: str                 # the browser's address

    @classmethod
    def of(cls, calendar: str, token: ReplyToken, client: str) -> PageAnswer:
        return cls(calendar, token.guest, token.organizer, token.uid, tag(token.token), client)

    def proved_by(self, token: ReplyToken) -> bool:
        """Whether ``token`` is the one the answer's link carried."""
        return (tag(token.token), token.guest, token.organizer, token.uid) == \
            (self.token_tag, self.guest, self.organizer, self.uid)


@dataclass(frozen=True)
class InboundEntry:
    id: str
    mail_from: str              # envelope sender; "" for the null sender <> (bounces, auto-replies)
    recipients: tuple[str, ...]
    peer: str                   # "host:port" of the sending server; the browser's address for an answer
    received: float             # epoch seconds
    path: str                   # the raw message (.eml); an answer has none, its record is the .json
    answer: PageAnswer | None = None  # set for an answer given on the RSVP page instead of a mail

    def raw(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()


@dataclass(frozen=True)
class QuarantinedEntry:
    """A quarantined entry for the admin; None: its envelope is missing or unreadable, or does not say."""
    id: str
    mail_from: str | None       # "" for the null sender <>
    recipients: tuple[str, ...] | None
    received: float | None
    reason: str
    answer: PageAnswer | None = None  # an answer given on the RSVP page, kept instead of a mail


class IncompleteEntry(Exception):
    """A quarantined entry without its message or envelope: it cannot be released, only dropped."""

    def __init__(self, name: str, folder: str) -> None:
        super().__init__(f"{name} is missing from {folder}")
        self.name = name
        self.folder = folder


class InboundSpool:
    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._tmp = os.path.join(folder, "tmp")
        self.queue = os.path.join(folder, "queue")
        self.quarantined = os.path.join(folder, "quarantine")

    @property
    def arrived(self) -> threading.Event:
        """Set by ``accept``, so the processor in this process wakes at once."""
        return arrival_event(self.queue)

    def accept(self, raw: bytes, mail_from: str, recipients: list[str], peer: str) -> InboundEntry:
        """Store one message durably; only then may the listener answer 250."""
        entry = self._store(raw, mail_from, recipients, peer, self.queue)
        self.arrived.set()
        return entry

    def set_aside_answer(self, answer: PageAnswer, reason: str) -> InboundEntry:
        """Keep an answer already refused on the RSVP page in the quarantine with ``reason``, never passing
        through the queue: its record first (written whole, then renamed in), then the reason."""
        record = {"id": _new_id(), "received": time.time(), "answer": dataclasses.asdict(answer)}
        os.makedirs(self._tmp, exist_ok=True)
        os.makedirs(self.quarantined, exist_ok=True)
        staged = os.path.join(self._tmp, record["id"] + ".json")
        durable.write_new(staged, json.dumps(record).encode("utf-8"), sync=True)  # removes a partial file
        os.rename(staged, os.path.join(self.quarantined, record["id"] + ".json"))
        entry = _entry(record, self.quarantined)
        durable.write_new(os.path.join(self.quarantined, entry.id + ".reason"), _explain(entry, reason).encode("utf-8"),
                          sync=True)
        durable.fsync_folder(self.quarantined)
        logger.warning("inbound %s: answer on the RSVP page uid=%s attendee=%s set aside in %s: %s", entry.id,
                       answer.uid, answer.guest, self.quarantined, redact(reason))
        return entry

    def quarantined_answer(self, entry_id: str) -> PageAnswer | None:
        """The answer kept as quarantined entry ``entry_id``; None when the entry is a mail or its record is
        unreadable. FileNotFoundError when it has no record (or envelope): released or dropped meanwhile."""
        with open(os.path.join(self.quarantined, entry_id + ".json"), encoding="utf-8") as f:
            try:
                return _entry(json.load(f), self.quarantined).answer
            except (ValueError, TypeError, KeyError):
                return None

    def _store(self, raw: bytes, mail_from: str, recipients: list[str], peer: str, folder: str) -> InboundEntry:
        entry_id = _new_id()
        envelope = {"id": entry_id, "mail_from": mail_from, "recipients": list(recipients), "peer": peer,
                    "received": time.time()}
        os.makedirs(self._tmp, exist_ok=True)
        os.makedirs(folder, exist_ok=True)
        names = (entry_id + ".eml", entry_id + ".json")
        staged = [os.path.join(self._tmp, name) for name in names]
        try:
            durable.write_new(staged[0], raw, sync=True)
            durable.write_new(staged[1], json.dumps(envelope).encode("utf-8"), sync=True)
        except BaseException:
            # Nobody was told "250": the sender sends again. Remove the partial files now, not in an hour:
            # on a full disk they would hold the room a later, smaller message needs.
            for path in staged:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            raise
        for name in names:  # the envelope last: it is what makes the entry exist
            os.rename(os.path.join(self._tmp, name), os.path.join(folder, name))
        durable.fsync_folder(folder)
        return _entry(envelope, folder)

    def pending(self) -> list[InboundEntry]:
        """Entries to process, oldest first. An unreadable envelope is quarantined, leftovers are skipped."""
        try:
            names = os.listdir(self.queue)
        except FileNotFoundError:
            return []
        envelopes = {name[:-len(".json")] for name in names if name.endswith(".json")}
        entries = []
        for entry_id in sorted(envelopes):
            try:
                with open(os.path.join(self.queue, entry_id + ".json"), encoding="utf-8") as f:
                    entries.append(_entry(json.load(f), self.queue))
            except FileNotFoundError:  # done or quarantined meanwhile
                continue
            except (ValueError, TypeError, KeyError) as e:
                logger.error("inbound spool: envelope %s.json is unreadable: %s", entry_id, e)
                self.quarantine(InboundEntry(entry_id, "", (), "", 0.0, os.path.join(self.queue, entry_id + ".eml")),
                                "its envelope file was unreadable (%s)" % e)
        self._clean([name for name in names
                     if name.endswith((".eml", ".attempts")) and name.rsplit(".", 1)[0] not in envelopes])
        return entries

    def start(self, entry: InboundEntry) -> int:
        """Processing of ``entry`` begins: returns how many earlier runs never finished (crashed, killed),
        and counts this one, durably for a process crash, before the caller starts it."""
        path = _attempts_path(entry)
        try:
            with open(path, encoding="ascii") as f:
                unfinished = int(f.read().strip() or 0)
        except FileNotFoundError:
            unfinished = 0
        except (ValueError, UnicodeDecodeError):  # torn by a power cut: count it as one run
            unfinished = 1
        try:
            os.makedirs(self._tmp, exist_ok=True)
            durable.write_atomically(path, str(unfinished + 1).encode("ascii"), sync=False,
                                     temporary=os.path.join(self._tmp, os.path.basename(path)))
        except OSError as e:  # e.g. a full disk: processing goes on, this run is just not counted
            logger.warning("inbound %s: could not count the processing run: %s", entry.id, e)
        return unfinished

    def finish(self, entry: InboundEntry) -> None:
        """The processing run counted by ``start`` ended, however it ended."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(_attempts_path(entry))

    def done(self, entry: InboundEntry) -> None:
        """The entry was processed: forget it (envelope first, so it never looks pending without its message)."""
        self.finish(entry)
        for path in (_envelope_path(entry), entry.path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def quarantine(self, entry: InboundEntry, reason: str) -> str:
        """Set an entry aside with a ``.reason`` file; returns the quarantine folder."""
        os.makedirs(self.quarantined, exist_ok=True)
        durable.write_new(os.path.join(self.quarantined, entry.id + ".reason"), _explain(entry, reason).encode("utf-8"),
                          sync=True)
        self.finish(entry)  # moved back into queue/, the message is tried afresh
        # The envelope first: the entry leaves the queue at once. Should a crash strand the message in the
        # queue, _clean finishes the move instead of removing it.
        for path in (_envelope_path(entry), entry.path):
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, os.path.join(self.quarantined, os.path.basename(path)))
        durable.fsync_folder(self.quarantined)
        durable.fsync_folder(self.queue)
        logger.warning("inbound mail %s quarantined in %s: %s", entry.id, self.quarantined, redact(reason))
        return self.quarantined

    # -- the admin's side (`invito queue`) -----------------------------------------------------------

    def quarantined_ids(self) -> set[str]:
        """The ids in ``quarantine/``: an envelope or a message is enough (what a crash or a hand left)."""
        return stems(self.quarantined, ".json", ".eml")

    def quarantined_entries(self) -> list["QuarantinedEntry"]:
        """Every quarantined entry, by id."""
        return [self.quarantined_entry(entry_id) for entry_id in sorted(self.quarantined_ids())]

    def quarantined_entry(self, entry_id: str) -> "QuarantinedEntry":
        """A quarantined entry as its files tell it; what a missing or unreadable envelope does not say is
        None."""
        try:
            return self._quarantined(entry_id)
        except FileNotFoundError:  # only the message is left, or released meanwhile
            return QuarantinedEntry(entry_id, None, None, None, self._reason(entry_id))

    def quarantined_mail(self, entry_id: str) -> bytes:
        """A quarantined message as it arrived; FileNotFoundError when it is missing."""
        with open(os.path.join(self.quarantined, entry_id + ".eml"), "rb") as f:
            return f.read()

    def release(self, entry_id: str) -> None:
        """A quarantined entry goes back into the queue, to be processed again; raises ``IncompleteEntry``
        when its message or envelope is missing."""
        try:
            answer = self.quarantined_answer(entry_id)
        except FileNotFoundError:  # reported below, as the missing envelope
            answer = None
        # The message first: the envelope makes the entry exist. An answer is its record alone.
        names = (entry_id + ".json",) if answer is not None else (entry_id + ".eml", entry_id + ".json")
        for name in names:
            if not os.path.exists(os.path.join(self.quarantined, name)):
                raise IncompleteEntry(name, self.quarantined)
        os.makedirs(self.queue, exist_ok=True)
        # Fresh mtime: ``pending`` takes an old message without its envelope in queue/ for the leftover of
        # an interrupted write and moves it back to quarantine/ or deletes it; in the instant before the
        # envelope follows, this one must look new.
        os.utime(os.path.join(self.quarantined, names[0]))
        for name in names:
            os.rename(os.path.join(self.quarantined, name), os.path.join(self.queue, name))
        durable.fsync_folder(self.queue)
        remove_files(os.path.join(self.quarantined, entry_id + ".reason"))
        durable.fsync_folder(self.quarantined)

    def drop_quarantined(self, entry_id: str) -> "QuarantinedEntry | None":
        """Remove a quarantined entry for good; returns what it was (None: it had no envelope)."""
        try:
            dropped: QuarantinedEntry | None = self._quarantined(entry_id)
        except FileNotFoundError:
            dropped = None
        # The envelope first: without it the entry no longer exists, whatever is left.
        remove_files(*(os.path.join(self.quarantined, entry_id + suffix) for suffix in (".json", ".eml", ".reason")))
        return dropped

    def _quarantined(self, entry_id: str) -> "QuarantinedEntry":
        """FileNotFoundError when the envelope is missing."""
        envelope = read_record_or_none(os.path.join(self.quarantined, entry_id + ".json"))
        reason = self._reason(entry_id)
        if envelope is None:
            return QuarantinedEntry(entry_id, None, None, None, reason)
        received = envelope.get("received")
        return QuarantinedEntry(entry_id, envelope.get("mail_from") or "",
                                tuple(map(str, envelope.get("recipients") or ())),
                                received if isinstance(received, (int, float)) else None, reason,
                                _answer_of(envelope))

    def _reason(self, entry_id: str) -> str:
        """The reason ``quarantine`` gave (inside the sentence it wrote for admins reading the file)."""
        reason = first_line(os.path.join(self.quarantined, entry_id + ".reason"))
        explained = _EXPLAINED.search(reason)
        return explained.group(1) if explained else reason

    def _clean(self, orphans: list[str]) -> None:
        """Remove abandoned half-written files; a message whose envelope is in quarantine/ joins it there."""
        cutoff = time.time() - ABANDONED_AFTER
        for name in orphans:  # messages (and attempt counts) in queue/ without their envelope
            path = os.path.join(self.queue, name)
            if not _abandoned(path, cutoff):
                continue
            if name.endswith(".eml") and os.path.exists(os.path.join(self.quarantined, name[:-len(".eml")] + ".json")):
                with contextlib.suppress(FileNotFoundError):  # a quarantine cut short by a crash
                    os.rename(path, os.path.join(self.quarantined, name))
            else:
                _remove_abandoned(path)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self._tmp):
                path = os.path.join(self._tmp, name)
                if _abandoned(path, cutoff):
                    _remove_abandoned(path)


def _abandoned(path: str, cutoff: float) -> bool:
    try:
        return os.stat(path).st_mtime < cutoff
    except FileNotFoundError:
        return False


def _remove_abandoned(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
        logger.info("inbound spool: removed %s, left over from an interrupted write", path)


def _new_id() -> str:
    """Time first, so names sort in arrival order; then random, so two writers never meet."""
    return "%d-%s" % (time.time_ns(), uuid.uuid4().hex)


def _answer_of(envelope: dict) -> PageAnswer | None:
    """The answer an answer's record holds; None for a mail's envelope (or a record too damaged to say)."""
    try:
        return PageAnswer(**envelope["answer"]) if "answer" in envelope else None
    except TypeError:
        return None


def _entry(envelope: dict, queue: str) -> InboundEntry:
    if "answer" in envelope:
        answer = PageAnswer(**envelope["answer"])
        return InboundEntry(id=envelope["id"], mail_from="", recipients=(), peer=answer.client,
                            received=float(envelope["received"]), path=os.path.join(queue, envelope["id"] + ".eml"),
                            answer=answer)
    return InboundEntry(id=envelope["id"], mail_from=envelope["mail_from"], recipients=tuple(envelope["recipients"]),
                        peer=envelope["peer"], received=float(envelope["received"]),
                        path=os.path.join(queue, envelope["id"] + ".eml"))


def _envelope_path(entry: InboundEntry) -> str:
    return entry.path[:-len(".eml")] + ".json"


def _attempts_path(entry: InboundEntry) -> str:
    return entry.path[:-len(".eml")] + ".attempts"


# ``_explain`` writes the reason inside a sentence for admins reading the file; ``invito queue`` shows the reason.
_EXPLAINED = re.compile(r"was set aside and not processed: (.*?)(?:\. The message is \S+\.eml and its envelope .*)?$")


def _explain(entry: InboundEntry, reason: str) -> str:
    received = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry.received)) if entry.received else "unknown"
    if entry.answer is not None:  # the reason last on the line, where `invito queue list` finds it
        answer = entry.answer
        return ("Answer %s, given on the RSVP page by <%s> for event %s (link %s, browser %s, received %s) and "
                "kept as %s.json in this folder, was set aside and not processed: %s\n"
                % (entry.id, answer.guest.removeprefix("mailto:"), answer.uid, answer.token_tag,
                   answer.client or "unknown", received, entry.id, reason))
    return ("Message %s (from <%s> to %s, received %s from %s) was set aside and not processed: %s. "
            "The message is %s.eml and its envelope %s.json in this folder; to process it again, move the "
            ".eml and then the .json back into queue/.\n"
            % (entry.id, entry.mail_from, ", ".join("<%s>" % r for r in entry.recipients) or "nobody",
               received, entry.peer or "an unknown peer", reason, entry.id, entry.id))
