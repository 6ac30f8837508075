# SPDX-License-Identifier: GPL-3.0-or-later
"""A real OpenLDAP directory for the tests: Debian's slapd on a free 127.0.0.1 port, its own slapd.conf and
database in a temporary folder, loaded with a small organisation over LDAP (so the memberof overlay keeps
``memberOf`` as Active Directory does).

People (password ``tests.e2e.conftest.PASSWORD``): alice (alias ``a.smith@example.com`` in
``mailAlternateAddress``, member of ``staff``), bob (AD-style ``proxyAddresses``: ``SMTP:bob@example.com``,
``smtp:robert@corp.example.org``, ``X500:…``), carol (no alias, in no group). Reader: ``cn=reader``.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SLAPD = "/usr/sbin/slapd"
BASE = "dc=example,dc=com"
READER_DN = f"cn=reader,{BASE}"
READER_SECRET = "reader-pw-456"
_ROOT_DN = f"cn=admin,{BASE}"
_ROOT_SECRET = "admin-pw-789"

# The two alias attributes are not in OpenLDAP's stock schemas with an equality rule: defined here
# (example OIDs) as their vendors do, case-insensitive.
_SCHEMA = """\
attributetype ( 1.3.6.1.4.1.32473.1.1 NAME 'proxyAddresses'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.3.6.1.4.1.32473.1.2 NAME 'mailAlternateAddress'
    EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )
objectclass ( 1.3.6.1.4.1.32473.2.1 NAME 'mailAliases' SUP top AUXILIARY
    MAY ( proxyAddresses $ mailAlternateAddress ) )
"""

_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {folder}/aliases.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {folder}/slapd.pid
database mdb
maxsize 10485760
suffix "{base}"
rootdn "{root_dn}"
rootpw {root_secret}
directory {folder}/db
overlay memberof
access to attrs=userPassword by self read by anonymous auth by * none
access to * by users read by * none
"""


def _person(uid: str, mail: str, password: str, aliases: list[tuple[str, str]]) -> str:
    lines = [f"dn: uid={uid},ou=people,{BASE}", "objectClass: inetOrgPerson", "objectClass: mailAliases",
             f"uid: {uid}", f"cn: {uid.title()}", f"sn: {uid.title()}", f"mail: {mail}",
             f"userPassword: {password}", *(f"{a}: {v}" for a, v in aliases)]
    return "\n".join(lines) + "\n"


def _ldif(password: str) -> str:
    return "\n".join([
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
        f"dn: {READER_DN}\nobjectClass: simpleSecurityObject\nobjectClass: organizationalRole\ncn: reader\n"
        f"userPassword: {READER_SECRET}\n",
        f"dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n",
        _person("alice", "alice@example.com", password, [("mailAlternateAddress", "a.smith@example.com")]),
        _person("bob", "bob@example.com", password, [("proxyAddresses", "SMTP:bob@example.com"),
                                                     ("proxyAddresses", "smtp:robert@corp.example.org"),
                                                     ("proxyAddresses", "X500:/o=Example/cn=bob")]),
        _person("carol", "carol@example.com", password, []),
        f"dn: cn=staff,ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: staff\n"
        f"member: uid=alice,ou=people,{BASE}\n",
    ])


@dataclass
class LdapServer:
    uri: str
    proc: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pause(self) -> None:
        """The directory stops answering (connections are still accepted by the kernel): a hung server."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def auth_settings(self, **extra: str) -> dict[str, str]:
        """``[auth]`` settings of an Invito using this directory, as an admin writes them."""
        return {"type": "ldap", "ldap_uri": self.uri, "ldap_base": BASE, "ldap_reader_dn": READER_DN,
                "ldap_secret": READER_SECRET, "ldap_filter": "(&(objectClass=inetOrgPerson)(uid={0}))", **extra}


def start_slapd(folder: Path, port: int, password: str) -> LdapServer:
    """slapd in the foreground (``-d 0``) as a child of the tests, then the organisation added over LDAP."""
    (folder / "db").mkdir(parents=True)
    (folder / "aliases.schema").write_text(_SCHEMA)
    conf = folder / "slapd.conf"
    conf.write_text(_CONF.format(folder=folder, base=BASE, root_dn=_ROOT_DN, root_secret=_ROOT_SECRET))
    uri = f"ldap://127.0.0.1:{port}"
    with open(folder / "slapd.log", "wb") as log:
        proc = subprocess.Popen([SLAPD, "-f", str(conf), "-h", uri + "/", "-d", "0"], stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("slapd did not start:\n" + (folder / "slapd.log").read_text(errors="replace"))
            time.sleep(0.05)
    subprocess.run(["ldapadd", "-x", "-H", uri, "-D", _ROOT_DN, "-w", _ROOT_SECRET], input=_ldif(password),
                   text=True, check=True, capture_output=True)
    return LdapServer(uri, proc)


def stop_slapd(server: LdapServer) -> None:
    """Stop slapd by its PID (woken first, should a test have left it paused) and reap it."""
    server.resume()
    os.kill(server.pid, signal.SIGTERM)
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(server.pid, signal.SIGKILL)
        server.proc.wait()
