# SPDX-License-Identifier: GPL-3.0-or-later
"""Which addresses are whose: plain names with the domain, names that are mail addresses, aliases."""
from __future__ import annotations

from invito.plugins.directory import Directory

USERS = {"alice", "bob@example.com", "carol@other.example.org"}


def directory(domain: str = "", aliases: dict[str, list[str]] | None = None) -> Directory:
    return Directory(domain, aliases or {}, USERS.__contains__)


def test_a_name_that_is_a_mail_address_is_the_address_without_a_domain() -> None:
    plain = directory()
    assert plain.addresses_of("bob@example.com") == {"mailto:bob@example.com"}
    assert plain.user_for("MAILTO:Bob@Example.com") == "bob@example.com"
    assert plain.addresses_of("alice") == frozenset()  # a plain name needs the domain
    assert plain.user_for("mailto:alice@example.com") is None
    assert plain.user_for("mailto:dave@example.com") is None  # not a user: external


def test_with_a_domain_both_kinds_of_names_have_their_address() -> None:
    site = directory("example.com")
    assert site.addresses_of("alice") == {"mailto:alice@example.com"}
    assert site.addresses_of("carol@other.example.org") == {"mailto:carol@other.example.org"}
    assert site.user_for("mailto:alice@example.com") == "alice"
    assert site.user_for("mailto:bob@example.com") == "bob@example.com"  # local part "bob" is no user
    assert site.user_for("mailto:carol@other.example.org") == "carol@other.example.org"


def test_aliases_add_to_a_mail_address_name() -> None:
    site = directory(aliases={"bob@example.com": ["Robert@Example.com"]})
    assert site.addresses_of("bob@example.com") == {"mailto:bob@example.com", "mailto:robert@example.com"}
    assert site.user_for("mailto:robert@example.com") == "bob@example.com"
