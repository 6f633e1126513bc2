"""Merge one overlayfs upper layer onto another, keeping overlay semantics.

Written by hand because no system tool squashes overlay layers: whiteouts
(character devices 0/0) delete what lies below, opaque directories
(`trusted.overlay.opaque=y`) replace what lies below, everything else is
copied over with its owner, mode, times and extended attributes. Our
overlays are mounted with redirect_dir, metacopy and index off, so no other
overlay metadata occurs. Hard links inside one layer are copied as separate
files.
"""

from __future__ import annotations

import os
import shutil
import stat

OPAQUE = "trusted.overlay.opaque"


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _copy_metadata(src: str, dst: str, st: os.stat_result) -> None:
    for name in os.listxattr(src, follow_symlinks=False):
        os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
    os.lchown(dst, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_entry(src: str, dst: str, st: os.stat_result) -> None:
    """Copy one non-directory entry."""
    if stat.S_ISREG(st.st_mode):
        shutil.copyfile(src, dst, follow_symlinks=False)
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    else:  # whiteouts, FIFOs, sockets and device nodes keep their type
        os.mknod(dst, st.st_mode, st.st_rdev)
    _copy_metadata(src, dst, st)


def _copy_tree(src: str, dst: str, st: os.stat_result) -> None:
    os.mkdir(dst)
    for entry in os.scandir(src):
        child = entry.stat(follow_symlinks=False)
        target = os.path.join(dst, entry.name)
        if stat.S_ISDIR(child.st_mode):
            _copy_tree(entry.path, target, child)
        else:
            _copy_entry(entry.path, target, child)
    _copy_metadata(src, dst, st)


def merge_layer(src: str, dst: str) -> None:
    """Apply upper layer `src` on top of upper layer `dst`, in place."""
    for entry in os.scandir(src):
        st = entry.stat(follow_symlinks=False)
        target = os.path.join(dst, entry.name)
        if not stat.S_ISDIR(st.st_mode):
            _remove(target)
            _copy_entry(entry.path, target, st)
            continue
        try:
            below = os.lstat(target)
        except FileNotFoundError:
            below = None
        if _is_opaque(entry.path) or below is None or not stat.S_ISDIR(below.st_mode):
            _remove(target)
            _copy_tree(entry.path, target, st)
            if below is not None and not stat.S_ISDIR(below.st_mode):
                # A whiteout or file hid whatever lay further down; keep it hidden.
                os.setxattr(target, OPAQUE, b"y", follow_symlinks=False)
            continue
        merge_layer(entry.path, target)
        _copy_metadata(entry.path, target, st)
