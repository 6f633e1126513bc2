"""A base image as a microVM's root disk: a read-only ext4 image file.

Sessions boot from a qcow2 overlay backed by it. Its size sets the session's
disk limit: the image plus the limit's room (a container's limit applies to
its writable layer above the image: the same room), so one is made per
image and limit. The image's tree on disk
has owners shifted for the container runtime's user namespace: mke2fs copies
it as it is, then the new file system is mounted once and shifted back, so
the disk has the image's own owners (root is 0).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ember.runtime import disk, mounts, proc

from .idshift import shift_tree
from .kernel import GuestAssetError, build_once
from .store import ImageInfo

DISK_MIB = 10 * 1024  # the default disk limit; sparse, so only used blocks count
STEP_MIB = 64


def guest_disk_mib(image: ImageInfo, disk_mib: int) -> int:
    """The root file system's size for a disk limit: the image (with a tenth more for
    ext4's own metadata), 64 MiB for the journal, and `disk_mib` free for the session."""
    raw = image.size_bytes / 2**20 * 1.1 + STEP_MIB + disk_mib
    return math.ceil(raw / STEP_MIB) * STEP_MIB


def _unshift(disk_image: Path, mountpoint: Path, id_shift: int) -> None:
    disk.mount_disk(str(disk_image), str(mountpoint), read_only=False)
    try:
        shift_tree(str(mountpoint), -id_shift)
    finally:
        mounts.unmount(str(mountpoint))
        mountpoint.rmdir()


def root_disk(data_dir: Path, image: ImageInfo, id_shift: int, disk_mib: int = DISK_MIB) -> Path:
    """`<data_dir>/vm/disks/<image id>-<size>.ext4`: `image` with `disk_mib` free (built once)."""
    size_mib = guest_disk_mib(image, disk_mib)
    directory = data_dir / "vm" / "disks"
    target = directory / f"{image.image_id}-{size_mib}.ext4"

    def build() -> None:
        staging = directory / f".{target.name}.tmp"
        staging.unlink(missing_ok=True)
        with open(staging, "wb") as f:
            f.truncate(size_mib << 20)
        # No blocks reserved for root: the limit is the session's, as in a container.
        mkfs = ["mke2fs", "-q", "-t", "ext4", "-m", "0", "-d", str(image.rootfs)]
        mkfs += ["-L", "ember-root"]
        try:
            proc.run([*mkfs, str(staging)], timeout_s=600)
            if id_shift:
                _unshift(staging, directory / f".{target.name}.mnt", id_shift)
        except (proc.ProcessError, OSError) as exc:
            staging.unlink(missing_ok=True)
            raise GuestAssetError(f"cannot make the root disk of {image.image_id}: {exc}") from exc
        staging.chmod(0o444)
        os.rename(staging, target)

    build_once(directory, target, build)
    return target
