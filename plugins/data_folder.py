# SPDX-License-Identifier: GPL-3.0-or-later
"""Where Invito keeps what it stores on the filesystem: the one place that knows the data folder's layout.

```
<data folder>/                [invito] data_folder
  collections/                [storage] filesystem_folder (may be set elsewhere)
    collection-root/<user>/   each user's home, as Radicale lays it out
  users                       [auth] htpasswd_filename (may be set elsewhere)
  spool/outbound/             mail to send (plugins.imip.spool)
  spool/inbound/              mail received, and the quarantine (plugins.imip.inbound_spool)
  imip/tokens/                reply tokens and their signing secret (plugins.imip.tokens)
```

Every component asks a :class:`DataFolder` for its path instead of joining names itself, so moving a
part (or serving it from a database instead) is one change here.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from radicale.config import Configuration


@dataclass(frozen=True)
class DataFolder:
    root: str
    collections: str  # Radicale's filesystem folder
    users_file: str   # the htpasswd file; meaningful with [auth] type = htpasswd

    @classmethod
    def of(cls, configuration: Configuration) -> "DataFolder":
        """The layout a configuration names. A plain Radicale configuration (no ``[invito]`` section) keeps
        Invito's data beside its collections folder."""
        collections = configuration.get("storage", "filesystem_folder")
        root = ""
        with contextlib.suppress(KeyError):
            root = configuration.get("invito", "data_folder")
        return cls(root or os.path.dirname(os.path.abspath(collections)), collections,
                   configuration.get("auth", "htpasswd_filename"))

    @property
    def collection_root(self) -> str:
        """Where Radicale's filesystem storage keeps the users' homes."""
        return os.path.join(self.collections, "collection-root")

    @property
    def outbound_spool(self) -> str:
        return os.path.join(self.root, "spool", "outbound")

    @property
    def inbound_spool(self) -> str:
        return os.path.join(self.root, "spool", "inbound")

    @property
    def tokens(self) -> str:
        return os.path.join(self.root, "imip", "tokens")
