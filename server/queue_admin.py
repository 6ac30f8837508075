# SPDX-License-Identifier: GPL-3.0-or-later
"""``invito queue``: what waits in the mail spools and why, one message as its reader gets it (show), and
the admin's hand on them (retry, drop).

It works while ``invito serve`` may be running, on the filesystem spools or, when ``[invito] database`` (or
``database_file``) is set, on the database's queues (``Spools.of`` picks), through one interface
(``plugins.imip.queues``): in the database each admin method is one transaction, and a retry NOTIFYs the
senders on every node. It never touches a spool file itself: each spool owns its format, and this module
edits records through their admin methods (``OutboundSpool.send_now``,
``requeue``, ``drop``…; ``InboundSpool.release``, ``drop_quarantined``…), each change a rename or an atomic
replace. Every outbound change is made holding the outbound spool's lock (``OutboundSpool.locked``), which
the sender takes for each update of a message it is sending, so neither overwrites the other's change; a
message the sender sent or moved to ``failed/`` meanwhile is reported, not recreated. The inbound spool has
no such lock: its processor only adds entries to the quarantine and never changes one there, so releasing
or dropping one needs none (``InboundSpool.release`` covers the one instant the two meet).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import psycopg
import radicale.storage
from psycopg_pool import PoolTimeout
from radicale.config import Configuration

from invito.plugins.data_folder import DataFolder
from invito.plugins.imip.inbound_spool import IncompleteEntry, InboundSpool, QuarantinedEntry
from invito.plugins.imip.queues import InboundAdmin, OutboundAdmin
from invito.plugins.imip.sender import NOT_DELIVERED
from invito.plugins.imip.spool import FORWARD, MessageSummary, OutboundSpool, SpoolEntry, UnreadableFile
from invito.plugins.progress import progress, say
from invito.server import db_admin
from invito.server.config import CommandError, ConfigError, load
from invito.server.mail import PREVIEW_SENDER, Composer, StatusWriter
from invito.server.mail_view import ShownMail, one_line, shown_mail, write_html
from invito.storage import Storage
from invito.storage.pg import migrations
from invito.storage.pg.db import Database, configured_url
from invito.storage.pg.inbound import InboundQueue
from invito.storage.pg.outbox import Outbox

MIN_PREFIX = 8  # shorter prefixes of the time-based ids would match nearly everything queued the same day

WAITING = "outbound, waiting"
FAILED = "outbound, failed"
QUARANTINED = "inbound, quarantined"


@dataclass(frozen=True)
class Spools:
    outbound: OutboundAdmin
    inbound: InboundAdmin
    configuration: Configuration
    database: Database | None = None  # the queues' connections, when they are the database's

    @classmethod
    def of(cls, config_file: str | None) -> "Spools":
        """The database's queues when ``[invito] database`` or ``database_file`` is set, else the spools."""
        configuration = load(config_file)
        try:
            url = configured_url(configuration)
        except (OSError, ValueError) as e:
            raise ConfigError(f"[invito] database_file: {e}") from e
        if url:
            _usable(url)
            database = Database(url, max_size=2)
            return cls(Outbox(database), InboundQueue(database), configuration, database)
        data = DataFolder.of(configuration)
        return cls(OutboundSpool(data.outbound_spool), InboundSpool(data.inbound_spool), configuration)

    def close(self) -> None:
        if self.database is not None:
            self.database.close()

    def ids(self) -> dict[str, str]:
        """Every id an admin can name, with its kind."""
        found = {entry_id: WAITING for entry_id in self.outbound.waiting_ids()}
        found.update((entry_id, FAILED) for entry_id in self.outbound.failed_ids())
        found.update((entry_id, QUARANTINED) for entry_id in self.inbound.quarantined_ids())
        return found

    def resolve(self, given: str) -> tuple[str, str]:
        """(kind, id) of the entry ``given`` names: its whole id, or a prefix that starts only that id."""
        ids = self.ids()
        if given in ids:  # exact first: a message id also starts its recipients' failed ids
            return ids[given], given
        if len(given) < MIN_PREFIX:
            raise CommandError(f"id {given!r} is too short: give the whole id or at least its first {MIN_PREFIX} "
                             "characters, as `invito queue list` shows them")
        matches = sorted(entry_id for entry_id in ids if entry_id.startswith(given))
        if not matches:
            raise CommandError(f"no queued, failed or quarantined message with id {given}")
        if len(matches) > 1:
            raise CommandError(f"id {given} is ambiguous; it starts {len(matches)} ids, give more of it:\n"
                             + "\n".join(f"  {entry_id} ({ids[entry_id]})" for entry_id in matches))
        return ids[matches[0]], matches[0]


