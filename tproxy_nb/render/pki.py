"""Small X.509 and SSH key primitives on top of ``cryptography`` (pure, no I/O but ``write_*``).

Example::

    ca = make_ca("tproxy-nb lab public CA")
    site = issue(ca, "www.google.com", dns=["www.google.com"])
    site.cert_pem  # bytes
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import StepError


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key (both PEM)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tproxy-notebooks"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def make_ca(cn: str, days: int = 825) -> KeyPair:
    """A self-signed CA (EC P-256)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def issue(
    ca: KeyPair,
    cn: str,
    dns: Sequence[str] = (),
    uris: Sequence[str] = (),
    client: bool = False,
    server: bool = True,
    days: int = 397,
) -> KeyPair:
    """A leaf certificate signed by ``ca``.

    cn: common name.
    dns, uris: subject alternative names (what peers match on).
    client, server: extended key usages to include.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    sans = [x509.DNSName(d) for d in dns] + [x509.UniformResourceIdentifier(u) for u in uris]
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return KeyPair(builder.sign(ca.key, hashes.SHA256()), key)


def load(cert_path: str | os.PathLike, key_path: str | os.PathLike) -> KeyPair:
    """Read a certificate and key written by :func:`write`."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise StepError(f"{key_path} holds a {type(key).__name__}, not the EC key this tutorial writes; delete it.")
    return KeyPair(cert, key)


def write(pair: KeyPair, cert_path: str | os.PathLike, key_path: str | os.PathLike) -> None:
    """Write cert (0644) and key (0600, created private: never readable by others, not even briefly)."""
    Path(cert_path).write_bytes(pair.cert_pem)
    os.chmod(cert_path, 0o644)
    write_private(key_path, pair.key_pem)


def write_private(path: str | os.PathLike, data: bytes) -> None:
    """Write secret bytes to ``path`` with mode 0600 from the first byte on."""
    path = Path(path)
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ssh_keypair(comment: str) -> tuple[bytes, str]:
    """A new ed25519 SSH key: (OpenSSH private key bytes, ``ssh-ed25519 AAAA... comment``)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def expires_within(cert: x509.Certificate, days: int) -> bool:
    """True when ``cert`` expires within ``days`` days (time to renew)."""
    return cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) < dt.timedelta(days=days)
