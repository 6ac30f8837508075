# SPDX-License-Identifier: GPL-3.0-or-later
"""Whether an inbound iMIP email really comes from the domain in its From header.

A guest's emailed reply changes the organizer's event, and anybody can write any From address, so a reply
counts only when the From domain is authenticated the way DMARC does it (RFC 7489): a DKIM signature or
an SPF-checked envelope sender whose domain is *aligned* with the From domain (same organizational
domain). Two sources of evidence, chosen by ``[imip] authserv_id``:

* set: the fronting MTA already checked DKIM/SPF/DMARC and recorded it in ``Authentication-Results``
  (RFC 8601) under that id; we only read its verdict.
* empty: we verify the DKIM signatures ourselves with dkimpy (no SPF: we don't see the SMTP session of
  the sending server).

Every function returns a :class:`Verdict` and never raises: the input is attacker-controlled and a parser
crash must not become a way to skip the check.
"""
from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from email.message import Message
from typing import Callable, Iterable, Iterator

import dkim
import dkim.dnsplug
from dkim.canonicalization import CanonicalizationPolicy
from dkim.util import parse_tag_value
from publicsuffixlist import PublicSuffixList

logger = logging.getLogger("invito.imip")

PASS, FAIL, NONE = "pass", "fail", "none"
AR_METHOD, DKIM_METHOD = "authentication-results", "dkim"

DNS_TIMEOUT = 5       # seconds per key lookup
MAX_SIGNATURES = 5    # each costs a DNS lookup; RFC 6376 §6.1 lets verifiers cap them
MIN_KEY_BITS = 1024
# Results that are evidence of forgery rather than of a missing or broken check.
_FAILED = frozenset({"fail", "softfail", "permerror"})

DnsFunc = Callable[[bytes], bytes | None]


@dataclass(frozen=True)
class Verdict:
    result: str  # PASS | FAIL | NONE (no evidence either way)
    method: str  # AR_METHOD | DKIM_METHOD
    detail: str  # one line for the log and the organizer's notification


def authenticate(raw: bytes, headers: Message, from_domain: str, authserv_id: str,
                 dnsfunc: DnsFunc | None = None) -> Verdict:
    """The verdict for one inbound message: the MTA's ``Authentication-Results`` when ``authserv_id`` is
    set, else our own DKIM check.

    A message with several From fields fails outright (RFC 7489 §6.6.1): DKIM signs only the bottom one,
    so a forger could add another on top for mail programs (and us) to read.
    """
    method = AR_METHOD if authserv_id.strip() else DKIM_METHOD
    froms = len(headers.get_all("From") or ())
    if froms != 1:
        return Verdict(FAIL, method, "message has %d From header fields, expected 1" % froms)
    if method == AR_METHOD:
        return from_authentication_results(headers, authserv_id, from_domain)
    return verify_dkim(raw, from_domain, dnsfunc)


# --- alignment ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _public_suffixes() -> PublicSuffixList:
    """The bundled Public Suffix List (ICANN and private sections, as DMARC verifiers use it)."""
    return PublicSuffixList()


def _normalize(domain: str) -> str:
    """Lower-case A-label form without the trailing dot; "" when it cannot be a domain."""
    domain = str(domain).strip().rstrip(".").lower()
    if not domain.isprintable() or any(c.isspace() or c in "@\"()<>[]\\,;:" for c in domain):
        return ""
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return ""
    return domain


def aligned(domain: str, from_domain: str) -> bool:
    """DMARC relaxed alignment: both domains have the same organizational domain (RFC 7489 §3.2)."""
    domain, from_domain = _normalize(domain), _normalize(from_domain)
    if not domain or not from_domain:
        return False
    if domain == from_domain:
        return True
    organizational = _public_suffixes().privatesuffix(domain)
    return organizational is not None and organizational == _public_suffixes().privatesuffix(from_domain)


