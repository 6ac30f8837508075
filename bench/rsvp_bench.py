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
import io
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
from put_bench import AUTH, CALENDAR, USER, configuration, prefill

from invito.plugins.imip.tokens import ReplyTokens
from invito.plugins.rsvp import links
from invito.server.app import InvitoApplication

GUESTS = 50


def call(app: radicale.Application, method: str, path: str, body: bytes = b"", query: str = "",
         **headers: str) -> tuple[str, dict[str, str], bytes]:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SCRIPT_NAME": "",
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
               "wsgi.url_scheme": "http", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "5232",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:5232",
               **{"HTTP_" + k.upper(): v for k, v in headers.items()}}
    answer: list[tuple[str, dict[str, str]]] = []
    chunks = app(environ, lambda status, hdrs, exc_info=None: answer.append((status, dict(hdrs))))
    return answer[0][0], answer[0][1], b"".join(chunks)


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
        apps = {}
        for impl in ("radicale", "invito"):
            folder = Path(tmp, impl, "collections")
            shutil.copytree(template, folder)
            config = configuration(folder, impl, True)
            if impl == "invito":
                config.update({"rsvp": {"requests_per_minute": "0"}}, "bench", privileged=True)
            apps[impl] = radicale.Application(config) if impl == "radicale" else InvitoApplication(config)
        uid = uuid.uuid4().hex
        event = meeting(uid, GUESTS).encode()
        href = CALENDAR + uid + ".ics"
        for app in apps.values():
            status, _, _ = call(app, "PUT", href, event, authorization=AUTH, content_type="text/calendar")
            assert status.startswith("201"), status
        tokens = ReplyTokens(str(Path(tmp, "invito", "imip", "tokens")))
        token = tokens.issue(f"mailto:{USER}@example.com", uid, "mailto:guest7@partner0.example.org")
        page = links.path_of(links.Link(token.token), tokens.sign)
        invito, plain = apps["invito"], apps["radicale"]

        def show(_: int) -> None:
            status, _, body = call(invito, "GET", page)
            assert status.startswith("200") and b"Quarterly review" in body, status

        def answer(i: int) -> None:
            _, _, body = call(invito, "GET", page)
            stamp = re.search(rb'name="form" value="([^"]+)"', body).group(1).decode()
            form = urlencode({"form": stamp, "answer": ("ACCEPTED", "DECLINED")[i % 2]}).encode()
            status, headers, _ = call(invito, "POST", page, form, content_type="application/x-www-form-urlencoded")
            assert status.startswith("303"), status
            status, _, _ = call(invito, "GET", page, query=headers["Location"].split("?", 1)[1])
            assert status.startswith("200"), status

        def get(_: int) -> None:
            status, _, body = call(plain, "GET", href, authorization=AUTH)
            assert status.startswith("200") and b"Quarterly review" in body, status

        def put(i: int) -> None:
            body = event.replace(b"Room 4", b"Room %d" % i)
            status, _, _ = call(plain, "PUT", href, body, authorization=AUTH, content_type="text/calendar")
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
