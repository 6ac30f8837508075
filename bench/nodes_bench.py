# SPDX-License-Identifier: GPL-3.0-or-later
"""The database backend against the filesystem, and two nodes against one: REPLYs applied per second
and the time of a 500-guest invitation.

REPLYs: each case runs real `invito serve` processes (one on the filesystem; one on PostgreSQL with its
default two inbound processor threads, and with one; two on one PostgreSQL database), every round on
fresh data, the cases interleaved; gives its organizers ``--replies`` meetings of one guest each (PUT over HTTP), and has
one mail-server process per node send each guest's REPLY over SMTP, the replies split evenly across the
nodes' listeners. Timed: from the first REPLY sent until the last one is applied (no message left in the
inbound queue; each is removed in the transaction, or after the flush, that applied it). Fan-out: PUTs
of a new event with ``--guests`` external guests through the application in-process, fsync on,
interleaved on both backends. PostgreSQL is a throwaway cluster with fsync on (or ``--database-server``).
Usage: ``python bench/nodes_bench.py [--replies N] [--guests N] [--rounds N]``.
"""
from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import requests

import pg
from invite_bench import timed
from put_bench import USER, Client, application, prefill
import reply_bench
from reply_bench import reply

from invito.server import config as invito_config
from invito.storage import backend

GOAL_TWO_NODES = 1.6  # two nodes' REPLYs per second / one node's
INVITO = str(Path(sys.executable).parent / "invito")
# The meetings' organizers: each user's writes wait for one another on any node (their home's lock, their
# calendar's revision), so what two nodes can share is the work of different users.
ORGANIZERS = tuple(f"{USER}{n}" for n in range(8))


