# SPDX-License-Identifier: GPL-3.0-or-later
"""PUT throughput against calendar size: plain Radicale 3.9 versus Invito on both backends (scheduling on).

Each case copies a prefilled calendar (N events, Radicale's item cache and per-item sync history
already built, as on a server that clients sync with), makes one unmeasured warm-up PUT, then times
PUTs of new events (each a fresh UID, ``If-None-Match: *``) through the WSGI application in-process,
the same request path a client's PUT takes. Cases run in interleaved rounds so background load skews
them alike. Invito runs on the filesystem ("invito") and on PostgreSQL ("invito-pg", each case a database of
its own on a throwaway cluster, or on ``--database-server``). Usage: ``python bench/put_bench.py [--quick]``;
see README.md.
"""
from __future__ import annotations

import argparse
import base64
import io
import logging
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import radicale
import radicale.config
import radicale.item as radicale_item
import radicale.storage

import pg
from invito.server import config as invito_config
from invito.server.app import InvitoApplication

logger = logging.getLogger("invito.bench")

USER = "bench"
CALENDAR = "/%s/calendar/" % USER
AUTH = "Basic " + base64.b64encode(("%s:x" % USER).encode()).decode()
GOAL_FLAT = 0.95    # Invito@largest / Invito@smallest: at least as fast, within 5 % of noise
GOAL_FASTER = 30.0  # Invito@largest / Radicale@largest
IMPLS = ("radicale", "invito", "invito-pg")


def event(uid: str, day: int) -> str:
    start = "2024%02d%02dT%02d0000Z" % (1 + day // 28 % 12, 1 + day % 28, 8 + day % 10)
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Invito//bench//EN\r\nBEGIN:VEVENT\r\n"
            "UID:%s\r\nDTSTAMP:20240101T000000Z\r\nDTSTART:%s\r\nDURATION:PT1H\r\n"
            "SUMMARY:Meeting %d\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n" % (uid, start, day))


def configuration(folder: Path, impl: str, fsync: bool, database: str = "") -> radicale.config.Configuration:
    """Plain Radicale's defaults, or Invito as shipped (its schema, storage and a scheduling domain), on
    the filesystem or on ``database``."""
    config = radicale.config.load() if impl == "radicale" else invito_config.load(None)
    config.update({
        "storage": {"type": "multifilesystem" if impl == "radicale" else "invito.storage",
                    "filesystem_folder": str(folder), "_filesystem_fsync": str(fsync)},
        "auth": {"type": "none"},
        "rights": {"type": "owner_only"},
        **({} if impl == "radicale" else {"scheduling": {"domain": "example.com"},
                                          "invito": {"data_folder": str(folder.parent), "database": database}}),
    }, "bench", privileged=True)
    return config


def application(folder: Path, impl: str, fsync: bool, database: str = "") -> radicale.Application:
    config = configuration(folder, impl, fsync, database)
    return radicale.Application(config) if impl == "radicale" else InvitoApplication(config)


def prefill(folder: Path, size: int, fsync: bool, database: str = "") -> None:
    """A calendar of ``size`` events, written the fast way, with item cache and sync history (in
    ``database`` when given)."""
    storage = radicale.storage.load(configuration(folder, "invito" if database else "radicale", fsync, database))
    items = (radicale_item.Item(collection_path=CALENDAR.strip("/"), text=event("prefill-%d" % i, i))
             for i in range(size))
    with storage.acquire_lock("w"):
        storage.create_collection("/%s/" % USER)
        collection, _, _ = storage.create_collection(CALENDAR, items=items, props={"tag": "VCALENDAR"})
        collection.sync()  # history entry per item, as once any client has synced


class Client:
    """Requests straight into a WSGI application, as its server would hand them over (no sockets)."""

    def __init__(self, app: radicale.Application) -> None:
        self._app = app

    def put(self, href: str, body: str) -> str:
        """A new event in the calendar (``If-None-Match: *``); the status line."""
        return self.request("PUT", CALENDAR + href, body.encode(), authorization=AUTH, if_none_match="*",
                            content_type="text/calendar; charset=utf-8")[0]

    def request(self, method: str, path: str, body: bytes = b"", query: str = "",
                **headers: str) -> tuple[str, dict[str, str], bytes]:
        """Any request; ``headers`` by their CGI names without ``HTTP_`` (``if_match``); status line,
        headers and body of the answer."""
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SCRIPT_NAME": "",
            "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "5232",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:5232",
            **{("" if name == "content_type" else "HTTP_") + name.upper(): value for name, value in headers.items()},
        }
        answer: list[tuple[str, dict[str, str]]] = []
        chunks = self._app(environ, lambda status, hdrs, exc_info=None: answer.append((status, dict(hdrs))))
        return answer[0][0], answer[0][1], b"".join(chunks)


