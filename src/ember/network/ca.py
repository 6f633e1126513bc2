"""The installation's egress CA: it signs the certificates the proxy shows to a
session for the HTTPS domains whose requests get headers injected.

Made once per data directory (`network/ca/`: ca.pem, ca.key mode 0600) and
trusted inside sessions through the trust layer (`trust.py`). Nothing but
the proxy uses the key.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import tempfile
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
KEY_FILE = "ca.key"
LEAF_DAYS = 7
MAX_CACHED_LEAVES = 512


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _create_ca(directory: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ember"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Ember egress CA ({socket.gethostname()})"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
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
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(directory / KEY_FILE, _pem_key(key))
    # The certificate last: its presence means the pair is complete.
    staged = directory / f".{CA_FILE}.tmp"
    staged.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.rename(staged, directory / CA_FILE)


class EgressCA:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        if not (directory / CA_FILE).exists():
            _create_ca(directory)
        self.cert_path = directory / CA_FILE
        self.cert_pem = self.cert_path.read_bytes()
        self._cert = x509.load_pem_x509_certificate(self.cert_pem)
        key = serialization.load_pem_private_key((directory / KEY_FILE).read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._key = key
        # One key for every leaf: a leaf is only shown to this host's sessions.
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    @property
    def fingerprint(self) -> str:
        return self._cert.fingerprint(hashes.SHA256()).hex()

    def _leaf(self, name: str) -> bytes:
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(self._leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem

    def server_context(self, name: str) -> ssl.SSLContext:
        """A TLS server context presenting a certificate for `name` (a checked host name)."""
        with self._lock:
            context = self._contexts.get(name)
            if context is not None:
                return context
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.set_alpn_protocols(["http/1.1"])
        # load_cert_chain reads files only: the pair goes through a private
        # temporary file that is gone before this returns.
        with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".leaf-") as f:
            f.write(self._leaf(name) + _pem_key(self._leaf_key))
            f.flush()
            context.load_cert_chain(f.name)
        with self._lock:
            if len(self._contexts) >= MAX_CACHED_LEAVES:
                self._contexts.clear()
            self._contexts[name] = context
        return context
