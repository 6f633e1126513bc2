"""The tests' fake internet: an "upstream" network namespace joined to the host.

It sits at 198.18.0.1 (RFC 2544's benchmarking range: not private, not the
host's, so sessions may reach it), with a second address, 198.18.0.66, that
no test name resolves to (where a spoofing sandbox would like to go). Its
servers (`upstream_servers.py`): DNS for the test zone, HTTP and HTTPS echo
servers, a byte sink. HTTPS uses a CA made here, which emberd is told to
trust (`--upstream-ca`).
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

UPSTREAM_NET = "198.18.0"
UPSTREAM_IP = f"{UPSTREAM_NET}.1"
SPOOF_IP = f"{UPSTREAM_NET}.66"
SERVERS = Path(__file__).with_name("upstream_servers.py")
NAMES = ("api.example.test", "*.good.test", "*.a.good.test", "bad.test", "secret.test")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Upstream:
    netns: str
    host_if: str
    ca_path: Path  # the CA the HTTPS server's certificate comes from


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_test_certificates(directory: Path) -> tuple[Path, Path]:
    """(CA certificate, server certificate + key) for every test name."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ember tests upstream CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAMES[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in NAMES]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, server_path = directory / "upstream-ca.pem", directory / "upstream-server.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_path.write_bytes(server.public_bytes(serialization.Encoding.PEM) + _pem_key(key))
    return ca_path, server_path


@contextmanager
def upstream_namespace(prefix: str, workdir: Path) -> Iterator[Upstream]:
    netns, host_if = f"{prefix}-up", f"{prefix}u"[:15]
    ca_path, server_cert = make_test_certificates(workdir)
    run("ip", "netns", "add", netns)
    servers = None
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", "up0", "netns", netns)
        run("ip", "addr", "add", f"{UPSTREAM_NET}.2/24", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        for argv in (
            ("ip", "addr", "add", f"{UPSTREAM_IP}/24", "dev", "up0"),
            ("ip", "addr", "add", f"{SPOOF_IP}/24", "dev", "up0"),
            ("ip", "link", "set", "up0", "up"),
            ("ip", "link", "set", "lo", "up"),
            ("ip", "route", "add", "default", "via", f"{UPSTREAM_NET}.2"),
        ):
            run("ip", "netns", "exec", netns, *argv)
        servers = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns,
                sys.executable,
                str(SERVERS),
                "--cert",
                str(server_cert),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert servers.stdout is not None
        deadline = time.monotonic() + 30
        line = servers.stdout.readline()
        if line.strip() != b"ready" or time.monotonic() > deadline:
            raise RuntimeError(f"the upstream servers did not start: {line!r}")
        yield Upstream(netns, host_if, ca_path)
    finally:
        if servers is not None:
            servers.kill()
            servers.wait()
            for pipe in (servers.stdin, servers.stdout):
                if pipe is not None:
                    pipe.close()
        run("ip", "link", "del", host_if, check=False)
        run("ip", "netns", "del", netns, check=False)
