"""The microVM runtime on this host (TCG: its /dev/kvm cannot run a stock kernel).

Each test boots real QEMU microVMs with Debian's cloud kernel and Ember's
initramfs, and talks to the agent inside over virtio-serial.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ember.image import ImageInfo
from ember.runtime import Resources, SessionSpec, SessionStatus
from ember.runtime.container import default_id_shift
from ember.runtime.microvm import MicroVmRuntime

from ..conftest import DATA_DIR, RUN_PREFIX, TestSession, session_starter

pytestmark = pytest.mark.integration


@pytest.fixture
async def start_vm(vm_runtime: MicroVmRuntime, image: ImageInfo) -> AsyncIterator[Any]:
    async for start in session_starter(vm_runtime, image):
        yield start


async def test_a_guest_runs_its_own_kernel_and_sees_nothing_of_the_host(start_vm: Any) -> None:
    session = await start_vm()
    kernel = await session.run(["uname", "-r"])
    assert kernel.exit_code == 0
    assert kernel.stdout.decode().strip() != os.uname().release
    assert kernel.stdout.decode().strip().endswith("-cloud-amd64")
    whoami = await session.run(["sh", "-c", "id -un; pwd"])
    assert whoami.stdout.decode().split() == ["vercel-sandbox", "/vercel/sandbox"]
    # No host devices, and only the guest's own processes.
    devices = await session.run(["ls", "/dev"])
    assert b"kvm" not in devices.stdout and b"vda" in devices.stdout
    processes = await session.run(["sh", "-c", "ls -d /proc/[0-9]* | wc -l"])
    assert int(processes.stdout) < 100  # the host has far more
    everything = await session.sh("cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    assert b"pytest" not in everything.stdout and b"emberd" not in everything.stdout


async def test_files_persist_through_stop_freeze_and_a_new_session(
    vm_runtime: MicroVmRuntime, start_vm: Any
) -> None:
    first = await start_vm()
    wrote = await first.sh("echo kept > /vercel/sandbox/note.txt && sync")
    assert wrote.exit_code == 0, wrote.stderr
    await vm_runtime.stop(first.session_id)
    assert (await vm_runtime.info(first.session_id)).status == SessionStatus.STOPPED
    layer_id = f"{RUN_PREFIX}-l{uuid.uuid4().hex[:8]}"
    frozen = await vm_runtime.freeze(first.session_id, layer_id)
    try:
        second = await start_vm(top_layer=frozen.layer_id)
        read = await second.run(["cat", "/vercel/sandbox/note.txt"])
        assert read.stdout == b"kept\n"
        await vm_runtime.discard(second.session_id)
    finally:
        vm_runtime.layers.delete(layer_id)


@pytest.mark.parametrize("trigger", ["o", "c"], ids=["poweroff", "kernel-panic"])
async def test_a_poweroff_or_panic_ends_only_that_session_and_keeps_its_disk(
    vm_runtime: MicroVmRuntime, start_vm: Any, trigger: str
) -> None:
    doomed, bystander = await asyncio.gather(start_vm(), start_vm())
    await doomed.sh("echo before > /vercel/sandbox/state.txt && sync")
    await doomed.start(["sh", "-c", f"echo {trigger} > /proc/sysrq-trigger"], user="root")
    for _ in range(300):
        if (await vm_runtime.info(doomed.session_id)).status == SessionStatus.STOPPED:
            break
        await asyncio.sleep(0.1)
    assert (await vm_runtime.info(doomed.session_id)).status == SessionStatus.STOPPED
    assert (vm_runtime.vms_dir / doomed.session_id / "disk.qcow2").exists()
    assert (await bystander.run(["echo", "still here"])).stdout == b"still here\n"


def test_a_microvm_sandbox_through_the_api_keeps_its_files_across_stop_and_resume(
    emberd: Any,
) -> None:
    """`runtime: "microvm"` (Ember's extension) on create; the rest of the API unchanged."""
    from .test_api_lifecycle import create, run, stop, write_file

    with emberd.client() as api:
        created = create(api, runtime="microvm", persistent=True)
        sandbox, session = created["sandbox"], created["session"]
        assert sandbox["runtime"] == "microvm" and session["runtime"] == "microvm"
        code, out, _ = run(api, session["id"], "uname", "-r")
        assert code == 0 and out.strip() != os.uname().release
        write_file(api, session["id"], "vercel/sandbox/notes.txt", b"kept in a qcow2 layer")
        stopped = stop(api, session["id"])
        assert stopped["snapshot"]["status"] == "created"
        resumed = api.get(f"/v2/sandboxes/{sandbox['name']}", params={"resume": "true"}).json()
        assert resumed["session"]["runtime"] == "microvm"
        read = api.post(
            f"/v2/sandboxes/sessions/{resumed['session']['id']}/fs/read",
            json={"path": "notes.txt"},
        )
        assert read.status_code == 200 and read.content == b"kept in a qcow2 layer"
        assert api.delete(f"/v2/sandboxes/{sandbox['name']}").status_code == 200


def test_the_api_reports_a_guest_that_powered_off_as_stopped_with_its_files(
    emberd: Any,
) -> None:
    from .test_api_lifecycle import create, run

    with emberd.client() as api:
        created = create(api, runtime="microvm", persistent=True)
        name, sid = created["sandbox"]["name"], created["session"]["id"]
        code, _, _ = run(api, sid, "sh", "-c", "echo before > /vercel/sandbox/state.txt; sync")
        assert code == 0
        detached = api.post(
            f"/v2/sandboxes/sessions/{sid}/cmd",
            json={"command": "sh", "args": ["-c", "echo o > /proc/sysrq-trigger"], "sudo": True},
        )
        assert detached.status_code == 200, detached.text
        session: dict[str, Any] = {}
        for _ in range(200):
            session = api.get(f"/v2/sandboxes/sessions/{sid}").json()["session"]
            if session["status"] == "stopped":
                break
            time.sleep(0.1)
        assert session["status"] == "stopped"
        sandbox = api.get(f"/v2/sandboxes/{name}").json()["sandbox"]
        assert sandbox["currentSnapshotId"]  # persistent: stopped as a stop does
        resumed = api.get(f"/v2/sandboxes/{name}", params={"resume": "true"}).json()
        read = api.post(
            f"/v2/sandboxes/sessions/{resumed['session']['id']}/fs/read",
            json={"path": "state.txt"},
        )
        assert read.status_code == 200 and read.content == b"before\n"
        assert api.delete(f"/v2/sandboxes/{name}").status_code == 200


async def test_a_microvm_gets_the_session_network_and_its_policy(
    image: ImageInfo, upstream: Any, tmp_path: Any
) -> None:
    """A tap bridged into the session's namespace: the same firewall, DNS and proxy."""
    from ember.network import EgressSettings, NetworkManager
    from ember.testing.netlab import UPSTREAM_IP

    network = await asyncio.to_thread(
        NetworkManager, tmp_path, egress=EgressSettings([UPSTREAM_IP], upstream.ca_path)
    )
    runtime = MicroVmRuntime(DATA_DIR, id_shift=default_id_shift(), network=network)
    session_id = f"{RUN_PREFIX}-vmnet-{uuid.uuid4().hex[:6]}"
    fork_id = f"{RUN_PREFIX}-vmnetf-{uuid.uuid4().hex[:6]}"
    try:
        await asyncio.to_thread(runtime.prepare)
        await runtime.start(
            SessionSpec(session_id, image.image_id, network_policy={"mode": "allow-all"})
        )
        session = TestSession(runtime, session_id)  # type: ignore[arg-type]
        fetch = ["curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}"]
        assert (await session.run([*fetch, "http://api.example.test/"])).stdout == b"200"
        # Runtimes take the stored form (the API's parse adds "mode").
        await runtime.set_network_policy(
            session_id, {"mode": "custom", "allow": ["api.example.test"]}
        )
        assert (await session.run([*fetch, "http://api.example.test/"])).stdout == b"200"
        assert (await session.run([*fetch, "http://bad.test/"])).stdout == b"000"  # no name
        # Header injection: the guest trusts the installation's CA (bound over its bundle).
        secret = {"headers": {"authorization": "Bearer vm-secret"}}
        await runtime.set_network_policy(
            session_id, {"mode": "custom", "allow": {"secret.test": [{"transform": [secret]}]}}
        )
        seen = await session.run(["curl", "-s", "-m", "10", "https://secret.test/"])
        assert b"vm-secret" in seen.stdout, seen.stderr
        await runtime.set_network_policy(session_id, {"mode": "deny-all"})
        assert (await session.run([*fetch, "http://api.example.test/"])).stdout == b"000"
        usage = await runtime.usage(session_id)
        assert usage.ingress_bytes > 0 and usage.egress_bytes > 0

        # Pausing gives the network back; resuming attaches one again, with its policy.
        await runtime.pause(session_id)
        assert network.address(session_id) is None
        await runtime.resume(session_id, {"mode": "allow-all"})
        assert (await session.run([*fetch, "http://api.example.test/"])).stdout == b"200"
        # A fork of a networked session: its own namespace, address and hostname.
        await runtime.pause(session_id)
        spec = (await runtime.info(session_id)).spec
        await runtime.fork(
            session_id, dataclasses.replace(spec, session_id=fork_id, hostname="forked")
        )
        fork = TestSession(runtime, fork_id)  # type: ignore[arg-type]
        fork._n = 1000  # the fork's agent remembers the source's commands: new ids
        await runtime.resume(session_id)
        addresses = {network.address(session_id), network.address(fork_id)}
        assert None not in addresses and len(addresses) == 2
        shown = await fork.run(["ip", "-4", "-o", "addr", "show", "eth0"])
        assert f" {network.address(fork_id)}/".encode() in shown.stdout
        assert (await fork.run(["hostname"])).stdout == b"forked\n"
        for each in (fork, session):
            assert (await each.run([*fetch, "http://api.example.test/"])).stdout == b"200"
    finally:
        for each_id in (session_id, fork_id):
            if each_id in await runtime.sessions():
                await runtime.discard(each_id)
        await asyncio.to_thread(network.firewall.uninstall)
        network.close()
    assert network.address(session_id) is None  # its lease went with it
    assert network.address(fork_id) is None


COUNTER = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.2; done"


async def _numbers(session: TestSession, cmd_id: str, at_least: int) -> list[int]:
    """The counter's output so far, once it has printed `at_least` numbers."""
    for _ in range(300):
        seen: list[int] = []
        async for item in session.agent.logs(cmd_id):
            if hasattr(item, "data"):
                seen += [int(n) for n in item.data.split()]
                if len(seen) >= at_least:
                    return seen
        await asyncio.sleep(0.1)
    raise AssertionError(f"the counter printed only {seen}")


async def test_warm_guests_take_each_session_s_identity(
    image: ImageInfo, upstream: Any, tmp_path: Any
) -> None:
    """A warm guest (restored ahead of time) becomes a session: its own name,
    address, network policy, clock and randomness; none is left after close()."""
    from ember.network import EgressSettings, NetworkManager
    from ember.testing.netlab import UPSTREAM_IP

    network = await asyncio.to_thread(
        NetworkManager, tmp_path, egress=EgressSettings([UPSTREAM_IP], upstream.ca_path)
    )
    runtime = MicroVmRuntime(DATA_DIR, id_shift=default_id_shift(), network=network, warm=1)
    ids = [f"{RUN_PREFIX}-vmw{n}-{uuid.uuid4().hex[:6]}" for n in range(2)]
    fetch = ["curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}"]
    try:
        await asyncio.to_thread(runtime.prepare)
        policy = {"mode": "allow-all"}
        await runtime.start(SessionSpec(ids[0], image.image_id, network_policy=policy))
        template = runtime._template_dir(SessionSpec(ids[0], image.image_id))
        for _ in range(600):  # the first start began restoring a warm guest
            if runtime.warm.ready.get(template):
                break
            await asyncio.sleep(0.1)
        assert runtime.warm.ready.get(template), "no warm guest was made"
        denied = {"mode": "custom", "allow": ["api.example.test"]}
        spec = SessionSpec(ids[1], image.image_id, network_policy=denied, hostname="warmed")
        await runtime.start(spec)
        assert not runtime.warm.ready.get(template)  # it was taken
        first, second = (TestSession(runtime, i) for i in ids)
        second._n = 1000
        assert (await second.run(["hostname"])).stdout == b"warmed\n"
        shown = await second.run(["ip", "-4", "-o", "addr", "show", "eth0"])
        assert f" {network.address(ids[1])}/".encode() in shown.stdout
        assert (await second.run([*fetch, "http://api.example.test/"])).stdout == b"200"
        assert (await second.run([*fetch, "http://bad.test/"])).stdout == b"000"  # its policy
        clock = await second.run(["date", "+%s"])
        assert abs(int(clock.stdout) - int(time.time())) < 5
        draw = ["sh", "-c", "head -c 16 /dev/urandom | od -An -tx1"]
        assert (await first.run(draw)).stdout != (await second.run(draw)).stdout
    finally:
        for session_id in ids:
            if session_id in await runtime.sessions():
                await runtime.discard(session_id)
        await asyncio.to_thread(runtime.close)
        await asyncio.to_thread(network.firewall.uninstall)
        network.close()
    assert not list(runtime.vms_dir.glob(".warm-*")), "warm guests left behind"
    namespaces = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert not [n for n in namespaces if n.startswith("ember-warm-")]


async def test_pause_and_resume_keep_processes_and_memory(
    vm_runtime: MicroVmRuntime, start_vm: Any
) -> None:
    session = await start_vm()
    counter = await session.start(["sh", "-c", COUNTER])
    before = await _numbers(session, counter, 3)
    await vm_runtime.pause(session.session_id)
    assert (await vm_runtime.info(session.session_id)).status == SessionStatus.PAUSED
    await vm_runtime.resume(session.session_id)
    after = await _numbers(session, counter, len(before) + 5)
    # The same process went on counting: no restart from 1, no gap.
    assert after[: len(before)] == before
    assert after == list(range(1, len(after) + 1))
    clock = await session.run(["date", "+%s"])
    assert abs(int(clock.stdout) - int(time.time())) < 5  # set after the restore


async def test_forks_of_a_paused_session_share_its_state_and_diverge(
    vm_runtime: MicroVmRuntime, start_vm: Any
) -> None:
    source = await start_vm()
    await source.sh("echo shared > /vercel/sandbox/state.txt")
    await vm_runtime.pause(source.session_id)
    forks = []
    for _ in range(2):
        fork_id = f"{RUN_PREFIX}-vmf-{uuid.uuid4().hex[:6]}"
        spec = (await vm_runtime.info(source.session_id)).spec
        await vm_runtime.fork(source.session_id, dataclasses.replace(spec, session_id=fork_id))
        fork = TestSession(vm_runtime, fork_id)  # type: ignore[arg-type]
        fork._n = 1000  # the fork's agent remembers the source's commands: new ids
        forks.append(fork)
    try:
        for fork in forks:
            assert (await fork.run(["cat", "/vercel/sandbox/state.txt"])).stdout == b"shared\n"
        await forks[0].sh("echo mine > /vercel/sandbox/state.txt")
        assert (await forks[1].run(["cat", "/vercel/sandbox/state.txt"])).stdout == b"shared\n"
        draws = [
            (await fork.run(["sh", "-c", "head -c 16 /dev/urandom | od -An -tx1"])).stdout
            for fork in forks
        ]
        assert draws[0] != draws[1]
    finally:
        for fork in forks:
            await vm_runtime.discard(fork.session_id)


async def test_the_shared_limits_hold_in_a_guest(start_vm: Any) -> None:
    """Timeouts, memory and the agent's survival, as in a container (test_limits.py)."""
    session = await start_vm(resources=Resources(vcpus=1, memory_mib=512))
    timed_out = await session.run(["sleep", "30"], timeout_ms=500)
    assert timed_out.exit_code == 137
    hog = await session.run(
        # In 64 MiB steps: one allocation larger than the guest's memory is
        # refused outright (MemoryError) by the kernel's overcommit heuristic.
        [
            "/usr/bin/python3",
            "-c",
            "chunks = [bytearray(64 * 1024 ** 2) for _ in range(16)]; print('allocated')",
        ]
    )
    assert hog.exit_code == 137 and b"allocated" not in hog.stdout  # the guest's OOM killer
    assert (await session.run(["echo", "alive"])).stdout == b"alive\n"
    # Files through the agent, as the API's fs endpoints use them.
    await session.agent.mkdir("/vercel/sandbox/dir")
    listed = await session.run(["ls", "-d", "/vercel/sandbox/dir"])
    assert listed.exit_code == 0


async def test_vcpus_and_memory_are_the_guests(start_vm: Any) -> None:
    session = await start_vm(resources=Resources(vcpus=2, memory_mib=512))
    assert (await session.run(["nproc"])).stdout == b"2\n"
    meminfo = (await session.run(["grep", "MemTotal", "/proc/meminfo"])).stdout.split()
    assert 400 * 1024 < int(meminfo[1]) <= 512 * 1024  # kB, less what the kernel keeps


async def test_a_guest_disk_holds_its_limit(start_vm: Any, vm_runtime: MicroVmRuntime) -> None:
    """`disk_mib` is the room the session has above the image, as in a container."""
    session = await start_vm(resources=Resources(vcpus=1, disk_mib=64))
    sdir = vm_runtime.vms_dir / session.session_id
    free = await session.run(["df", "--output=avail", "-B1M", "/"])
    assert 40 <= int(free.stdout.split()[-1]) <= 200, free.stdout
    full = await session.sh("dd if=/dev/zero of=/vercel/sandbox/big bs=1M count=300")
    assert full.exit_code != 0 and b"No space left on device" in full.stderr
    await session.sh("sync")
    # The overlay on the host grew by what the guest could write, not by 300 MiB.
    assert (sdir / "disk.qcow2").stat().st_blocks * 512 < 250 * 2**20
    await session.agent.remove("/vercel/sandbox/big")
    again = await session.sh("dd if=/dev/zero of=/vercel/sandbox/small bs=1M count=10 && sync")
    assert again.exit_code == 0, again.stderr
    assert (await session.run(["echo", "alive"])).stdout == b"alive\n"


async def test_deep_snapshot_chains_are_flattened(image: ImageInfo) -> None:
    """Past the depth limit a layer is rebased onto the image's root disk: it no
    longer needs its ancestors."""
    from ember.snapshots import LayerStore

    runtime = MicroVmRuntime(
        DATA_DIR, id_shift=default_id_shift(), layers=LayerStore(DATA_DIR, max_depth=1)
    )
    layers: list[str] = []
    top: str | None = None
    try:
        for name in ("a", "b"):
            session_id = f"{RUN_PREFIX}-vmflat-{uuid.uuid4().hex[:6]}"
            await runtime.start(SessionSpec(session_id, image.image_id, top_layer=top))
            session = TestSession(runtime, session_id)  # type: ignore[arg-type]
            await session.sh(f"echo {name} > /vercel/sandbox/{name}.txt")
            await runtime.stop(session_id)
            layer_id = f"{RUN_PREFIX}-fl{uuid.uuid4().hex[:8]}"
            frozen = await runtime.freeze(session_id, layer_id)
            layers.append(layer_id)
            top = frozen.layer_id
        assert runtime.layers.get(layers[0]).parent is None
        flattened = runtime.layers.get(layers[1])
        assert flattened.parent is None and flattened.depth == 1  # would have been 2
        runtime.layers.delete(layers.pop(0))  # its content lives on in the flattened one
        session_id = f"{RUN_PREFIX}-vmflat-{uuid.uuid4().hex[:6]}"
        await runtime.start(SessionSpec(session_id, image.image_id, top_layer=top))
        session = TestSession(runtime, session_id)  # type: ignore[arg-type]
        both = await session.sh("cat /vercel/sandbox/a.txt /vercel/sandbox/b.txt")
        assert both.stdout == b"a\nb\n"
        await runtime.discard(session_id)
    finally:
        for layer_id in layers:
            runtime.layers.delete(layer_id)


async def test_a_new_runtime_adopts_running_guests(
    vm_runtime: MicroVmRuntime, start_vm: Any
) -> None:
    """What a restarted emberd does: its agent channels come back when it lists sessions."""
    session = await start_vm()
    await session.sh("echo before > /tmp/mark")
    await vm_runtime.release(session.session_id)  # as the exiting emberd would
    successor = MicroVmRuntime(DATA_DIR, id_shift=default_id_shift())
    try:
        assert session.session_id in await successor.sessions()
        adopted = TestSession(successor, session.session_id)  # type: ignore[arg-type]
        adopted._n = 1000
        assert (await adopted.run(["cat", "/tmp/mark"])).stdout == b"before\n"
        assert (await successor.info(session.session_id)).status == SessionStatus.RUNNING
    finally:
        await successor.release(session.session_id)


def test_a_microvm_session_survives_a_crash_of_emberd(emberd: Any) -> None:
    """kill -9 of emberd: the guest runs on, and the next emberd adopts it."""
    from .test_api_lifecycle import create, run
    from .test_api_restart import restart

    with emberd.client() as api:
        created = create(api, runtime="microvm")
        name, sid = created["sandbox"]["name"], created["session"]["id"]
        boot = run(api, sid, "cat", "/proc/sys/kernel/random/boot_id")[1]
    with restart(emberd) as after:
        sandbox = after.get(f"/v2/sandboxes/{name}").json()["sandbox"]
        assert sandbox["status"] == "running" and sandbox["currentSessionId"] == sid
        # The same boot of the same guest, not a new one.
        assert run(after, sid, "cat", "/proc/sys/kernel/random/boot_id")[1] == boot
        assert after.delete(f"/v2/sandboxes/{name}").status_code == 200
