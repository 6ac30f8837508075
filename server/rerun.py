# SPDX-License-Identifier: GPL-3.0-or-later
"""A request whose database write hit a deadlock or serialization failure runs again from its start.

On PostgreSQL two writers can still meet in a circle (homes and meetings are locked in a fixed order, but
PostgreSQL's own row locks are not ours to order), and PostgreSQL breaks it by failing one of them. That
request's transaction is rolled back whole, so running the request again is safe: its body is buffered
once, and each run reads it from the start. The filesystem backend never raises such an error.
"""
from __future__ import annotations

import io

from radicale import app, types

from invito.storage.pg import db


class ApplicationPartRerun(app.Application):

    def _handle_request(self, environ: types.WSGIEnviron):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if self._max_content_length and length > self._max_content_length:
            return super()._handle_request(environ)  # refused unread with 413: nothing to run twice
        body = environ["wsgi.input"].read(length) if length else b""

        def run():
            environ["wsgi.input"] = io.BytesIO(body)
            return super(ApplicationPartRerun, self)._handle_request(environ)

        return db.rerun(run, "%s %s" % (environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")))