def _usable(url: str) -> None:
    """The database answers (within ``db_admin``'s connect timeout, not the pool's long wait) and has the
    schema this version's queries need."""
    try:
        found, line = db_admin.describe(url)
    except psycopg.Error as e:
        raise CommandError(f"cannot use the database: {db_admin.first_line(e)}") from e
    if found != migrations.latest():
        raise CommandError(f"cannot use the database: {line}")


# -- list ----------------------------------------------------------------------------------------------


def list_spools(spools: Spools) -> list[str]:
    """The four sections of ``invito queue list``, as lines. "Done" is the outcome log of the last
    ``server.mail.KEEP_OUTCOMES_DAYS`` (sent, refused, gave up, dropped): what became of each guest's
    message, which the organizer's event records only when it failed."""
    now = time.time()
    waiting = [(e.id, _address(e.recipient), e.method, e.uid, str(e.attempts),
                "now" if e.next_try <= now else _local(e.next_try), e.last_error)
               for e in spools.outbound.queued()]
    failed = [(f.id, *_outbound_cells(f.message), f.reason) for f in spools.outbound.failed_messages()]
    quarantined = [(q.id, *_envelope_cells(q), q.reason) for q in spools.inbound.quarantined_entries()]
    done = {(o.get("id"), o.get("recipient")): o for o in spools.outbound.recorded()  # the latest of each
            if isinstance(o, dict)}
    outcomes = [(str(o.get("id", "?")), _address(str(o.get("recipient", "?"))), str(o.get("method", "?")),
                 str(o.get("uid", "?")), str(o.get("status", "?")),
                 _local(o["time"]) if isinstance(o.get("time"), (int, float)) else "?", str(o.get("detail", "")))
                for o in done.values()]
    return [*_section("Outbound (waiting)", ("ID", "RECIPIENT", "METHOD", "UID", "ATTEMPTS", "NEXT TRY", "LAST ERROR"),
                      waiting), "",
            *_section("Outbound (failed)", ("ID", "RECIPIENT", "METHOD", "UID", "REASON"), failed), "",
            *_section("Outbound (done)", ("ID", "RECIPIENT", "METHOD", "UID", "STATUS", "AT", "DETAIL"), outcomes), "",
            *_section("Inbound (quarantine)", ("ID", "FROM", "TO", "RECEIVED", "REASON"), quarantined)]


def _outbound_cells(message: MessageSummary) -> tuple[str, str, str]:
    """Recipient, method and UID of a message; ``?`` for what an unreadable file does not say."""
    return (", ".join(map(_address, message.recipients)) if message.recipients is not None else "?",
            message.method if message.method is not None else "?", message.uid if message.uid is not None else "?")


def _envelope_cells(entry: QuarantinedEntry) -> tuple[str, str, str]:
    """From, to and when received; ``?`` for what a missing or unreadable envelope does not say. An answer
    given on the RSVP page is from its guest, to the page."""
    if entry.answer is not None:
        return (_address(entry.answer.guest), "RSVP page",
                "?" if entry.received is None else _local(entry.received))
    return ("?" if entry.mail_from is None else entry.mail_from or "<>",
            "?" if entry.recipients is None else ", ".join(entry.recipients),
            "?" if entry.received is None else _local(entry.received))


