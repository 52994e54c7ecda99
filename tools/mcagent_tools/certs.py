"""CA certificates for the board, as DER: the Unix and ESP32 ports' mbedTLS does not parse PEM here.

Insights Hub's gateway chains to DigiCert Global Root G2; we take it from the host's CA store (never from
the network) and check its fingerprint, so a board never trusts a look-alike.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from . import layout

#: SHA-256 of the DER encoding of DigiCert Global Root G2 (valid until 2038-01-15).
DIGICERT_G2_SHA256 = "cb3ccbb76031e5e0138f8dd39a23f9de47ffc35e43c1144cea27d46a5ab1cb5f"
DIGICERT_G2_FILES = (
    "/etc/ssl/certs/DigiCert_Global_Root_G2.pem",  # Debian/Ubuntu ca-certificates
    "/usr/share/ca-certificates/mozilla/DigiCert_Global_Root_G2.crt",
)


class CertError(Exception):
    """A CA file is missing or not a certificate; the message names the file."""


@dataclass(frozen=True)
class DerCert:
    name: str  # file name on the device, under layout.CERTS_DIR
    der: bytes
    subject: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


def load_certs(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM (one or many) or DER file."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CertError(f"{path}: cannot read CA certificate ({e.strerror})") from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise CertError(f"{path}: not a PEM or DER X.509 certificate") from None
    if not certs:
        raise CertError(f"{path}: holds no certificate")
    return certs


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def insights_hub_root(search: tuple[str, ...] = DIGICERT_G2_FILES) -> DerCert:
    """DigiCert Global Root G2 from the host's CA store (files above, then the default CA bundle)."""
    candidates = [Path(p) for p in search]
    paths = ssl.get_default_verify_paths()
    if paths.cafile:
        candidates.append(Path(paths.cafile))
    for path in candidates:
        if not path.is_file():
            continue
        try:
            certs = load_certs(path)
        except CertError:
            continue
        for cert in certs:
            der = cert.public_bytes(Encoding.DER)
            if hashlib.sha256(der).hexdigest() == DIGICERT_G2_SHA256:
                return DerCert(layout.INSIGHTS_HUB_ROOT_DER, der, _subject(cert))
    raise CertError(
        "DigiCert Global Root G2 (Insights Hub's root CA) is not in this host's CA store "
        f"(looked in {', '.join(str(p) for p in candidates)}): install ca-certificates, or pass "
        "--no-insights-hub-ca for a board that only talks to a local southgate"
    )


def _stem(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.") or "ca"
    return stem.lower()


def der_certs(extra: list[Path], insights_hub: bool = True) -> list[DerCert]:
    """The DER files to install: Insights Hub's root (unless switched off), then each --ca file's certs.

    Each certificate gets its own file (MicroPython reads only the first certificate of a DER blob);
    names come from the source file (`ca.pem` -> `ca.der`, `bundle.pem` with two -> `bundle-1.der`, ...).
    """
    out: list[DerCert] = []
    if insights_hub:
        out.append(insights_hub_root())
    seen = {c.sha256 for c in out}
    names = {c.name for c in out}
    for path in extra:
        certs = load_certs(path)
        for i, cert in enumerate(certs, 1):
            der = cert.public_bytes(Encoding.DER)
            if hashlib.sha256(der).hexdigest() in seen:
                continue
            base = _stem(path) if len(certs) == 1 else f"{_stem(path)}-{i}"
            name, n = f"{base}.der", 2
            while name in names:
                name, n = f"{base}-{n}.der", n + 1
            out.append(DerCert(name, der, _subject(cert)))
            seen.add(hashlib.sha256(der).hexdigest())
            names.add(name)
    return out


def write_der_dir(certs: list[DerCert], directory: Path) -> list[Path]:
    """Write the DER files into directory (emptied first, so a removed --ca is not installed again)."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.der"):
        if old.name not in {c.name for c in certs}:
            old.unlink()
    paths = []
    for cert in certs:
        target = directory / cert.name
        if not target.exists() or target.read_bytes() != cert.der:
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(cert.der)
            tmp.replace(target)
        paths.append(target)
    return paths
