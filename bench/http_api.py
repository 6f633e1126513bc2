"""emberd over HTTP: create and resume to first output, command round trip, file transfer.

A real emberd process on loopback, its data directory beside the image cache
(the image is shared through a symlink, as the tests do).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ember.runtime import mounts
from ember.runtime.container import ContainerRuntime, default_id_shift
from measure import ms_since, now

DIFF_BYTES = 10 * 1024 * 1024
TRANSFER_BYTES = 100 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tar_gz(name: str, content: bytes) -> bytes:
    """A gzip tar made once, so the client's compression is not what is measured."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@dataclass
class HttpBench:
    data_dir: str
    prefix: str
    process: subprocess.Popen[bytes] | None = None
    client: httpx.AsyncClient | None = None
    names: list[str] = field(default_factory=list)
    server_dir: str = ""
    extra_args: tuple[str, ...] = ()  # for `ember serve`

    async def open(self) -> None:
        self.server_dir = os.path.join(self.data_dir, f"{self.prefix}-emberd")
        os.makedirs(self.server_dir)
        os.symlink(os.path.join(self.data_dir, "images"), os.path.join(self.server_dir, "images"))
        port = _free_port()
        log = os.path.join(self.server_dir, "emberd.log")
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ember",
                    "serve",
                    "--data-dir",
                    self.server_dir,
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                with open(log, errors="replace") as f:
                    raise RuntimeError(f"emberd did not start: {f.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        with open(os.path.join(self.server_dir, "client.json")) as f:
            token = json.load(f)["token"]
        self.client = httpx.AsyncClient(
            base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=120
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        if self.server_dir:
            runtime = ContainerRuntime(self.server_dir, id_shift=default_id_shift(), pool_size=0)
            for session_id in await runtime.sessions():
                await runtime.discard(session_id)
            runtime.close()
            link = os.path.join(self.server_dir, "images")
            if os.path.islink(link):
                os.unlink(link)
            mounts.remove_tree(self.server_dir)

    @property
    def api(self) -> httpx.AsyncClient:
        assert self.client is not None
        return self.client

    def new_name(self) -> str:
        name = f"{self.prefix}-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        return name

    async def create(self) -> tuple[str, str]:
        response = await self.api.post("/v3/sandboxes", json={"name": self.new_name()})
        response.raise_for_status()
        body = response.json()
        return body["sandbox"]["name"], body["session"]["id"]

    async def delete(self, name: str) -> None:
        (await self.api.delete(f"/v2/sandboxes/{name}")).raise_for_status()

    async def _lines(
        self, session_id: str, command: str, *args: str
    ) -> AsyncIterator[dict[str, Any]]:
        body = {"command": command, "args": list(args), "wait": True, "logs": True}
        async with self.api.stream(
            "POST", f"/v2/sandboxes/sessions/{session_id}/cmd", json=body
        ) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if line:
                    yield json.loads(line)

    async def first_output_ms(self, session_id: str, started: float) -> float:
        first = None
        async for line in self._lines(session_id, "echo", "hi"):
            if first is None and line.get("stream") == "stdout":
                first = ms_since(started)
            if "command" in line and line["command"]["exitCode"] not in (None, 0):
                raise RuntimeError(f"echo failed: {line}")
        assert first is not None
        return first

    # -- metrics ------------------------------------------------------------------

    async def create_to_first_output(self) -> float:
        started = now()
        response = await self.api.post("/v3/sandboxes", json={"name": self.new_name()})
        response.raise_for_status()
        body = response.json()
        elapsed = await self.first_output_ms(body["session"]["id"], started)
        await self.delete(body["sandbox"]["name"])
        return elapsed

    async def command_roundtrip(self, session_id: str) -> float:
        started = now()
        async for line in self._lines(session_id, "/bin/true"):
            if "command" in line and line["command"]["exitCode"] is not None:
                break
        return ms_since(started)

    async def prepare_resume(self) -> str:
        name, session_id = await self.create()
        archive = tar_gz("vercel/sandbox/diff.bin", os.urandom(DIFF_BYTES))
        (
            await self.api.post(
                f"/v2/sandboxes/sessions/{session_id}/fs/write",
                content=archive,
                headers={"x-cwd": "/"},
            )
        ).raise_for_status()
        return name

    async def resume_to_first_output(self, name: str) -> float:
        """Stop (untimed), then resume the sandbox and run echo: its 10 MB diff comes back."""
        sandbox = (await self.api.get(f"/v2/sandboxes/{name}")).json()["sandbox"]
        (
            await self.api.post(f"/v2/sandboxes/sessions/{sandbox['currentSessionId']}/stop")
        ).raise_for_status()
        started = now()
        response = await self.api.get(f"/v2/sandboxes/{name}", params={"resume": "true"})
        response.raise_for_status()
        return await self.first_output_ms(response.json()["session"]["id"], started)

    async def write_100mb(self, session_id: str, archive: bytes) -> float:
        started = now()
        response = await self.api.post(
            f"/v2/sandboxes/sessions/{session_id}/fs/write",
            content=archive,
            headers={"x-cwd": "/tmp", "content-type": "application/gzip"},
        )
        response.raise_for_status()
        return ms_since(started) / 1000

    async def read_100mb(self, session_id: str, name: str) -> float:
        started = now()
        size = 0
        async with self.api.stream(
            "POST", f"/v2/sandboxes/sessions/{session_id}/fs/read", json={"path": f"/tmp/{name}"}
        ) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                size += len(chunk)
        if size != TRANSFER_BYTES:
            raise RuntimeError(f"read {size} bytes, expected {TRANSFER_BYTES}")
        return ms_since(started) / 1000
