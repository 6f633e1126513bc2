import tarfile

import pytest

from ember.agent import files, protocol


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def test_resolve_paths_against_cwd_and_workdir() -> None:
    assert files.resolve("a/b", None, "/vercel/sandbox") == "/vercel/sandbox/a/b"
    assert files.resolve("a/../../x", "/home/u", "/w") == "/home/x"
    assert files.resolve("/etc/hosts", "/tmp", "/w") == "/etc/hosts"
    assert files.resolve("../../../..", "/a", "/w") == "/"
    for bad_path in ("", None, 3, "a\0b"):
        with pytest.raises(protocol.AgentError) as err:
            files.resolve(bad_path, None, "/w")
        assert err.value.code == "bad_request"
    with pytest.raises(protocol.AgentError):
        files.resolve("a", "relative/cwd", "/w")


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        (member("../../x"), "unsafe_path"),
        (member("a/../../x"), "unsafe_path"),
        (member("/etc/passwd"), "unsafe_path"),
        (member("evil", tarfile.SYMTYPE, "../../etc"), "unsafe_path"),
        (member("d/evil", tarfile.SYMTYPE, "../../etc"), "unsafe_path"),
        (member("evil", tarfile.SYMTYPE, "/etc"), "unsafe_path"),
        (member("evil", tarfile.LNKTYPE, "../etc/passwd"), "unsafe_path"),
        (member("evil", tarfile.LNKTYPE, "/etc/passwd"), "unsafe_path"),
        (member("sda", tarfile.BLKTYPE), "unsupported_entry"),
        (member("tty", tarfile.CHRTYPE), "unsupported_entry"),
    ],
)
def test_unsafe_entries_are_refused(entry: tarfile.TarInfo, code: str) -> None:
    with pytest.raises(protocol.AgentError) as err:
        files.validate([member("fine.txt"), entry], "/vercel/sandbox")
    assert err.value.code == code


def test_safe_entries_pass() -> None:
    entries = [
        member("./", tarfile.DIRTYPE),
        member("a/b.txt"),
        member("a/link", tarfile.SYMTYPE, "b.txt"),
        member("a/up", tarfile.SYMTYPE, "../a"),
        member("abs", tarfile.SYMTYPE, "/vercel/sandbox/a"),
        member("hard", tarfile.LNKTYPE, "a/b.txt"),
        member("dir", tarfile.DIRTYPE),
    ]
    checked = files.validate(entries, "/vercel/sandbox")
    assert [rel for _, rel in checked] == ["", "a/b.txt", "a/link", "a/up", "abs", "hard", "dir"]


def test_absolute_links_anywhere_are_inside_when_the_root_is_slash() -> None:
    files.validate([member("l", tarfile.SYMTYPE, "/etc/passwd")], "/")


def test_a_symlink_climbing_out_through_another_symlink_is_refused() -> None:
    # a/b -> .. is the root itself, so d really points two levels above it.
    chain = [member("a/b", tarfile.SYMTYPE, ".."), member("d", tarfile.SYMTYPE, "a/b/a/b/../..")]
    with pytest.raises(protocol.AgentError) as err:
        files.validate(chain, "/vercel/sandbox")
    assert err.value.code == "unsafe_path"
    inside = [member("a/b", tarfile.SYMTYPE, ".."), member("d", tarfile.SYMTYPE, "a/b/a/b/x")]
    assert len(files.validate(inside, "/vercel/sandbox")) == 2


def test_a_symlink_loop_is_refused() -> None:
    loop = [
        member("x", tarfile.SYMTYPE, "y"),
        member("y", tarfile.SYMTYPE, "x"),
        member("z", tarfile.SYMTYPE, "x/f"),
    ]
    with pytest.raises(protocol.AgentError) as err:
        files.validate(loop, "/vercel/sandbox")
    assert err.value.code == "unsafe_path"
