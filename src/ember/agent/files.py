"""File operations inside the session: tar extraction, read, mkdir, stat, list.

Tar extraction resolves every path with openat2(RESOLVE_IN_ROOT) against the
extraction root, so neither a `..` entry, nor a symlink from the archive, nor
one already in the sandbox can place a file outside that root.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from . import protocol

TYPE_CHECKING = False  # like typing.TYPE_CHECKING, without importing typing (3 ms)

if TYPE_CHECKING:
    import tarfile
    from collections.abc import Callable, Iterator
    from typing import IO, Any

    from .commands import User

# tarfile, tempfile, shutil and ctypes are imported where used: together they
# cost the agent's start ~8 ms, and most sessions never extract a tar.

SPOOL_MEMORY_BYTES = 8 * 1024 * 1024

_SYS_OPENAT2 = 437  # the same number on every architecture (added in 5.6)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10


_openat2: Any = None


def _load_openat2() -> Any:
    """Python has no openat2 wrapper; call the syscall through libc."""
    import ctypes

    class OpenHow(ctypes.Structure):
        _fields_ = (
            ("flags", ctypes.c_uint64),
            ("mode", ctypes.c_uint64),
            ("resolve", ctypes.c_uint64),
        )

    libc = ctypes.CDLL(None, use_errno=True)

    def openat2(root_fd: int, path: bytes, flags: int, mode: int, resolve: int) -> tuple[int, int]:
        how = OpenHow(flags, mode, resolve)
        fd = libc.syscall(_SYS_OPENAT2, root_fd, path, ctypes.byref(how), ctypes.sizeof(how))
        return int(fd), ctypes.get_errno()

    return openat2


def open_in_root(root_fd: int, path: str, flags: int, mode: int = 0) -> int:
    """openat2(root_fd, path) with every symlink and `..` kept inside root_fd."""
    global _openat2
    if _openat2 is None:
        _openat2 = _load_openat2()
    fd, err = _openat2(
        root_fd,
        os.fsencode(path),
        flags | os.O_CLOEXEC,
        mode,
        _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS,
    )
    if fd < 0:
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def os_error(exc: OSError, path: str) -> protocol.AgentError:
    """Map an OSError to the protocol's stable codes."""
    codes = {
        errno.ENOENT: protocol.NOT_FOUND,
        errno.EEXIST: protocol.EXISTS,
        errno.ENOTDIR: protocol.NOT_A_DIRECTORY,
        errno.EISDIR: protocol.IS_A_DIRECTORY,
        errno.EACCES: protocol.PERMISSION_DENIED,
        errno.EPERM: protocol.PERMISSION_DENIED,
        errno.ENOTEMPTY: protocol.EXISTS,
    }
    return protocol.AgentError(
        codes.get(exc.errno or 0, protocol.IO_ERROR), f"{path}: {exc.strerror}"
    )


