# SPDX-License-Identifier: GPL-3.0-or-later
"""The one place that picks the backend of everything beside the events: ``[invito] database`` set means
the shared database (any node's sender, listener and page see the same queues and tokens), empty means
the data folder. The storage itself is picked by ``Storage()`` from the same setting; its outbound queue
is ``storage.scheduler.spool``, made by ``outbound`` here.
"""
from __future__ import annotations

from radicale.config import Configuration

from invito.plugins.data_folder import DataFolder
from invito.plugins.imip.inbound_spool import InboundSpool
from invito.plugins.imip.spool import OutboundSpool
from invito.plugins.imip.tokens import ReplyTokens
from invito.storage.pg import db
from invito.storage.pg.inbound import InboundQueue
from invito.storage.pg.outbox import Outbox
from invito.storage.pg.tokens import DatabaseReplyTokens


def database(configuration: Configuration) -> db.Database | None:
    """This process's pool on the configured database, or None on the filesystem backend."""
    url = db.configured_url(configuration)
    return db.shared(url) if url else None


def outbound(configuration: Configuration) -> OutboundSpool | Outbox:
    shared = database(configuration)
    return Outbox(shared) if shared is not None else OutboundSpool(DataFolder.of(configuration).outbound_spool)


def inbound(configuration: Configuration) -> InboundSpool | InboundQueue:
    shared = database(configuration)
    return InboundQueue(shared) if shared is not None else InboundSpool(DataFolder.of(configuration).inbound_spool)


def tokens(configuration: Configuration) -> ReplyTokens:
    shared = database(configuration)
    return DatabaseReplyTokens(shared) if shared is not None else ReplyTokens(DataFolder.of(configuration).tokens)
