"""Vercel's official CLI (`sandbox` 4.5.0), unmodified, against a real emberd.

The CLI runs as `node --require js/preload.cjs .../sandbox.mjs SUBCOMMAND --project P --scope T
...`: the preload sends its https://vercel.com/api requests to emberd and refuses any other
destination; the token comes from VERCEL_AUTH_TOKEN.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import httpx
import pytest

from .conftest import Cli, unique_name

pytestmark = pytest.mark.integration


def create(cli: Cli, names: list[str], label: str, *flags: str) -> str:
    name = unique_name(label)
    names.append(name)
    result = cli.ok("create", "--name", name, *flags)
    assert result.stdout.strip() == name  # the name alone on stdout, the summary on stderr
    return name


def read_remote(api: httpx.Client, name: str, path: str) -> bytes | None:
    session = api.get(f"/v2/sandboxes/{name}").json()["sandbox"]["currentSessionId"]
    response = api.post(f"/v2/sandboxes/sessions/{session}/fs/read", json={"path": path})
    return response.content if response.status_code == 200 else None


def listed(cli: Cli, *flags: str) -> dict[str, str]:
    """`sandbox ls`: name -> status, from its table."""
    rows = cli.ok("ls", *flags).stdout.splitlines()
    assert rows and rows[0].split()[:2] == ["NAME", "STATUS"], rows
    return {row.split()[0]: row.split()[1] for row in rows[1:] if row.strip()}


def test_create(cli: Cli, api: httpx.Client, names: list[str]) -> None:
    name = create(
        cli,
        names,
        "cli-create",
        "--tag",
        "suite=compat",
        "--env",
        "GREETING=hello",
        "--publish-port",
        "3000",
        "--timeout",
        "2m",
    )
    body = api.get(f"/v2/sandboxes/{name}").json()
    assert body["sandbox"]["status"] == "running"
    assert body["sandbox"]["tags"] == {"suite": "compat"}
    assert body["sandbox"]["env"] == {"GREETING": "hello"}
    assert body["sandbox"]["ports"] == [3000]
    assert body["session"]["timeout"] == 120_000
    assert [route["port"] for route in body["routes"]] == [3000]
    greeting = cli.ok("exec", name, "sh", "-c", 'echo "$GREETING"')
    assert greeting.stdout == "hello\n"
    # Only the Sandbox API was asked: no scope lookup (/v2/user, /v2/teams, ...), no login.
    paths = [line.split()[1] for line in cli.requests()]
    assert paths[0].startswith("/v3/sandboxes?")
    assert all(path.startswith(("/v2/sandboxes", "/v3/sandboxes")) for path in paths), paths


def test_exec(cli: Cli, names: list[str]) -> None:
    name = create(cli, names, "cli-exec")
    failed = cli("exec", name, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert failed.returncode == 3  # the command's exit code is the CLI's
    assert failed.stdout == "out\n"
    assert "err\n" in failed.stderr
    options = cli.ok(
        "exec",
        "--workdir",
        "/tmp",
        "--env",
        "EXTRA=per-command",
        name,
        "sh",
        "-c",
        'pwd; echo "$EXTRA"',
    )
    assert options.stdout == "/tmp\nper-command\n"
    assert cli.ok("exec", name, "id", "-un").stdout == "vercel-sandbox\n"
    assert cli.ok("exec", "--sudo", name, "id", "-un").stdout == "root\n"


def test_ls(cli: Cli, names: list[str]) -> None:
    prefix = unique_name("cli-ls")
    red, blue = f"{prefix}-red", f"{prefix}-blue"
    names.extend([red, blue])
    cli.ok("create", "--name", red, "--tag", "color=red")
    cli.ok("create", "--name", blue, "--tag", "color=blue")

    assert listed(cli, "--name-prefix", prefix) == {red: "running", blue: "running"}
    mine = {k: v for k, v in listed(cli, "--tag", "color=red").items() if k.startswith(prefix)}
    assert mine == {red: "running"}

    cli.ok("stop", blue)
    assert listed(cli, "--name-prefix", prefix) == {red: "running"}  # running ones only
    assert listed(cli, "--all", "--name-prefix", prefix) == {red: "running", blue: "stopped"}


def test_cp_both_directions(cli: Cli, api: httpx.Client, names: list[str], tmp_path: Path) -> None:
    name = create(cli, names, "cli-cp")
    text = cli.cwd / "local.txt"
    text.write_text("copied up by the CLI\n")
    binary = cli.cwd / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 64)

    cli.ok("cp", "local.txt", f"{name}:/tmp/up/remote.txt")
    cli.ok("cp", str(binary), f"{name}:/vercel/sandbox/blob.bin")
    assert read_remote(api, name, "/tmp/up/remote.txt") == b"copied up by the CLI\n"
    assert read_remote(api, name, "/vercel/sandbox/blob.bin") == binary.read_bytes()

    cli.ok("exec", name, "sh", "-c", "printf 'made in the sandbox' > /tmp/down.txt")
    cli.ok("cp", f"{name}:/tmp/down.txt", "down.txt")
    assert (cli.cwd / "down.txt").read_text() == "made in the sandbox"
    back = tmp_path / "blob-back.bin"
    cli.ok("cp", f"{name}:/vercel/sandbox/blob.bin", str(back))
    assert back.read_bytes() == binary.read_bytes()


def test_stop_then_exec_resumes(cli: Cli, api: httpx.Client, names: list[str]) -> None:
    name = create(cli, names, "cli-stop")
    cli.ok("exec", name, "sh", "-c", "echo kept > /vercel/sandbox/state.txt")
    first = api.get(f"/v2/sandboxes/{name}").json()["sandbox"]["currentSessionId"]

    stopped = cli.ok("stop", name)
    assert "stopped" in stopped.stderr.lower()
    sandbox = api.get(f"/v2/sandboxes/{name}").json()["sandbox"]
    assert sandbox["status"] == "stopped"
    assert sandbox["currentSnapshotId"] in stopped.stderr  # the stop's snapshot is reported

    resumed = cli.ok("exec", name, "cat", "/vercel/sandbox/state.txt")
    assert resumed.stdout == "kept\n"
    after = api.get(f"/v2/sandboxes/{name}").json()["sandbox"]
    assert after["status"] == "running" and after["currentSessionId"] != first


def test_rm(cli: Cli, api: httpx.Client, names: list[str]) -> None:
    one = create(cli, names, "cli-rm")
    two = create(cli, names, "cli-rm")
    cli.ok("stop", two)
    cli.ok("rm", one, two)
    for name in (one, two):
        assert api.get(f"/v2/sandboxes/{name}").status_code == 404
    assert listed(cli, "--all", "--name-prefix", one) == {}


def test_snapshot_and_fork(cli: Cli, api: httpx.Client, names: list[str]) -> None:
    name = create(cli, names, "cli-snap")
    fork = unique_name("cli-fork")
    names.append(fork)
    cli.ok("exec", name, "sh", "-c", "echo from-the-source > /vercel/sandbox/f.txt")
    taken = cli.ok("snapshot", "--stop", name)
    snapshot = api.get(f"/v2/sandboxes/{name}").json()["sandbox"]["currentSnapshotId"]
    assert snapshot and snapshot in taken.stderr
    listed_ids = [row.split()[0] for row in cli.ok("snapshots", "list").stdout.splitlines()[1:]]
    assert snapshot in listed_ids
    tree = cli.ok("snapshots", "tree", name)
    assert snapshot in tree.stdout + tree.stderr

    assert cli.ok("fork", name, "--name", fork).stdout.strip() == fork
    assert cli.ok("exec", fork, "cat", "/vercel/sandbox/f.txt").stdout == "from-the-source\n"


def run_in_terminal(
    argv: list[str], env: dict[str, str], cwd: Path, keys: bytes, ready: bytes
) -> tuple[int, bytes]:
    """Run `argv` on an 80x24 pseudo-terminal; type `keys` once `ready` is on the screen."""
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(
        argv, stdin=terminal, stdout=terminal, stderr=terminal, env=env, cwd=cwd
    )
    os.close(terminal)
    screen, typed = b"", False
    deadline = time.monotonic() + 120
    try:
        while process.poll() is None and time.monotonic() < deadline:
            readable, _, _ = select.select([controller], [], [], 0.5)
            if readable:
                try:
                    screen += os.read(controller, 65536)
                except OSError:  # the terminal closed with the process
                    break
            if not typed and ready in screen:
                os.write(controller, keys)
                typed = True
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    return process.returncode, screen


def test_connect(cli: Cli, names: list[str]) -> None:
    """`sandbox connect`: POST .../interactive, the /health probe, then the terminal WebSocket."""
    name = create(cli, names, "cli-connect")
    code, screen = run_in_terminal(
        [cli.node, *cli.argv("connect", name)],
        cli.env,
        cli.cwd,
        keys=b"echo connected-$((40 + 2)) in $PWD; exit 7\r",
        ready=b"$ ",  # the CLI echoes the command it started once the terminal is open
    )
    text = screen.decode(errors="replace")
    assert "connected-42 in /vercel/sandbox" in text, text
    assert code == 7, text  # the shell's exit code, from the terminal's exit message
    paths = [line.split()[1] for line in cli.requests()]
    assert any(p.startswith("/v2/sandboxes/sessions/") and "/interactive?" in p for p in paths)
    assert "/health" in paths
