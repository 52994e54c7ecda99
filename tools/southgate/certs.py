"""The data directory's key material: development CA, server certificate, token-signing key, admin token.

Everything is created on first use and kept in DIR (mode 0700, secret files 0600), so an agent that trusted
`ca.pem` once keeps trusting the same server across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


def ensure_dir(path: Path) -> Path:
    """Create DIR with mode 0700 (and tighten it if it already exists)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file atomically with mode 0600 from the start (a leftover .tmp, whatever its mode, is
    replaced, never written into)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


@dataclass
class KeyMaterial:
    ca_pem: Path
    ca_der: Path
    server_chain: Path
    server_key: Path
    token_key: rsa.RSAPrivateKey
    token_kid: str
    admin_token: str

    def server_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.server_chain), str(self.server_key))
        return ctx

    def token_public_pem_one_line(self) -> str:
        """The PEM of the token key with the base64 on ONE line, the form Node's token check needs."""
        der = self.token_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        body = base64.b64encode(der).decode()
        return "-----BEGIN PUBLIC KEY-----" + body + "-----END PUBLIC KEY-----"

    def token_jwk(self) -> dict[str, str]:
        nums = self.token_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "e": _b64u_int(nums.e),
            "n": _b64u_int(nums.n),
            "kid": self.token_kid,
            "alg": "RS256",
            "value": self.token_public_pem_one_line(),
        }


def _b64u_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def server_cert_names(chain: Path) -> set[str]:
    """The DNS names and IP addresses the server certificate in `chain` is valid for (empty if unreadable)."""
    try:
        cert = x509.load_pem_x509_certificate(chain.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return set()
    names = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    return names | {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def _canonical(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower()


def load_or_create(data_dir: Path, extra_names: tuple[str, ...] = ()) -> KeyMaterial:
    """Load DIR's key material, creating whatever is missing. A server certificate that does not name all
    of `extra_names` (serve --cert-name, a LAN address) is issued anew by the same CA, so boards that
    trust ca.pem keep working."""
    ensure_dir(data_dir)
    ca_pem = data_dir / "ca.pem"
    ca_der = data_dir / "ca.der"
    ca_key = data_dir / "ca-key.pem"
    chain = data_dir / "server.pem"
    server_key = data_dir / "server-key.pem"
    token_key_path = data_dir / "token-key.pem"
    admin_path = data_dir / "admin-token"

    if not (ca_pem.exists() and ca_key.exists()):
        ca = trustme.CA(organization_name="southgate development CA", key_type=trustme.KeyType.RSA)
        write_private(ca_key, ca.private_key_pem.bytes())
        write_public(ca_pem, ca.cert_pem.bytes())
        for stale in (chain, server_key):
            stale.unlink(missing_ok=True)
    else:
        ca = trustme.CA.from_pem(ca_pem.read_bytes(), ca_key.read_bytes())
    if not ca_der.exists():
        write_public(ca_der, ssl.PEM_cert_to_DER_cert(ca_pem.read_text()))
    extra = tuple(dict.fromkeys(_canonical(n) for n in extra_names))
    names = tuple(dict.fromkeys((*SERVER_NAMES, *extra)))
    if chain.exists() and not set(extra) <= server_cert_names(chain):
        # Only a name asked for and missing makes a new certificate (a certificate put there on purpose, e.g.
        # by a test of wrong host names, stays); it keeps the names the old one had.
        names = tuple(dict.fromkeys((*names, *sorted(server_cert_names(chain)))))
        chain.unlink()
    if not (chain.exists() and server_key.exists()):
        leaf = ca.issue_cert(*names, common_name="localhost", key_type=trustme.KeyType.RSA)
        write_private(server_key, leaf.private_key_pem.bytes())
        write_public(chain, b"".join(blob.bytes() for blob in leaf.cert_chain_pems))

    if token_key_path.exists():
        key = serialization.load_pem_private_key(token_key_path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_private(
            token_key_path,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kid = "key-id-" + hashlib.sha256(der).hexdigest()[:16]

    if admin_path.exists():
        admin = admin_path.read_text().strip()
    else:
        admin = secrets.token_urlsafe(32)
        write_private(admin_path, (admin + "\n").encode())
    return KeyMaterial(ca_pem, ca_der, chain, server_key, key, kid, admin)