def resolve(path: object, cwd: object, workdir: str) -> str:
    """An absolute, normalised sandbox path from a request's `path` and `cwd`."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise protocol.AgentError(
            protocol.BAD_REQUEST, f"path must be a non-empty string, not {path!r}"
        )
    base = workdir
    if cwd is not None:
        if not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd:
            raise protocol.AgentError(
                protocol.BAD_REQUEST, f"cwd must be an absolute path, not {cwd!r}"
            )
        base = cwd
    return posixpath.normpath(posixpath.join(base, path))


# -- reading and inspecting ---------------------------------------------------


def read_file(path: str) -> tuple[os.stat_result, Iterator[bytes]]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise os_error(exc, path) from None
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        os.close(fd)
        raise protocol.AgentError(protocol.IS_A_DIRECTORY, f"{path}: Is a directory")

    def chunks() -> Iterator[bytes]:
        try:
            while data := os.read(fd, protocol.CHUNK_BYTES):
                yield data
        finally:
            os.close(fd)

    return st, chunks()


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def describe(path: str, st: os.stat_result) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": path,
        "name": posixpath.basename(path) or "/",
        "type": _kind(st.st_mode),
        "size": st.st_size,
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime_ms": st.st_mtime_ns // 1_000_000,
    }
    if stat.S_ISLNK(st.st_mode):
        entry["link_target"] = os.readlink(path)
    return entry


def stat_path(path: str) -> dict[str, Any]:
    try:
        return describe(path, os.lstat(path))
    except OSError as exc:
        raise os_error(exc, path) from None


def listdir(path: str) -> list[dict[str, Any]]:
    try:
        with os.scandir(path) as it:
            entries = [describe(e.path, e.stat(follow_symlinks=False)) for e in it]
    except OSError as exc:
        raise os_error(exc, path) from None
    return sorted(entries, key=lambda e: str(e["name"]))


# -- changing -------------------------------------------------------------------


def mkdir(path: str, *, parents: bool, owner: User) -> None:
    missing: list[str] = []
    probe = path
    while parents and not os.path.lexists(probe) and probe != "/":
        missing.append(probe)
        probe = posixpath.dirname(probe)
    try:
        if not parents:
            os.mkdir(path, 0o755)
            os.chown(path, owner.uid, owner.gid)
            return
        if not missing and not os.path.isdir(path):
            raise protocol.AgentError(
                protocol.NOT_A_DIRECTORY, f"{path}: exists and is not a directory"
            )
        for created in reversed(missing):
            os.mkdir(created, 0o755)
            os.chown(created, owner.uid, owner.gid)
    except OSError as exc:
        raise os_error(exc, path) from None


def remove(path: str, *, recursive: bool) -> None:
    try:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            if recursive:
                import shutil

                shutil.rmtree(path)
            else:
                os.rmdir(path)
        else:
            os.unlink(path)
    except OSError as exc:
        raise os_error(exc, path) from None


def rename(src: str, dst: str) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        raise os_error(exc, src) from None


# -- tar extraction ---------------------------------------------------------------


def spool(read_chunk: Callable[[], bytes | None]) -> IO[bytes]:
    """Collect a stream until its end; small ones stay in memory."""
    import tempfile

    buffer = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115 - returned
    while (chunk := read_chunk()) is not None:
        buffer.write(chunk)
    buffer.seek(0)
    return buffer


def _member_path(member: tarfile.TarInfo) -> str:
    """The member's path relative to the extraction root, or refuse it."""
    name = member.name
    if name.startswith("/"):
        raise protocol.AgentError(protocol.UNSAFE_PATH, f"tar entry {name!r} is an absolute path")
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../") or "\0" in name:
        raise protocol.AgentError(
            protocol.UNSAFE_PATH, f"tar entry {name!r} leaves the target directory"
        )
    return "" if normal == "." else normal


MAX_LINK_HOPS = 40


def _outside(member: tarfile.TarInfo) -> protocol.AgentError:
    return protocol.AgentError(
        protocol.UNSAFE_PATH,
        f"tar entry {member.name!r} links to {member.linkname!r}, outside the target directory",
    )


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


class _LinkWalk:
    """Follows paths as the kernel will once the archive is written.

    Symlinks count whether they come from the archive (at the place each
    will really be created) or already exist in the sandbox, so a link that
    climbs out through another link is caught, which text alone cannot show.
    """

    def __init__(self, root: str) -> None:
        self.root = posixpath.normpath(root)
        self.links: dict[str, str] = {}  # absolute path -> target, from the archive

    def _readlink(self, path: str) -> str | None:
        if path in self.links:
            return self.links[path]
        try:
            return os.readlink(path)
        except OSError:
            return None

    def _walk(self, stack: list[str], rest: str, *, in_root: bool) -> list[str] | None:
        """Resolve `rest` from the absolute parts `stack`; None after too many links.

        With `in_root`, paths behave as under RESOLVE_IN_ROOT: `..` stops at
        the root and absolute links start from it.
        """
        base = _parts(self.root) if in_root else []
        queue = _parts(rest)
        hops = 0
        while queue:
            part = queue.pop(0)
            if part == "..":
                if len(stack) > len(base):
                    stack.pop()
                continue
            stack.append(part)
            link = self._readlink("/" + "/".join(stack))
            if link is None:
                continue
            hops += 1
            if hops > MAX_LINK_HOPS:
                return None
            stack.pop()
            if link.startswith("/"):
                stack = list(base)
            queue[:0] = _parts(link)
        return stack

    def add(self, member: tarfile.TarInfo, rel: str) -> None:
        """Check a symlink member, then remember it for the members after it."""
        parent = self._walk(_parts(self.root), posixpath.dirname(rel), in_root=True)
        if parent is None:
            raise protocol.AgentError(
                protocol.UNSAFE_PATH, f"tar entry {member.name!r}: too many symlinks"
            )
        start = [] if member.linkname.startswith("/") else list(parent)
        final = self._walk(start, member.linkname, in_root=False)
        path = "/" + "/".join(final or [])
        inside = final is not None and (
            self.root == "/" or path == self.root or path.startswith(self.root + "/")
        )
        if not inside:
            raise _outside(member)
        self.links["/" + "/".join([*parent, posixpath.basename(rel)])] = member.linkname


