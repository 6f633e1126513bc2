"""Per-session disks: sparse ext4 images, loop-mounted.

A session's writable layer lives on its own ext4 image, so the layer has a
hard size limit (a full disk is ENOSPC inside the session only) and can later
become a read-only snapshot layer by renaming one file.
"""

from __future__ import annotations

import os

from . import mounts, proc

UPPER = "upper"
WORK = "work"


def create_disk(path: str, size_mib: int, *, root_id: int = 0) -> None:
    """Create a sparse ext4 image whose root directory belongs to `root_id`."""
    with open(path, "xb") as f:
        f.truncate(size_mib * 1024 * 1024)
    proc.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            f"lazy_itable_init=1,lazy_journal_init=1,root_owner={root_id}:{root_id}",
            path,
        ],
        timeout_s=60,
    )


def mount_disk(image: str, target: str, *, read_only: bool) -> None:
    os.makedirs(target, exist_ok=True)
    options = ["loop", "nosuid", "nodev"]
    # `noload` skips journal replay so a read-only layer is never written to.
    options += ["ro", "noload"] if read_only else ["rw"]
    mounts.mount(image, target, fstype="ext4", options=options)


def prepare_upper(mountpoint: str, *, root_id: int) -> tuple[str, str]:
    """Create the overlay upper and work directories on a mounted disk."""
    upper, work = os.path.join(mountpoint, UPPER), os.path.join(mountpoint, WORK)
    for path in (upper, work):
        os.makedirs(path, exist_ok=True)
    # The upper directory's owner and mode become those of the session's "/".
    os.chown(upper, root_id, root_id)
    os.chmod(upper, 0o755)  # noqa: S103 - the session root directory is world-readable, as / is
    return upper, work


def used_bytes(mountpoint: str) -> int:
    st = os.statvfs(mountpoint)
    return (st.f_blocks - st.f_bfree) * st.f_frsize
