# SPDX-License-Identifier: GPL-3.0-or-later
"""The RSVP page's cost against plain Radicale serving the same event, in one run.

An organizer's calendar holds 1,000 events and a meeting with 50 external guests. Through the WSGI
applications in-process (fsync on, as in production):

- showing a guest's page (GET: the organizer's copy read through the UID index, the guest's part turned
  into the localized page) against plain Radicale's GET of the same event's ``.ics``;
- answering on it (POST: the REPLY through triage and ``Storage.receive`` with the inbox copy and the
  organizer's notification spooled, then the redirect's GET) against plain Radicale's PUT of the
  same event.

Usage: ``python bench/rsvp_bench.py [--requests N]``.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import radicale

from invite_bench import meeting
from put_bench import AUTH, CALENDAR, USER, Client, configuration, prefill

from invito.plugins.imip.tokens import ReplyTokens
from invito.plugins.rsvp import links
from invito.server.app import InvitoApplication

GUESTS = 50


def timed(requests: int, step) -> float:  # type: ignore[no-untyped-def]
    """Milliseconds per call of ``step(i)``."""
    start = time.perf_counter()
    for i in range(requests):
        step(i)
    return (time.perf_counter() - start) * 1000 / requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="invito-rsvp-bench-") as tmp:
        template = Path(tmp, "template", "collections")
        prefill(template, 1000, True)
        apps: dict[str, Client] = {}
        for impl in ("radicale", "invito"):
            folder = Path(tmp, impl, "collections")
            shutil.copytree(template, folder)
            config = configuration(folder, impl, True)
            if impl == "invito":
                config.update({"rsvp": {"requests_per_minute": "0"}}, "bench", privileged=True)
            apps[impl] = Client(radicale.Application(config) if impl == "radicale" else InvitoApplication(config))
        uid = uuid.uuid4().hex
        event = meeting(uid, GUESTS).encode()
        href = CALENDAR + uid + ".ics"
        for client in apps.values():
            status, _, _ = client.request("PUT", href, event, authorization=AUTH, content_type="text/calendar")
            assert status.startswith("201"), status
        tokens = ReplyTokens(str(Path(tmp, "invito", "imip", "tokens")))
        token = tokens.issue(f"mailto:{USER}@example.com", uid, "mailto:guest7@partner0.example.org")
        page = links.path_of(links.Link(token.token), tokens.sign)
        invito, plain = apps["invito"], apps["radicale"]

        def show(_: int) -> None:
            status, _, body = invito.request("GET", page)
            assert status.startswith("200") and b"Quarterly review" in body, status

        def answer(i: int) -> None:
            _, _, body = invito.request("GET", page)
            hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', body.decode()))
            form = urlencode({**hidden, "answer": ("ACCEPTED", "DECLINED")[i % 2]}).encode()
            status, headers, _ = invito.request("POST", page, form, content_type="application/x-www-form-urlencoded")
            assert status.startswith("303"), status
            status, _, _ = invito.request("GET", page, query=headers["Location"].split("?", 1)[1])
            assert status.startswith("200"), status

        def get(_: int) -> None:
            status, _, body = plain.request("GET", href, authorization=AUTH)
            assert status.startswith("200") and b"Quarterly review" in body, status

        def put(i: int) -> None:
            body = event.replace(b"Room 4", b"Room %d" % i)
            status, _, _ = plain.request("PUT", href, body, authorization=AUTH, content_type="text/calendar")
            assert status.startswith("20"), status

        show(0), answer(0), get(0), put(0)  # warm-up: caches, templates, index
        results = {"show": [], "answer": [], "get": [], "put": []}
        for _ in range(3):  # interleaved rounds: background load hits every case alike
            results["show"].append(timed(args.requests, show))
            results["get"].append(timed(args.requests, get))
            results["answer"].append(timed(args.requests // 4, answer))
            results["put"].append(timed(args.requests // 4, put))
    best = {name: min(values) for name, values in results.items()}
    print("per request, best of 3 rounds, 1,000-event calendar, a meeting with %d guests, fsync on:" % GUESTS)
    print("  RSVP page (GET)                         %7.2f ms" % best["show"])
    print("  plain Radicale GET of the event's .ics  %7.2f ms" % best["get"])
    print("  RSVP answer (GET page, POST, GET)       %7.2f ms" % best["answer"])
    print("  plain Radicale PUT of the event         %7.2f ms" % best["put"])
    print("ratios: page / Radicale GET = %.2f; answer / Radicale PUT = %.2f"
          % (best["show"] / best["get"], best["answer"] / best["put"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
