"""The quickstart: start emberd, then create, use, stop and resume a sandbox.

    .venv/bin/python examples/demo.py --data-dir /var/lib/ember
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ember.sdk import Client, Sandbox

PROGRAM = """\
import platform, sys
print(f"hello from {platform.node()}, Python {sys.version.split()[0]}")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    log = data_dir / "demo-emberd.log"
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "ember", "serve", "--data-dir", str(data_dir), "--port", str(port),
             "--log-level", "warning"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"emberd exited; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.terminate()
    sys.exit(f"emberd did not start; see {log}")


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/ember"))
    data_dir = parser.parse_args().data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    step(f"starting emberd on 127.0.0.1:{port} (data in {data_dir})")
    server = start_server(data_dir, port)
    try:
        token = json.loads((data_dir / "client.json").read_text())["token"]
        client = Client(f"http://127.0.0.1:{port}", token)
        step("creating a sandbox")
        started = time.monotonic()
        sandbox = Sandbox.create(client=client)
        print(f"sandbox {sandbox.name} is {sandbox.status} ({(time.monotonic() - started) * 1000:.0f} ms)")
        step("writing hello.py and running it")
        sandbox.write_files({"hello.py": PROGRAM})
        result = sandbox.run_command("python3", ["hello.py"])
        print(result.stdout(), end="")
        step("stopping it (its filesystem becomes a snapshot)")
        snapshot = sandbox.stop()
        print(f"stopped; snapshot {snapshot.id if snapshot else '-'}")
        step("resuming it: the next command starts a new session from the snapshot")
        result = sandbox.run_command("cat", ["hello.py"])
        print(result.stdout(), end="")
        print(f"hello.py survived the stop (session {sandbox.session.id if sandbox.session else '-'})")
        sandbox.delete(delete_snapshots=True)
        step("done; sandbox deleted")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
