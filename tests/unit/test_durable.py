# SPDX-License-Identifier: GPL-3.0-or-later
"""Durable writes: a process killed while it replaces a file leaves the old content or the new, never a
torn file; a failed write leaves nothing behind; a write-once file is never replaced."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from invito.plugins import durable

SIZE = 4 * 1024 * 1024  # big enough that a kill lands inside a write, not only between two

# Writes generation after generation of SIZE equal bytes into argv[1], printing each generation once it is
# in place; killed by the test while it writes.
WRITER = f"""
import sys
from invito.plugins import durable
path, generation = sys.argv[1], 0
while True:
    generation += 1
    durable.write_atomically(path, bytes([generation % 256]) * {SIZE}, sync=False)
    print(generation, flush=True)
"""


def whole_generation(path: Path) -> int:
    """The generation the file holds; fails the test when it is not exactly one generation's bytes."""
    data = path.read_bytes()
    assert len(data) == SIZE, f"torn file: {len(data)} of {SIZE} bytes"
    assert data.count(data[:1]) == SIZE, "torn file: bytes of two generations"
    return data[0]


@pytest.mark.parametrize("kill_after", [1, 3, 7])
def test_a_writer_killed_mid_replace_leaves_the_old_content_or_the_new(tmp_path: Path, kill_after: int) -> None:
    path = tmp_path / "snapshot.json"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    try:
        printed = [writer.stdout.readline() for _ in range(kill_after)]  # type: ignore[union-attr]
    finally:  # it is writing the next generation now
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    printed += writer.stdout.read().splitlines()  # type: ignore[union-attr]  # what it announced before the kill
    last = int(printed[-1])
    # The last generation it announced, or the next when the kill came between its rename and its line.
    assert whole_generation(path) in (last % 256, (last + 1) % 256)
    leftovers = [p.name for p in tmp_path.iterdir() if p != path]
    assert all(name.startswith(".tmp-snapshot.json") for name in leftovers)  # at most the killed write's
    durable.write_atomically(str(path), b"after", sync=True, sync_folder=True)  # the next write just works
    assert path.read_bytes() == b"after"


class Unwritable:
    """Data the file object refuses halfway, as a full disk does."""


def test_a_failed_replace_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "users"
    durable.write_atomically(str(path), b"alice:x\n", sync=True)
    with pytest.raises(TypeError):
        durable.write_atomically(str(path), Unwritable(), sync=True)  # type: ignore[arg-type]
    assert path.read_bytes() == b"alice:x\n"
    assert [p.name for p in tmp_path.iterdir()] == ["users"]


def test_a_fixed_temporary_left_by_a_kill_is_reused_and_gone_after(tmp_path: Path) -> None:
    path, temporary = tmp_path / "entry.json", tmp_path / ".entry.tmp"
    temporary.write_bytes(b'{"half": ')  # what a killed rewrite left
    durable.write_atomically(str(path), b'{"whole": true}', sync=True, temporary=str(temporary))
    assert path.read_bytes() == b'{"whole": true}'
    assert not temporary.exists()


def test_a_failed_new_file_is_removed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "entry.eml"
    with pytest.raises(TypeError):
        durable.write_new(str(path), Unwritable(), sync=True)  # type: ignore[arg-type]
    assert not path.exists()


def test_a_write_once_file_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    assert durable.write_once(str(path), b"first") is True
    assert durable.write_once(str(path), b"second") is False
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_appended_lines_follow_each_other(tmp_path: Path) -> None:
    path = tmp_path / "2030-01-01.jsonl"
    durable.append(str(path), b"one\n", sync=False)
    durable.append(str(path), b"two\n", sync=True)
    durable.fsync_file(str(path))
    durable.fsync_folder(str(tmp_path))
    assert path.read_bytes() == b"one\ntwo\n"