def _printable(text: str) -> str:
    """Sender-controlled text as it may appear in a detail line: printable and short."""
    return "".join(char for char in text if char.isprintable())[:100]


def _domain_of(identity: str) -> str:
    """``user@example.com``, ``"a@b"@example.com``, ``@example.com`` or ``example.com`` → ``example.com``."""
    return identity.rpartition("@")[2]


# --- Authentication-Results (RFC 8601) ---------------------------------------------------------------

_PAIR = re.compile(r'([A-Za-z0-9_.\-/]+)\s*=\s*((?:"(?:[^"\\]|\\.)*"|[^\s;"])*)')


def _strip_comments(text: str) -> str:
    """Remove (nested) comments, keeping quoted strings intact: a comment may hold ``dkim=pass`` text."""
    out: list[str] = []
    depth, quoted, escaped = 0, False, False
    for char in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
        elif char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
        elif quoted:
            quoted = char != '"'
            out.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
            if depth == 0:
                out.append(" ")
        elif depth == 0:
            quoted = char == '"'
            out.append(char)
    return "".join(out)


def _split_unquoted(text: str, separator: str) -> list[str]:
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    """Drop quoting (``"a;b"@x`` → ``a;b@x``) so quoted local-parts still leave the domain after ``@``."""
    return re.sub(r'"((?:[^"\\]|\\.)*)"', lambda m: re.sub(r"\\(.)", r"\1", m.group(1)), value)


@dataclass(frozen=True)
class _Result:
    method: str              # "dkim", "spf", "dmarc", … lower case, without "/version"
    result: str              # lower case
    properties: dict[str, str]  # "header.d" → "example.com"; keys lower case

    def describe(self, *keys: str) -> str:
        shown = " ".join("%s=%s" % (key, _printable(self.properties[key])) for key in keys
                         if key in self.properties)
        return "%s=%s%s" % (self.method, self.result, " " + shown if shown else "")


def _parse_header(value: str) -> tuple[str, list[_Result]]:
    """(authserv-id lower case, its results) of one ``Authentication-Results`` field value."""
    text = _strip_comments(" ".join(str(value).split()))  # unfolds too
    head, *resinfos = _split_unquoted(text, ";")
    words = head.split()
    authserv_id = _unquote(words[0]).strip().lower() if words else ""
    results = []
    for resinfo in resinfos:
        pairs = [(key.lower(), _unquote(val)) for key, val in _PAIR.findall(resinfo)]
        if pairs:
            (method, result), properties = pairs[0], dict(pairs[1:])
            results.append(_Result(method.partition("/")[0].strip(), result.strip().lower(), properties))
    return authserv_id, results


def _trusted_results(headers: Message, authserv_id: str) -> list[_Result] | None:
    """Results from the first run of fields stamped with ``authserv_id``, counting from the top.

    Any sender can write an ``Authentication-Results`` field with our MTA's id: the MTA must remove such
    copies on arrival (RFC 8601 §5) — configure it to. As a second line, only the topmost run of our
    fields counts: our MTA prepends its fields above every one that came with the message, so a field
    with our id below one with another id (say the sender's own provider) arrived from outside.
    Fields with other ids above ours (an internal relay after our MTA) are skipped. None: no field has
    our id.
    """
    wanted = authserv_id.strip().lower()
    found: list[_Result] | None = None
    for value in headers.get_all("Authentication-Results") or ():
        try:
            field_id, results = _parse_header(value)
        except Exception:  # noqa: BLE001 - a hostile field must not abort the check
            logger.debug("Unparsable Authentication-Results field ignored", exc_info=True)
            field_id, results = "", []
        if field_id == wanted:
            found = (found or []) + results
        elif found is not None:
            break
    return found


