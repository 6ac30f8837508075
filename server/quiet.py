# SPDX-License-Identifier: GPL-3.0-or-later
"""Radicale's chatter at debug: `invito serve` shows its own summary, then one line per request.

At info level Radicale logs about 120 lines of settings at start-up (each Storage it makes repeats its
checks) and three lines per request (received, login, response). For an Invito admin only the response
line, which carries method, path and status, is news; the rest is detail for ``[logging] level = debug``.
Warnings and errors always pass unchanged.
"""
from __future__ import annotations

import logging

import radicale.log

OUTCOME = " response status for "  # Radicale's line for a request's result ("PUT response status for …: 201")


class RadicaleDetailToDebug(logging.Filter):
    """Installed on Radicale's logger: its info and notice records become debug records, except outcomes."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        if not logging.DEBUG < record.levelno < logging.WARNING or OUTCOME in str(record.msg):
            return True
        if not self._logger.isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True


def install() -> None:
    """Before ``radicale.log.setup``, so that even its "Logging level set to" lines are demoted."""
    radicale.log.logger.addFilter(RadicaleDetailToDebug(radicale.log.logger))