def _section(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """A titled table, columns two spaces apart; ``none`` when empty."""
    if not rows:
        return [title, "  none"]
    table = [header, *(tuple(map(one_line, row)) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    return [title, *(("  " + "  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]])).rstrip()
                     for row in table)]


def _local(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


# -- show ----------------------------------------------------------------------------------------------


def show(spools: Spools, kind: str, entry_id: str, to: str | None = None) -> ShownMail:
    """An entry as its reader gets it: a waiting or failed message composed for its guest (``to``, or its
    first recipient) by the sender's own Composer; a quarantined mail as it arrived."""
    if kind == QUARANTINED:
        return _show_quarantined(spools, entry_id)
    try:
        entries = (spools.outbound.read_waiting if kind == WAITING else spools.outbound.read_failed)(entry_id)
    except UnreadableFile as e:
        raise CommandError(f"cannot show {entry_id}: {e}; `invito queue drop {entry_id}` removes it") from e
    chosen = _recipient(entries, to, entry_id)
    try:
        raw = Composer(spools.configuration, preview=True)(chosen).as_bytes()
    except Exception as e:  # the sender cannot build it either: it will fail this recipient with that reason
        raise CommandError(f"cannot show {entry_id}: the message cannot be composed "
                           f"({type(e).__name__}: {e}); the sender will fail it") from e
    title = [f"Outbound message {entry_id} ({kind}): {chosen.method} uid={one_line(chosen.uid)} "
             f"to {one_line(_address(chosen.recipient))}"]
    others = [_address(e.recipient) for e in entries if e is not chosen]
    if others:
        title.append(f"  also to: {one_line(', '.join(others))} (`--to ADDRESS` shows theirs)")
    if kind == FAILED:
        title.append(f"  failed: {one_line(spools.outbound.failed_reason(entry_id))}")
    if chosen.method != FORWARD:  # a forwarded reply was composed when it arrived: it goes as it is
        if not spools.configuration.get("smtp", "sender"):
            title.append(f"  note: [smtp] sender is empty; From shows {PREVIEW_SENDER} until it is set")
        title.append("  Date and Message-ID are the preview's; the sender writes its own when it sends")
    return shown_mail(title, raw)


def _recipient(entries: list[SpoolEntry], to: str | None, entry_id: str) -> SpoolEntry:
    if to is None:
        return entries[0]
    for entry in entries:
        if _address(entry.recipient).lower() == _address(to).lower():
            return entry
    raise CommandError(f"{entry_id} does not go to {to}; its recipients: "
                       + ", ".join(_address(e.recipient) for e in entries))


def _show_quarantined(spools: Spools, entry_id: str) -> ShownMail:
    entry = spools.inbound.quarantined_entry(entry_id)
    if entry.answer is not None:
        return _show_answer(entry)
    try:
        raw = spools.inbound.quarantined_mail(entry_id)
    except FileNotFoundError:
        raise CommandError(f"cannot show {entry_id}: {entry_id}.eml, the mail itself, is missing from "
                           f"{spools.inbound.quarantined}; `show` shows a quarantined mail, a waiting or a "
                           f"failed outbound message; `invito queue drop {entry_id}` removes what is left") from None
    mail_from, to, received = _envelope_cells(entry)
    return shown_mail([f"Inbound mail {entry_id} ({QUARANTINED}): from {one_line(mail_from)} to {one_line(to)}, "
                       f"received {received}",
                       f"  reason: {one_line(entry.reason)}"], raw)


def _show_answer(entry: QuarantinedEntry) -> ShownMail:
    """An answer given on the RSVP page, as it was given: who, for which event, and the REPLY itself."""
    answer = entry.answer
    assert answer is not None
    guest, _, received = _envelope_cells(entry)
    return ShownMail([f"Inbound answer {entry.id} ({QUARANTINED}): given on the RSVP page by {one_line(guest)} "
                      f"for uid={one_line(answer.uid)}, received {received}",
                      f"  link {one_line(answer.token_tag)}, browser {one_line(answer.client)}",
                      f"  reason: {one_line(entry.reason)}", "", *answer.calendar.splitlines()], None)


# -- retry ---------------------------------------------------------------------------------------------


def send_now(spools: Spools, entry_id: str) -> str:
    """A waiting message: every recipient's next try becomes "now"; attempts and last error stay."""
    try:
        recipients = spools.outbound.send_now(entry_id)
    except UnreadableFile as e:
        raise CommandError(f"cannot retry {entry_id}: {e}; `invito queue drop {entry_id}` removes it") from e
    return f"{entry_id}: next try set to now for {', '.join(map(_address, recipients))}"


def requeue(spools: Spools, failed_id: str) -> str:
    """A failed recipient goes back into the queue as a new message, with fresh attempts and give-up age."""
    try:
        new_id, recipient = spools.outbound.requeue(failed_id)
    except UnreadableFile as e:
        raise CommandError(f"cannot retry {failed_id}: {e}; `invito queue drop {failed_id}` removes it") from e
    return f"{failed_id}: back in the queue as {new_id}, to {_address(recipient)}"


def release(spools: Spools, entry_id: str) -> str:
    """A quarantined inbound message or RSVP page answer goes back into the inbound queue, to be processed
    again."""
    try:
        spools.inbound.release(entry_id)
    except IncompleteEntry as e:
        raise CommandError(f"cannot retry {entry_id}: {e}; `invito queue drop {entry_id}` removes what is left") from e
    return f"{entry_id}: back in the inbound queue, to be processed again"


# -- drop ----------------------------------------------------------------------------------------------


def drop_waiting(spools: Spools, entry_id: str) -> str:
    """Forget a waiting message; its guests' SCHEDULE-STATUS in the organizer's event becomes 5.1 (not
    delivered) instead of staying 1.0 (pending) for ever. Safe under the spool lock: whoever holds the
    storage lock never waits for the spool's."""
    message, entries = spools.outbound.drop(entry_id, NOT_DELIVERED, "dropped by the admin")
    storage = radicale.storage.load(spools.configuration)
    if entries and isinstance(storage, Storage):
        StatusWriter(storage)([(entry, NOT_DELIVERED, "dropped by the admin") for entry in entries])
    return f"dropped {entry_id}: {_outbound_description(message)}"


def drop_failed(spools: Spools, failed_id: str) -> str:
    return f"dropped {failed_id}: {_outbound_description(spools.outbound.drop_failed(failed_id))}"


def drop_quarantined(spools: Spools, entry_id: str) -> str:
    dropped = spools.inbound.drop_quarantined(entry_id)
    if dropped is None:
        what = "a message without its envelope"
    elif dropped.answer is not None:
        guest, _, received = _envelope_cells(dropped)
        what = f"answer given on the RSVP page by {guest}, received {received}"
    else:
        mail_from, to, received = _envelope_cells(dropped)
        what = f"mail from {mail_from} to {to}, received {received}"
    return f"dropped {entry_id}: {what}"


def _outbound_description(message: MessageSummary) -> str:
    recipients, method, uid = _outbound_cells(message)
    return f"{method} uid={uid} to {recipients}"


def _address(recipient: str) -> str:
    return recipient[len("mailto:"):] if recipient.lower().startswith("mailto:") else recipient


# -- the command ---------------------------------------------------------------------------------------

Action = Callable[[Spools, str], str]
RETRY: dict[str, Action] = {WAITING: send_now, FAILED: requeue, QUARANTINED: release}
DROP: dict[str, Action] = {WAITING: drop_waiting, FAILED: drop_failed, QUARANTINED: drop_quarantined}


def add_parser(commands: argparse._SubParsersAction, with_config: argparse.ArgumentParser) -> None:
    """Register ``queue`` and its actions (``list`` when none is given) on the ``invito`` command."""
    queue = commands.add_parser(
        "queue", help="show the mail spools or one message in them; retry or drop a message",
        usage="%(prog)s [-h] [--config FILE] [list | show ID [--to ADDRESS] [--html FILE] | retry ID | "
              "retry all | drop ID]",
        description="Show the outbound mail spool (messages waiting to be sent, recipients that failed) and "
                    "the inbound quarantine (mail that could not be applied); show one message as its reader "
                    "gets it, or retry or drop one, by its id or a unique prefix of it (at least "
                    f"{MIN_PREFIX} characters). Safe while "
                    "`invito serve` runs. Exit status: 0 on success, 1 if the id names no message or "
                    "several, 2 for configuration errors.")
    # Its own destination: a sub-action's --config default would overwrite `invito queue --config F list`.
    queue.add_argument("--config", dest="queue_config", metavar="FILE",
                       help="configuration file, as for `invito serve`")
    listing = _command(lambda spools, args: list_spools(spools))
    queue.set_defaults(run=listing)
    actions = queue.add_subparsers(metavar="ACTION")
    actions.add_parser("list", parents=[with_config], help="show what waits, what failed, what is quarantined "
                       "(the default)").set_defaults(run=listing)
    shown = actions.add_parser(
        "show", parents=[with_config], help="print a message as its reader gets it",
        description="Print a waiting or failed outbound message as the guest will get it, composed as the "
                    "sender composes it (headers, text body, the calendar part; attachments by name and size), "
                    "also before [smtp] is configured; or a quarantined inbound mail as it arrived, or a "
                    "quarantined answer given on the RSVP page.")
    shown.add_argument("id", metavar="ID", help=f"an id `invito queue list` shows, or its first {MIN_PREFIX} or "
                       "more characters")
    shown.add_argument("--to", metavar="ADDRESS", help="the copy of this recipient (default: the first)")
    shown.add_argument("--html", metavar="FILE", help="also write its HTML body to FILE (mode 0600), for a browser")
    shown.set_defaults(run=_command(_showing))
    for name, table, help_text, description in (
            ("retry", RETRY, "send or process a message again",
             "A waiting message: its next try becomes now. A failed recipient: queued again with fresh "
             "attempts. A quarantined inbound message: back in the inbound queue, processed again. "
             "`retry all`: every waiting and failed outbound message, counted as it goes."),
            ("drop", DROP, "remove a message for good",
             "Remove a waiting message (all its recipients), a failed recipient or a quarantined inbound "
             "message, without asking; prints what was removed.")):
        action = actions.add_parser(name, parents=[with_config], help=help_text, description=description)
        action.add_argument("id", metavar="ID",
                            help=f"an id `invito queue list` shows, or its first {MIN_PREFIX} or more characters"
                            + (" (retry: or `all`)" if table is RETRY else ""))
        action.set_defaults(run=_command(_acting(table)))


def retry_all(spools: Spools) -> list[str]:
    """``retry all``: every waiting and failed outbound message at once (after the relay was down or
    misconfigured), each line printed as it is done with its count; the total last."""
    ids = spools.ids()
    chosen = sorted(entry_id for entry_id, kind in ids.items() if kind in (WAITING, FAILED))
    done = 0
    with spools.outbound.locked():
        for n, entry_id in enumerate(progress(chosen, "retry all", len(chosen), "message"), 1):
            try:
                line = RETRY[ids[entry_id]](spools, entry_id)
                done += 1
            except FileNotFoundError:
                line = f"{entry_id}: sent or dropped meanwhile"
            except CommandError as e:
                line = str(e)
            say(f"[{n}/{len(chosen)}] {line}")
    return [f"{done} of {len(chosen)} outbound message{'' if len(chosen) == 1 else 's'} retried"
            + ("" if chosen else ": nothing waits or failed")]


def _showing(spools: Spools, args: argparse.Namespace) -> list[str]:
    kind, entry_id = spools.resolve(args.id)
    try:
        shown = show(spools, kind, entry_id, args.to)
    except FileNotFoundError as e:
        raise CommandError(f"{entry_id} changed while this command ran (it was {kind}); "
                           "`invito queue list` shows where it is now") from e
    if args.html is None:
        return shown.lines
    if shown.html is None:
        raise CommandError(f"{entry_id} has no HTML body to write; `invito queue show {entry_id}` prints its text")
    return [*shown.lines, "", write_html(args.html, shown.html)]


def _acting(table: dict[str, Action]) -> Callable[[Spools, argparse.Namespace], list[str]]:
    def act(spools: Spools, args: argparse.Namespace) -> list[str]:
        if table is RETRY and args.id == "all":
            return retry_all(spools)
        kind, entry_id = spools.resolve(args.id)
        try:
            with spools.outbound.locked():  # the running sender waits, and we wait for it
                return [table[kind](spools, entry_id)]
        except FileNotFoundError as e:
            raise CommandError(f"{entry_id} changed while this command ran (it was {kind}); "
                             "`invito queue list` shows where it is now") from e
    return act


def _command(body: Callable[[Spools, argparse.Namespace], list[str]]) -> Callable[[argparse.Namespace], int]:
    """An action as a ``run`` callable: its lines on stdout; problems raised for ``invito`` to report."""
    def run(args: argparse.Namespace) -> int:
        config = getattr(args, "config", None)
        spools: Spools | None = None
        try:
            spools = Spools.of(config if config is not None else args.queue_config)
            lines = body(spools, args)
        except OSError as e:
            raise CommandError(f"cannot use the mail spool: {e.filename}: {e.strerror}") from e
        except (psycopg.Error, PoolTimeout) as e:  # it went away while the command ran
            raise CommandError(f"cannot use the database: {db_admin.first_line(e)}") from e
        finally:
            if spools is not None:
                spools.close()
        try:
            print("\n".join(lines), flush=True)
        except BrokenPipeError:  # `invito queue show ID | head`: the reader has seen enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor may the flush at exit fail
        return 0
    return run