def from_authentication_results(headers: Message, authserv_id: str, from_domain: str) -> Verdict:
    """The fronting MTA's verdict from its ``Authentication-Results`` fields.

    Trusts only fields with our ``authserv_id``, which is safe only when that MTA strips copies of its
    own fields that arrive with the message (see :func:`_trusted_results`).

    ``dmarc=pass``/``fail`` decides when present (and about this From domain). Otherwise a passing
    ``dkim`` (``header.d``/``header.i``) or ``spf`` (``smtp.mailfrom``) aligned with the From domain
    passes; a passing but unaligned one, or ``fail``/``softfail``/``permerror``, fails; nothing
    relevant (``none``, ``neutral``, ``temperror``, no field) is no evidence.
    """
    results = _trusted_results(headers, authserv_id)
    if results is None:
        return Verdict(NONE, AR_METHOD, "no Authentication-Results from %s" % authserv_id.strip())
    from_domain = _normalize(from_domain)
    for result in (FAIL, PASS):  # conflicting dmarc results: the cautious one wins
        dmarc = [r for r in results if r.method == "dmarc" and r.result == result
                 and _normalize(r.properties.get("header.from", from_domain)) == from_domain]
        if from_domain and dmarc:
            return Verdict(result, AR_METHOD, dmarc[0].describe("header.from"))
    identities = list(_identities(results))
    for result, identity, key in identities:
        if result.result == PASS and aligned(identity, from_domain):
            return Verdict(PASS, AR_METHOD, "%s (aligned with From %s)" % (result.describe(key), from_domain))
    for result, identity, key in identities:
        if result.result == PASS:
            return Verdict(FAIL, AR_METHOD, "%s (not aligned with From %s)" % (result.describe(key),
                                                                              from_domain or "(none)"))
    failed = [r for r in results if r.method in ("dkim", "spf") and r.result in _FAILED]
    if failed:
        return Verdict(FAIL, AR_METHOD, failed[0].describe("header.d", "header.i", "smtp.mailfrom"))
    return Verdict(NONE, AR_METHOD, "no dmarc, dkim or spf verdict from %s" % authserv_id.strip())


def _identities(results: Iterable[_Result]) -> Iterator[tuple[_Result, str, str]]:
    """(result, authenticated domain, property it came from) for the DKIM and SPF results."""
    keys = {"dkim": ("header.d", "header.i"), "spf": ("smtp.mailfrom",)}
    for result in results:
        for key in keys.get(result.method, ()):
            if result.properties.get(key):
                yield result, _domain_of(result.properties[key]), key
                break


# --- our own DKIM verification (RFC 6376) ------------------------------------------------------------

class _KeyLookup:
    """Wraps the TXT lookup so a DNS failure can be told apart from a missing key and a bad signature:
    dkimpy reports all three as "not valid"."""

    def __init__(self, dnsfunc: DnsFunc) -> None:
        self.dnsfunc = dnsfunc
        self.temporary = self.missing = False

    def __call__(self, name: bytes, timeout: int = DNS_TIMEOUT) -> bytes | None:
        try:
            txt = self.dnsfunc(name)
        except Exception as error:  # noqa: BLE001 - any resolver failure says nothing about the sender
            self.temporary = True
            raise dkim.DnsTimeoutError(str(error)) from error
        self.missing = not txt
        return txt


def _default_dnsfunc(name: bytes) -> bytes | None:
    return dkim.dnsplug.get_txt(name, timeout=DNS_TIMEOUT)


@dataclass(frozen=True)
class _Signature:
    domain: str    # d=, "" when unreadable
    outcome: str   # "valid" | "invalid" | "tempfail"
    reason: str


