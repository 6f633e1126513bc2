"""Shift the owners of a file tree into a user namespace's host id range."""

from __future__ import annotations

import os
import stat


def _shift_one(path: str, shift: int) -> None:
    st = os.lstat(path)
    # Shifting back (a negative shift) leaves ids below the range as they are.
    uid = st.st_uid + shift if st.st_uid + shift >= 0 else st.st_uid
    gid = st.st_gid + shift if st.st_gid + shift >= 0 else st.st_gid
    if (uid, gid) == (st.st_uid, st.st_gid):
        return
    os.lchown(path, uid, gid)
    # chown clears set-id bits on regular files; put them back.
    if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        os.chmod(path, stat.S_IMODE(st.st_mode))


def shift_tree(root: str, shift: int) -> int:
    """Add `shift` to the uid and gid of `root` and every entry below it.

    Returns the number of entries changed. Written by hand because no
    system tool shifts ownership in place. Symlinks are changed, never
    followed (os.walk does not descend into them, lchown does not follow).
    """
    if shift == 0:
        return 0
    _shift_one(root, shift)
    count = 1
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            _shift_one(os.path.join(dirpath, name), shift)
            count += 1
    return count
