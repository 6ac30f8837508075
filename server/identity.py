# SPDX-License-Identifier: GPL-3.0-or-later
"""Invito on its own ports: how `invito serve` makes itself known, and how `invito check` asks.

`invito check` binds the ports `invito serve` will listen on. When one is taken, only the program holding
it can say whether that is this server, already running (fine) or another program (a problem): the check
asks it as a client would, an OPTIONS for CalDAV and the greeting for inbound mail, each within
``TIMEOUT`` seconds so that a program that never answers cannot hold up the check.
"""
from __future__ import annotations

import http.client
import re
import socket
import ssl
import time
from dataclasses import dataclass

from invito.plugins.imip.listener import IDENTS

# A compliance class in the DAV header, next to RFC 6638's calendar-auto-schedule, which other servers
# advertise too. RFC 4918 §10.1 allows such tokens and clients ignore those they do not know, as they do
# Nextcloud's "nc-…" and Apple's "calendarserver-…" ones.
DAV_TOKEN = "invito-scheduling"
TIMEOUT = 2.0
_GREETING_BYTES = 512  # RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets
_INVITO_GREETING = re.compile(r"220 \S+ (%s)" % "|".join(re.escape(ident) for ident in IDENTS.values()))
# A wildcard address accepts connections on loopback too; the probe has to connect somewhere.
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True)
class Holder:
    """Whoever answered on a taken port: ``problem`` is None when it is Invito, else the admin's line
    about it. ``protocol``: what an Invito mail listener speaks (smtp or lmtp)."""
    problem: str | None
    protocol: str = ""


def caldav(host: str, port: int, tls: bool) -> Holder:
    """Ask with an anonymous OPTIONS /, which Radicale answers before any login: Invito's DAV header
    carries :data:`DAV_TOKEN`. Over TLS the certificate is not verified: it is the server's own, and the
    check tests its files separately."""
    scheme = "HTTPS" if tls else "HTTP"
    connection: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(_connectable(host), port, timeout=TIMEOUT, context=context)
    else:
        connection = http.client.HTTPConnection(_connectable(host), port, timeout=TIMEOUT)
    try:
        connection.request("OPTIONS", "/")
        dav = connection.getresponse().getheader("DAV") or ""
    except TimeoutError:
        return _silent(port)
    except ssl.SSLError as e:
        return _foreign(port, f"it does not speak HTTPS: {e.reason or e}")
    except http.client.RemoteDisconnected:
        return _foreign(port, f"it hung up without answering {scheme}")
    except http.client.HTTPException:
        return _foreign(port, f"what it answered is not {scheme}")
    except OSError as e:
        return _foreign(port, f"it did not answer {scheme}: {e.strerror or e}")
    finally:
        connection.close()
    if DAV_TOKEN in (token.strip() for token in dav.split(",")):
        return Holder(None)
    return _foreign(port, f"it answered {scheme} without Invito's DAV header")


def mail(host: str, port: int) -> Holder:
    """Read the greeting, which names Invito and its protocol (``IDENTS``), then say QUIT."""
    try:
        with socket.create_connection((_connectable(host), port), timeout=TIMEOUT) as connection:
            greeting = _first_line(connection)
            invito = _INVITO_GREETING.fullmatch(greeting)
            if invito:
                connection.sendall(b"QUIT\r\n")
    except TimeoutError:
        return _silent(port)
    except OSError as e:
        return _foreign(port, f"it did not answer: {e.strerror or e}")
    if invito:
        return Holder(None, next(name for name, ident in IDENTS.items() if ident == invito.group(1)))
    if not greeting:
        return _foreign(port, "it hung up without a greeting")
    said = greeting if len(greeting) <= 80 else greeting[:80] + "…"
    return _foreign(port, f"it greeted with {said!r}" if greeting.startswith("220")
                    else f"it answered {said!r}, not an SMTP greeting")


def _first_line(connection: socket.socket) -> str:
    """The first line received within ``TIMEOUT`` (a greeting may arrive in pieces), printable."""
    deadline = time.monotonic() + TIMEOUT
    received = b""
    while b"\n" not in received and len(received) < _GREETING_BYTES:
        connection.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = connection.recv(_GREETING_BYTES)
        if not chunk:
            break
        received += chunk
    line = received.split(b"\n", 1)[0].rstrip(b"\r").decode("ascii", "replace")
    return "".join(c if c.isprintable() else "?" for c in line)


def _connectable(host: str) -> str:
    return _LOOPBACK.get(host, host)


def _foreign(port: int, said: str) -> Holder:
    return Holder(f"port {port} is used by another program ({said})")


def _silent(port: int) -> Holder:
    return Holder(f"port {port} is in use, and what listens there did not answer within {TIMEOUT:g} s")
