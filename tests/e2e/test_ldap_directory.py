# SPDX-License-Identifier: GPL-3.0-or-later
"""Users from the organisation's directory: `invito serve` with `[auth] type = ldap` against a real slapd.

Nobody is added with `invito user add`: people log in with their directory password, their calendar
addresses are the directory's mail attributes (no `[scheduling] domain`), and `@staff` is a directory group.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import caldav
import icalendar
import pytest
import radicale.item as radicale_item

from tests.e2e.conftest import PASSWORD, Server, free_port, has_home, outbound_entries, restart, stop, write_config
from tests.e2e.ldap_server import BASE, READER_SECRET, LdapServer
from tests.e2e.test_scheduling import attendee, calendar, copy_of, event, inbox_methods

GUEST = "mailto:guest@partner.example.org"
BOB_ALIAS = "mailto:robert@corp.example.org"  # bob's smtp: entry in proxyAddresses


def serve(tmp: Path, directory: LdapServer, auth: dict[str, str], scheduling: dict[str, str]
          ) -> Iterator[Server]:
    port = free_port()
    config = write_config(tmp, port, {
        "auth": directory.auth_settings(**auth),
        "scheduling": {"domain": "", "external_invites": "@staff",
                       "ldap_address_attributes": "mail, mailAlternateAddress, proxyAddresses", **scheduling}})
    srv = Server(url=f"http://127.0.0.1:{port}/", data=tmp / "data", config=config, log=tmp / "server.log")
    proc = restart(srv)
    try:
        yield srv
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ldap_server: LdapServer,
           backend: str) -> Iterator[Server]:
    """Groups from the users' memberOf, as in Active Directory; the reader's password in a file."""
    tmp = tmp_path_factory.mktemp("ldap-memberof")
    (tmp / "ldap-secret").write_text(READER_SECRET + "\n")
    yield from serve(tmp, ldap_server, {"ldap_groups_attribute": "memberOf", "ldap_secret": "",
                                        "ldap_secret_file": str(tmp / "ldap-secret")}, {})


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory, ldap_server: LdapServer,
            backend: str) -> Iterator[Server]:
    """Groups by searching group entries; every directory answer re-asked (cache 0 s), 1 s to answer; logins
    cached by Radicale for the module's length (its LDAP login has no timeout of its own)."""
    yield from serve(tmp_path_factory.mktemp("ldap-groups"), ldap_server,
                     {"ldap_group_members_attribute": "member", "ldap_group_filter": "(objectClass=groupOfNames)",
                      "ldap_group_base": f"ou=groups,{BASE}", "cache_successful_logins_expiry": "3600"},
                     {"ldap_cache_seconds": "0", "ldap_timeout": "1"})


def guests_queued(srv: Server, uid: str) -> list[str]:
    return sorted(entry.recipient for entry in outbound_entries(srv) if entry.uid == uid)


def test_colleague_invited_by_alias_before_first_login(server: Server) -> None:
    assert not has_home(server, "bob")  # bob has never logged in
    uid = str(uuid.uuid4())
    calendar(server, "alice").save_event(event(uid, attendees=(), extra="\r\n".join(
        [f"ATTENDEE;CN=Bob;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:{BOB_ALIAS}", f"ATTENDEE:{GUEST}"])))

    organizer_copy = copy_of(server, "alice", uid)
    assert attendee(organizer_copy, BOB_ALIAS).params["SCHEDULE-STATUS"] == "1.2"  # delivered: internal
    assert attendee(organizer_copy, GUEST).params["SCHEDULE-STATUS"] == "1.0"  # waits for a relay
    assert guests_queued(server, uid) == [GUEST]
    assert has_home(server, "bob")  # made by the delivery

    bob = server.principal("bob")  # bob's first login, with his directory password
    assert {"mailto:bob@example.com", BOB_ALIAS} <= {str(a).lower() for a in bob.calendar_user_address_set()}
    assert inbox_methods(server, "bob", uid) == ["REQUEST"]
    assert attendee(copy_of(server, "bob", uid), BOB_ALIAS).params["PARTSTAT"] == "NEEDS-ACTION"
    assert READER_SECRET not in server.log.read_text()


