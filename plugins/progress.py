# SPDX-License-Identifier: GPL-3.0-or-later
"""Progress bars for long work (index rebuilds, ``invito queue retry all``, later ``invito migrate-to-db``).

A bar is for a person watching a terminal: it is drawn on stderr only when stderr is one, so tests, pipes
and systemd's journal get none of its carriage returns. Counts for logs are the caller's to write, since
only the caller knows what "done" means (retried, read, copied). tqdm draws the bar: it sizes it to the
terminal, throttles redraws and keeps lines printed meanwhile (``say``) from tearing it.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


FALLBACK_SIZE = (80, 24)  # a terminal that does not tell its size (0 × 0): tqdm would draw nothing


def progress(items: Iterable[T], label: str, total: int | None = None, unit: str = "item") -> Iterator[T]:
    """``items`` one by one, with a bar labelled ``label`` counting ``unit``s towards ``total`` on a terminal."""
    if not sys.stderr.isatty():
        yield from items
        return
    sized = min(os.get_terminal_size(sys.stderr.fileno())) > 0
    columns, rows = (None, None) if sized else FALLBACK_SIZE
    yield from tqdm(items, desc=label, total=total, unit=unit, file=sys.stderr, leave=True,
                    dynamic_ncols=sized, ncols=columns, nrows=rows)


def say(line: str) -> None:
    """Print ``line`` on stdout while a bar may be drawn: the bar is cleared first and drawn again below."""
    if sys.stderr.isatty():
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
    else:
        print(line, flush=True)
