"""Pause, resume and fork with memory through emberd, the SDK twins and the CLI,
on real microVMs (TCG here). The control plane's states are unit-tested in
tests/unit/control/test_pausing.py; the runtime's in test_microvm.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ..conftest import Emberd
from .test_cli import Cli
from .test_sdk import Twin

pytestmark = pytest.mark.integration

SMALL = {"runtime": "microvm", "vcpus": 1, "memory_mib": 512}
# Prints 1, 2, 3, ... and keeps the last value in a file as well.
COUNTER = "i=0; while :; do i=$((i+1)); echo $i; echo $i > /tmp/count; sleep 0.2; done"


async def _numbers(sdk: Twin, command: Any, at_least: int) -> list[int]:
    """The counter's output from its start, once it has printed `at_least` numbers."""

    def read() -> list[int]:
        seen: list[int] = []
        for line in command.logs():
            seen += [int(n) for n in line.data.split()]
            if len(seen) >= at_least:
                return seen
        return seen

    async def read_async() -> list[int]:
        seen: list[int] = []
        async for line in command.logs():
            seen += [int(n) for n in line.data.split()]
            if len(seen) >= at_least:
                return seen
        return seen

    numbers = await asyncio.to_thread(read) if sdk.kind == "sync" else await read_async()
    assert len(numbers) >= at_least, numbers
    return numbers


async def _stdout(sdk: Twin, box: Any, *argv: str) -> str:
    command = await sdk(box.run_command, argv[0], list(argv[1:]))
    assert command.exit_code == 0
    return str(await sdk(command.stdout))


async def test_a_paused_sandbox_resumes_with_its_processes_and_memory(sdk: Twin) -> None:
    box = await sdk.create(**SMALL)
    session_id = box.session.id
    counter = await sdk(box.run_command, "sh", ["-c", COUNTER], detached=True)
    before = await _numbers(sdk, counter, 3)

    await sdk(box.pause)
    assert box.paused and box.status == "stopped"  # as the official clients read it
    remote = sdk.remote(box.name)
    assert remote["session"]["paused"] is True and remote["sandbox"]["status"] == "stopped"
    with sdk.raw() as api:
        refused = api.post(f"/v2/sandboxes/sessions/{session_id}/cmd", json={"command": "true"})
    assert refused.status_code == 410

    await sdk(box.resume)
    assert not box.paused and box.session.id == session_id
    # The same process counts on, and its log (started before the pause) streams on.
    after = await _numbers(sdk, counter, len(before) + 5)
    assert after[: len(before)] == before
    assert after == list(range(1, len(after) + 1))

    # Any call resumes a paused sandbox too (the resume flows official clients use).
    await sdk(box.pause)
    assert int(await _stdout(sdk, box, "cat", "/tmp/count")) >= len(after)
    assert box.session.id == session_id and not box.paused


async def test_forks_with_memory_share_state_and_diverge(sdk: Twin) -> None:
    source = await sdk.create(**SMALL)
    await sdk(source.run_command, "sh", ["-c", "echo shared > state.txt"])
    await sdk(source.run_command, "sh", ["-c", COUNTER], detached=True)
    await asyncio.sleep(1)

    forks = []
    for _ in range(2):
        fork = await sdk(
            source.fork, name=sdk.track(f"{source.name}-f{len(forks)}"), with_memory=True
        )
        forks.append(fork)
        assert fork.session.runtime == "microvm" and fork.session.status == "running"
    # The source ran on: still the same session.
    assert sdk.remote(source.name)["session"]["status"] == "running"

    for fork in forks:
        assert await _stdout(sdk, fork, "cat", "state.txt") == "shared\n"
        assert await _stdout(sdk, fork, "hostname") == f"{fork.name}\n"
        # The counting process came along, from where it was: it did not restart at 1.
        first = int(await _stdout(sdk, fork, "cat", "/tmp/count"))
        await asyncio.sleep(0.6)
        assert int(await _stdout(sdk, fork, "cat", "/tmp/count")) > first > 2
    await sdk(forks[0].run_command, "sh", ["-c", "echo mine > state.txt"])
    assert await _stdout(sdk, forks[1], "cat", "state.txt") == "shared\n"
    assert await _stdout(sdk, source, "cat", "state.txt") == "shared\n"
    draws = [
        await _stdout(sdk, fork, "sh", "-c", "head -c 16 /dev/urandom | od -An -tx1")
        for fork in forks
    ]
    assert draws[0] != draws[1]


async def test_stopping_a_paused_sandbox_keeps_its_files(sdk: Twin) -> None:
    box = await sdk.create(**SMALL, persistent=True)
    await sdk(box.run_command, "sh", ["-c", "echo kept > kept.txt"])
    await sdk(box.pause)
    snapshot = await sdk(box.stop)
    assert snapshot is not None
    assert await _stdout(sdk, box, "cat", "kept.txt") == "kept\n"  # a new session


def test_the_cli_pauses_resumes_and_forks_with_memory(cli: Cli, emberd: Emberd) -> None:
    name = cli.create("--runtime", "microvm")
    cli.ok("exec", name, "sh", "-c", "echo 41 > /dev/shm/answer")  # a tmpfs: memory
    assert cli.ok("pause", name) == f"{name}: paused\n"
    listed = {row["name"]: row for row in json.loads(cli.ok("list", "--json"))}
    assert listed[name]["paused"] is True  # paused ones are listed without --all
    assert "paused" in cli.ok("list")
    assert cli.ok("resume", name) == f"{name}: running\n"
    copy = f"{name}-copy"
    cli.made.append(copy)
    assert cli.ok("fork", name, "--name", copy, "--with-memory") == f"{copy}\n"
    assert cli.ok("exec", copy, "cat", "/dev/shm/answer") == "41\n"
    refused = cli("pause", cli.create("--runtime", "container"))
    assert refused.returncode != 0 and "microvm" in refused.stderr
