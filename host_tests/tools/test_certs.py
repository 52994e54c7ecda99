"""Insights Hub's root CA on any host: the system store if it has it, else certifi; fingerprint-pinned."""

from __future__ import annotations

import datetime
import hashlib
import ssl
import sys
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from mcagent_tools import certs, layout
from mcagent_tools.certs import (
    DIGICERT_G2_SHA256,
    DIGICERT_G2_SUBJECT,
    CertError,
    der_certs,
    insights_hub_root,
)


@pytest.fixture
def bare_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A macOS/Windows-like host: no Debian CA files, an empty default CA file, no Windows store."""
    empty = tmp_path / "empty-cert.pem"
    empty.write_bytes(b"")
    monkeypatch.setattr(certs, "DIGICERT_G2_FILES", (str(tmp_path / "no-such-dir" / "DigiCert.pem"),))
    paths = ssl.get_default_verify_paths()._replace(cafile=str(empty), capath=None)
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: paths)
    monkeypatch.delattr(ssl, "enum_certificates", raising=False)
    return empty


def _real_g2_der() -> bytes:
    for der in certs._ders_in_file(Path(certifi.where())):
        if hashlib.sha256(der).hexdigest() == DIGICERT_G2_SHA256:
            return der
    raise AssertionError("certifi's bundle lacks DigiCert Global Root G2")


def _look_alike() -> bytes:
    """A self-signed certificate with DigiCert Global Root G2's exact subject (and another key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DigiCert Inc"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "www.digicert.com"),
            x509.NameAttribute(NameOID.COMMON_NAME, "DigiCert Global Root G2"),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    assert cert.subject.rfc4514_string() == DIGICERT_G2_SUBJECT
    return cert.public_bytes(Encoding.DER)


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


def test_found_via_certifi_on_a_host_without_a_system_copy(bare_host: Path) -> None:
    root = insights_hub_root()
    assert root.sha256 == DIGICERT_G2_SHA256
    assert root.subject == DIGICERT_G2_SUBJECT
    assert root.name == layout.INSIGHTS_HUB_ROOT_DER
    assert root.source == f"{certifi.where()} (certifi)"
    # What deploy installs: the same DER file, by default.
    (installed,) = der_certs([])
    assert installed.der == root.der
    assert x509.load_der_x509_certificate(installed.der).subject.rfc4514_string() == DIGICERT_G2_SUBJECT


def test_the_system_store_comes_before_certifi(bare_host: Path, tmp_path: Path) -> None:
    bare_host.write_bytes(_pem(_real_g2_der()))
    assert insights_hub_root().source == str(bare_host)
    # Python's default CA file may be DER too (one certificate).
    der_file = tmp_path / "g2.der"
    der_file.write_bytes(_real_g2_der())
    assert insights_hub_root(search=(str(der_file),)).source == str(der_file)


def test_windows_store_is_searched(bare_host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stores = {"ROOT": [(b"junk", "x509_asn", True), (_real_g2_der(), "x509_asn", True)], "CA": []}
    monkeypatch.setattr(ssl, "enum_certificates", stores.__getitem__, raising=False)
    monkeypatch.setattr(certs, "certifi_bundle", lambda: None)
    root = insights_hub_root()
    assert root.sha256 == DIGICERT_G2_SHA256
    assert root.source == "the Windows certificate store"


def test_a_broken_certificate_in_a_bundle_does_not_hide_the_root(bare_host: Path) -> None:
    broken = b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n"
    garbage = b"-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n"
    bare_host.write_bytes(broken + garbage + _pem(_real_g2_der()))
    with pytest.raises(CertError):  # a --ca file stays strict
        certs.load_certs(bare_host)
    assert insights_hub_root().source == str(bare_host)


def test_a_look_alike_is_never_taken(bare_host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _look_alike()
    bare_host.write_bytes(_pem(fake))
    # certifi still has the real one: that is what is taken.
    root = insights_hub_root()
    assert root.sha256 == DIGICERT_G2_SHA256 and root.der != fake
    # Without certifi: refused, and the message says why.
    monkeypatch.setattr(certs, "certifi_bundle", lambda: None)
    with pytest.raises(CertError) as e:
        insights_hub_root()
    msg = str(e.value)
    assert f"{bare_host} holds one with SHA-256 {hashlib.sha256(fake).hexdigest()}" in msg
    assert DIGICERT_G2_SHA256 in msg


def test_not_found_anywhere_says_what_to_do(bare_host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "certifi", None)  # `import certifi` raises ImportError
    assert certs.certifi_bundle() is None
    with pytest.raises(CertError) as e:
        der_certs([])
    msg = str(e.value)
    assert msg.startswith("DigiCert Global Root G2 (Insights Hub's root CA) was not found on this computer")
    for part in (*certs.DIGICERT_G2_FILES, str(bare_host), "certifi (not installed)"):
        assert part in msg
    assert "pip install -r requirements.txt" in msg and "--no-insights-hub-ca" in msg
    # Switched off, nothing is looked up.
    assert der_certs([], insights_hub=False) == []
