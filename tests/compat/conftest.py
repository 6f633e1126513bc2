"""The compatibility suite: Vercel's official clients, unmodified, against a real emberd.

Every client is pointed at emberd through a public mechanism and cannot reach anything else:
the Python SDK through `SandboxServiceOptions(base_url=...)`; the JS SDK through the `fetch`
option of its entry points (`js/lib.mjs`), which rewrites `https://vercel.com/api` to emberd and
throws for any other address; the CLI through a `--require` preload (`js/preload.cjs`) that does
the same to the global fetch. The clients run with a private HOME, XDG dirs and TMPDIR, in a
temporary working directory, with telemetry and version checks off. `make compat-deps` installs
the JS packages; the `compat` extra installs the Python SDK.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import RUN_PREFIX, Emberd

JS_DIR = Path(__file__).parent / "js"
NODE_MODULES = JS_DIR / "node_modules"
CLI_BIN = NODE_MODULES / "sandbox" / "bin" / "sandbox.mjs"
PRELOAD = JS_DIR / "preload.cjs"
NODE_TIMEOUT = 240  # seconds for one script or CLI call; pytest's own limit is 300


def _missing(reason: str) -> None:
    """Fail in CI, skip on a developer's machine (as `require_host` does)."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        _missing("node is not installed (Node.js 20+ is needed for the JS compatibility tests)")
    assert path is not None
    if not CLI_BIN.exists() or not (NODE_MODULES / "@vercel" / "sandbox").exists():
        _missing("the official JS clients are not installed: run `make compat-deps`")
    return path


def unique_name(label: str) -> str:
    """A sandbox name of this run (the run prefix finds leftovers)."""
    return f"{RUN_PREFIX}-{label}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Emberd:
    """The emberd a test's clients talk to: a networked one for tests marked
    `networked` (live policy changes need sessions with networks)."""
    networked = request.node.get_closest_marker("networked") is not None
    emberd: Emberd = request.getfixturevalue("emberd_net" if networked else "emberd")
    return emberd


@pytest.fixture
def names(server: Emberd) -> Iterator[list[str]]:
    """Names of sandboxes a test may create; whatever is left of them is deleted afterwards."""
    created: list[str] = []
    yield created
    with server.client() as api:
        for name in created:
            with contextlib.suppress(httpx.HTTPError):
                api.delete(f"/v2/sandboxes/{name}", params={"deleteOrphanSnapshots": "true"})


@pytest.fixture
def api(server: Emberd) -> Iterator[httpx.Client]:
    """Plain HTTP, to check from outside what a client did."""
    with server.client() as client:
        yield client


def client_env(emberd: Emberd, home: Path) -> dict[str, str]:
    """A clean environment for node: nothing from the caller's Vercel settings leaks in."""
    dirs = {
        "HOME": home / "home",
        "XDG_CONFIG_HOME": home / "config",
        "XDG_DATA_HOME": home / "data",
        "XDG_CACHE_HOME": home / "cache",
        "XDG_STATE_HOME": home / "state",
        "TMPDIR": home / "tmp",
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **{key: str(value) for key, value in dirs.items()},
        "CI": "1",
        "NO_COLOR": "1",
        "SANDBOX_SKIP_VERSION_CHECK": "1",
        "VERCEL_SANDBOX_TELEMETRY_DISABLED": "1",
        "VERCEL_TELEMETRY_DISABLED": "1",
        "EMBER_URL": emberd.url,
    }


@dataclass
class NodeResult:
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        out, err = self.stdout[-4000:], self.stderr[-4000:]
        return f"exit {self.returncode}\nstdout:\n{out}\nstderr:\n{err}"


def run_node(
    node: str, argv: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None
) -> NodeResult:
    done = subprocess.run(
        [node, *argv],
        env=env,
        cwd=cwd,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
    )
    return NodeResult(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def js(node: str, server: Emberd, tmp_path: Path) -> Any:
    """`js("script.mjs", *args)` runs a script of js/ and returns its JSON report."""
    env = client_env(server, tmp_path) | {
        "EMBER_TOKEN": server.token,
        "EMBER_TEAM_ID": server.team_id,
        "EMBER_PROJECT_ID": server.project_id,
    }
    workdir = tmp_path / "work"
    workdir.mkdir()

    def run(script: str, *args: str) -> dict[str, Any]:
        result = run_node(node, [str(JS_DIR / script), *args], env, workdir)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        assert lines, f"{script} printed no report: {result.describe()}"
        report: dict[str, Any] = json.loads(lines[-1])
        assert result.returncode == 0 and "error" not in report, (
            f"{script} failed: {json.dumps(report.get('error'), indent=2)}\n{result.describe()}"
        )
        # Every request the SDK made went through the rewriting fetch, to emberd.
        assert report["requests"], f"{script} made no request"
        return report

    return run


class Cli:
    """Vercel's `sandbox` CLI 4.5.0, unmodified, with the fetch preload and fixed scope."""

    def __init__(self, node: str, emberd: Emberd, home: Path) -> None:
        self.node = node
        self.emberd = emberd
        self.env = client_env(emberd, home) | {
            "VERCEL_AUTH_TOKEN": emberd.token,
            "EMBER_FETCH_LOG": str(home / "requests.log"),
        }
        self.cwd = home / "work"
        self.cwd.mkdir(exist_ok=True)
        self.requests_log = home / "requests.log"

    def argv(self, subcommand: str, *args: str) -> list[str]:
        # Scope flags right after the subcommand: the CLI then never asks vercel.com for them.
        scope = ["--project", self.emberd.project_id, "--scope", self.emberd.team_id]
        return ["--require", str(PRELOAD), str(CLI_BIN), subcommand, *scope, *args]

    def __call__(self, subcommand: str, *args: str, stdin: str | None = None) -> NodeResult:
        return run_node(self.node, self.argv(subcommand, *args), self.env, self.cwd, stdin)

    def ok(self, subcommand: str, *args: str) -> NodeResult:
        result = self(subcommand, *args)
        assert result.returncode == 0, f"sandbox {subcommand} {' '.join(args)}: {result.describe()}"
        return result

    def requests(self) -> list[str]:
        if not self.requests_log.exists():
            return []
        return self.requests_log.read_text().splitlines()


@pytest.fixture
def cli(node: str, server: Emberd, tmp_path: Path) -> Cli:
    return Cli(node, server, tmp_path)
