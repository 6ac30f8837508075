# SPDX-License-Identifier: GPL-3.0-or-later
"""Outbound throughput: how long until 500 invitations reach a loopback SMTP relay.

Ten events with 50 external guests each are PUT through InvitoApplication in-process (so the spool holds
what a real server would), then the real sender composes every guest's mail (MIME, templates, reply
token, RSVP links) and delivers it to an aiosmtpd relay on 127.0.0.1, run as its own process like any real relay
(in this process it would compete with the sender for the interpreter lock). Plain Radicale sends no mail, so there is no
ratio: the goal is absolute. Usage: ``python bench/mail_bench.py [--events N] [--guests N]``.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from invite_bench import meeting
from put_bench import Client, configuration, prefill

from invito.plugins.imip.sender import Sender
from invito.server.app import InvitoApplication
from invito.server.mail import Composer, StatusWriter, smtp_settings

GOAL_SECONDS = 5.0


def start_relay(port: int) -> subprocess.Popen:
    """aiosmtpd's own command line with its Sink handler (accepts and discards), on 127.0.0.1:port."""
    relay = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
                              "-l", "127.0.0.1:%d" % port], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return relay
        time.sleep(0.05)
    relay.kill()
    raise RuntimeError("the relay did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10)
    parser.add_argument("--guests", type=int, default=50)
    args = parser.parse_args(argv)
    total = args.events * args.guests
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    relay = start_relay(port)
    try:
        with tempfile.TemporaryDirectory(prefix="invito-mail-bench-") as tmp:
            folder = Path(tmp, "collections")
            prefill(folder, 10, True)
            config = configuration(folder, "invito", True)
            config.update({"smtp": {"host": "127.0.0.1", "port": str(port), "security": "none",
                                    "sender": "invito@cal.example.com"},
                           "imip": {"reply_address": "invito+{token}@cal.example.com"},
                           "rsvp": {"public_url": "https://cal.example.com"}}, "bench")
            app = InvitoApplication(config)
            client = Client(app)
            for _ in range(args.events):
                uid = uuid.uuid4().hex
                client.put(uid + ".ics", meeting(uid, args.guests))
            storage = app._storage
            sender = Sender(storage.scheduler.spool, smtp_settings(config), Composer(config), None,
                            on_batch_end=StatusWriter(storage))
            start = time.perf_counter()
            sent = sender.process_due(time.time())  # returns once the relay accepted (or refused) each one
            seconds = time.perf_counter() - start
    finally:
        relay.terminate()
        relay.wait(10)
    print("%d invitations composed and delivered to 127.0.0.1 (%d accepted by the relay) in %.2f s: "
          "%.1f ms each, %.0f per second" % (total, sent, seconds, seconds * 1000 / total, total / seconds))
    print("goal: %d in <= %.0f s: %s" % (total, GOAL_SECONDS, "met" if seconds <= GOAL_SECONDS else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
