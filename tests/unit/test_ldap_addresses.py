# SPDX-License-Identifier: GPL-3.0-or-later
"""Directory attribute values → calendar addresses (the LDAP lookups themselves: tests/e2e/test_ldap_directory.py)."""
from __future__ import annotations

from invito.plugins.ldap_directory import mail_addresses


def test_active_directory_proxy_addresses_and_plain_mail() -> None:
    values = ["SMTP:Bob@Example.com", "smtp:robert@corp.example.org", "X500:/o=Example/ou=x/cn=bob",
              "SIP:bob@example.com", "bob.b@example.com", "not an address"]
    assert mail_addresses(values) == {"mailto:bob@example.com", "mailto:robert@corp.example.org",
                                      "mailto:bob.b@example.com"}
