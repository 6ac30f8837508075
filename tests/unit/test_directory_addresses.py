# SPDX-License-Identifier: GPL-3.0-or-later
"""Which addresses are whose: plain names with the domain, names that are mail addresses, aliases, and
the addresses file that gives the aliases."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from invito.plugins.directory import AddressesError, Directory, load_addresses

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


# -- the addresses file --------------------------------------------------------------------------------


def _write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_addresses_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "addresses", """\
        # aliases of our users
        alice: alice.smith@example.com, mailto:Boss@Example.org

        bob:bob@example.net
          # indented comment
        alice: a@example.com, alice.smith@example.com
        """)
    assert load_addresses(path) == {
        "alice": ["alice.smith@example.com", "Boss@Example.org", "a@example.com"],
        "bob": ["bob@example.net"],
    }


def test_addresses_file_errors_name_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "addresses", """\
        alice: alice@example.com
        bob alice@example.com
        ../etc: x@example.com
        carol:
        dave: not-an-address, dave@example.com
        erin: ALICE@example.com
        """)
    with pytest.raises(AddressesError) as caught:
        load_addresses(path)
    assert caught.value.problems == [
        f"{path}, line 2: expected 'user: address, address', got 'bob alice@example.com'",
        f"{path}, line 3: '../etc' is not a valid user name: it must be one path component: "
        "not empty, no '/', not starting with '.' or ending with '~'",
        f"{path}, line 4: no address given for 'carol'",
        f"{path}, line 5: 'not-an-address' is not a mail address (expected name@domain)",
        f"{path}, line 6: 'ALICE@example.com' is also given to 'alice' on line 1",
    ]


def test_many_addresses_are_resolved_with_one_question_and_the_same_answers() -> None:
    asked: list[set[str]] = []

    def among(names: set[str]) -> set[str]:
        asked.append(set(names))
        return names & USERS

    site = Directory("example.com", {"alice": ["boss@example.com"]}, USERS.__contains__, among)
    addresses = ["mailto:alice@example.com", "mailto:Boss@example.com", "mailto:bob@example.com",
                 "mailto:carol@other.example.org", "mailto:guest@partner.example.org", "mailto:dave@example.com"]
    assert site.users_for(addresses) == {address: site.user_for(address) for address in addresses} == {
        "mailto:alice@example.com": "alice", "mailto:Boss@example.com": "alice",
        "mailto:bob@example.com": "bob@example.com", "mailto:carol@other.example.org": "carol@other.example.org",
        "mailto:guest@partner.example.org": None, "mailto:dave@example.com": None}
    assert len(asked) == 1 and "guest@partner.example.org" in asked[0]
