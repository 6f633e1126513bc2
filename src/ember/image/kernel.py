"""The microVM guest's kernel and tools, fetched from the Debian archive.

`apt-get download` plus `dpkg -x` into `<data_dir>/vm/packages/<name>/`:
nothing is installed on the host (its /boot and module tree are never
touched). The kernel is Debian's cloud flavour, the one the metapackage
`linux-image-cloud-amd64` currently depends on; busybox (static) runs the
initramfs.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ember.runtime import proc

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
APT_TIMEOUT_S = 600.0


class GuestAssetError(Exception):
    """A guest asset could not be fetched or built; the message says why."""


@dataclass(frozen=True)
class GuestKernel:
    version: str  # e.g. 6.1.0-56-cloud-amd64
    root: Path  # the extracted package

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.version / "kernel"


@contextmanager
def locked_dir(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def kernel_package() -> str:
    """The kernel package the cloud metapackage points at now."""
    try:
        out = proc.run(["apt-cache", "depends", KERNEL_METAPACKAGE], timeout_s=60).stdout
    except proc.ProcessError as exc:
        raise GuestAssetError(f"apt-cache cannot tell the cloud kernel: {exc}") from exc
    found = re.search(rb"Depends: (linux-image-[0-9][^\s]*-cloud-amd64)", out)
    if found is None:
        raise GuestAssetError(
            f"{KERNEL_METAPACKAGE} names no kernel; run `apt-get update` (apt-cache said: "
            f"{out.decode(errors='replace')[:200]})"
        )
    return found.group(1).decode()


def build_once(directory: Path, done: Path, build: Callable[[], None]) -> None:
    """Run `build` unless `done` exists, holding `directory`'s lock: one builder
    per cache entry; a caller that waited finds the first one's result."""
    if done.exists():
        return
    with locked_dir(directory):
        if not done.exists():
            build()


def fetch_package(name: str, packages_dir: Path) -> Path:
    """The package `name` extracted under `packages_dir/name` (downloaded once)."""
    target = packages_dir / name

    def fetch() -> None:
        with tempfile.TemporaryDirectory(dir=packages_dir, prefix=".fetch-") as scratch:
            # _apt drops privileges for downloads: the scratch directory must be its to write.
            os.chmod(scratch, 0o777)  # noqa: S103 - a private, short-lived download directory
            try:
                proc.run(["apt-get", "download", "-q", name], cwd=scratch, timeout_s=APT_TIMEOUT_S)
            except proc.ProcessError as exc:
                raise GuestAssetError(f"apt-get download {name} failed: {exc}") from exc
            debs = list(Path(scratch).glob("*.deb"))
            if len(debs) != 1:
                raise GuestAssetError(f"apt-get download {name} left {len(debs)} packages")
            staging = Path(scratch) / "root"
            proc.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], timeout_s=APT_TIMEOUT_S)
            (staging / ".complete").touch()
            if target.exists():
                shutil.rmtree(target)
            os.rename(staging, target)

    build_once(packages_dir, target / ".complete", fetch)
    return target


def fetch_kernel(data_dir: Path) -> GuestKernel:
    packages = data_dir / "vm" / "packages"
    # A kernel fetched before is kept (templates and snapshots were made with it).
    cached = list(packages.glob("linux-image-*-cloud-amd64")) if packages.is_dir() else []
    complete = sorted(
        (p for p in cached if (p / ".complete").exists()),
        key=lambda p: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", p.name)],
    )
    name = complete[-1].name if complete else kernel_package()
    root = fetch_package(name, packages)
    version = name.removeprefix("linux-image-")
    kernel = GuestKernel(version, root)
    if not kernel.vmlinuz.is_file():
        raise GuestAssetError(f"{name} holds no {kernel.vmlinuz.name}")
    return kernel


def fetch_busybox(data_dir: Path) -> Path:
    binary = fetch_package(BUSYBOX_PACKAGE, data_dir / "vm" / "packages") / "bin" / "busybox"
    if not binary.is_file():
        raise GuestAssetError(f"{BUSYBOX_PACKAGE} holds no bin/busybox")
    return binary
