# SPDX-License-Identifier: GPL-3.0-or-later
"""PUT cost of inviting external guests: an event with 50 external guests against one with none.

Invitations to external guests are written to the outbound spool inside the PUT (so a committed change
always has its messages) and sent after the response; this measures what that costs the organizer's
client. Both cases run through InvitoApplication in-process with fsync on, interleaved, on calendars
of the same size, with plain Radicale (same events, no scheduling) in the same run for scale.
Usage: ``python bench/invite_bench.py [--puts N] [--guests N]``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

from put_bench import USER, Client, application, prefill

GOAL = 1.5  # PUT with guests / PUT without, at most


def meeting(uid: str, guests: int) -> str:
    attendees = "".join("ATTENDEE;CN=Guest %d;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:guest%d@partner%d.example.org\r\n"
                        % (i, i, i % 7) for i in range(guests))
    organizer = ("ORGANIZER;CN=Bench:mailto:%s@example.com\r\n" % USER) if guests else ""
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Invito//bench//EN\r\nBEGIN:VEVENT\r\n"
            "UID:%s\r\nDTSTAMP:20300101T000000Z\r\nDTSTART:20301010T090000Z\r\nDURATION:PT1H\r\n"
            "SUMMARY:Quarterly review\r\nLOCATION:Room 4\r\n%s%sEND:VEVENT\r\nEND:VCALENDAR\r\n"
            % (uid, organizer, attendees))


def timed(client: Client, guests: int, puts: int) -> float:
    """Seconds per PUT of a new event with ``guests`` external guests."""
    start = time.perf_counter()
    for _ in range(puts):
        uid = uuid.uuid4().hex
        status = client.put(uid + ".ics", meeting(uid, guests))
        if not status.startswith("201"):
            raise RuntimeError("PUT answered %s" % status)
    return (time.perf_counter() - start) / puts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=100, help="PUTs per case and round (default 100)")
    parser.add_argument("--guests", type=int, default=50, help="external guests per event (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args(argv)
    totals = {"radicale": 0.0, "invito, no guests": 0.0, "invito, %d guests" % args.guests: 0.0}
    with tempfile.TemporaryDirectory(prefix="invito-invite-bench-") as tmp:
        clients = {}
        for name in totals:
            folder = Path(tmp, name.replace(" ", "").replace(",", "-"))
            prefill(folder / "collections", 100, True)
            clients[name] = Client(application(folder / "collections", name.split(",")[0], True))
        guests = {name: (args.guests if name.endswith("guests") and "no" not in name else 0) for name in totals}
        for _ in range(args.rounds):
            for name, client in clients.items():
                totals[name] += timed(client, guests[name], args.puts) / args.rounds
        spooled = sum(1 for _ in Path(tmp).rglob("queue/*.json"))
    print("%-22s %12s" % ("case", "ms per PUT"))
    for name, seconds in totals.items():
        print("%-22s %12.2f" % (name, seconds * 1000))
    ratio = totals["invito, %d guests" % args.guests] / totals["invito, no guests"]
    print("messages spooled: %d" % spooled)
    print("PUT with %d guests / PUT with none = %.2f (goal <= %.1f: %s)"
          % (args.guests, ratio, GOAL, "met" if ratio <= GOAL else "NOT met"))
    print("Invito without guests / plain Radicale = %.2f" % (totals["invito, no guests"] / totals["radicale"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
