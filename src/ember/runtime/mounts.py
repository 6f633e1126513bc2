"""Mount, unmount and remove trees that may hold mounts, via util-linux."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from . import proc


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mountpoints() -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return [_unescape(line.split()[4]) for line in f if line.strip()]


def mounts_below(path: str) -> list[str]:
    """Mount points at or below `path`, deepest first."""
    root = os.path.realpath(path)
    found = [m for m in mountpoints() if m == root or m.startswith(root + "/")]
    return sorted(set(found), key=lambda m: m.count("/"), reverse=True)


def is_mountpoint(path: str) -> bool:
    return os.path.realpath(path) in set(mountpoints())


def mount(
    source: str, target: str, *, fstype: str | None = None, options: Sequence[str] = ()
) -> None:
    argv = ["mount"]
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", ",".join(options)]
    proc.run([*argv, "--", source, target], timeout_s=30)


def move(source: str, target: str) -> None:
    proc.run(["mount", "--move", "--", source, target], timeout_s=30)


def unmount(target: str, *, lazy: bool = False) -> None:
    proc.run(["umount", *(["--lazy"] if lazy else []), "--", target], timeout_s=30)


def unmount_below(path: str) -> None:
    """Unmount everything mounted at or below `path`, deepest first."""
    for target in mounts_below(path):
        try:
            unmount(target)
        except proc.ProcessError:
            unmount(target, lazy=True)


def remove_tree(path: str) -> None:
    """Remove a tree, first taking down any mount inside it.

    `rm --one-file-system` is the second guard: should an unmount have been
    missed, rm refuses to cross into it instead of deleting through a bind
    mount into the host.
    """
    if not os.path.lexists(path):
        return
    unmount_below(path)
    proc.run(["rm", "-rf", "--one-file-system", "--", path], timeout_s=600)
