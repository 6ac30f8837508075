# SPDX-License-Identifier: GPL-3.0-or-later
"""The outbound spool: one file per (message, recipient), written inside the storage write.

Two phases keep the spool and the stored events in step: ``prepare`` writes the file under ``tmp/``
(fsynced) before the event is stored; ``commit`` renames it into ``queue/`` once the event write
succeeded, ``discard`` removes it when the write failed. A committed change therefore always has its
messages and a rejected one never does. The sender (outbound mail) reads ``queue/``.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass

from invito.plugins.itip.model import ITipMessage


@dataclass(frozen=True)
class SpoolEntry:
    id: str
    method: str
    uid: str
    sender: str
    recipient: str
    ics: str
    created: float


class OutboundSpool:
    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._tmp = os.path.join(folder, "tmp")
        self.queue = os.path.join(folder, "queue")

    def prepare(self, message: ITipMessage, recipient: str) -> str:
        os.makedirs(self._tmp, exist_ok=True)
        entry_id = "%d-%s" % (time.time_ns(), uuid.uuid4().hex)
        record = {"id": entry_id, "method": message.method, "uid": message.uid, "sender": message.sender,
                  "recipient": recipient, "ics": message.calendar.to_ical().decode("utf-8"),
                  "created": time.time()}
        path = os.path.join(self._tmp, entry_id + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        return entry_id

    def commit(self, ids: list[str]) -> None:
        if not ids:
            return
        os.makedirs(self.queue, exist_ok=True)
        for entry_id in ids:
            os.rename(os.path.join(self._tmp, entry_id + ".json"), os.path.join(self.queue, entry_id + ".json"))
        _fsync_dir(self.queue)

    def discard(self, ids: list[str]) -> None:
        for entry_id in ids:
            try:
                os.remove(os.path.join(self._tmp, entry_id + ".json"))
            except FileNotFoundError:
                pass

    def queued(self) -> list[SpoolEntry]:
        """Entries waiting to be sent, oldest first."""
        try:
            names = sorted(n for n in os.listdir(self.queue) if n.endswith(".json"))
        except FileNotFoundError:
            return []
        entries = []
        for name in names:
            with open(os.path.join(self.queue, name), encoding="utf-8") as f:
                entries.append(SpoolEntry(**json.load(f)))
        return entries


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
