# SPDX-License-Identifier: GPL-3.0-or-later
"""A mail as an admin reads it in a terminal (``invito queue show``): decoded headers, the text, the calendar
part, attachments by name and size, and the HTML body set aside for a browser.

The mail may come from anyone (a quarantined message): nothing in it may crash the command or reach the
terminal as a control sequence, so every line is made printable and undecodable parts are shown as they came.
"""
from __future__ import annotations

import email
import email.message
import email.policy
import os
from dataclasses import dataclass

from invito.server.config import CommandError


@dataclass(frozen=True)
class ShownMail:
    """A mail as terminal lines (below a title), and its HTML body for a browser."""
    lines: list[str]
    html: str | None


def shown_mail(title: list[str], raw: bytes) -> ShownMail:
    """``title``, then the message: its headers, text, HTML size, calendar and attachments (name, size)."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    text: str | None = None
    html: str | None = None
    calendars: list[tuple[str, str]] = []
    attachments: list[str] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        named = part.get_content_disposition() == "attachment" or part.get_filename() is not None
        if content_type == "text/plain" and not named and text is None:
            text = _part_text(part)
        elif content_type == "text/html" and not named and html is None:
            html = _part_text(part)
        elif content_type == "text/calendar" and not named:
            method = part.get_param("method")
            calendars.append((f"text/calendar; method={method}" if isinstance(method, str) else "text/calendar",
                              _part_text(part)))
        else:
            attachments.append(f"  {one_line(part.get_filename() or '(no name)')}  {content_type}  "
                               f"{len(_payload(part))} bytes")
    lines = [*title, "", *_headers(message), ""]
    lines += ["--- text/plain ---", *_printable(text)] if text is not None else ["--- no text/plain part ---"]
    if html is not None:
        lines.append(f"--- text/html: {len(html.encode('utf-8'))} bytes; `--html FILE` writes it for a browser ---")
    for label, ics in calendars:
        lines += [f"--- {label} ---", *_printable(ics)]
    if attachments:
        lines += ["--- attachments ---", *attachments]
    return ShownMail(lines, html)


def _headers(message: email.message.Message) -> list[str]:
    """Every header, decoded for reading; one the email package cannot decode is shown as it came."""
    lines = []
    for name, value in message.raw_items():
        try:
            shown = str(message.policy.header_fetch_parse(name, value))
        except Exception:  # malformed mail from outside: its raw text is still worth showing
            shown = str(value)
        lines.append(f"{one_line(name)}: {one_line(shown)}")
    return lines


def _part_text(part: email.message.Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content
    except (LookupError, ValueError, AssertionError):  # an unknown charset, a broken encoding
        pass
    return _payload(part).decode("utf-8", "replace")


def _payload(part: email.message.Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _printable(text: str) -> list[str]:
    """``text`` as terminal lines: tabs kept, other control characters (escape sequences) shown as ``?``."""
    return ["".join(c if c.isprintable() or c == "\t" else "?" for c in line)
            for line in text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")]


def write_html(path: str, html: str) -> str:
    """``html`` into ``path`` (created 0600: it may name guests); the line saying where it went."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
    except OSError as e:
        raise CommandError(f"cannot write the HTML body to {path}: {e.strerror}") from e
    return f"wrote the HTML body to {os.path.abspath(path)}; open it in a browser"


def one_line(value: str) -> str:
    """One line of printable text: mail headers and relay answers are not the terminal's to interpret."""
    return "".join(c if c.isprintable() else "?" for c in " ".join(str(value).split()))
