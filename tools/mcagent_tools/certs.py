"""CA certificates for the board, as DER: the Unix and ESP32 ports' mbedTLS does not parse PEM here.

Insights Hub's gateway chains to DigiCert Global Root G2. We take it from this computer (never from the
network): the system's CA store first (Debian's files, Python's default CA file, the Windows store), then
the bundle of the `certifi` package (a pinned requirement, so every host has one). A certificate is taken
only if its subject is DigiCert Global Root G2 *and* its SHA-256 is the one pinned here, so a board never
trusts a look-alike, whichever store it came from.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from . import layout

#: SHA-256 of the DER encoding of DigiCert Global Root G2 (valid until 2038-01-15).
DIGICERT_G2_SHA256 = "cb3ccbb76031e5e0138f8dd39a23f9de47ffc35e43c1144cea27d46a5ab1cb5f"
DIGICERT_G2_SUBJECT = "CN=DigiCert Global Root G2,OU=www.digicert.com,O=DigiCert Inc,C=US"
DIGICERT_G2_FILES = (
    "/etc/ssl/certs/DigiCert_Global_Root_G2.pem",  # Debian/Ubuntu ca-certificates
    "/usr/share/ca-certificates/mozilla/DigiCert_Global_Root_G2.crt",
)
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)
_G2_NAME = b"DigiCert Global Root G2"  # in the DER of the root (and of what it issued): a cheap pre-filter


class CertError(Exception):
    """A CA file is missing or not a certificate; the message names the file."""


@dataclass(frozen=True)
class DerCert:
    name: str  # file name on the device, under layout.CERTS_DIR
    der: bytes
    subject: str
    source: str = field(default="", compare=False)  # where it was found (a file, "Windows ROOT store", ...)

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


def _ders_in_file(path: Path) -> list[bytes]:
    """Each certificate of a PEM bundle or DER file, as DER; unreadable files and broken blocks are skipped.

    Tolerant on purpose: one certificate a CA store holds that `cryptography` cannot parse must not hide
    the others (a --ca file goes through the strict `load_certs` instead).
    """
    try:
        data = path.read_bytes()
    except OSError:
        return []
    if b"-----BEGIN" not in data:
        return [data] if data else []
    out = []
    for block in _PEM_CERT.findall(data):
        try:
            out.append(base64.b64decode(block))  # the line breaks are skipped (validate=False)
        except (binascii.Error, ValueError):
            continue
    return out


def _windows_store() -> list[bytes]:
    """The Windows system store's certificates (Python has `ssl.enum_certificates` only there)."""
    enum = getattr(ssl, "enum_certificates", None)
    if enum is None:
        return []
    out = []
    for store in ("ROOT", "CA"):
        try:
            out += [der for der, encoding, _trust in enum(store) if encoding == "x509_asn"]
        except OSError:
            continue
    return out


def certifi_bundle() -> Path | None:
    """certifi's CA bundle (Mozilla's roots), or None without the package."""
    try:
        import certifi
    except ImportError:
        return None
    return Path(certifi.where())


def _ca_sources(search: tuple[str, ...] | None) -> Iterator[tuple[str, Callable[[], list[bytes]]]]:
    """(where, how to read its certificates as DER), in the order they are tried."""
    files = [Path(p) for p in (DIGICERT_G2_FILES if search is None else search)]
    cafile = ssl.get_default_verify_paths().cafile
    if cafile:
        files.append(Path(cafile))
    for path in files:
        yield str(path), functools.partial(_ders_in_file, path)
    if getattr(ssl, "enum_certificates", None) is not None:
        yield "the Windows certificate store", _windows_store
    bundle = certifi_bundle()
    if bundle is None:
        yield "certifi (not installed)", list
    else:
        yield f"{bundle} (certifi)", lambda: _ders_in_file(bundle)


def insights_hub_root(search: tuple[str, ...] | None = None) -> DerCert:
    """DigiCert Global Root G2 from this computer: the system's CA store, then certifi's bundle.

    `search` replaces the store files tried first (default DIGICERT_G2_FILES); Python's default CA file,
    the Windows store and certifi follow. Taken only with the pinned subject and SHA-256 fingerprint.
    """
    looked: list[str] = []
    mismatched: list[str] = []
    for where, read in _ca_sources(search):
        looked.append(where)
        for der in read():
            if _G2_NAME not in der:
                continue
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError:
                continue
            if _subject(cert) != DIGICERT_G2_SUBJECT:
                continue  # e.g. an intermediate DigiCert Global Root G2 issued
            sha256 = hashlib.sha256(der).hexdigest()
            if sha256 == DIGICERT_G2_SHA256:
                return DerCert(layout.INSIGHTS_HUB_ROOT_DER, der, _subject(cert), where)
            mismatched.append(f"{where} holds one with SHA-256 {sha256}")
    wrong = ""
    if mismatched:
        wrong = f"; a look-alike is never taken: {'; '.join(mismatched)}, not {DIGICERT_G2_SHA256}"
    raise CertError(
        "DigiCert Global Root G2 (Insights Hub's root CA) was not found on this computer "
        f"(looked in {', '.join(looked)}){wrong}: install certifi (`pip install -r requirements.txt` "
        "brings it) or the system's CA certificates (Debian/Ubuntu: install ca-certificates), or pass "
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
