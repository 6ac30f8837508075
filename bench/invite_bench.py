# SPDX-License-Identifier: GPL-3.0-or-later
"""PUT cost of inviting external guests: an event with 50 external guests against one with none.

Invitations to external guests are written to the outbound spool inside the PUT (so a committed change
always has its messages) and sent after the response; this measures what that costs the organizer's
client. All cases run in-process with fsync on, interleaved, on calendars of the same size. Two
baselines: an event with no attendees, and the same 50-guest event with SCHEDULE-AGENT=CLIENT (nobody
invited), which isolates what the invitations themselves cost from what handling a bigger object costs;
plain Radicale's own ratio for the bigger object is printed for scale.
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


def meeting(uid: str, guests: int, invited: bool = True) -> str:
    """An event with ``guests`` external guests; ``invited`` False: SCHEDULE-AGENT=CLIENT, nobody is sent
    anything, so the server does all the same work except the invitations."""
    agent = "" if invited else "SCHEDULE-AGENT=CLIENT;"
    attendees = "".join("ATTENDEE;%sCN=Guest %d;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:guest%d@partner%d.example.org\r\n"
                        % (agent, i, i, i % 7) for i in range(guests))
    organizer = ("ORGANIZER;CN=Bench:mailto:%s@example.com\r\n" % USER) if guests else ""
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Invito//bench//EN\r\nBEGIN:VEVENT\r\n"
            "UID:%s\r\nDTSTAMP:20300101T000000Z\r\nDTSTART:20301010T090000Z\r\nDURATION:PT1H\r\n"
            "SUMMARY:Quarterly review\r\nLOCATION:Room 4\r\n%s%sEND:VEVENT\r\nEND:VCALENDAR\r\n"
            % (uid, organizer, attendees))


def timed(client: Client, guests: int, invited: bool, puts: int) -> float:
    """Seconds per PUT of a new event with ``guests`` external guests."""
    start = time.perf_counter()
    for _ in range(puts):
        uid = uuid.uuid4().hex
        status = client.put(uid + ".ics", meeting(uid, guests, invited))
        if not status.startswith("201"):
            raise RuntimeError("PUT answered %s" % status)
    return (time.perf_counter() - start) / puts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=100, help="PUTs per case and round (default 100)")
    parser.add_argument("--guests", type=int, default=50, help="external guests per event (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args(argv)
    n = args.guests
    # case: (implementation, guests, invited)
    cases = {"radicale, no guests": ("radicale", 0, True), "radicale, %d guests" % n: ("radicale", n, True),
             "invito, no guests": ("invito", 0, True), "invito, %d not invited" % n: ("invito", n, False),
             "invito, %d invited" % n: ("invito", n, True)}
    totals = dict.fromkeys(cases, 0.0)
    with tempfile.TemporaryDirectory(prefix="invito-invite-bench-") as tmp:
        clients = {}
        for i, (name, (impl, _, _)) in enumerate(cases.items()):
            folder = Path(tmp, "case%d" % i)
            prefill(folder / "collections", 100, True)
            clients[name] = Client(application(folder / "collections", impl, True))
        for _ in range(args.rounds):
            for name, (_, guests, invited) in cases.items():
                totals[name] += timed(clients[name], guests, invited, args.puts) / args.rounds
        spooled = sum(1 for _ in Path(tmp).rglob("queue/*.json"))
    print("%-26s %12s" % ("case (fsync on)", "ms per PUT"))
    for name, seconds in totals.items():
        print("%-26s %12.2f" % (name, seconds * 1000))
    print("spool files written: %d (one per invitation message)" % spooled)
    invited, quiet, empty = (totals["invito, %d invited" % n], totals["invito, %d not invited" % n],
                             totals["invito, no guests"])
    print("invitations' own cost: %d invited / same event, none invited = %.2f (goal <= %.1f: %s)"
          % (n, invited / quiet, GOAL, "met" if invited / quiet <= GOAL else "NOT met"))
    print("%d invited / an event with no attendees = %.2f (plain Radicale, %d attendees / none = %.2f)"
          % (n, invited / empty, n, totals["radicale, %d guests" % n] / totals["radicale, no guests"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
