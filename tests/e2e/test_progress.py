# SPDX-License-Identifier: GPL-3.0-or-later
"""Long work shows progress: a bar on a terminal, counts (and no bar) in logs and pipes."""
from __future__ import annotations

import fcntl
import os
import pty
import shutil
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from tests.e2e.conftest import restart, start, stop, write_config
from tests.e2e.test_queue_admin import QUEUE, invite, outbound
from tests.e2e.test_scheduling import calendar, event

BAR_MARKS = ("\r", "%|", "█", "message/s")  # what tqdm draws; none of it belongs in a log or a pipe


@pytest.fixture
def three_waiting(tmp_path: Path) -> Path:
    config = write_config(tmp_path, 5232)
    spool = outbound(config)
    for n in range(3):
        invite(spool, f"review-{n}", "guest@partner.example.org")
    return config


def on_a_terminal(command: list[str], size: tuple[int, int]) -> tuple[int, str]:
    """Run ``command`` with stdin, stdout and stderr on a new pseudo-terminal of ``size`` (rows, columns;
    0, 0: one that does not tell its size) and return its exit status and all it wrote there."""
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    try:
        proc = subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True)
    finally:
        os.close(terminal)
    output = b""
    try:
        while chunk := os.read(main, 65536):
            output += chunk
    except OSError:  # EIO: the command exited and the terminal's last holder closed it
        pass
    finally:
        os.close(main)
    return proc.wait(timeout=30), output.decode("utf-8", "replace")


@pytest.mark.parametrize("size", [(40, 120), (0, 0)], ids=["sized", "unsized"])
def test_retry_all_on_a_terminal_shows_a_bar(three_waiting: Path, size: tuple[int, int]) -> None:
    status, output = on_a_terminal([*QUEUE, "retry", "all", "--config", str(three_waiting)], size)
    assert status == 0, output
    assert "retry all: 100%|" in output and "| 3/3 [" in output  # the finished bar, left on the screen
    lines = output.replace("\r\n", "\n").split("\n")
    assert "3 of 3 outbound messages retried" in lines
    assert sum(line.rsplit("\r", 1)[-1].startswith("[") and "next try set to now" in line
               for line in lines) == 3  # each message's line, printed above the bar


def test_retry_all_without_a_terminal_prints_counts_and_no_bar(three_waiting: Path) -> None:
    result = subprocess.run([*QUEUE, "retry", "all", "--config", str(three_waiting)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert [line.split(" ", 1)[0] for line in lines[:3]] == ["[1/3]", "[2/3]", "[3/3]"]
    assert lines[3:] == ["3 of 3 outbound messages retried"]
    assert not any(mark in result.stdout for mark in BAR_MARKS)


@pytest.mark.only_backend("files")  # the UID index files in .Radicale.cache; the database indexes dav_item.uid
def test_a_rebuilt_uid_index_is_counted_in_the_log(tmp_path: Path) -> None:
    proc, srv = start(tmp_path)
    try:
        work = calendar(srv, "alice")
        for n in range(5):
            work.save_event(event(f"standup-{n}", attendees=()))
    finally:
        stop(proc)
    assert "rebuilt the UID index" not in srv.log.read_text()  # a new calendar's index is built as it fills
    index = srv.data / "collections" / "collection-root" / "alice" / "work" / ".Radicale.cache" / "invito-uid"
    assert (index / "snapshot.json").exists()
    shutil.rmtree(index)

    proc = restart(srv)
    try:
        srv.principals.clear()
        srv.principal("alice").calendar(cal_id="work").save_event(event("standup-5", attendees=()))  # UID lookup
    finally:
        stop(proc)
    log = srv.log.read_text()
    rebuilt = [line for line in log.splitlines() if "rebuilt the UID index" in line]
    assert len(rebuilt) == 1 and "rebuilt the UID index of 'alice/work': 5 items in " in rebuilt[0]
    assert (index / "snapshot.json").exists()
    assert not any(mark in log for mark in BAR_MARKS)
