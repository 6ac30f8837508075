# SPDX-License-Identifier: GPL-3.0-or-later
"""Writing files so that a crash leaves the old content or the new, never a torn file.

Every file Invito writes on its own (spool entries, reply tokens, indexes, side records, the users file)
goes through these few functions, so how a write survives a kill or a power cut is decided in one place.
Each caller chooses ``sync``: whether the data must be on the disk when the call returns (fsync), or only
with the kernel (survives a killed process, not a power cut), as the storage layer chooses while it defers
syncing to one flush. Files are created 0600 under Invito's umask, temporary files always 0600.

A file written by any of these never stays behind half-written after a failure (a full disk): it is
removed at once, so it neither looks like an entry nor takes the room the next write needs.
"""
from __future__ import annotations

import contextlib
import os
import tempfile


def write_new(path: str, data: bytes, *, sync: bool) -> None:
    """Write ``data`` as the whole new file ``path``, in place (readers of ``path`` must not look before
    the caller renames or names it: a file in a spool's ``tmp/``)."""
    try:
        with open(path, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        raise


def write_atomically(path: str, data: bytes, *, sync: bool, sync_folder: bool = False,
                     temporary: str | None = None) -> None:
    """Replace ``path`` with ``data`` in one step: readers see the old file or the new one.

    The data goes to ``temporary`` first (default: a fresh ``.tmp-<name>…`` file beside ``path``; a fixed
    name for callers that hold a lock, so a kill leaves one leftover, overwritten next time), then is
    renamed over ``path``. ``sync_folder`` also fsyncs ``path``'s folder, so that the rename itself
    survives a power cut; callers that write several files in one folder fsync it once themselves.
    """
    if temporary is None:
        temporary = _temporary_beside(path)
    try:
        write_new(temporary, data, sync=sync)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    if sync_folder:
        fsync_folder(os.path.dirname(path) or ".")


def write_once(path: str, data: bytes) -> bool:
    """Create ``path`` with ``data`` unless it exists; never replace it. Whole or not at all, on the disk
    when it appears (a hard link of a synced temporary file). False: it existed (another process, or an
    earlier call, won; what is on disk counts)."""
    temporary = _temporary_beside(path)
    try:
        write_new(temporary, data, sync=True)
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def append(path: str, data: bytes, *, sync: bool) -> None:
    """Add ``data`` (whole lines) at the end of ``path``, created if missing. A kill can tear only the last
    line, which readers of such logs skip."""
    with open(path, "ab") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def _temporary_beside(path: str) -> str:
    """A new, empty, 0600 file with a unique name in ``path``'s folder: ``.tmp-<name>…tmp``, a name no
    reader takes for an entry (hidden, and not ending in the entry's suffix)."""
    folder, name = os.path.split(path)
    fd, temporary = tempfile.mkstemp(dir=folder or ".", prefix=".tmp-" + name, suffix=".tmp")
    os.close(fd)
    return temporary


def fsync_file(path: str) -> None:
    """Put what was written to ``path`` (appended lines) onto the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(path: str) -> None:
    """Put the names in folder ``path`` (files created, renamed or removed in it) onto the disk."""
    fsync_file(path)
