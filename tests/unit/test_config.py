# SPDX-License-Identifier: GPL-3.0-or-later
"""The configuration as an admin meets it: defaults, the data folder, precise errors, the addresses file."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import radicale
import radicale.config

from invito.server.config import SCHEMA, ConfigError, INVITO_SCHEMA, load, unconfigured

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "invito.conf"


def write(tmp_path: Path, text: str, name: str = "invito.conf") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def problems(path: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value).splitlines() == caught.value.problems
    return caught.value.problems


# -- defaults and the data folder ----------------------------------------------------------------------


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    configuration = load(None)
    assert isinstance(configuration, radicale.config.Configuration)
    data = tmp_path / "invito-data"
    assert configuration.get("invito", "data_folder") == str(data)
    assert configuration.get("server", "hosts") == [("127.0.0.1", 5232)]
    assert configuration.get("storage", "type") == "invito.storage"
    assert configuration.get("storage", "filesystem_folder") == str(data / "collections")
    assert configuration.get("auth", "type") == "htpasswd"
    assert configuration.get("auth", "htpasswd_filename") == str(data / "users")
    assert configuration.get("auth", "htpasswd_encryption") == "bcrypt"
    assert configuration.get("rights", "type") == "owner_only"
    assert configuration.get("scheduling", "domain") == ""
    assert configuration.get("scheduling", "addresses") == ""


def test_radicale_defaults_we_do_not_change_stay() -> None:
    configuration = load(None)
    assert configuration.get("server", "max_connections") == 8
    assert configuration.get("logging", "level") == "info"
    assert not radicale.config.DEFAULT_CONFIG_SCHEMA.get("invito")  # Radicale's schema is left alone
    assert radicale.config.DEFAULT_CONFIG_SCHEMA["storage"]["type"]["value"] == "multifilesystem"


def test_paths_follow_the_data_folder(tmp_path: Path) -> None:
    configuration = load(write(tmp_path, f"""\
        [invito]
        data_folder = {tmp_path / 'srv'}
        """))
    assert configuration.get("storage", "filesystem_folder") == str(tmp_path / "srv" / "collections")
    assert configuration.get("auth", "htpasswd_filename") == str(tmp_path / "srv" / "users")


def test_paths_the_admin_sets_win_over_the_data_folder(tmp_path: Path) -> None:
    configuration = load(write(tmp_path, f"""\
        [invito]
        data_folder = {tmp_path / 'srv'}
        [storage]
        filesystem_folder = {tmp_path / 'calendars'}
        """))
    assert configuration.get("storage", "filesystem_folder") == str(tmp_path / "calendars")
    assert configuration.get("auth", "htpasswd_filename") == str(tmp_path / "srv" / "users")


def test_relative_paths_start_at_the_config_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    configuration = load(write(tmp_path, "[invito]\ndata_folder = var/invito\n[smtp]\npassword_file = relay.pw\n"
                                         "[server]\ncertificate = ~/cert.pem\n"))
    assert configuration.get("invito", "data_folder") == str(tmp_path / "var" / "invito")
    assert configuration.get("storage", "filesystem_folder") == str(tmp_path / "var" / "invito" / "collections")
    assert configuration.get("smtp", "password_file") == str(tmp_path / "relay.pw")
    assert configuration.get("server", "certificate") == str(Path.home() / "cert.pem")


def test_without_data_folder_the_data_lives_beside_the_config_file(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    configuration = load(write(tmp_path, "[server]\nhosts = 127.0.0.1:5232\n"))
    assert configuration.get("invito", "data_folder") == str(tmp_path / "invito-data")
    assert configuration.get("auth", "htpasswd_filename") == str(tmp_path / "invito-data" / "users")


def test_values_are_converted(tmp_path: Path) -> None:
    configuration = load(write(tmp_path, """\
        [server]
        hosts = 127.0.0.1:8080, [::1]:8080
        [scheduling]
        domain = Example.COM
        """))
    assert configuration.get("server", "hosts") == [("127.0.0.1", 8080), ("::1", 8080)]
    assert configuration.get("scheduling", "domain") == "example.com"


# -- Radicale plugins keep working ---------------------------------------------------------------------


def test_radicale_plugins_load_without_invito_files(tmp_path: Path) -> None:
    configuration = load(write(tmp_path, f"""\
        [auth]
        type = none
        [storage]
        type = multifilesystem
        filesystem_folder = {tmp_path / 'collections'}
        """))
    assert configuration.get("auth", "type") == "none"
    radicale.Application(configuration)  # Radicale's own class takes our configuration unchanged
    assert (tmp_path / "collections").is_dir()


def test_external_plugin_sections_take_their_own_keys(tmp_path: Path) -> None:
    configuration = load(write(tmp_path, """\
        [auth]
        type = json
        json_special_option = 42
        """))
    assert configuration.get("auth", "json_special_option") == "42"


def test_free_form_headers(tmp_path: Path) -> None:
    configuration = load(write(tmp_path, "[headers]\nX-Frame-Options = DENY\n"))
    assert configuration.get("headers", "x-frame-options") == "DENY"


# -- precise errors ------------------------------------------------------------------------------------


def test_unknown_section_names_file_section_and_allowed_sections(tmp_path: Path) -> None:
    path = write(tmp_path, "[scheduling]\ndomain = example.com\n[schedulin]\ndomain = example.com\n")
    [problem] = problems(path)
    assert problem.startswith(path + ":")
    assert "unknown section [schedulin]" in problem
    allowed = problem.split("allowed sections:")[1]
    assert {"invito", "scheduling", "server", "auth", "storage"} <= {s.strip() for s in allowed.split(",")}


def test_default_section_is_not_special(tmp_path: Path) -> None:
    # configparser would copy [DEFAULT] keys into every section; Radicale never supported it
    [problem] = problems(write(tmp_path, "[DEFAULT]\nhosts = 127.0.0.1:1\n"))
    assert "unknown section [DEFAULT]" in problem


def test_unknown_key_names_file_section_key_and_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "[scheduling]\ndomian = example.com\n")
    [problem] = problems(path)
    assert problem.startswith(path + ":")
    assert "unknown key 'domian' in [scheduling]" in problem
    assert problem.endswith("allowed keys: domain, addresses, external_invites, hide_attendees, language, "
                            "ldap_address_attributes, ldap_cache_seconds, ldap_timeout")


def test_unknown_key_in_our_storage_section(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, "[storage]\nfilesystem_fodler = /tmp/x\n"))
    assert "unknown key 'filesystem_fodler' in [storage]" in problem
    assert "filesystem_folder" in problem.split("allowed keys:")[1]


def test_internal_keys_cannot_be_set(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, "[server]\n_internal_server = True\n"))
    assert "unknown key '_internal_server' in [server]" in problem
    assert "_internal_server" not in problem.split("allowed keys:")[1]


@pytest.mark.parametrize(("section", "key", "value", "expected"), [
    ("auth", "dovecot_port", "70000", "expected a port number (1-65534)"),
    ("server", "hosts", "localhost", "expected comma-separated address:port pairs"),
    ("server", "ssl", "maybe", "expected a boolean"),
    ("server", "max_connections", "many", "expected a whole number, 0 or more"),
    ("logging", "level", "loud", "expected one of: trace, debug, info"),
    ("auth", "htpasswd_encryption", "rot13", "expected one of: bcrypt, autodetect"),
    ("auth", "type", "no_such_auth_module", "expected one of: none, remote_user"),
    ("scheduling", "domain", "alice@example.com", "expected a mail domain such as example.com"),
    ("scheduling", "domain", "exa mple.com", "expected a mail domain such as example.com"),
])
def test_bad_value_names_file_section_key_value_and_what_is_allowed(
        tmp_path: Path, section: str, key: str, value: str, expected: str) -> None:
    path = write(tmp_path, f"[{section}]\n{key} = {value}\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}: [{section}] {key} = {value!r} is invalid")
    assert expected in problem
    assert f"(option: {SCHEMA[section][key]['help']})" in problem


def test_every_problem_is_reported_one_per_line(tmp_path: Path) -> None:
    found = problems(write(tmp_path, """\
        [server]
        hosts = nowhere
        max_connections = -1
        [scheduling]
        domain = a@b
        [smtp]
        hots = mail
        security = ssl
        """))
    assert len(found) == 5
    assert [re.search(r"\[(\w+)\]", p)[1] for p in found] == ["server", "server", "scheduling", "smtp", "smtp"]
    assert found[-1].endswith("expected one of: none, starttls, tls (option: connection security; certificates are verified)")


def test_syntax_errors_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nhosts = 127.0.0.1:1\nhosts = 127.0.0.1:2\n")
    assert problems(path) == [f"{path}, line 3: [server] hosts is set twice"]
    path = write(tmp_path, "hosts = 127.0.0.1:1\n")
    assert problems(path) == [f"{path}, line 1: 'hosts = 127.0.0.1:1' comes before any [section]"]
    path = write(tmp_path, "[server]\njust words\n")
    assert problems(path) == [f"{path}, line 2: cannot parse 'just words'; expected 'key = value'"]


def test_missing_config_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.conf")
    assert problems(path) == [f"{path}: cannot read the config file: No such file or directory"]


# -- what is not configured yet ------------------------------------------------------------------------


MAIL_SET_UP = "[smtp]\nhost = mail.example.com\nsender = invito@example.com\n" \
              "[imip]\nreply_address = invito+{token}@cal.example.com\n[rsvp]\npublic_url = https://cal.example.com\n"


def test_unconfigured_domain_is_reported_until_set(tmp_path: Path) -> None:
    assert unconfigured(load(write(tmp_path, MAIL_SET_UP))) == [
        "[scheduling] domain is empty: only users named by their mail address (invito user add "
        "alice@example.com) have a calendar address; set it to your mail domain to give plain names (alice) one"]
    assert unconfigured(load(write(tmp_path, "[scheduling]\ndomain = example.com\n" + MAIL_SET_UP))) == []


def test_unconfigured_domain_names_the_users_it_leaves_without_an_address(tmp_path: Path) -> None:
    aliases = write(tmp_path, "carol: carol@example.org\n", "addresses")
    configuration = load(write(tmp_path, f"[scheduling]\naddresses = {aliases}\n" + MAIL_SET_UP))
    assert unconfigured(configuration, ["alice@example.com", "carol"]) == []
    assert unconfigured(configuration, ["alice@example.com", "bob", "carol", "dan", "eve", "fay"]) == [
        "[scheduling] domain is empty: bob, dan, eve and 1 more have no calendar address, so cannot schedule "
        "or be invited; set it to your mail domain, or name users by their mail address "
        "(invito user add alice@example.com)"]


def test_unconfigured_mail_names_the_keys_to_set(tmp_path: Path) -> None:
    notes = unconfigured(load(write(tmp_path, "[scheduling]\ndomain = example.com\n")))
    assert notes[0].startswith("[smtp] host is empty: invitations to external guests wait in the spool; "
                               "set [smtp] host, port, security, sender")
    assert notes[1].startswith("[imip] reply_address is empty")
    assert unconfigured(load(write(tmp_path, "[scheduling]\ndomain = example.com\n[smtp]\nhost = m\n"
                                   "[imip]\nreply_address = invito+{token}@cal.example.com\n"))) == [
        "[smtp] sender is empty: set the address invitations are sent from",
        "[rsvp] public_url is empty: invitations carry no Accept / Maybe / Decline links for guests whose mail "
        "program shows no buttons; set it to the https:// address guests reach Invito at"]


def test_reply_address_and_invite_policy_values(tmp_path: Path) -> None:
    [problem] = problems(write(tmp_path, "[imip]\nreply_address = invito@cal.example.com\n"))
    assert "expected an address with {token} in its local part" in problem
    [problem] = problems(write(tmp_path, "[scheduling]\nexternal_invites = alice, @, b:c\n"))
    assert "[scheduling] external_invites" in problem
    loaded = load(write(tmp_path, "[scheduling]\nexternal_invites = alice, @sales\n"))
    assert loaded.get("scheduling", "external_invites") == ["alice", "@sales"]


def test_unconfigured_domain_with_an_addresses_file(tmp_path: Path) -> None:
    aliases = write(tmp_path, "alice: alice@example.org\n", "addresses")
    [note] = unconfigured(load(write(tmp_path, f"[scheduling]\naddresses = {aliases}\n" + MAIL_SET_UP)))
    assert f"only users named by their mail address (invito user add alice@example.com) and users listed in " \
           f"{aliases} have a calendar address" in note


# -- the addresses file --------------------------------------------------------------------------------


def test_load_checks_the_addresses_file(tmp_path: Path) -> None:
    aliases = write(tmp_path, "alice alice@example.org\n", "addresses")
    [problem] = problems(write(tmp_path, f"[scheduling]\naddresses = {aliases}\n"))
    assert problem.startswith(f"{aliases}, line 1:")
    missing = tmp_path / "missing"
    [problem] = problems(write(tmp_path, f"[scheduling]\naddresses = {missing}\n"))
    assert problem == f"{missing}: cannot read the [scheduling] addresses file: No such file or directory"


# -- the example config --------------------------------------------------------------------------------


def test_example_config_loads() -> None:
    configuration = load(str(EXAMPLE))
    assert configuration.get("storage", "type") == "invito.storage"


def test_example_config_documents_every_invito_key_with_its_real_default() -> None:
    documented: dict[tuple[str, str], str] = {}
    section = None
    for line in EXAMPLE.read_text().splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m[1]
        elif m := re.fullmatch(r"#(\w+) =(.*)", line):  # a commented-out key, not prose ("# ...")
            assert section is not None
            documented[section, m[1]] = m[2].strip()
    for (section, key), shown in documented.items():
        assert key in SCHEMA[section], f"[{section}] {key} is not an option"
        assert shown == SCHEMA[section][key]["value"], f"[{section}] {key}: example shows a wrong default"
    for section, options in INVITO_SCHEMA.items():
        for key in options:
            assert (section, key) in documented, f"[{section}] {key} is missing from the example"
