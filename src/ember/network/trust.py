"""The trust layer: a read-only overlay layer, just above the image, that makes
sessions trust the installation's egress CA.

It holds the CA under /usr/local/share/ca-certificates (so a session's own
`update-ca-certificates` keeps it) and the image's system bundle with the CA
appended. Commands get the usual variables pointing at them (TRUST_ENV), for
the tools that do not read the system store by default (Node, requests, pip).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from pathlib import Path

from .ca import EgressCA

CA_IN_SESSION = "/usr/local/share/ca-certificates/ember-egress-ca.crt"
BUNDLE_IN_SESSION = "/etc/ssl/certs/ca-certificates.crt"
TRUST_ENV = {
    "SSL_CERT_FILE": BUNDLE_IN_SESSION,
    "REQUESTS_CA_BUNDLE": BUNDLE_IN_SESSION,
    "CURL_CA_BUNDLE": BUNDLE_IN_SESSION,
    "NODE_EXTRA_CA_CERTS": CA_IN_SESSION,
}


def _write(root: Path, path_in_session: str, data: bytes, owner: int) -> None:
    path = root / path_in_session.lstrip("/")
    for parent in reversed(path.relative_to(root).parents):
        directory = root / parent
        if not directory.exists():
            directory.mkdir(mode=0o755)
            os.chown(directory, owner, owner)
    path.write_bytes(data)
    path.chmod(0o644)
    os.chown(path, owner, owner)


def trust_layer(ca: EgressCA, image_rootfs: Path, layers_dir: Path, root_id: int) -> Path:
    """The layer for this CA and image (built once, then reused), owned by the
    session's root (`root_id` on the host)."""
    name = f"{image_rootfs.parent.name}-{ca.fingerprint[:16]}-{root_id}"
    layer = layers_dir / name
    if layer.exists():
        return layer
    layers_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(layers_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if layer.exists():
            return layer
        staging = layers_dir / f".build-{uuid.uuid4().hex[:8]}"
        staging.mkdir(mode=0o755)
        try:
            os.chown(staging, root_id, root_id)
            bundle = image_rootfs / BUNDLE_IN_SESSION.lstrip("/")
            system = bundle.read_bytes() if bundle.is_file() else b""
            _write(staging, CA_IN_SESSION, ca.cert_pem, root_id)
            _write(staging, BUNDLE_IN_SESSION, system.rstrip(b"\n") + b"\n" + ca.cert_pem, root_id)
            os.rename(staging, layer)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return layer
