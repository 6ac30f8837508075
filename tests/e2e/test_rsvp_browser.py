# SPDX-License-Identifier: GPL-3.0-or-later
"""The RSVP page in a real browser: Debian's Chromium, headless, driven by Playwright, with JavaScript off
(the page must not need it), answered by keyboard and by mouse, and photographed as a guest sees it.

Screenshots go to the test's temporary folder, and also to ``$INVITO_SCREENSHOTS`` when that is set.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.conftest import Server
from tests.e2e.mailsink import MailSink
from tests.e2e.test_invitations_by_mail import to
from tests.e2e import test_rsvp_page
from tests.e2e.test_rsvp_page import GINO, GRACE, answer_links, body, invite, partstat
from tests.e2e.test_scheduling import inbox_methods

site = test_rsvp_page.site  # the fixture: Invito with RSVP links, and the relay its mail goes to
CHROMIUM = "/usr/bin/chromium"  # Debian's package; .ci/run installs it
# Chromium as root in a container, with nothing reaching out to Google's services (the network is closed).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert os.path.exists(CHROMIUM), "Debian's chromium package is needed: apt-get install chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def guest_page(browser: Browser, locale: str = "en-GB") -> Page:
    """A fresh browser profile with JavaScript disabled, the window of a small laptop."""
    context = browser.new_context(java_script_enabled=False, locale=locale, viewport={"width": 900, "height": 900})
    return context.new_page()


def screenshot(page: Page, folder: Path, name: str) -> Path:
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    wanted = os.environ.get("INVITO_SCREENSHOTS")
    if wanted:
        os.makedirs(wanted, exist_ok=True)
        shutil.copy(path, os.path.join(wanted, name))
    return path


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def contrast(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two CSS ``rgb(r, g, b)`` colours."""
    def luminance(css: str) -> float:
        channels = [int(v) / 255 for v in re.findall(r"\d+", css)[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_a_guest_answers_by_keyboard_without_javascript(site: tuple[Server, MailSink], browser: Browser,
                                                         tmp_path: Path) -> None:
    srv, sink = site
    uid, mails = invite(srv, sink)
    page = guest_page(browser)
    page.goto(answer_links(mails[GRACE])["accept"])
    expect(page).to_have_title("Quarterly review · Invito")
    expect(page.get_by_role("heading", level=1)).to_have_text("Quarterly review")
    expect(page.get_by_role("group", name="Will you attend?")).to_be_visible()
    shot = screenshot(page, tmp_path, "rsvp-page-en.png")
    width, height = png_size(shot)
    assert width == 900 and height >= 600 and shot.stat().st_size > 20000
    # The button the guest chose in the email has the focus; the comment field is labelled.
    accept = page.get_by_role("button", name="Accept")
    expect(accept).to_be_focused()
    page.keyboard.press("Shift+Tab")
    comment = page.get_by_label("Message to the organizer (optional)")
    expect(comment).to_be_focused()
    page.keyboard.type("See you there")
    page.keyboard.press("Tab")
    expect(accept).to_be_focused()
    already = len(sink.received)
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("Thank you: your answer “Accept” has been sent to Alice.")
    screenshot(page, tmp_path, "rsvp-answered-en.png")
    assert partstat(srv, uid, GRACE) == "ACCEPTED"
    assert inbox_methods(srv, "alice", uid) == ["REPLY"]
    notification = to(sink.wait_for(already + 1)[already:], "alice@example.com")[0]
    assert "See you there" in body(notification, "plain")


def test_an_italian_guest_declines_with_the_mouse(site: tuple[Server, MailSink], browser: Browser,
                                                  tmp_path: Path) -> None:
    srv, sink = site
    uid, mails = invite(srv, sink)
    page = guest_page(browser, locale="it-IT")
    page.goto(answer_links(mails[GINO])["decline"])
    expect(page.locator("html")).to_have_attribute("lang", "it")
    expect(page.get_by_text("giovedì 10 ottobre 2030")).to_be_visible()
    screenshot(page, tmp_path, "rsvp-page-it.png")
    page.get_by_role("button", name="Rifiuta").click()
    expect(page.get_by_role("status")).to_contain_text("Grazie: la tua risposta «Rifiuta» è stata inviata a Alice.")
    assert partstat(srv, uid, GINO) == "DECLINED"
    assert partstat(srv, uid, GRACE) == "NEEDS-ACTION"


def test_the_page_is_readable(site: tuple[Server, MailSink], browser: Browser) -> None:
    """Text and buttons meet WCAG AA contrast (4.5:1), and the language links say which one is current."""
    srv, sink = site
    _, mails = invite(srv, sink)
    page = guest_page(browser)
    page.goto(answer_links(mails[GRACE])["tentative"])
    white = "rgb(255, 255, 255)"
    for name in ("Accept", "Maybe", "Decline"):
        button = page.get_by_role("button", name=name)
        colors = button.evaluate("b => [getComputedStyle(b).color, getComputedStyle(b).backgroundColor]")
        assert colors[0] == white and contrast(*colors) >= 4.5, (name, colors)
    page_background = page.locator("body").evaluate("e => getComputedStyle(e).backgroundColor")
    for selector, background in (("dt", white), ("dd", white), ("legend", white), ("a", white),
                                 ("footer p", page_background), ("footer a", page_background)):
        color = page.locator(selector).first.evaluate("e => getComputedStyle(e).color")
        assert contrast(color, background) >= 4.5, (selector, color, background)
    expect(page.get_by_role("navigation", name="Language").get_by_role("link", name="English")).to_have_attribute(
        "aria-current", "page")
