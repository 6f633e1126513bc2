"""The `ember` command line, run as a real program against a real emberd.

Every command runs in a child process with EMBER_URL and EMBER_TOKEN naming the test
server, as a user would run it; terminals are real pseudo-terminals (pexpect). Each
test deletes the sandboxes it made, with their snapshots.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pexpect
import pytest

from ember.image import ImageInfo

from ..conftest import DATA_DIR, Emberd

pytestmark = pytest.mark.integration

_BIN = Path(sys.executable).with_name("ember")
EMBER = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "ember"]


def unique(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Cli:
    """Runs `ember` with the test server in its environment; remembers what to delete."""

    env: dict[str, str]
    made: list[str] = field(default_factory=list)

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*EMBER, *args],
            env={**self.env, **(env or {})},
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        # Whatever happens, a user sees messages, never Python's insides.
        assert "Traceback" not in done.stderr, f"ember {shlex.join(args)}:\n{done.stderr}"
        return done

    def ok(self, *args: str, **kwargs: Any) -> str:
        done = self(*args, **kwargs)
        assert done.returncode == 0, (
            f"ember {shlex.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout

    def create(self, *options: str) -> str:
        name = unique()
        self.made.append(name)
        assert self.ok("create", "--name", name, *options) == f"{name}\n"
        return name

    def sandboxes(self) -> dict[str, dict[str, Any]]:
        """Every sandbox of the project, by name, from `ember list --all --json`."""
        listed = json.loads(self.ok("list", "--all", "--json"))
        return {s["name"]: s for s in listed}


def client_env(url: str, token: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EMBER_") and k not in ("COLUMNS", "LINES")
    }
    return env | {"EMBER_URL": url, "EMBER_TOKEN": token}


@pytest.fixture
def cli(emberd: Emberd) -> Iterator[Cli]:
    runner = Cli(client_env(emberd.url, emberd.token))
    yield runner
    with emberd.client() as api:
        for name in runner.made:
            response = api.delete(f"/v2/sandboxes/{name}", params={"deleteOrphanSnapshots": "true"})
            assert response.status_code in (200, 404), response.text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- create, list, exec, run ----------------------------------------------------------


def test_create_prints_the_sandbox_and_list_shows_it(cli: Cli) -> None:
    name, marker = unique(), uuid.uuid4().hex[:8]
    cli.made.append(name)
    out = cli.ok(
        "create", "--name", name, "-e", "K=V", "-t", "a=b", "-t", f"run={marker}",
        "-p", "3000", "--json",
    )  # fmt: skip
    info = json.loads(out)
    assert info["name"] == name and info["status"] == "running"
    assert info["env"] == {"K": "V"}
    assert info["tags"] == {"a": "b", "run": marker}
    assert info["ports"] == [3000]
    assert info["persistent"] is True

    stopped = cli.create()
    cli.ok("stop", stopped)

    rows = {line.split()[0]: line.split() for line in cli.ok("ls").splitlines()[1:]}
    assert rows[name][1] == "running" and f"a=b,run={marker}" in rows[name]
    assert stopped not in rows  # running ones only, unless --all
    running = {s["name"] for s in json.loads(cli.ok("ls", "--json"))}
    assert name in running and stopped not in running
    everything = cli.sandboxes()
    assert everything[name]["status"] == "running"
    assert everything[stopped]["status"] == "stopped"
    assert stopped in cli.ok("list", "--all")
    tagged = json.loads(cli.ok("list", "--all", "--tag", f"run={marker}", "--json"))
    assert [s["name"] for s in tagged] == [name]


def test_exec_passes_exit_code_streams_and_options(cli: Cli) -> None:
    name = cli.create()
    done = cli("exec", name, "sh", "-c", "echo out; echo err >&2; exit 5")
    assert done.returncode == 5
    assert done.stdout == "out\n"
    assert "err" in done.stderr

    assert cli.ok("exec", "--sudo", name, "id", "-u") == "0\n"
    assert cli.ok("exec", name, "id", "-u").strip() != "0"
    assert cli.ok("exec", "-w", "/tmp", name, "pwd") == "/tmp\n"
    # Options after the command are the command's.
    assert cli.ok("exec", name, "echo", "--sudo", "-w", "x") == "--sudo -w x\n"
    # -e K=V, and a bare -e K copies K from ember's own environment.
    shown = cli.ok(
        "exec", "-e", "A=1", "-e", "FROM_HERE", name, "sh", "-c", 'echo "$A $FROM_HERE"',
        env={"FROM_HERE": "local value"},
    )  # fmt: skip
    assert shown == "1 local value\n"

    killed = cli("exec", "--timeout", "1s", name, "sleep", "30")
    assert killed.returncode == 137
    assert "killed after 1s" in killed.stderr
    assert cli("exec", name, "no-such-command").returncode == 127


def test_run_rm_leaves_nothing_and_run_name_reuses_the_sandbox(cli: Cli) -> None:
    before = set(cli.sandboxes())
    done = cli("run", "--rm", "echo", "hi")
    assert done.returncode == 0 and done.stdout == "hi\n"
    assert set(cli.sandboxes()) == before

    name = unique()
    cli.made.append(name)
    count = "echo x >> count; wc -l < count"
    assert cli.ok("run", "--name", name, "sh", "-c", count).strip() == "1"
    assert cli.ok("run", "--name", name, "sh", "-c", count).strip() == "2"
    assert set(cli.sandboxes()) == before | {name}
    assert cli("run", "--name", name, "--stop", "sh", "-c", "exit 7").returncode == 7
    assert cli.sandboxes()[name]["status"] == "stopped"
    assert cli.ok("run", "--name", name, "cat", "count") == "x\nx\n"

    # Without --name or --rm the new sandbox stays: ember says which it is.
    kept = cli("run", "true")
    assert kept.returncode == 0
    match = re.search(r"created sandbox (\S+)", kept.stderr)
    assert match, kept.stderr
    cli.made.append(match[1])
    assert set(cli.sandboxes()) == before | {name, match[1]}


# -- cp ---------------------------------------------------------------------------------


def tree(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """Each path below `root` (and "." itself): kind, permission bits, bytes or link target."""
    found: dict[str, tuple[str, int, bytes | str]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        rel = str(path.relative_to(root))
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("l", 0, os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("d", stat.S_IMODE(st.st_mode), "")
        else:
            found[rel] = ("f", stat.S_IMODE(st.st_mode), path.read_bytes())
    return found


def test_cp_copies_a_tree_both_ways(cli: Cli, tmp_path: Path) -> None:
    name = cli.create()
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "top.txt").write_text("top\n")
    (src / "a" / "note.txt").write_text("note\n")
    (src / "a" / "b" / "all-bytes.bin").write_bytes(bytes(range(256)))
    (src / "a" / "link").symlink_to("b/all-bytes.bin")
    (src / "top.txt").chmod(0o755)
    (src / "a" / "note.txt").chmod(0o640)
    (src / "a" / "b" / "all-bytes.bin").chmod(0o600)
    (src / "a" / "b").chmod(0o750)
    src.chmod(0o755)
    local = tree(src)

    done = cli("cp", str(src), f"{name}:dest")
    assert done.returncode == 0, done.stderr
    assert "copied" in done.stderr
    listing = cli.ok(
        "exec", name, "sh", "-c", r"cd dest && find . -printf '%y %m %u %p -> %l\n' | sort"
    )
    expected = sorted(
        f"{kind} {0o777 if kind == 'l' else mode:o} vercel-sandbox "
        f"{'.' if rel == '.' else './' + rel} -> {content if kind == 'l' else ''}"
        for rel, (kind, mode, content) in local.items()
    )
    assert listing.splitlines() == expected
    digest = cli.ok("exec", name, "sha256sum", "dest/a/b/all-bytes.bin").split()[0]
    assert digest == hashlib.sha256(bytes(range(256))).hexdigest()

    back = tmp_path / "back"
    done = cli("cp", f"{name}:dest", str(back))
    assert done.returncode == 0, done.stderr
    assert tree(back) == local
    assert (back / "a" / "link").read_bytes() == bytes(range(256))


def test_cp_copies_a_single_file_both_ways(cli: Cli, tmp_path: Path) -> None:
    name = cli.create()
    data = bytes(range(256)) * 64
    original = tmp_path / "one.bin"
    original.write_bytes(data)
    original.chmod(0o640)
    cli.ok("cp", str(original), f"{name}:one.bin")
    assert cli.ok("exec", name, "sha256sum", "one.bin").split()[0] == (
        hashlib.sha256(data).hexdigest()
    )
    assert cli.ok("exec", name, "stat", "-c", "%a %U", "one.bin") == "640 vercel-sandbox\n"

    copy = tmp_path / "copy.bin"
    cli.ok("cp", f"{name}:one.bin", str(copy))
    assert copy.read_bytes() == data and stat.S_IMODE(copy.stat().st_mode) == 0o640
    into = tmp_path / "into"
    into.mkdir()
    cli.ok("cp", f"{name}:/vercel/sandbox/one.bin", str(into))
    assert (into / "one.bin").read_bytes() == data


def test_cp_reports_what_is_missing(cli: Cli, tmp_path: Path) -> None:
    name = cli.create()
    target = tmp_path / "x"
    missing = cli("cp", f"{name}:no/such/file", str(target))
    assert missing.returncode == 1
    assert "error:" in missing.stderr and "no/such/file" in missing.stderr
    assert not target.exists()

    nothing = cli("cp", str(tmp_path / "nothing"), f"{name}:x")
    assert nothing.returncode == 1 and "does not exist" in nothing.stderr
    both_local = cli("cp", str(tmp_path / "a"), str(tmp_path / "b"))
    assert both_local.returncode == 1 and "NAME:PATH" in both_local.stderr


def test_cp_from_a_sandbox_keeps_only_links_that_stay_inside(cli: Cli, tmp_path: Path) -> None:
    name = cli.create()
    cli.ok(
        "exec", name, "sh", "-c",
        "mkdir -p tree/d && cd tree && echo inside > d/file"
        " && ln -s d/file ok && ln -s .. d/back"
        " && ln -s /etc/passwd evil && ln -s ../../.. up && ln -s .. parent"
        # allowed by name, yet leaves the tree through d/back
        " && ln -s d/back/../../escape chain"
        # rich markup in a message must not break the copy
        " && ln -s '/[/x]' markup",
    )  # fmt: skip
    local = tmp_path / "local"
    done = cli("cp", f"{name}:tree", str(local))
    assert done.returncode == 0, done.stderr

    assert os.readlink(local / "ok") == "d/file" and (local / "ok").read_text() == "inside\n"
    assert os.readlink(local / "d" / "back") == ".."
    skipped = [line for line in done.stderr.splitlines() if line.startswith("skipped link")]
    for link in ("evil", "up", "parent", "chain", "markup"):
        assert not os.path.lexists(local / link), link
        assert any(f"/{link} -> " in line for line in skipped), (link, done.stderr)
    assert "/[/x]" in done.stderr
    top = os.path.realpath(local)
    for path in local.rglob("*"):
        if path.is_symlink():
            real = os.path.realpath(path)
            assert real == top or real.startswith(top + "/"), (path, real)


def test_cp_replaces_local_symlinks_rather_than_writing_through(cli: Cli, tmp_path: Path) -> None:
    victim = Path(f"/tmp/ember-victim-{uuid.uuid4().hex}")
    victim_dir = Path(f"/tmp/ember-victim-dir-{uuid.uuid4().hex}")
    victim.write_text("precious\n")
    victim_dir.mkdir()
    try:
        name = cli.create()
        cli.ok("exec", name, "sh", "-c", "mkdir -p src/sub && echo remote > src/f.txt"
               " && echo remote-sub > src/sub/g.txt")  # fmt: skip
        dst = tmp_path / "local" / "dst"
        dst.mkdir(parents=True)

        # onto the file path itself, then into the directory holding it
        for destination in (dst / "f.txt", dst):
            (dst / "f.txt").unlink(missing_ok=True)
            (dst / "f.txt").symlink_to(victim)
            cli.ok("cp", f"{name}:src/f.txt", str(destination))
            assert victim.read_text() == "precious\n"
            assert not (dst / "f.txt").is_symlink()
            assert (dst / "f.txt").read_text() == "remote\n"

        # a tree: links at both a file's and a directory's path
        into = tmp_path / "tree"
        into.mkdir()
        (into / "f.txt").symlink_to(victim)
        (into / "sub").symlink_to(victim_dir)
        cli.ok("cp", f"{name}:src", str(into))
        assert victim.read_text() == "precious\n"
        assert list(victim_dir.iterdir()) == []
        assert not (into / "f.txt").is_symlink() and (into / "f.txt").read_text() == "remote\n"
        assert not (into / "sub").is_symlink()
        assert (into / "sub" / "g.txt").read_text() == "remote-sub\n"
    finally:
        victim.unlink()
        shutil.rmtree(victim_dir)


# -- stop, snapshots, sessions, fork, config, rm ------------------------------------------


def test_stop_resume_and_snapshot_commands(cli: Cli) -> None:
    name = cli.create()
    cli.ok("exec", name, "sh", "-c", "echo kept > kept.txt")
    stopped = cli.ok("stop", name)
    assert f"{name}: stopped" in stopped
    found = re.search(r"snapshot\s+(snap_\w+)", stopped)
    assert found, stopped
    first = found[1]
    assert cli.sandboxes()[name]["status"] == "stopped"

    assert cli.ok("exec", name, "cat", "kept.txt") == "kept\n"  # resumes
    sessions = json.loads(cli.ok("sessions", "ls", name, "--json"))
    assert [s["status"] for s in sessions] == ["running", "stopped"]
    assert sessions[0]["sourceSnapshotId"] == first
    assert sessions[1]["id"] in cli.ok("sessions", "ls", name)

    refused = cli("snapshot", name)
    assert refused.returncode == 1 and "--stop" in refused.stderr
    assert cli.sandboxes()[name]["status"] == "running"
    taken = json.loads(cli.ok("snapshot", name, "--stop", "--json"))
    second = taken["id"]
    assert taken["sandboxName"] == name and taken["status"] == "created"
    assert taken["parentId"] == first

    listed = json.loads(cli.ok("snapshots", "ls", "--name", name, "--json"))
    assert {s["id"] for s in listed} == {first, second}
    table = cli.ok("snapshots", "ls", "--name", name).splitlines()
    assert {line.split()[0] for line in table[1:]} == {first, second}  # whole ids, piped
    got = json.loads(cli.ok("snapshots", "get", first))
    assert got["id"] == first and got["sourceSessionId"] == sessions[1]["id"]
    lines = cli.ok("snapshots", "tree", name).splitlines()
    assert lines[0].startswith(f"{first}  ") and lines[1].startswith(f"  {second}  ")

    assert cli.ok("snapshots", "rm", first) == f"{first}: deleted\n"
    assert json.loads(cli.ok("snapshots", "get", first))["status"] == "deleted"
    assert cli.ok("exec", name, "cat", "kept.txt") == "kept\n"  # from the second
    assert json.loads(cli.ok("stop", name, "--json"))["snapshot"]["parentId"] == second


def test_fork_copies_the_snapshot_into_an_independent_sandbox(cli: Cli) -> None:
    name = cli.create("-t", "a=b")
    cli.ok("exec", name, "sh", "-c", "echo from-source > shared.txt")
    cli.ok("stop", name)  # a fork starts from the source's current snapshot
    fork = unique()
    cli.made.append(fork)
    done = cli("fork", name, "--name", fork)
    assert done.returncode == 0 and done.stdout == f"{fork}\n", done.stderr
    assert done.stderr == ""
    assert cli.ok("exec", fork, "cat", "shared.txt") == "from-source\n"
    cli.ok("exec", fork, "sh", "-c", "echo changed > shared.txt")
    assert cli.ok("exec", name, "cat", "shared.txt") == "from-source\n"
    assert cli.sandboxes()[fork]["tags"] == {"a": "b"}

    # Forking a running sandbox leaves out its unsaved changes, and says so.
    cli.ok("exec", name, "sh", "-c", "echo unsaved > unsaved.txt")
    late = unique()
    cli.made.append(late)
    done = cli("fork", name, "--name", late)
    assert done.returncode == 0 and "without the changes since" in done.stderr
    assert cli("exec", late, "test", "-e", "unsaved.txt").returncode == 1
    assert cli.ok("exec", late, "cat", "shared.txt") == "from-source\n"


def config(cli: Cli, name: str) -> dict[str, str]:
    lines = cli.ok("config", "list", name).splitlines()
    return {key: value.strip() for key, _, value in (line.partition(" ") for line in lines)}


def test_config_shows_and_changes_settings(cli: Cli) -> None:
    name = cli.create("-t", "a=b")
    shown = config(cli, name)
    assert shown["tags"] == "a=b" and shown["persistent"] == "True" and shown["timeout"] == "5m"

    assert cli.ok("config", "tags", name, "-t", "x=y") == f"{name}: tags = x=y\n"
    assert config(cli, name)["tags"] == "x=y"
    cli.ok("config", "timeout", name, "10m")
    assert config(cli, name)["timeout"] == "10m"
    assert cli.sandboxes()[name]["timeout"] == 600_000

    for setting, value in (("vcpus", "lots"), ("persistent", "ture"), ("timeout", "soon")):
        bad = cli("config", setting, name, value)
        assert bad.returncode == 2, (setting, bad.stderr)
        assert value in bad.stderr
    assert config(cli, name)["persistent"] == "True"


def test_rm_deletes_the_sandbox(cli: Cli) -> None:
    name = cli.create()
    assert cli.ok("rm", name) == f"{name}: deleted\n"
    gone = cli("exec", name, "true")
    assert gone.returncode == 1
    assert f"no sandbox named '{name}'" in gone.stderr
    assert name not in cli.sandboxes()


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["exec", "{name}", "true"],
        ["exec", "-i", "{name}", "true"],
        ["connect", "{name}"],
        ["stop", "{name}"],
        ["rm", "{name}"],
        ["fork", "{name}"],
        ["snapshot", "{name}", "--stop"],
        ["sessions", "ls", "{name}"],
        ["config", "list", "{name}"],
        ["config", "tags", "{name}", "-t", "a=b"],
        ["cp", "{name}:file", "{tmp}/file"],
        ["cp", "{tmp}", "{name}:dir"],
    ],
    ids=" ".join,
)
def test_unknown_sandboxes_get_one_readable_line(
    cli: Cli, tmp_path: Path, command: list[str]
) -> None:
    name = unique("missing")
    done = cli(*(c.format(name=name, tmp=tmp_path) for c in command))
    assert done.returncode == 1
    assert done.stderr == f"error: no sandbox named '{name}'\n"
    assert name not in cli.sandboxes()


@pytest.mark.parametrize(
    ("command", "bad"),
    [
        (["exec", "{bad}", "true"], "[/x]"),
        (["exec", "{bad}", "true"], ".."),
        (["rm", "{bad}"], "snapshots/snap_x"),
        (["config", "list", "{bad}"], "a/../b"),
        (["snapshots", "get", "{bad}"], "../sandboxes"),
        (["snapshots", "rm", "{bad}"], "x/y"),
    ],
)
def test_names_that_are_not_names_are_refused(cli: Cli, command: list[str], bad: str) -> None:
    """Names go into URL paths; `snapshots/ID` must not reach the snapshot endpoint."""
    done = cli(*(c.format(bad=bad) for c in command))
    assert done.returncode == 1
    assert f"{bad!r} is not a valid" in done.stderr


def test_unknown_snapshot(cli: Cli) -> None:
    done = cli("snapshots", "get", "snap_doesnotexist")
    assert done.returncode == 1
    assert "snap_doesnotexist" in done.stderr and "snapshot_not_found" in done.stderr


def test_no_server_says_to_start_one(cli: Cli) -> None:
    dead = {"EMBER_URL": f"http://127.0.0.1:{free_port()}"}
    for command in (["ls"], ["exec", "box", "true"], ["create"]):
        done = cli(*command, env=dead)
        assert done.returncode == 1
        assert "`ember serve`" in done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr


def test_wrong_token_is_refused(cli: Cli) -> None:
    done = cli("ls", env={"EMBER_TOKEN": "ember_wrong"})
    assert done.returncode == 1 and "unauthorized" in done.stderr


def test_server_from_options_or_client_json(cli: Cli, emberd: Emberd) -> None:
    name = cli.create()
    dead = client_env(f"http://127.0.0.1:{free_port()}", "ember_wrong")
    flags = cli("--url", emberd.url, "--token", emberd.token, "ls", "--json", env=dead)
    assert flags.returncode == 0 and name in {s["name"] for s in json.loads(flags.stdout)}

    only_file = {k: v for k, v in cli.env.items() if not k.startswith("EMBER_")}
    only_file["EMBER_CONFIG"] = os.path.join(emberd.data_dir, "client.json")
    from_file = Cli(only_file)
    assert name in {s["name"] for s in json.loads(from_file.ok("ls", "--json"))}


# -- host commands --------------------------------------------------------------------


def test_doctor_json(cli: Cli, emberd: Emberd) -> None:
    probes = {
        p["name"]: p for p in json.loads(cli.ok("doctor", "--json", "--data-dir", emberd.data_dir))
    }
    assert probes["runc"]["ok"] is True and probes["runc"]["detail"]
    assert probes["cgroup"]["ok"] is True and probes["cgroup"]["detail"].startswith(("v1", "v2"))
    assert probes["root"]["ok"] is True
    assert all(set(p) == {"name", "ok", "detail"} for p in probes.values())


def test_image_ls(cli: Cli, image: ImageInfo) -> None:
    listed = json.loads(cli.ok("image", "ls", "--json", "--data-dir", DATA_DIR))
    ours = [i for i in listed if i["image_id"] == image.image_id]
    assert len(ours) == 1 and ours[0]["size_bytes"] > 0
    assert ours[0]["recipe"]["suite"]
    assert image.image_id in cli.ok("image", "ls", "--data-dir", DATA_DIR)


def test_token_create_makes_a_working_token(cli: Cli, emberd: Emberd, tmp_path: Path) -> None:
    token = cli.ok("token", "create", "--data-dir", emberd.data_dir, "--project", "p2").strip()
    assert re.fullmatch(r"ember_[\w-]+", token), token
    with emberd.client(token=token) as other:
        response = other.get("/v2/sandboxes")
        assert response.status_code == 200, response.text
    described = json.loads(
        cli.ok("token", "create", "--data-dir", emberd.data_dir, "--project", "p2", "--json")
    )
    assert described["project"] == "p2" and described["projectId"].startswith("prj_")

    # A mistyped data directory is an error, not a new database.
    typo = tmp_path / "no-such-data-dir"
    done = cli("token", "create", "--data-dir", str(typo))
    assert done.returncode == 1 and "ember serve" in done.stderr
    assert not typo.exists()


# -- terminals --------------------------------------------------------------------------


def spawn(cli: Cli, *args: str, rows: int = 30, cols: int = 100) -> pexpect.spawn:
    return pexpect.spawn(
        EMBER[0],
        [*EMBER[1:], *args],
        env=cli.env,
        dimensions=(rows, cols),
        timeout=60,
        encoding="utf-8",
        codec_errors="replace",
    )


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    assert child.signalstatus is None, child.signalstatus
    return int(child.exitstatus)


def test_connect_gives_a_real_terminal(cli: Cli) -> None:
    name = cli.create()
    cli.ok("stop", name)  # connect resumes it
    child = spawn(cli, "connect", name, rows=30, cols=100)
    try:
        child.expect(r"[$#] ")
        child.send("stty size; tty; echo marker-$((6*7))\r")
        child.expect("30 100")
        child.expect("/dev/pts/")
        child.expect("marker-42")

        child.setwinsize(40, 120)
        for _ in range(50):  # the resize travels beside the keystrokes
            child.send("stty size\r")
            if child.expect(["40 120", "30 100"]) == 0:
                break
        else:
            pytest.fail("the sandbox terminal never saw the new size")

        child.send("exit 3\r")
        assert finish(child) == 3
    finally:
        child.close(force=True)


def test_connect_sudo_is_root(cli: Cli) -> None:
    name = cli.create()
    child = spawn(cli, "connect", "--sudo", name)
    try:
        child.expect(r"# ")
        child.send("echo uid=$(id -u)\r")
        child.expect("uid=0")
        child.send("exit\r")
        assert finish(child) == 0
    finally:
        child.close(force=True)


def test_exec_interactive_reads_the_terminal(cli: Cli) -> None:
    name = cli.create()
    child = spawn(cli, "exec", "-i", name, "sh", "-c", "echo ready; read x; echo got:$x; exit 4")
    try:
        child.expect("ready")
        child.send("typed here\r")
        child.expect("got:typed here")
        assert finish(child) == 4
    finally:
        child.close(force=True)

    # The local terminal is as it was afterwards (raw mode undone).
    command = shlex.join([*EMBER, "exec", "-i", name, "true"])
    child = pexpect.spawn(
        "/bin/sh",
        ["-c", f'before=$(stty -g); {command}; [ "$before" = "$(stty -g)" ] && echo restored'],
        env=cli.env,
        timeout=60,
        encoding="utf-8",
    )
    try:
        child.expect("restored")
        assert finish(child) == 0
    finally:
        child.close(force=True)

    # Without a terminal, -i still carries stdin.
    piped = cli("exec", "-i", name, "sh", "-c", "read x; echo got:$x", input="piped\n")
    assert piped.returncode == 0 and "got:piped" in piped.stdout
