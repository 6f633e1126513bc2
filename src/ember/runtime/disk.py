"""Per-session disks: sparse ext4 images, loop-mounted.

A session's writable layer lives on its own ext4 image, so the layer has a
hard size limit (a full disk is ENOSPC inside the session only) and can later
become a read-only snapshot layer by renaming one file.
"""

from __future__ import annotations

import contextlib
import os

from . import mounts, proc

UPPER = "upper"
WORK = "work"


def create_disk(
    path: str, size_mib: int, *, root_id: int = 0, templates: str | None = None
) -> None:
    """Create a sparse ext4 image whose root directory belongs to `root_id`.

    With `templates`, a pristine image per (size, owner) is made once there
    and copied sparsely (about 5 ms, against 13 ms for mkfs of 10 GiB).
    """
    if templates is not None:
        template = os.path.join(templates, f"ext4-{size_mib}m-{root_id}.img")
        if not os.path.exists(template):
            os.makedirs(templates, exist_ok=True)
            staging = f"{template}.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging)
            create_disk(staging, size_mib, root_id=root_id)
            os.rename(staging, template)
        proc.run(["cp", "--sparse=always", "--", template, path], timeout_s=60)
        return
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