def _auth(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:x".encode()).decode()}


def meeting(uid: str, n: int, organizer: str) -> str:
    """reply_bench's meeting of guest ``n``, organized by ``organizer``."""
    return reply_bench.meeting(uid, n).replace(f"mailto:{USER}@example.com", f"mailto:{organizer}@example.com")

SEND = """
import smtplib, sys, os
port, folder, mine, every = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
    for n, name in enumerate(sorted(os.listdir(folder))):
        if n % every == mine:
            rcpt, _ = name.split(" ", 1)
            with open(os.path.join(folder, name), "rb") as f:
                smtp.sendmail("guest@partner.example.org", [rcpt], f.read())
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_config(folder: Path, database: str, processors: int) -> tuple[Path, int, int]:
    """A node's config: no login (``[auth] type = none``), replies by token, mail in on a free port."""
    http, smtp = free_port(), free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "invito.conf"
    config.write_text(f"[invito]\ndata_folder = {folder.parent / 'data'}\ndatabase = {database}\n"
                      f"[server]\nhosts = 127.0.0.1:{http}\n[auth]\ntype = none\n"
                      "[scheduling]\ndomain = example.com\n[logging]\nlevel = warning\n"
                      f"[imip]\nreply_address = invito+{{token}}@cal.example.com\nlisten = 127.0.0.1:{smtp}\n"
                      f"notify_organizer = off\nprocessors = {processors}\n")
    return config, http, smtp


def serve(config: Path, http: int) -> subprocess.Popen:
    proc = subprocess.Popen([INVITO, "serve", "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    for line in proc.stdout:
        if b"ready" in line.lower():
            return proc
    raise RuntimeError("invito serve did not start")


def pending(database: str, data: Path) -> int:
    """Messages accepted and not applied yet."""
    if database:
        with psycopg.connect(database) as conn:
            return conn.execute("SELECT count(*) FROM invito_inbound WHERE state = 'pending'").fetchone()[0]
    queue = data / "spool" / "inbound" / "queue"
    return sum(1 for n in os.listdir(queue) if n.endswith(".json")) if queue.is_dir() else 0


def replies_per_second(tmp: Path, database: str, nodes: int, processors: int, replies: int) -> float:
    configs = [node_config(tmp / f"node{n}", database, processors) for n in range(nodes)]
    procs = [serve(config, http) for config, http, _ in configs]
    try:
        base = f"http://127.0.0.1:{configs[0][1]}"
        for organizer in ORGANIZERS:
            requests.request("MKCALENDAR", f"{base}/{organizer}/calendar/", headers=_auth(organizer), timeout=30)
        uids = [uuid.uuid4().hex for _ in range(replies)]
        for n, uid in enumerate(uids):
            organizer = ORGANIZERS[n % len(ORGANIZERS)]
            answer = requests.put(f"{base}/{organizer}/calendar/{uid}.ics", data=meeting(uid, n, organizer),
                                  timeout=30, headers={**_auth(organizer), "Content-Type": "text/calendar; charset=utf-8"})
            assert answer.status_code == 201, answer.text
        configuration = invito_config.load(str(configs[0][0]))
        tokens = backend.tokens(configuration)
        mails = tmp / "mails"
        mails.mkdir()
        for n, uid in enumerate(uids):  # the tokens their invitations would carry
            token = tokens.issue(f"mailto:{ORGANIZERS[n % len(ORGANIZERS)]}@example.com", uid,
                                 f"mailto:guest{n}@partner.example.org").token
            to = f"invito+{token}@cal.example.com"
            (mails / f"{to} {n:06d}").write_bytes(reply(uid, n, to))
        start = time.perf_counter()
        senders = [subprocess.Popen([sys.executable, "-c", SEND, str(smtp), str(mails), str(n), str(nodes)])
                   for n, (_, _, smtp) in enumerate(configs)]
        while any(s.poll() is None for s in senders) or pending(database, tmp / "data"):
            time.sleep(0.01)
        seconds = time.perf_counter() - start
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    return replies / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=500, help="REPLYs per case (default 500)")
    parser.add_argument("--guests", type=int, default=500, help="guests of the fan-out event (default 500)")
    parser.add_argument("--puts", type=int, default=10, help="fan-out PUTs per backend and round (default 10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-server", help="a PostgreSQL URL to create databases from (default: a "
                                                  "throwaway cluster)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="invito-nodes-bench-") as tmp, pg.databases(args.database_server) as dbs:
        # (name, nodes, inbound processor threads per node); each case gets a fresh database every round
        cases = (("files, one node", 0, 1), ("postgresql, one node", 1, 2),
                 ("postgresql, one node, 1 thread", 1, 1), ("postgresql, two nodes", 2, 2))
        runs: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for round_ in range(args.rounds):
            for name, nodes, processors in cases:
                folder = Path(tmp, f"{round_}-" + name.replace(", ", "-").replace(" ", "_"))
                runs[name].append(replies_per_second(folder, dbs.create() if nodes else "", max(nodes, 1),
                                                     processors, args.replies))
        rates = {name: statistics.median(values) for name, values in runs.items()}
        for name, values in runs.items():
            print("%-32s %7.1f REPLYs applied per second (min %.1f, max %.1f, %d rounds)"
                  % (name, rates[name], min(values), max(values), len(values)), flush=True)
        clients = {}
        for name, database in (("files", ""), ("postgresql", dbs.create())):
            folder = Path(tmp, "fan-out-" + name, "collections")
            prefill(folder, 100, True, database)
            clients[name] = Client(application(folder, "invito", True, database))
        fan_out = dict.fromkeys(clients, 0.0)
        for _ in range(args.rounds):
            for name, client in clients.items():
                fan_out[name] += timed(client, args.guests, True, args.puts) / args.rounds
    for name, seconds in fan_out.items():
        print("%-32s %7.1f ms per PUT inviting %d guests" % (name, seconds * 1000, args.guests))
    ratio = rates["postgresql, one node"] / rates["files, one node"]
    print("REPLYs/s postgresql / files = %.2f (goal >= 1: %s)" % (ratio, "met" if ratio >= 1 else "NOT met"))
    ratio = fan_out["files"] / fan_out["postgresql"]
    print("fan-out files time / postgresql time = %.2f (goal >= 1: %s)" % (ratio, "met" if ratio >= 1 else "NOT met"))
    ratio = rates["postgresql, two nodes"] / rates["postgresql, one node"]
    print("REPLYs/s two nodes / one node = %.2f (goal >= %.1f: %s)"
          % (ratio, GOAL_TWO_NODES, "met" if ratio >= GOAL_TWO_NODES else "NOT met; one node's two processor "
             "threads already keep this machine's cores busy"))
    ratio = rates["postgresql, two nodes"] / rates["postgresql, one node, 1 thread"]
    print("REPLYs/s two nodes / one node with one processor thread = %.2f" % ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
