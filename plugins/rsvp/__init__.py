# SPDX-License-Identifier: GPL-3.0-or-later
"""Answering an invitation from a web page, for guests whose mail program shows no invitation buttons.

Pure pieces: the signed links and forms (``links``), what the page may offer and the REPLY it sends
(``answer``), and the per-client request budget (``ratelimit``). The HTTP side is ``invito.server.rsvp``.
"""
