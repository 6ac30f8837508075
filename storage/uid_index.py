# SPDX-License-Identifier: GPL-3.0-or-later
"""A per-collection UID → href index that is a cache of the folder, never the truth.

Why: Radicale answers "is this UID already in the calendar?" by reading every item, so each PUT costs
O(calendar size). This module keeps, per collection, a map href → (UID, file signature) plus the reverse
map, and knows how to prove it still describes the folder without looking at every file.

Validation: the index records the collection directory's ``(st_ino, st_mtime_ns)`` ("stamp"). Adding,
removing or renaming a file in a folder changes its mtime, and replacing the whole folder (Radicale's
collection PUT) changes its inode, so an equal stamp means the set of files is the one we indexed. On a
mismatch the caller runs :meth:`UidIndex.reconcile` against a fresh :func:`scan` (one ``stat`` per file;
only files whose ``(st_ino, st_mtime_ns, st_size)`` signature changed are re-read).

On disk (one folder per collection): ``snapshot.json`` (whole index, replaced atomically) and
``journal.<gen>.jsonl`` (one JSON record per line, appended by writers). A snapshot names its generation
``gen``; only that generation's journal is replayed, so compaction is "write a new snapshot, drop the old
journal" with no window where a reader could combine the wrong pair. A torn last line is ignored, which
leaves the replayed stamp behind the folder's and so forces a reconcile. Nothing is fsync'ed: every state
that can survive a crash is self-validating through the stamp, and any unreadable file means "rebuild".

Limits we accept:

* An in-place rewrite of an existing file (same inode, e.g. ``cat new > x.ics``) does not touch the
  directory, so a lookup for the file's *new* UID can miss it until the next full verification (the
  caller runs one periodically). A lookup that *finds* a file checks that file's signature, so a stale
  positive is caught at once.
* On filesystems with coarse timestamps a foreign change in the same clock tick as our own last write
  leaves the stamp unchanged; the periodic verification catches it too. Linux ≥ 6.13 (multigrain
  timestamps) and most modern filesystems make this window empty in practice.
* Unparseable items are indexed with no UID, like Radicale's ``skip_broken_item`` does.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Callable, Iterable, Iterator, NamedTuple

from invito.plugins import durable

logger = logging.getLogger("invito.storage.uid_index")

FORMAT_VERSION = 1
SNAPSHOT = "snapshot.json"
JOURNAL_PREFIX = "journal."
JOURNAL_SUFFIX = ".jsonl"
# Compact when the journal holds more records than this or than the index has entries: amortised O(1).
MIN_COMPACT_RECORDS = 256
STALE_TEMP_SECONDS = 3600


class Sig(NamedTuple):
    """What identifies one version of an item file without reading it."""
    ino: int
    mtime_ns: int
    size: int


class Stamp(NamedTuple):
    """What identifies one state of a collection directory's list of files."""
    ino: int
    mtime_ns: int


class Entry(NamedTuple):
    uid: str | None
    sig: Sig


def file_sig(path: str) -> Sig:
    st = os.stat(path)
    return Sig(st.st_ino, st.st_mtime_ns, st.st_size)


def dir_stamp(path: str) -> Stamp:
    st = os.stat(path)
    return Stamp(st.st_ino, st.st_mtime_ns)


def scan(folder: str, is_item_name: Callable[[str], bool]) -> dict[str, Sig]:
    """Signature of every item file in ``folder`` (regular files whose name passes ``is_item_name``)."""
    listing: dict[str, Sig] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if not is_item_name(entry.name):
                continue
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except FileNotFoundError:  # removed while we looked
                continue
            listing[entry.name] = Sig(st.st_ino, st.st_mtime_ns, st.st_size)
    return listing


