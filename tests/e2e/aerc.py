# SPDX-License-Identifier: GPL-3.0-or-later
"""aerc (Debian's 0.14), a guest's terminal mail program, driven through its own screen in a private tmux
server: a maildir holds the invitation as delivered, outgoing mail goes over SMTP to a given port."""
from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

EDITOR = """#!/bin/sh
# What the guest types: the words in $HOME/words (if any) above what aerc put in the message.
[ -f "$HOME/words" ] && { cat "$HOME/words" "$1" > "$1.new" && mv "$1.new" "$1"; }
exit 0
"""


class Aerc:
    def __init__(self, home: Path, smtp_port: int, identity: str) -> None:
        self.home = home
        self.socket = "aerc-" + uuid.uuid4().hex[:12]  # our own tmux server, never another's
        config = home / ".config" / "aerc"
        config.mkdir(parents=True)
        for folder in ("cur", "new", "tmp"):
            (home / "mail" / "INBOX" / folder).mkdir(parents=True)
        accounts = config / "accounts.conf"
        accounts.write_text(f"[guest]\nsource = maildir://{home}/mail\n"
                            f"outgoing = smtp+none://127.0.0.1:{smtp_port}\ndefault = INBOX\n"
                            f"from = {identity}\ncopy-to =\n")
        accounts.chmod(0o600)
        (config / "aerc.conf").write_text("[general]\nunsafe-accounts-conf = true\n")
        (config / "binds.conf").write_text(Path("/usr/share/aerc/binds.conf").read_text())
        editor = home / "editor"
        editor.write_text(EDITOR)
        editor.chmod(0o755)

    def deliver(self, raw: bytes) -> None:
        """A message as the guest's mail server files it (LF line ends, unread)."""
        name = f"{time.time_ns()}.{uuid.uuid4().hex}:2,"
        (self.home / "mail" / "INBOX" / "new" / name).write_bytes(raw.replace(b"\r\n", b"\n"))

    def start(self) -> None:
        env = f"HOME={self.home} XDG_CONFIG_HOME={self.home}/.config EDITOR={self.home}/editor TERM=xterm-256color"
        subprocess.run(["tmux", "-L", self.socket, "new-session", "-d", "-x", "200", "-y", "50",
                        f"env {env} aerc"], check=True)

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "-L", self.socket, "send-keys", *keys], check=True)

    def command(self, text: str) -> None:
        self.keys(":" + text, "Enter")

    def screen(self) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "capture-pane", "-p"], check=True,
                              capture_output=True, text=True).stdout

    def wait_for(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if text in shown:
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"aerc does not show {text!r}:\n{shown}")
            time.sleep(0.2)

    def write(self, words: str) -> None:
        """What the guest types in the next message aerc opens its editor for."""
        (self.home / "words").write_text(words + "\n\n")

    def stop(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], check=False, capture_output=True)
