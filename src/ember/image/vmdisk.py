"""A base image as a microVM's root disk: a read-only ext4 image file.

Sessions boot from a qcow2 overlay backed by it. The image's tree on disk
has owners shifted for the container runtime's user namespace; mke2fs runs
in a user namespace that maps them back, so the disk has the image's own
owners (root is 0).
"""

from __future__ import annotations

import os
from pathlib import Path

from ember.runtime import proc

from .kernel import GuestAssetError, locked_dir
from .store import ImageInfo

DISK_MIB = 10 * 1024  # the default disk limit; sparse, so only used blocks count


def root_disk(data_dir: Path, image: ImageInfo, id_shift: int, size_mib: int = DISK_MIB) -> Path:
    """`<data_dir>/vm/disks/<image id>-<size>.ext4` for `image` (built once)."""
    directory = data_dir / "vm" / "disks"
    target = directory / f"{image.image_id}-{size_mib}.ext4"
    if target.exists():
        return target
    with locked_dir(directory):
        if target.exists():
            return target
        staging = directory / f".{target.name}.tmp"
        staging.unlink(missing_ok=True)
        with open(staging, "wb") as f:
            f.truncate(size_mib << 20)
        # mke2fs runs as the namespace's root, which is `id_shift` outside.
        os.chown(staging, id_shift, id_shift)
        mkfs = ["mke2fs", "-q", "-t", "ext4", "-E", "root_owner=0:0", "-d", str(image.rootfs)]
        mkfs += ["-L", "ember-root", str(staging)]
        if id_shift:
            mapping = f"{id_shift},0,65536"
            mkfs = ["unshare", f"--map-users={mapping}", f"--map-groups={mapping}", *mkfs]
        try:
            proc.run(mkfs, timeout_s=600)
        except proc.ProcessError as exc:
            staging.unlink(missing_ok=True)
            raise GuestAssetError(f"cannot make the root disk of {image.image_id}: {exc}") from exc
        os.chown(staging, 0, 0)
        staging.chmod(0o444)
        os.rename(staging, target)
    return target
