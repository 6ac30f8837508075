# SPDX-License-Identifier: GPL-3.0-or-later
"""Inbound iMIP mail authentication: only mail provably from the From domain passes; forgeries never do."""
from __future__ import annotations

import base64
import email
import email.policy

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from invito.plugins.imip.authentication import (aligned, authenticate, from_authentication_results,
                                                verify_dkim)

MX = "mx.example.com"
CALENDAR = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REPLY\r\nBEGIN:VEVENT\r\nUID:uid-1\r\n"
            b"ATTENDEE;PARTSTAT=ACCEPTED:mailto:guest@example.com\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")


def message(sender: str = "guest@example.com", body: bytes = CALENDAR) -> bytes:
    return (b"From: Guest <" + sender.encode() + b">\r\nTo: alice@invito.test\r\nSubject: Accepted: Meeting\r\n"
            b"Date: Thu, 10 Oct 2030 10:00:00 +0000\r\nMessage-ID: <reply-1@example.com>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/calendar; method=REPLY; charset=utf-8\r\n\r\n" + body)


@pytest.fixture(scope="module")
def key() -> tuple[bytes, bytes]:
    """(private key PEM, DKIM TXT record) — 1024 bits, the smallest dkimpy accepts, to keep tests fast."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    spki = private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(spki)


@pytest.fixture
def dns(key):
    """TXT records for selector "sel" of three domains; returns None for anything else."""
    records = {b"sel._domainkey.%s." % domain: key[1]
               for domain in (b"example.com", b"mail.example.com", b"bulk-mailer.net")}
    return records.get


def sign(raw: bytes, key, domain: str = "example.com", **options) -> bytes:
    return dkim.sign(raw, b"sel", domain.encode(), key[0], **options) + raw


# --- our own DKIM verification -----------------------------------------------------------------------

def test_valid_aligned_signature_passes(key, dns) -> None:
    verdict = verify_dkim(sign(message(), key), "example.com", dns)
    assert (verdict.result, verdict.method) == ("pass", "dkim")
    assert verdict.detail == "dkim=pass header.d=example.com (aligned with From example.com)"


@pytest.mark.parametrize("signer, sender", [("mail.example.com", "guest@example.com"),
                                            ("example.com", "guest@eu.example.com")])
def test_signature_from_same_organizational_domain_passes(key, dns, signer, sender) -> None:
    domain = sender.partition("@")[2]
    assert verify_dkim(sign(message(sender), key, signer), domain, dns).result == "pass"


def test_valid_signature_of_another_domain_fails_and_says_why(key, dns) -> None:
    verdict = verify_dkim(sign(message(), key, "bulk-mailer.net"), "example.com", dns)
    assert verdict.result == "fail"
    assert "header.d=bulk-mailer.net" in verdict.detail and "not aligned with From example.com" in verdict.detail


def test_body_changed_after_signing_fails(key, dns) -> None:
    raw = sign(message(), key).replace(b"PARTSTAT=ACCEPTED", b"PARTSTAT=DECLINED")
    verdict = verify_dkim(raw, "example.com", dns)
    assert verdict.result == "fail" and "body hash mismatch" in verdict.detail


def test_from_changed_after_signing_fails(key, dns) -> None:
    raw = sign(message("guest@example.com"), key).replace(b"guest@example.com>", b"boss@example.com>")
    assert verify_dkim(raw, "example.com", dns).result == "fail"


def test_extra_from_above_the_signed_one_fails(key, dns) -> None:
    raw = b"From: boss@example.com\r\n" + sign(message("guest@bulk-mailer.net"), key, "bulk-mailer.net")
    headers = email.message_from_bytes(raw)
    verdict = authenticate(raw, headers, "example.com", "", dns)
    assert verdict.result == "fail" and "2 From header fields" in verdict.detail


def test_unsigned_message_is_no_evidence(dns) -> None:
    assert verify_dkim(message(), "example.com", dns).result == "none"


@pytest.mark.parametrize("signature", [
    b"garbage",
    b"v=1; a=rsa-sha256; d=example.com; s=sel",                       # b=, bh=, h= missing
    b"v=1; a=rsa-sha256; d=example.com; d=evil.org; s=sel; h=from; bh=AA==; b=AA==",  # duplicate tag
    b"v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=!!; b=AA==",  # not base64
    b"v=1; a=rsa-sha256; c=relaxed/simple; d=example.com; s=sel; h=from; l=; bh=AA==; b=AA==",
    b"v=1; a=rsa-sha256; c=bogus; d=example.com; s=sel; h=from; bh=AA==; b=AA==",
])
def test_malformed_signature_fails_without_raising(dns, signature) -> None:
    verdict = verify_dkim(b"DKIM-Signature: " + signature + b"\r\n" + message(), "example.com", dns)
    assert (verdict.result, verdict.method) == ("fail", "dkim")
    assert "b'" not in verdict.detail  # readable for the organizer, not a bytes repr


def test_unparsable_message_fails_without_raising(dns) -> None:
    assert verify_dkim(b"\x00\xff not: a\r\nmessage\x00", "example.com", dns).result == "fail"


def test_signature_without_published_key_fails(key) -> None:
    verdict = verify_dkim(sign(message(), key), "example.com", lambda name: None)
    assert verdict.result == "fail" and "no key published" in verdict.detail


def test_dns_failure_is_no_evidence_either_way(key) -> None:
    def unreachable(name: bytes) -> bytes:
        raise TimeoutError("resolver did not answer")
    verdict = verify_dkim(sign(message(), key), "example.com", unreachable)
    assert verdict.result == "none" and "temporary DNS error" in verdict.detail


def test_dns_failure_for_an_unaligned_signature_still_fails(key) -> None:
    def unreachable(name: bytes) -> bytes:
        raise TimeoutError("resolver did not answer")
    assert verify_dkim(sign(message(), key, "bulk-mailer.net"), "example.com", unreachable).result == "fail"


def test_any_valid_aligned_signature_among_several_passes(key, dns) -> None:
    raw = sign(sign(message(), key, "bulk-mailer.net"), key, "example.com")
    forged = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=AA==; b=AA==\r\n"
    assert verify_dkim(forged + raw, "example.com", dns).result == "pass"


def test_content_appended_after_a_length_limited_signature_fails(key, dns) -> None:
    raw = sign(message(), key, length=True)
    assert verify_dkim(raw, "example.com", dns).result == "pass"
    verdict = verify_dkim(raw + b"BEGIN:VCALENDAR\r\nMETHOD:CANCEL\r\nEND:VCALENDAR\r\n", "example.com", dns)
    assert verdict.result == "fail" and "l=" in verdict.detail


# --- Authentication-Results from the fronting MTA ----------------------------------------------------

def headers(*results: str, policy=email.policy.compat32) -> email.message.Message:
    fields = b"".join(b"Authentication-Results: " + value.encode() + b"\r\n" for value in results)
    return email.message_from_bytes(fields + message(), policy=policy)


def verdict_of(*results: str, from_domain: str = "example.com") -> tuple[str, str]:
    verdict = from_authentication_results(headers(*results), MX, from_domain)
    assert verdict.method == "authentication-results"
    return verdict.result, verdict.detail


@pytest.mark.parametrize("policy", [email.policy.compat32, email.policy.default])
def test_trusted_dmarc_verdict_decides(policy) -> None:
    for result in ("pass", "fail"):
        msg = headers(MX + "; dmarc=%s header.from=example.com" % result, policy=policy)
        verdict = from_authentication_results(msg, MX, "example.com")
        assert (verdict.result, verdict.detail) == (result, "dmarc=%s header.from=example.com" % result)


def test_authserv_id_matches_case_insensitively_and_quoted() -> None:
    assert verdict_of('"MX.Example.COM" 1; dmarc=pass')[0] == "pass"


def test_results_stamped_by_anyone_else_are_ignored() -> None:
    assert verdict_of("evil.example.org; dmarc=pass header.from=example.com; dkim=pass header.d=example.com") \
        == ("none", "no Authentication-Results from mx.example.com")
    assert verdict_of(MX + "; dkim=fail header.d=example.com", "mx.evil.org; dmarc=pass")[0] == "fail"


def test_our_id_below_a_foreign_field_came_from_outside() -> None:
    assert verdict_of(MX + "; spf=fail smtp.mailfrom=guest@example.com", "mx.partner.org; spf=pass",
                      MX + "; dmarc=pass")[0] == "fail"


def test_fields_of_an_internal_relay_above_ours_are_skipped() -> None:
    assert verdict_of("filter.example.com; spam=none", MX + "; dkim=pass header.d=example.com",
                      MX + "; spf=none")[0] == "pass"


def test_dmarc_takes_precedence_over_dkim_and_spf() -> None:
    assert verdict_of(MX + "; dkim=pass header.d=example.com; spf=pass smtp.mailfrom=example.com; "
                           "dmarc=fail header.from=example.com")[0] == "fail"
    assert verdict_of(MX + "; spf=fail smtp.mailfrom=example.com; dmarc=pass header.from=example.com")[0] == "pass"
    assert verdict_of(MX + "; dmarc=pass", MX + "; dmarc=fail")[0] == "fail"  # conflicting: the cautious one


def test_dmarc_verdict_about_another_from_domain_does_not_count() -> None:
    assert verdict_of(MX + "; dmarc=pass header.from=evil.org")[0] == "none"


def test_dkim_result_counts_only_when_aligned() -> None:
    assert verdict_of(MX + "; dkim=pass header.d=mail.example.com") == (
        "pass", "dkim=pass header.d=mail.example.com (aligned with From example.com)")
    assert verdict_of(MX + "; dkim=pass header.i=@eu.example.com")[0] == "pass"
    assert verdict_of(MX + "; dkim=pass header.d=bulk-mailer.net") == (
        "fail", "dkim=pass header.d=bulk-mailer.net (not aligned with From example.com)")


def test_spf_result_counts_only_when_aligned() -> None:
    assert verdict_of(MX + "; spf=pass smtp.mailfrom=bounces@mail.example.com")[0] == "pass"
    assert verdict_of(MX + "; spf=pass smtp.mailfrom=bounces@bulk-mailer.net")[0] == "fail"


def test_failures_and_missing_results() -> None:
    assert verdict_of(MX + "; spf=softfail smtp.mailfrom=example.com; dkim=none") == (
        "fail", "spf=softfail smtp.mailfrom=example.com")
    assert verdict_of(MX + "; dkim=temperror header.d=example.com; spf=neutral")[0] == "none"
    assert verdict_of(MX + "; none") == ("none", "no dmarc, dkim or spf verdict from mx.example.com")
    assert verdict_of() == ("none", "no Authentication-Results from mx.example.com")


def test_comments_quoting_and_folding() -> None:
    folded = (MX + " (Postfix; dkim=fail);\r\n\tdkim=pass (1024-bit key;\r\n unprotected) header.d=example.com"
              "\r\n\theader.s=sel header.b=\"Ab+/=\" ;\r\n spf = pass smtp.mailfrom=\"odd;local\"@example.com")
    assert verdict_of(folded)[0] == "pass"
    # Text that only looks like a result inside a comment or quoted string is not one.
    assert verdict_of(MX + "; dkim=fail header.d=example.com (dmarc=pass; dkim=pass header.d=example.com)")[0] \
        == "fail"
    assert verdict_of(MX + '; spf=fail smtp.mailfrom="x;dmarc=pass"@evil.org')[0] == "fail"


@pytest.mark.parametrize("garbage", ["", ";", MX, MX + ";", MX + "; ((((dmarc=pass", MX + '; "', MX + "; dkim",
                                     MX + "; =;=;;", MX + "; dkim=pass header.d=", "\x00\x7f" + MX,
                                     MX + "; dkim=pass header.d=@@@", MX + "; spf=pass smtp.mailfrom=\\"])
def test_garbage_is_no_evidence(garbage) -> None:
    assert verdict_of(garbage)[0] in ("none", "fail")


# --- choosing the source, alignment ------------------------------------------------------------------

def test_authenticate_uses_the_mta_verdict_only_when_configured(key, dns) -> None:
    raw = b"Authentication-Results: " + MX.encode() + b"; dmarc=fail\r\n" + sign(message(), key)
    msg = email.message_from_bytes(raw)
    assert authenticate(raw, msg, "example.com", MX, dns) == from_authentication_results(msg, MX, "example.com")
    assert authenticate(raw, msg, "example.com", MX, dns).result == "fail"
    assert authenticate(raw, msg, "example.com", "", dns).result == "pass"


@pytest.mark.parametrize("domain, from_domain, expected", [
    ("example.com", "example.com", True),
    ("Example.COM.", "example.com", True),
    ("foo.example.co.uk", "example.co.uk", True),
    ("a.example.com", "b.example.com", True),
    ("bücher.de", "xn--bcher-kva.de", True),
    ("evil-example.com", "example.com", False),
    ("example.com.evil.org", "example.com", False),
    ("evil.co.uk", "example.co.uk", False),
    ("co.uk", "example.co.uk", False),
    ("com", "net", False),
    ("alice.github.io", "mallory.github.io", False),
    ("", "example.com", False),
    ("example.com", "", False),
    ("user@example.com", "example.com", False),
])
def test_relaxed_alignment(domain, from_domain, expected) -> None:
    assert aligned(domain, from_domain) is expected
