# SPDX-License-Identifier: GPL-3.0-or-later
"""Invito's storage: Radicale's storage API with implicit scheduling, on two backends.

Radicale loads this module by ``[storage] type = invito.storage`` and constructs ``Storage``, which is the
filesystem's (``files``: the embedded default) when ``[invito] database`` is empty and PostgreSQL's
(``pg.scheduled``: any number of nodes on one database) when it is set. What scheduling does is written
once, in ``scheduled`` and ``scheduling``; each backend supplies its unit of work, its outbound queue and
its side records.
"""
from __future__ import annotations

from invito.storage import vobject_base64  # noqa: F401  (fixes vobject when imported)
from invito.storage.scheduled import Collection, Storage

__all__ = ["Collection", "Storage"]