def _check(signer: dkim.DKIM, index: int, value: bytes, dnsfunc: DnsFunc) -> _Signature:
    try:
        domain = _printable(parse_tag_value(value).get(b"d", b"").decode("ascii", "replace").strip())
    except Exception:  # noqa: BLE001 - dkimpy's verify below reports the reason
        domain = ""
    lookup = _KeyLookup(dnsfunc)
    try:
        valid = signer.verify(idx=index, dnsfunc=lookup)
        whole_body = not valid or _covers_body(signer)
    except Exception as error:  # noqa: BLE001 - dkimpy raises DKIMException, and ValueError on some input
        # dkimpy appends hashes and raw values in parentheses and shows bytes as b'…': noise in one line.
        reason = re.sub(r"b'([^']*)'", r"\1", str(error)).split(" (", 1)[0][:80]
        return _Signature(domain, "invalid", reason or type(error).__name__)
    if not whole_body:
        return _Signature(domain, "invalid", "l= leaves part of the body unsigned")
    if valid:
        return _Signature(domain, "valid", "valid")
    if lookup.temporary:
        return _Signature(domain, "tempfail", "temporary DNS error")
    if lookup.missing:
        return _Signature(domain, "invalid", "no key published")
    return _Signature(domain, "invalid", "signature does not verify")


def _covers_body(signer: dkim.DKIM) -> bool:
    """A signature with ``l=`` shorter than the body lets anyone append content (RFC 6376 §8.2)."""
    fields = signer.signature_fields
    if b"l" not in fields:
        return True
    policy = CanonicalizationPolicy.from_c_value(fields.get(b"c", b"simple/simple"))
    return int(fields[b"l"]) >= len(policy.canonicalize_body(signer.body))


def verify_dkim(raw: bytes, from_domain: str, dnsfunc: DnsFunc | None = None) -> Verdict:
    """Verify the message's DKIM signatures (at most :data:`MAX_SIGNATURES`) against the From domain.

    ``dnsfunc(name)`` returns the TXT record for ``selector._domainkey.domain.`` or None (tests pass
    their own; default: dkimpy's resolver).

    Pass: a valid signature with an aligned ``d=``. Fail: signatures that are invalid, have no
    published key (a permanent error), or are valid but unaligned. None: no signature, or the only
    aligned ones hit a DNS failure — that is no evidence of forgery, and an unauthenticated message
    still never passes, so a temporary outage must not brand a genuine guest's reply as forged.
    dkimpy's default resolver reports SERVFAIL as "no key" and timeouts as temporary.
    """
    method = DKIM_METHOD
    try:
        signer = dkim.DKIM(raw, minkey=MIN_KEY_BITS, timeout=DNS_TIMEOUT)
        values = [value for name, value in signer.headers if name.lower() == b"dkim-signature"]
    except Exception as error:  # noqa: BLE001 - dkimpy refuses some malformed header sections
        return Verdict(FAIL, method, "message unreadable for DKIM: %s" % str(error)[:80])
    if not values:
        return Verdict(NONE, method, "no DKIM signature")
    if len(values) > MAX_SIGNATURES:
        logger.info("Only the first %d of %d DKIM signatures checked", MAX_SIGNATURES, len(values))
    checked = [_check(signer, index, value, dnsfunc or _default_dnsfunc)
               for index, value in enumerate(values[:MAX_SIGNATURES])]
    from_domain = _normalize(from_domain)
    mine = [signature for signature in checked if aligned(signature.domain, from_domain)]
    for signature in mine:
        if signature.outcome == "valid":
            return Verdict(PASS, method, "dkim=pass header.d=%s (aligned with From %s)"
                           % (signature.domain, from_domain))
    for signature in mine:
        if signature.outcome == "tempfail":
            return Verdict(NONE, method, "dkim=temperror header.d=%s (temporary DNS error)" % signature.domain)
    return Verdict(FAIL, method, "dkim=fail " + "; ".join(_describe(s, from_domain) for s in checked))


def _describe(signature: _Signature, from_domain: str) -> str:
    if signature.outcome == "valid" or not aligned(signature.domain, from_domain):
        return "header.d=%s (%s, not aligned with From %s)" % (signature.domain or "?", signature.reason,
                                                               from_domain or "(none)")
    return "header.d=%s (%s)" % (signature.domain, signature.reason)
