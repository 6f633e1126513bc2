"""The microVM's initramfs: busybox, the virtio drivers, Ember's init and the agent.

`guest/init.sh` loads the drivers, mounts the session's disk and becomes the
agent there. The archive is cached under `<data_dir>/vm/initramfs/` by a
hash of everything in it, so a changed agent or init makes a new one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import ember.agent
from ember.runtime import proc

from .kernel import GuestAssetError, GuestKernel, build_once

INIT_SCRIPT = Path(__file__).with_name("guest") / "init.sh"
BUILD_FORMAT = 1  # bump when the archive's layout changes in a way the inputs do not show
# Paths under the kernel's module tree; loaded in dependency order (`load_order`).
MODULES = (
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio_mmio.ko",
    "drivers/block/virtio_blk.ko",
    "drivers/char/virtio_console.ko",
    "drivers/char/hw_random/virtio-rng.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
)


def module_depends(path: Path) -> list[str]:
    """The `depends=` of a module's .modinfo strings (what modinfo prints)."""
    for field in path.read_bytes().split(b"\0"):
        if field.startswith(b"depends="):
            return [d for d in field[len(b"depends=") :].decode().split(",") if d]
    return []


def _name(path: str) -> str:
    return Path(path).name.removesuffix(".ko").replace("-", "_")


def load_order(kernel: GuestKernel, modules: tuple[str, ...] = MODULES) -> list[str]:
    """`modules` ordered so each comes after what it depends on (all must be listed)."""
    by_name = {_name(m): m for m in modules}
    ordered: list[str] = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in trail:
            raise GuestAssetError(f"module dependency cycle: {' -> '.join((*trail, name))}")
        if by_name[name] in ordered:
            return
        for dependency in module_depends(kernel.modules / by_name[name]):
            if dependency not in by_name:
                raise GuestAssetError(f"{name} needs {dependency}, which the initramfs lacks")
            visit(dependency, (*trail, name))
        ordered.append(by_name[name])

    for name in by_name:
        visit(name, ())
    return ordered


def _agent_sources() -> list[Path]:
    root = Path(ember.agent.__file__).parent
    return sorted(root.glob("*.py"))


def initramfs_key(kernel: GuestKernel, busybox: Path, ca_pem: bytes = b"") -> str:
    digest = hashlib.sha256()
    digest.update(ca_pem)
    digest.update(kernel.version.encode())
    digest.update(busybox.read_bytes())
    digest.update(INIT_SCRIPT.read_bytes())
    digest.update(f"format {BUILD_FORMAT}\n".encode())
    digest.update("\n".join(load_order(kernel)).encode())
    for source in _agent_sources():
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def build_initramfs(
    data_dir: Path, kernel: GuestKernel, busybox: Path, ca_pem: bytes = b""
) -> Path:
    """The initramfs for this kernel and agent (built once); with `ca_pem`, the
    installation's egress CA, which init adds to the guest's trust store."""
    directory = data_dir / "vm" / "initramfs"
    target = directory / f"{initramfs_key(kernel, busybox, ca_pem)}.cpio.gz"

    def build() -> None:
        with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as scratch:
            tree = Path(scratch) / "tree"
            for sub in ("bin", "lib/modules", "agent"):
                (tree / sub).mkdir(parents=True)
            shutil.copy2(busybox, tree / "bin" / "busybox")
            names = []
            for module in load_order(kernel):
                shutil.copy2(kernel.modules / module, tree / "lib" / "modules")
                names.append(Path(module).name.removesuffix(".ko"))
            (tree / "modules").write_text("\n".join(names) + "\n")
            shutil.copy2(INIT_SCRIPT, tree / "init")
            (tree / "init").chmod(0o755)
            for source in _agent_sources():
                shutil.copy2(source, tree / "agent" / source.name)
            if ca_pem:
                (tree / "ember-ca.crt").write_bytes(ca_pem)
            archive = Path(scratch) / "initramfs.cpio.gz"
            listing = proc.run(["find", "."], cwd=str(tree), timeout_s=60).stdout
            packed = proc.run(
                ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
                cwd=str(tree),
                input_bytes=listing,
                timeout_s=120,
            ).stdout
            archive.write_bytes(proc.run(["gzip", "-1"], input_bytes=packed, timeout_s=120).stdout)
            os.rename(archive, target)

    build_once(directory, target, build)
    return target