def _check_hardlink(member: tarfile.TarInfo) -> None:
    # A hard link names another member, relative to the root; it is created
    # through RESOLVE_IN_ROOT, so this check only refuses the obvious escapes.
    lexical = posixpath.normpath(member.linkname)
    if member.linkname.startswith("/") or lexical == ".." or lexical.startswith("../"):
        raise _outside(member)


def validate(members: list[tarfile.TarInfo], root: str) -> list[tuple[tarfile.TarInfo, str]]:
    checked = []
    links = _LinkWalk(root)
    for member in members:
        rel = _member_path(member)
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise protocol.AgentError(
                protocol.UNSUPPORTED_ENTRY,
                f"tar entry {member.name!r} is a device, FIFO or other special file",
            )
        if member.issym():
            links.add(member, rel)
        elif member.islnk():
            _check_hardlink(member)
        if rel or member.isdir():
            checked.append((member, rel))
    return checked


def _parent_fd(root_fd: int, rel: str, owner: User) -> int:
    """Open the parent directory of `rel` inside the root, creating missing ones."""
    prefix = ""
    for part in [p for p in posixpath.dirname(rel).split("/") if p]:
        prefix = f"{prefix}/{part}" if prefix else part
        try:
            os.close(open_in_root(root_fd, prefix, os.O_PATH | os.O_DIRECTORY))
            continue
        except FileNotFoundError:
            pass
        above = open_in_root(root_fd, posixpath.dirname(prefix) or ".", os.O_PATH | os.O_DIRECTORY)
        try:
            os.mkdir(part, 0o755, dir_fd=above)
            os.chown(part, owner.uid, owner.gid, dir_fd=above, follow_symlinks=False)
        finally:
            os.close(above)
    return open_in_root(root_fd, posixpath.dirname(rel) or ".", os.O_PATH | os.O_DIRECTORY)


def _clear(parent_fd: int, name: str, keep_dir: bool) -> None:
    try:
        st = os.lstat(name, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return
        raise protocol.AgentError(protocol.IS_A_DIRECTORY, f"{name}: a directory is in the way")
    os.unlink(name, dir_fd=parent_fd)


def extract(archive: IO[bytes], root: str, owner: User) -> int:
    """Check every entry of `archive`, then write them under `root`."""
    import tarfile

    try:
        tar = tarfile.open(fileobj=archive, mode="r:*")  # noqa: SIM115 - closed below
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise protocol.AgentError(protocol.BAD_REQUEST, f"not a tar stream: {exc}") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise protocol.AgentError(protocol.BAD_REQUEST, f"corrupt tar stream: {exc}") from None
        checked = validate(members, root)
        try:
            os.makedirs(root, exist_ok=True)
            root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise os_error(exc, root) from None
        try:
            for member, rel in checked:
                _write_member(tar, member, rel, root_fd, owner)
        except OSError as exc:
            raise os_error(exc, posixpath.join(root, rel)) from None
        finally:
            os.close(root_fd)
    return len(checked)


def _write_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, rel: str, root_fd: int, owner: User
) -> None:
    if not rel:
        return  # the root directory itself
    parent = _parent_fd(root_fd, rel, owner)
    name = posixpath.basename(rel)
    mode = member.mode & 0o1777  # never set-id bits
    try:
        _clear(parent, name, keep_dir=member.isdir())
        if member.isdir():
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
            except FileExistsError:
                return
            os.chown(name, owner.uid, owner.gid, dir_fd=parent, follow_symlinks=False)
            os.chmod(name, mode or 0o755, dir_fd=parent)  # exactly, whatever our umask
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=parent)
            os.chown(name, owner.uid, owner.gid, dir_fd=parent, follow_symlinks=False)
        elif member.islnk():
            source = posixpath.normpath(member.linkname)
            source_parent = _parent_fd(root_fd, source, owner)
            try:
                os.link(
                    posixpath.basename(source),
                    name,
                    src_dir_fd=source_parent,
                    dst_dir_fd=parent,
                    follow_symlinks=False,
                )
            finally:
                os.close(source_parent)
        else:
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=parent,
            )
            try:
                content = tar.extractfile(member)
                assert content is not None
                while data := content.read(protocol.CHUNK_BYTES):
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                os.fchown(fd, owner.uid, owner.gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
    finally:
        os.close(parent)
