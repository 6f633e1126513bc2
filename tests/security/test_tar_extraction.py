"""`write_tar` keeps every entry inside its root and refuses what it cannot keep.

Archives are built in memory with the stdlib tarfile. The refusal cases
check that nothing was written, inside the sandbox and on the host.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ember.runtime import AgentError
from tests.conftest import RUN_PREFIX, TestSession

pytestmark = pytest.mark.integration

ROOT = "/vercel/sandbox"
CHUNK_BYTES = 64 * 1024
Member = tuple[tarfile.TarInfo, bytes | None]


# -- building archives ----------------------------------------------------------


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, mode
    info.uid = info.gid = 4242  # tar owners must be ignored
    return info


def file(name: str, data: bytes = b"data\n", mode: int = 0o644) -> Member:
    info = _info(name, tarfile.REGTYPE, mode)
    info.size = len(data)
    return info, data


def directory(name: str, mode: int = 0o755) -> Member:
    return _info(name, tarfile.DIRTYPE, mode), None


def symlink(name: str, target: str) -> Member:
    info = _info(name, tarfile.SYMTYPE, 0o777)
    info.linkname = target
    return info, None


def hardlink(name: str, target: str) -> Member:
    info = _info(name, tarfile.LNKTYPE, 0o644)
    info.linkname = target
    return info, None


def special(name: str, kind: bytes, major: int = 0, minor: int = 0) -> Member:
    info = _info(name, kind, 0o600)
    info.devmajor, info.devminor = major, minor
    return info, None


def archive(*members: Member, compression: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK_BYTES):
        yield data[start : start + CHUNK_BYTES]


# -- talking to the session --------------------------------------------------------


async def extract(
    session: TestSession, *members: Member, root: str = ROOT, compression: str = ""
) -> int:
    return await session.agent.write_tar(root, chunks(archive(*members, compression=compression)))


async def assert_refused(
    session: TestSession, code: str, *members: Member, root: str = ROOT
) -> None:
    with pytest.raises(AgentError) as refused:
        await extract(session, *members, root=root)
    assert refused.value.code == code, refused.value.message


async def assert_missing(session: TestSession, *paths: str) -> None:
    for path in paths:
        with pytest.raises(AgentError) as missing:
            await session.agent.stat(path)
        assert missing.value.code == "not_found", path


async def link_count(session: TestSession, path: str) -> int:
    result = await session.run(["stat", "-c", "%h", path])
    assert result.exit_code == 0, result.stderr
    return int(result.stdout)


def unique_name() -> str:
    return f"ember-{RUN_PREFIX}-{uuid.uuid4().hex[:8]}"


# -- entries that leave the root ------------------------------------------------------


@pytest.mark.parametrize("prefix", ["../../", "a/../../../", "./../", "../" * 12 + "tmp/"])
async def test_entry_climbing_out_is_refused(start_session, runtime, prefix: str) -> None:
    session = await start_session()
    name = unique_name()
    await assert_refused(session, "unsafe_path", file(prefix + name))
    await assert_missing(session, f"/{name}", f"/vercel/{name}", f"/tmp/{name}", f"{ROOT}/a")
    # Nor did it reach the host, under the session's directory or its /tmp.
    session_dir = runtime.sessions_dir / session.session_id
    assert not (session_dir / "rootfs" / name).exists()
    assert not (session_dir / name).exists()
    assert not (Path("/tmp") / name).exists()


@pytest.mark.parametrize("directory_name", ["/etc", "/", ROOT])
async def test_absolute_entry_is_refused(start_session, directory_name: str) -> None:
    session = await start_session()
    name = unique_name()
    await assert_refused(session, "unsafe_path", file(f"{directory_name.rstrip('/')}/{name}"))
    await assert_missing(session, f"/etc/{name}", f"/{name}", f"{ROOT}/{name}", f"{ROOT}/etc")


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("evil", "../../etc"),
        ("evil", "/etc"),
        ("evil", "/vercel/sandbox/../../etc"),
        ("sub/evil", "../../.."),
        ("evil", ".."),
    ],
)
async def test_symlink_out_of_the_root_is_refused(start_session, name: str, target: str) -> None:
    session = await start_session()
    await assert_refused(session, "unsafe_path", symlink(name, target), file(f"{name}/owned"))
    await assert_missing(session, f"{ROOT}/{name}", "/etc/owned", f"{ROOT}/sub")


async def test_symlink_out_of_the_root_through_another_symlink_is_refused(start_session) -> None:
    session = await start_session()
    # a/b -> .. is the root itself; d -> a/b/a/b/../.. is lexically "a/b" but really "/".
    await assert_refused(
        session, "unsafe_path", symlink("a/b", ".."), symlink("d", "a/b/a/b/../..")
    )
    await assert_missing(session, f"{ROOT}/a", f"{ROOT}/d")


@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd", "a/../../etc/passwd"])
async def test_hardlink_out_of_the_root_is_refused(start_session, target: str) -> None:
    session = await start_session()
    await assert_refused(session, "unsafe_path", hardlink("passwd", target))
    await assert_missing(session, f"{ROOT}/passwd")
    assert await link_count(session, "/etc/passwd") == 1


@pytest.mark.parametrize(
    "member",
    [
        special("null", tarfile.CHRTYPE, 1, 3),
        special("sda", tarfile.BLKTYPE, 8, 0),
        special("pipe", tarfile.FIFOTYPE),
    ],
    ids=["char-device", "block-device", "fifo"],
)
async def test_special_files_are_refused(start_session, member: Member) -> None:
    session = await start_session()
    await assert_refused(session, "unsupported_entry", member)
    await assert_missing(session, f"{ROOT}/{member[0].name}")


@pytest.mark.parametrize(
    ("code", "bad"),
    [
        ("unsafe_path", file("../escape")),
        ("unsafe_path", symlink("evil", "/etc")),
        ("unsupported_entry", special("null", tarfile.CHRTYPE, 1, 3)),
    ],
    ids=["climbing-entry", "outside-symlink", "device"],
)
async def test_one_bad_entry_changes_nothing(start_session, code: str, bad: Member) -> None:
    session = await start_session()
    await extract(session, file("kept.txt", b"before\n"))
    await assert_refused(
        session,
        code,
        directory("new"),
        file("new/valid.txt"),
        file("kept.txt", b"after\n"),
        bad,
        file("late.txt"),
    )
    await assert_missing(
        session, f"{ROOT}/new", f"{ROOT}/late.txt", f"{ROOT}/escape", f"{ROOT}/evil"
    )
    assert await session.agent.read_bytes(f"{ROOT}/kept.txt") == b"before\n"


async def test_garbage_is_not_a_tar(start_session) -> None:
    session = await start_session()
    with pytest.raises(AgentError) as refused:
        await session.agent.write_tar(ROOT, chunks(b"not a tar stream" * 100))
    assert refused.value.code == "bad_request"


# -- symlinks already in the sandbox ------------------------------------------------


@pytest.mark.parametrize("link_target", ["/etc", "../../etc"])
@pytest.mark.parametrize("has_etc_inside_root", [False, True])
async def test_existing_symlink_does_not_lead_out_of_the_root(
    start_session, link_target: str, has_etc_inside_root: bool
) -> None:
    session = await start_session()
    setup = f"ln -s {link_target} {ROOT}/link" + (
        f" && mkdir {ROOT}/etc" if has_etc_inside_root else ""
    )
    assert (await session.sh(setup)).exit_code == 0

    try:
        await extract(session, file("link/owned", b"owned\n"))
        landed = True
    except AgentError:
        landed = False  # refusing is fine too; escaping is not

    await assert_missing(session, "/etc/owned")
    if landed:
        # RESOLVE_IN_ROOT resolved the link's /etc against the root.
        assert await session.agent.read_bytes(f"{ROOT}/etc/owned") == b"owned\n"
    assert (await session.agent.stat(f"{ROOT}/link"))["type"] == "symlink"


async def test_existing_symlink_is_replaced_not_written_through(start_session) -> None:
    session = await start_session()
    setup = f"ln -s /etc/hostname {ROOT}/hostname && ln -s /etc {ROOT}/etcdir"
    assert (await session.sh(setup)).exit_code == 0

    await extract(session, file("hostname", b"pwned\n"), directory("etcdir"), file("etcdir/owned"))

    assert await session.agent.read_bytes("/etc/hostname") == b"sandbox\n"
    assert await session.agent.read_bytes(f"{ROOT}/hostname") == b"pwned\n"
    assert (await session.agent.stat(f"{ROOT}/etcdir"))["type"] == "directory"
    await assert_missing(session, "/etc/owned")


async def test_hardlink_through_an_existing_symlink_cannot_reach_outside(start_session) -> None:
    session = await start_session()
    assert (await session.sh(f"ln -s /etc {ROOT}/link")).exit_code == 0
    with contextlib.suppress(AgentError):  # refusing is fine; linking /etc/passwd is not
        await extract(session, hardlink("passwd", "link/passwd"))
    assert await link_count(session, "/etc/passwd") == 1


# -- valid archives -------------------------------------------------------------------

BIG = os.urandom(300 * 1024)  # spans several stream chunks


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz"])
async def test_valid_archive_extracts_with_modes_links_and_owner(
    start_session, compression: str
) -> None:
    session = await start_session()
    members = [
        directory("proj"),
        file("proj/src/pkg/main.py", b"print('hi')\n"),  # parents are created
        file("proj/run.sh", b"#!/bin/sh\necho run\n", mode=0o755),
        file("proj/secret", b"s\n", mode=0o600),
        file("proj/setuid", b"x\n", mode=0o4755),
        file("proj/big.bin", BIG),
        directory("proj/private", mode=0o700),
        symlink("proj/latest", "src/pkg/main.py"),
        symlink("proj/abs", f"{ROOT}/proj/run.sh"),
        hardlink("proj/alias.py", "proj/src/pkg/main.py"),
    ]
    assert await extract(session, *members, compression=compression) == len(members)

    read = session.agent.read_bytes
    assert await read(f"{ROOT}/proj/src/pkg/main.py") == b"print('hi')\n"
    assert await read(f"{ROOT}/proj/big.bin") == BIG
    assert await read(f"{ROOT}/proj/latest") == b"print('hi')\n"
    assert await read(f"{ROOT}/proj/alias.py") == b"print('hi')\n"
    assert await link_count(session, f"{ROOT}/proj/alias.py") == 2
    run = await session.run([f"{ROOT}/proj/abs"])
    assert (run.exit_code, run.stdout) == (0, b"run\n")

    expected = {
        "proj": ("directory", 0o755),
        "proj/src/pkg": ("directory", 0o755),
        "proj/run.sh": ("file", 0o755),
        "proj/secret": ("file", 0o600),
        "proj/setuid": ("file", 0o755),  # set-id bits dropped
        "proj/private": ("directory", 0o700),
        "proj/latest": ("symlink", None),
        "proj/abs": ("symlink", None),
    }
    for name, (kind, mode) in expected.items():
        st = await session.agent.stat(f"{ROOT}/{name}")
        assert (st["type"], st["uid"], st["gid"]) == (kind, 1000, 1000), name
        if mode is not None:
            assert st["mode"] == mode, (name, oct(st["mode"]))
    assert (await session.agent.stat(f"{ROOT}/proj/latest"))["link_target"] == "src/pkg/main.py"


async def test_root_extraction_is_owned_by_root(start_session) -> None:
    session = await start_session()
    await session.agent.write_tar(
        "/opt/tool", chunks(archive(file("bin/tool", mode=0o755))), user="root"
    )
    for path in ("/opt/tool/bin", "/opt/tool/bin/tool"):
        st = await session.agent.stat(path)
        assert (st["uid"], st["gid"]) == (0, 0), path


async def test_existing_files_are_replaced(start_session) -> None:
    session = await start_session()
    await extract(session, file("conf/app.ini", b"old\n", mode=0o600))
    await extract(session, file("conf/app.ini", b"new\n", mode=0o644))
    assert await session.agent.read_bytes(f"{ROOT}/conf/app.ini") == b"new\n"
    assert (await session.agent.stat(f"{ROOT}/conf/app.ini"))["mode"] == 0o644


@pytest.mark.parametrize("mode", [0o775, 0o777, 0o1777], ids=oct)
async def test_directory_modes_are_kept(start_session, mode: int) -> None:
    session = await start_session()
    await extract(session, directory("shared", mode=mode))
    assert (await session.agent.stat(f"{ROOT}/shared"))["mode"] == mode