@dataclass
class Case:
    """One (implementation, calendar size): its own copy of the calendar and its own Application."""
    impl: str
    size: int
    client: Client
    puts: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.puts / self.seconds

    def expect(self, status: str, wanted: str, what: str) -> None:
        if not status.startswith(wanted):
            raise RuntimeError("%s@%d: %s answered %s, expected %s" % (self.impl, self.size, what, status,
                                                                       wanted))

    def run(self, puts: int, max_seconds: float) -> None:
        """Up to ``puts`` new events, stopping early (after at least one) when ``max_seconds`` is over."""
        start = time.perf_counter()
        for _ in range(puts):
            uid = uuid.uuid4().hex
            self.expect(self.client.put(uid + ".ics", event(uid, self.puts)), "201", "PUT")
            self.puts += 1
            if time.perf_counter() - start > max_seconds:
                break
        self.seconds += time.perf_counter() - start


def setup(template: Path, work: Path, impl: str, size: int, fsync: bool, database: str = "") -> Case:
    """A case on a copy of ``template`` (the filesystem), or on ``database`` prefilled now."""
    if database:
        prefill(work, size, fsync, database)
    else:
        shutil.copytree(template, work)
    case = Case(impl, size, Client(application(work, impl, fsync, database)))
    # Warm-up: first touch of the collection in this process (index load/verify, history cleaning).
    case.expect(case.client.put("warmup.ics", event("warmup", 0)), "201", "warm-up PUT")
    return case


def report(cases: list[Case], sizes: list[int]) -> None:
    print("%-9s %8s %6s %9s %9s" % ("impl", "events", "PUTs", "seconds", "PUT/s"))
    for c in cases:
        print("%-9s %8d %6d %9.2f %9.1f" % (c.impl, c.size, c.puts, c.seconds, c.rate))
    rate = {(c.impl, c.size): c.rate for c in cases}
    small, large = min(sizes), max(sizes)
    for impl in sorted({c.impl for c in cases} - {"radicale"}):
        if small != large:
            flat = rate[impl, large] / rate[impl, small]
            print("%s@%d / %s@%d = %.2f (goal >= %.2f: %s)"
                  % (impl, large, impl, small, flat, GOAL_FLAT, "met" if flat >= GOAL_FLAT else "NOT met"))
        faster = rate[impl, large] / rate["radicale", large]
        print("%s@%d / Radicale@%d = %.1f (goal >= %.0f: %s)"
              % (impl, large, large, faster, GOAL_FASTER, "met" if faster >= GOAL_FASTER else "NOT met"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=300, help="PUTs per case (default 300)")
    parser.add_argument("--sizes", default="100,10000", help="calendar sizes (default 100,10000)")
    parser.add_argument("--max-seconds", type=float, default=25.0,
                        help="time budget per case, split over the rounds (default 25)")
    parser.add_argument("--quick", action="store_true", help="100 PUTs, sizes 100,2000, 10 s per case")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--dir", help="where to put the calendars (default: the system temp folder)")
    parser.add_argument("--fsync", action="store_true", help="fsync like a production server")
    parser.add_argument("--impls", default=",".join(IMPLS), help="what to measure (default %s)" % ",".join(IMPLS))
    parser.add_argument("--database-server", help="a PostgreSQL URL to create the invito-pg databases from "
                                                  "(default: a throwaway cluster)")
    args = parser.parse_args(argv)
    impls = [impl for impl in IMPLS if impl in args.impls.split(",")]
    if args.quick:
        args.puts, args.sizes, args.max_seconds = 100, "100,2000", 10.0
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("radicale").setLevel(logging.ERROR)
    print("radicale %s; Invito: InvitoApplication + invito.storage (files, and PostgreSQL as invito-pg), "
          "scheduling on; fsync %s" % (radicale.VERSION, "on" if args.fsync else "off"))
    cases = []
    with tempfile.TemporaryDirectory(prefix="invito-put-bench-", dir=args.dir) as tmp, \
            pg.databases(args.database_server if "invito-pg" in impls else "none") as dbs:
        for size in sizes:
            template = Path(tmp, "template-%d" % size)
            t0 = time.perf_counter()
            prefill(template, size, args.fsync)
            logger.info("prefilled %d events in %.1f s", size, time.perf_counter() - t0)
            for impl in impls:
                cases.append(setup(template, Path(tmp, "%s-%d" % (impl, size)), impl, size, args.fsync,
                                   dbs.create() if impl == "invito-pg" else ""))
        # Interleaved rounds, so a burst of background load hits every case alike.
        for round_ in range(args.rounds):
            for case in cases:
                case.run(args.puts // args.rounds, args.max_seconds / args.rounds)
            logger.info("round %d/%d done", round_ + 1, args.rounds)
        for case in cases:  # the index must still refuse a UID that the calendar holds
            case.expect(case.client.put("duplicate.ics", event("prefill-0", 0)), "409", "duplicate UID")
    report(cases, sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
