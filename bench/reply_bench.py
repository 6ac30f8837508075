# SPDX-License-Identifier: GPL-3.0-or-later
"""Inbound throughput: guests' emailed REPLYs applied end to end into an organizer with 10,000 events.

The organizer's calendar holds 10,000 events (written the fast way, as in put_bench.py), plus the
meetings the guests answer, created through InvitoApplication so that their invitations and reply
tokens exist as on a real server. The listener and the processor run in this process as in
`invito serve`; a separate process (a mail server relaying the guests' answers) sends one REPLY per
meeting over SMTP to 127.0.0.1. Timed: from the first message sent until the last one is applied to
the organizer's event (inbox copy and notification included). Plain Radicale cannot receive replies, so
the goal is absolute. Usage: ``python bench/reply_bench.py [--events N] [--replies N]``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

from put_bench import USER, Client, configuration, prefill

from invito.plugins.imip.listener import Listener, ListenerSettings
from invito.server.app import InvitoApplication
from invito.server.inbound import Processor

GOAL_PER_SECOND = 100.0
GUEST = "guest%d@partner.example.org"

SEND = """
import smtplib, sys, os
folder = sys.argv[2]
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=60) as smtp:
    for name in sorted(os.listdir(folder)):
        rcpt, _ = name.split(" ", 1)
        with open(os.path.join(folder, name), "rb") as f:
            smtp.sendmail("guest@partner.example.org", [rcpt], f.read())
"""


def meeting(uid: str, n: int) -> str:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Invito//bench//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:{uid}\r\nDTSTAMP:20300101T000000Z\r\nDTSTART:20301010T090000Z\r\nDURATION:PT1H\r\n"
            f"SUMMARY:Review {n}\r\nORGANIZER;CN=Bench:mailto:{USER}@example.com\r\n"
            f"ATTENDEE;CN=Guest {n};PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{GUEST % n}\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n")


def reply(uid: str, n: int, to: str) -> bytes:
    ics = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN\r\n"
           "METHOD:REPLY\r\nBEGIN:VEVENT\r\n"
           f"UID:{uid}\r\nDTSTAMP:20301001T120000Z\r\nDTSTART:20301010T090000Z\r\nDURATION:PT1H\r\n"
           f"SEQUENCE:0\r\nORGANIZER;CN=Bench:mailto:{to}\r\n"
           f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{GUEST % n}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = GUEST % n, to, "Accepted: Review %d" % n
    msg.set_content("Accepted.")
    msg.add_alternative(ics.encode(), maintype="text", subtype="calendar", params={"method": "REPLY"})
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--replies", type=int, default=500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="invito-reply-bench-") as tmp:
        folder = Path(tmp, "collections")
        prefill(folder, args.events, True)
        config = configuration(folder, "invito", True)
        config.update({"imip": {"reply_address": "invito+{token}@cal.example.com"}}, "bench")
        app = InvitoApplication(config)
        client = Client(app)
        uids = [uuid.uuid4().hex for _ in range(args.replies)]
        for n, uid in enumerate(uids):
            client.put(uid + ".ics", meeting(uid, n))
        storage = app._storage
        processor = Processor(config, storage)
        mails = Path(tmp, "mails")
        mails.mkdir()
        for n, uid in enumerate(uids):
            token = processor.tokens.issue(f"mailto:{USER}@example.com", uid, f"mailto:{GUEST % n}").token
            to = f"invito+{token}@cal.example.com"
            (mails / f"{to} {n:06d}").write_bytes(reply(uid, n, to))
        listener = Listener(ListenerSettings(port=0), processor.spool, processor.accepts)
        listener.start()
        stop = threading.Event()
        worker = threading.Thread(target=processor.run, args=(stop,), daemon=True)
        worker.start()
        try:
            start = time.perf_counter()
            sender = subprocess.Popen([sys.executable, "-c", SEND, str(listener.port), str(mails)])
            queue = processor.spool.queue
            while sender.poll() is None or _pending(queue):  # accepted mail stays queued until applied
                time.sleep(0.005)
            seconds = time.perf_counter() - start
        finally:
            stop.set()
            processor.spool.arrived.set()
            worker.join(30)
            listener.stop()
        applied = sum(1 for uid in uids if "PARTSTAT=ACCEPTED" in _stored(storage, uid))
        quarantined = len(list(Path(processor.spool.quarantined).glob("*.reason"))) \
            if os.path.isdir(processor.spool.quarantined) else 0
    rate = args.replies / seconds
    print("%d REPLYs sent over SMTP to 127.0.0.1 and applied into an organizer with %d events in %.2f s: "
          "%.0f per second (%d applied, %d quarantined)" % (args.replies, args.events + args.replies, seconds,
                                                              rate, applied, quarantined))
    print("goal: >= %.0f per second: %s" % (GOAL_PER_SECOND, "met" if rate >= GOAL_PER_SECOND else "NOT met"))
    return 0


def _pending(queue: str) -> bool:
    return os.path.isdir(queue) and any(name.endswith(".json") for name in os.listdir(queue))


def _stored(storage, uid: str) -> str:  # type: ignore[no-untyped-def]
    with storage.acquire_lock("r", USER):
        _, _, item = storage.scheduler.find_copy(USER, uid)
    return item.serialize() if item is not None else ""


if __name__ == "__main__":
    sys.exit(main())
