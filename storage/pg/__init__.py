# SPDX-License-Identifier: GPL-3.0-or-later
"""Invito on PostgreSQL (``[invito] database``): storage, queues and tokens shared by every node.

Plain SQL, one module per concern; psycopg 3 with a connection pool (Radicale serves each request on a
thread of its own, which the pool's sync API fits). See ``migrations`` for the schema. ``dav`` is Radicale's
storage plugin (``[storage] type = invito.storage.pg.dav``); ``collections``, ``items`` and ``sync`` hold its SQL.
"""