class Record(NamedTuple):
    """One change; the unit of both live updates and journal replay. ``entry`` None means removal."""
    href: str
    entry: Entry | None
    stamp: Stamp

    def to_line(self) -> bytes:
        entry = None if self.entry is None else [self.entry.uid, list(self.entry.sig)]
        return (json.dumps([self.href, entry, list(self.stamp)], separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_line(cls, line: bytes) -> "Record":
        href, entry, stamp = json.loads(line)
        return cls(_str(href), None if entry is None else _entry(entry), Stamp(*map(int, stamp)))


class UidIndex:
    """In-memory index of one collection. ``stamp`` is the directory state it describes (None: unknown)."""

    def __init__(self, entries: dict[str, Entry] | None = None, stamp: Stamp | None = None,
                 gen: str = "") -> None:
        self.entries: dict[str, Entry] = {}
        self._by_uid: dict[str, set[str]] = {}
        self.stamp = stamp
        self.gen = gen or uuid.uuid4().hex
        self.journal_offset = 0   # bytes of journal.<gen> already applied
        self.journal_records = 0
        for href, entry in (entries or {}).items():
            self._put(href, entry)

    def __len__(self) -> int:
        return len(self.entries)

    def hrefs(self, uid: str) -> list[str]:
        return sorted(self._by_uid.get(uid, ()))

    def apply(self, record: Record) -> None:
        self._drop(record.href)
        if record.entry is not None:
            self._put(record.href, record.entry)
        self.stamp = record.stamp

    def reconcile(self, listing: dict[str, Sig], read_uid: Callable[[str], str | None], stamp: Stamp,
                  track: Callable[[Iterable[tuple[str, Sig]]], Iterable[tuple[str, Sig]]] | None = None) -> int:
        """Make the index describe ``listing`` (taken at ``stamp``); return how many hrefs changed.
        ``track`` wraps the walk over ``listing`` (a progress bar)."""
        gone = [href for href in self.entries if href not in listing]
        for href in gone:
            self._drop(href)
        changed = len(gone)
        for href, sig in (track or iter)(listing.items()):
            known = self.entries.get(href)
            if known is None or known.sig != sig:
                self._drop(href)
                self._put(href, Entry(read_uid(href), sig))
                changed += 1
        self.stamp = stamp
        return changed

    def _put(self, href: str, entry: Entry) -> None:
        self.entries[href] = entry
        if entry.uid is not None:
            self._by_uid.setdefault(entry.uid, set()).add(href)

    def _drop(self, href: str) -> None:
        old = self.entries.pop(href, None)
        if old is None or old.uid is None:
            return
        hrefs = self._by_uid[old.uid]
        hrefs.discard(href)
        if not hrefs:
            del self._by_uid[old.uid]


class IndexStore:
    """The on-disk copy of one collection's index (see module docstring for the format)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def _journal(self, gen: str) -> str:
        return os.path.join(self.folder, JOURNAL_PREFIX + gen + JOURNAL_SUFFIX)

    def load(self) -> UidIndex | None:
        """Snapshot plus its journal, or None when missing or unreadable (the caller rebuilds)."""
        try:
            with open(os.path.join(self.folder, SNAPSHOT), "rb") as f:
                data = json.load(f)
            if data["version"] != FORMAT_VERSION:
                return None
            index = UidIndex({_str(href): _entry(value) for href, value in data["entries"].items()},
                             Stamp(*map(int, data["stamp"])), _str(data["gen"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            logger.warning("Ignoring unreadable UID index %r: %s", self.folder, e)
            return None
        self.catch_up(index)
        return index

    def catch_up(self, index: UidIndex) -> bool:
        """Apply journal records appended (by another process) since ``index`` last read it.

        False when ``index``'s generation is no longer current on disk.
        """
        try:
            with open(self._journal(index.gen), "rb") as f:
                f.seek(index.journal_offset)
                tail = f.read()
        except FileNotFoundError:
            return False
        except OSError as e:
            logger.warning("Cannot read UID index journal in %r: %s", self.folder, e)
            return False
        for line in _complete_lines(tail):
            try:
                record = Record.from_line(line)
            except (ValueError, TypeError) as e:
                # A record we cannot read makes everything after it untrustworthy: stop, so the stamp
                # stays behind the folder's and the caller reconciles.
                logger.warning("Corrupt UID index journal in %r: %s", self.folder, e)
                return True
            index.apply(record)
            index.journal_offset += len(line)
            index.journal_records += 1
        return True

    def append(self, index: UidIndex, record: Record) -> None:
        """Persist one change already applied to ``index``. Only call with the storage write lock."""
        if index.journal_records + 1 > max(MIN_COMPACT_RECORDS, len(index)):
            self.save(index)
            return
        try:
            # No O_CREAT: a missing journal means another process compacted to a newer generation;
            # then our (valid) memory copy becomes the new snapshot instead.
            fd = os.open(self._journal(index.gen), os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            self.save(index)
            return
        with os.fdopen(fd, "ab") as f:
            f.write(record.to_line())
            f.flush()
            index.journal_offset = f.tell()
        index.journal_records += 1

    def save(self, index: UidIndex) -> None:
        """Write ``index`` as a new generation's snapshot with an empty journal, then drop old files."""
        index.gen = uuid.uuid4().hex
        data = {"version": FORMAT_VERSION, "gen": index.gen, "stamp": list(index.stamp or (0, 0)),
                "entries": {href: [e.uid, list(e.sig)] for href, e in index.entries.items()}}
        os.makedirs(self.folder, exist_ok=True)
        open(self._journal(index.gen), "xb").close()
        durable.write_atomically(os.path.join(self.folder, SNAPSHOT),
                                 json.dumps(data, separators=(",", ":")).encode(), sync=False)
        index.journal_offset = 0
        index.journal_records = 0
        self._remove_stale(keep=JOURNAL_PREFIX + index.gen + JOURNAL_SUFFIX)

    def _remove_stale(self, keep: str) -> None:
        old_temp = time.time() - STALE_TEMP_SECONDS
        with os.scandir(self.folder) as entries:
            for entry in entries:
                name = entry.name
                try:
                    if (name.startswith(JOURNAL_PREFIX) and name != keep or
                            name.startswith(".tmp-") and entry.stat().st_mtime < old_temp):
                        os.remove(entry.path)
                except FileNotFoundError:  # another process cleaned it
                    pass


def _complete_lines(data: bytes) -> Iterator[bytes]:
    """Every newline-terminated line; a trailing partial line (an append in progress) is left out."""
    start = 0
    while (end := data.find(b"\n", start)) != -1:
        yield data[start:end + 1]
        start = end + 1


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string, got %r" % (value,))
    return value


def _entry(value: Iterable) -> Entry:
    uid, sig = value
    if uid is not None:
        _str(uid)
    return Entry(uid, Sig(*map(int, sig)))