def test_organizer_alias_from_directory(server: Server) -> None:
    """alice organizes as her mailAlternateAddress; carol is found by her directory mail."""
    uid = str(uuid.uuid4())
    text = event(uid, attendees=("carol",)).replace("mailto:alice@example.com", "mailto:a.smith@example.com")
    calendar(server, "alice", "aliased").save_event(text)
    assert attendee(copy_of(server, "alice", uid), "mailto:carol@example.com").params["SCHEDULE-STATUS"] == "1.2"
    assert inbox_methods(server, "carol", uid) == ["REQUEST"]


def test_guest_of_a_non_member_is_refused(server: Server) -> None:
    uid = str(uuid.uuid4())
    calendar(server, "carol").save_event(event(uid, organizer="carol", attendees=("bob",), extra=f"ATTENDEE:{GUEST}"))
    copy = copy_of(server, "carol", uid)
    assert attendee(copy, GUEST).params["SCHEDULE-STATUS"] == "3.8"  # carol is not in staff
    assert attendee(copy, "mailto:bob@example.com").params["SCHEDULE-STATUS"] == "1.2"
    assert guests_queued(server, uid) == []


def test_group_search_and_a_hung_directory(fragile: Server, ldap_server: LdapServer) -> None:
    first = str(uuid.uuid4())
    calendar(fragile, "alice").save_event(event(first, attendees=("bob",), extra=f"ATTENDEE:{GUEST}"))
    assert attendee(copy_of(fragile, "alice", first), GUEST).params["SCHEDULE-STATUS"] == "1.0"  # staff, found
    assert guests_queued(fragile, first) == [GUEST]                                           # by group search

    second, other_guest = str(uuid.uuid4()), "mailto:someone@elsewhere.example.net"
    # A client that gives up after 20 s: the PUT must answer, not wait for the directory.
    client = caldav.DAVClient(url=fragile.url, username="alice", password=PASSWORD, timeout=20)
    work = client.principal().calendar(cal_id="work")
    ldap_server.pause()
    try:
        work.save_event(event(second, attendees=("bob",), extra=f"ATTENDEE:{other_guest}"))
    finally:
        ldap_server.resume()
    copy = copy_of(fragile, "alice", second)
    assert attendee(copy, "mailto:bob@example.com").params["SCHEDULE-STATUS"] == "1.2"  # known from before
    assert attendee(copy, other_guest).params["SCHEDULE-STATUS"] == "1.0"               # unknown: external
    assert inbox_methods(fragile, "bob", second) == ["REQUEST"]
    assert f"directory {ldap_server.uri} unreachable" in fragile.log.read_text()


def test_writes_without_login_groups_take_them_from_the_directory(tmp_path: Path, ldap_server: LdapServer,
                                                                  backend: str, request: pytest.FixtureRequest) -> None:
    """A write that carries no login (mail-driven paths, tools on the storage): the directory says who is
    in ``@staff``. In-process on real storage of the module's backend, against the real directory."""
    from invito.server import config as invito_config
    from invito.storage import Storage

    configuration = invito_config.load(None)
    configuration.update({
        "invito": {"data_folder": str(tmp_path),
                   "database": request.getfixturevalue("database") if backend == "postgresql" else ""},
        "storage": {"filesystem_folder": str(tmp_path / "collections")},
        "auth": ldap_server.auth_settings(ldap_groups_attribute="memberOf"),
        "scheduling": {"external_invites": "@staff"}}, "test", privileged=True)
    storage = Storage(configuration)
    statuses = {}
    for organizer in ("alice", "carol"):
        with storage.acquire_lock("w"):
            storage.create_collection(f"/{organizer}/calendar/", props={"tag": "VCALENDAR"})
            own = next(iter(storage.discover(f"/{organizer}/calendar/")))
            uid = str(uuid.uuid4())
            own.upload(f"{uid}.ics", radicale_item.Item(collection_path=f"{organizer}/calendar", text=event(
                uid, organizer=organizer, attendees=(), extra=f"ATTENDEE:{GUEST}")))
            stored = icalendar.Calendar.from_ical(own.get_item(f"{uid}.ics").serialize())
        statuses[organizer] = attendee(stored, GUEST).params["SCHEDULE-STATUS"]
    assert statuses == {"alice": "1.0", "carol": "3.8"}
