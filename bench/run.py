"""Ember's benchmark: session start and agent latency next to bare runc and the host.

    .venv/bin/python bench/run.py [--quick] --data-dir /var/lib/ember-test

Measures, in one run and interleaved (so a noisy neighbour hurts every
metric alike), and writes bench/results/latest.json:

  container_start_to_first_output  runtime.start() of a fresh session, then
                                   `echo hi` through the agent (exec + logs)
                                   until its first stdout byte; the session is
                                   discarded afterwards, untimed
  agent_roundtrip                  exec `/bin/true` + logs to its exit status,
                                   in one long-lived session
  baseline_runc_run_echo           `runc run` of a bare bundle (from `runc
                                   spec`) over the image rootfs, read-only,
                                   running `echo hi`, stdout captured
  baseline_host_subprocess_echo    a host `echo hi` with captured output
  file_write_100mb/file_read_100mb agent write_tar / read_file of 100 MiB
  start_phase_*, discard_phase_*   a separate, instrumented pass over start()
                                   and discard(), step by step
  http_create_to_first_output      through a real emberd: POST /v3/sandboxes,
                                   then a blocking `echo hi` until its first
                                   stdout line (the sandbox is deleted after)
  http_command_roundtrip           a blocking `/bin/true` through HTTP, to the
                                   final NDJSON line
  resume_10mb_to_first_output      a sandbox with a 10 MB diff: stop (untimed),
                                   then GET ?resume=true and `echo hi` until
                                   its first output
  fs_write_100mb / fs_read_100mb   POST fs/write (a gzip tar made beforehand)
                                   and fs/read of 100 MiB
  net_attach, route_roundtrip,     networking, measured near the end and on
  direct_roundtrip, nat_throughput its own: see bench/network.py
  proxy_throughput, baseline_veth_throughput
  microvm_*,                       microVMs, last, in the host's acceleration
  baseline_qemu_boot_to_marker     (TCG here): see bench/microvm.py

Every metric is warmed up once before sampling. Nothing here asserts on
time. Everything created (sessions, runc containers, the temp bundle) is
named `bench-<random>...` and removed on the way out, on error or Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:  # run as a file, this is already so
    sys.path.insert(0, str(BENCH_DIR))

from baselines import RuncBaseline, subprocess_echo, which  # noqa: E402
from ember.image import ImageRecipe, ImageStore  # noqa: E402
from ember.runtime import proc  # noqa: E402
from ember.runtime.container import ContainerRuntime, default_id_shift  # noqa: E402
from http_api import TRANSFER_BYTES as HTTP_TRANSFER_BYTES  # noqa: E402
from http_api import HttpBench, tar_gz  # noqa: E402
from measure import latency, ratio, throughput  # noqa: E402
from microvm import MicroVmBench  # noqa: E402
from network import SINK_NAME, STREAM_BYTES, NetworkBench, RouteBench  # noqa: E402
from phases import Phases  # noqa: E402
from sessions import RoundTrip, Sessions, random_payload, start_to_first_output  # noqa: E402

DEFAULT_OUT = BENCH_DIR / "results" / "latest.json"
TRANSFER_BYTES = 100 * 1024 * 1024
TRANSFER_NAME = "ember-bench-100mb.bin"

START = "container_start_to_first_output"
ROUNDTRIP = "agent_roundtrip"
RUNC = "baseline_runc_run_echo"
SUBPROCESS = "baseline_host_subprocess_echo"
WRITE = "file_write_100mb"
READ = "file_read_100mb"
HTTP_CREATE = "http_create_to_first_output"
HTTP_ROUNDTRIP = "http_command_roundtrip"
RESUME = "resume_10mb_to_first_output"
FS_WRITE = "fs_write_100mb"
FS_READ = "fs_read_100mb"
NET_ATTACH = "net_attach"
ROUTE = "route_roundtrip"
DIRECT = "direct_roundtrip"
NAT = "nat_throughput"
VETH = "baseline_veth_throughput"
PROXY = "proxy_throughput"
VM_COLD = "microvm_cold_boot_to_first_output"
VM_RESTORE = "microvm_restore_to_first_output"
VM_WARM = "microvm_warm_start_to_first_output"
VM_ROUNDTRIP = "microvm_command_roundtrip"
VM_MEMORY = "microvm_idle_host_memory"
VM_PAUSE = "microvm_pause"
VM_RESUME = "microvm_resume"
QEMU_FLOOR = "baseline_qemu_boot_to_marker"
HTTP_FILE = "ember-bench-http-100mb.bin"


@dataclass(frozen=True)
class Plan:
    starts: int
    roundtrips: int
    runc_runs: int
    subprocess_runs: int
    transfers: int  # each way
    profiled_starts: int
    http_creates: int
    http_roundtrips: int
    resumes: int
    net_attaches: int
    route_roundtrips: int  # each way: through the route, and direct
    streams: int  # each path: NAT, the egress proxy, and the plain veth
    vm_boots: int  # cold, and the QEMU floor
    vm_restores: int
    vm_roundtrips: int
    vm_pauses: int  # pause + resume pairs, also the idle-memory samples


NORMAL = Plan(
    starts=30,
    roundtrips=200,
    runc_runs=30,
    subprocess_runs=200,
    transfers=3,
    profiled_starts=20,
    http_creates=20,
    http_roundtrips=200,
    resumes=20,
    net_attaches=30,
    route_roundtrips=200,
    streams=3,
    vm_boots=5,
    vm_restores=10,
    vm_roundtrips=50,
    vm_pauses=5,
)
QUICK = Plan(
    starts=5,
    roundtrips=30,
    runc_runs=5,
    subprocess_runs=30,
    transfers=1,
    profiled_starts=3,
    http_creates=5,
    http_roundtrips=30,
    resumes=5,
    net_attaches=5,
    route_roundtrips=30,
    streams=1,
    vm_boots=2,
    vm_restores=3,
    vm_roundtrips=10,
    vm_pauses=2,
)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, data_dir: str, plan: Plan) -> None:
        self.plan = plan
        self.id_shift = default_id_shift()
        log(f"image in {data_dir} (id shift {self.id_shift})")
        self.image = ImageStore(data_dir).ensure(ImageRecipe().with_id_shift(self.id_shift))
        self.runtime = ContainerRuntime(data_dir, id_shift=self.id_shift)
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.runc_path = which("runc")
        self.sessions = Sessions(self.runtime, self.image.image_id, self.prefix)
        self.runc = RuncBaseline(self.runc_path, self.image.rootfs, self.prefix)
        self.roundtrip = RoundTrip(self.sessions)
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.start_only_ms: list[float] = []
        self.transfer_seconds: dict[str, list[float]] = defaultdict(list)
        self.phases: dict[str, list[float]] = {}
        # Loopback-only sessions, as before networking: a networked start adds
        # net_attach, measured on its own. One networked emberd per host: the
        # route metrics start theirs.
        self.http = HttpBench(data_dir, self.prefix, extra_args=("--no-network",))
        self.http_session = ""
        self.resume_name = ""
        self.routes = RouteBench(data_dir, self.prefix)
        self.net = NetworkBench(data_dir, self.prefix)
        self.microvms = MicroVmBench(data_dir, self.image.image_id, self.prefix, self.id_shift)
        self.vm_memory_mib: list[float] = []

    # -- one sample of each latency metric, in ms -----------------------------

    async def sample_start(self) -> float:
        total_ms, started_ms = await start_to_first_output(self.sessions)
        self.start_only_ms.append(started_ms)
        return total_ms

    async def sample_roundtrip(self) -> float:
        return await self.roundtrip.once()

    async def sample_runc(self) -> float:
        return self.runc.run_echo()

    async def sample_subprocess(self) -> float:
        return subprocess_echo()

    async def sample_http_create(self) -> float:
        return await self.http.create_to_first_output()

    async def sample_http_roundtrip(self) -> float:
        return await self.http.command_roundtrip(self.http_session)

    async def sample_resume(self) -> float:
        return await self.http.resume_to_first_output(self.resume_name)

    # -- the run ----------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            log("cleaning up")
            self.runc.close()  # first: it never awaits, so a pending cancellation cannot skip it
            await asyncio.to_thread(self.net.close)
            await asyncio.shield(self.routes.close())
            await asyncio.shield(self.http.close())
            errors = await self.sessions.close()
            errors += await self.microvms.close()
            await asyncio.to_thread(self.runtime.close)
            if errors:
                log(f"cleanup failures: {errors}")

    async def _run(self) -> None:
        plan = self.plan
        self.runc.prepare()
        await self.roundtrip.open()
        log("starting emberd")
        await self.http.open()
        _, self.http_session = await self.http.create()
        self.resume_name = await self.http.prepare_resume()
        samplers: dict[str, tuple[int, Callable[[], Awaitable[float]]]] = {
            START: (plan.starts, self.sample_start),
            ROUNDTRIP: (plan.roundtrips, self.sample_roundtrip),
            RUNC: (plan.runc_runs, self.sample_runc),
            SUBPROCESS: (plan.subprocess_runs, self.sample_subprocess),
            HTTP_CREATE: (plan.http_creates, self.sample_http_create),
            HTTP_ROUNDTRIP: (plan.http_roundtrips, self.sample_http_roundtrip),
            RESUME: (plan.resumes, self.sample_resume),
        }
        log("warming up")
        for _, sample in samplers.values():
            await sample()
        self.start_only_ms.clear()
        # Spread every metric's samples evenly over the whole run.
        schedule = sorted(
            ((i + 0.5) / n, order, name)
            for order, (name, (n, _)) in enumerate(samplers.items())
            for i in range(n)
        )
        log(f"sampling: {', '.join(f'{name} x{n}' for name, (n, _) in samplers.items())}")
        for done, (_, _, name) in enumerate(schedule, 1):
            self.samples[name].append(await samplers[name][1]())
            await asyncio.sleep(0)  # lets a Ctrl-C land between samples
            if done % 50 == 0 or done == len(schedule):
                log(f"  {done}/{len(schedule)} samples")
        await self._transfers()
        log("throughput through HTTP")
        await self._http_transfers()
        await self.sessions.discard(self.roundtrip.session_id)
        await self._profile_start()
        await self._network()
        await self._microvm()

    async def _microvm(self) -> None:
        plan = self.plan
        await self.microvms.open()  # probes the acceleration, builds the template
        log(f"microVMs ({self.microvms.verdict.get('accel')}): cold boots x{plan.vm_boots}, "
            f"restores x{plan.vm_restores}, round trips x{plan.vm_roundtrips}, "
            f"pause/resume x{plan.vm_pauses}")  # fmt: skip
        for _ in range(plan.vm_boots):
            self.samples[VM_COLD].append(await self.microvms.cold_boot_ms())
            self.samples[QEMU_FLOOR].append(await asyncio.to_thread(self.microvms.qemu_floor_ms))
        for _ in range(plan.vm_restores):
            self.samples[VM_RESTORE].append(await self.microvms.restore_ms())
        for _ in range(plan.vm_restores):
            self.samples[VM_WARM].append(await self.microvms.warm_start_ms())
        await self.microvms.roundtrip_ms()  # warm-up
        for _ in range(plan.vm_roundtrips):
            self.samples[VM_ROUNDTRIP].append(await self.microvms.roundtrip_ms())
        for _ in range(plan.vm_pauses):
            paused, resumed = await self.microvms.pause_resume_ms()
            self.samples[VM_PAUSE].append(paused)
            self.samples[VM_RESUME].append(resumed)
            self.vm_memory_mib.append(await self.microvms.idle_memory_mib())

    async def _network(self) -> None:
        plan = self.plan
        log("networking: route vs direct round trip through a networked emberd")
        await self.routes.open()
        for _ in range(plan.route_roundtrips + 1):  # interleaved; the first pair warms up
            self.samples[ROUTE].append(await self.routes.route_ms())
            self.samples[DIRECT].append(await self.routes.direct_ms())
        for name in (ROUTE, DIRECT):
            del self.samples[name][0]
        await self.routes.close()
        log(f"networking: attach x{plan.net_attaches}, NAT/proxy/veth x{plan.streams} streams")
        # pyroute2's synchronous API runs an event loop of its own: keep it off ours.
        await asyncio.to_thread(self._network_host_side)

    def _network_host_side(self) -> None:
        self.net.open()
        self.net.attach_ms()  # warm-up
        self.samples[NET_ATTACH] = [self.net.attach_ms() for _ in range(self.plan.net_attaches)]
        nat = self.net.session_network({"mode": "allow-all"})
        proxied = self.net.session_network({"mode": "custom", "allow": [SINK_NAME]})
        for i in range(self.plan.streams + 1):  # interleaved; the first round warms up
            seconds = {
                NAT: self.net.stream_seconds(nat),
                PROXY: self.net.stream_seconds(proxied),
                VETH: self.net.stream_seconds(None),
            }
            if i:
                for name, value in seconds.items():
                    self.transfer_seconds[name].append(value)

    async def _http_transfers(self) -> None:
        archive = tar_gz(
            HTTP_FILE, random_payload() * (HTTP_TRANSFER_BYTES // len(random_payload()))
        )
        for i in range(self.plan.transfers + 1):
            write_s = await self.http.write_100mb(self.http_session, archive)
            read_s = await self.http.read_100mb(self.http_session, HTTP_FILE)
            if i:  # the first pair is the warm-up
                self.transfer_seconds[FS_WRITE].append(write_s)
                self.transfer_seconds[FS_READ].append(read_s)

    async def _transfers(self) -> None:
        log(f"throughput: {self.plan.transfers} x {TRANSFER_BYTES >> 20} MiB each way, + warm-up")
        payload = random_payload()
        for i in range(self.plan.transfers + 1):
            write_s = await self.roundtrip.write_file(TRANSFER_NAME, payload, TRANSFER_BYTES)
            read_s = await self.roundtrip.read_file(TRANSFER_NAME, TRANSFER_BYTES)
            await self.roundtrip.remove_file(TRANSFER_NAME)
            if i:  # the first pair is the warm-up
                self.transfer_seconds[WRITE].append(write_s)
                self.transfer_seconds[READ].append(read_s)

    async def _profile_start(self) -> None:
        n = self.plan.profiled_starts
        log(f"profiling start() and discard(): {n} sessions")
        await start_to_first_output(self.sessions)  # warm-up, unrecorded
        with Phases(self.runtime) as phases:
            for _ in range(n):
                total_ms, started_ms = await start_to_first_output(self.sessions)
                phases.record("start_total", started_ms)
                phases.record("first_output_after_start", total_ms - started_ms)
        self.phases = phases.metrics()

    # -- the report -------------------------------------------------------------

    def results(self, meta: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: latency(self.samples[name])
            for name in (
                START, ROUNDTRIP, RUNC, SUBPROCESS, HTTP_CREATE, HTTP_ROUNDTRIP, RESUME,
                NET_ATTACH, ROUTE, DIRECT, VM_COLD, VM_RESTORE, VM_WARM, VM_ROUNDTRIP,
                VM_PAUSE, VM_RESUME, QEMU_FLOOR,
            )
        }  # fmt: skip
        for name in (WRITE, READ):
            out[name] = throughput(TRANSFER_BYTES, self.transfer_seconds[name])
        for name in (FS_WRITE, FS_READ):
            out[name] = throughput(HTTP_TRANSFER_BYTES, self.transfer_seconds[name])
        for name in (NAT, PROXY, VETH):
            out[name] = throughput(STREAM_BYTES, self.transfer_seconds[name])
        memory = sorted(self.vm_memory_mib)
        out[VM_MEMORY] = {
            "value": round(memory[len(memory) // 2], 1) if memory else None,
            "unit": "MiB",
            "n": len(memory),
            "note": "PSS of an idle guest's QEMU process (1 vCPU, 2048 MiB configured)",
        }
        out["microvm_acceleration"] = self.microvms.verdict.get("accel")
        out["ratios"] = {
            "start_vs_runc": ratio(out[START], out[RUNC]),
            "agent_vs_subprocess": ratio(out[ROUNDTRIP], out[SUBPROCESS]),
            "http_roundtrip_vs_subprocess": ratio(out[HTTP_ROUNDTRIP], out[SUBPROCESS]),
            "route_vs_direct": ratio(out[ROUTE], out[DIRECT]),
            "nat_vs_veth_throughput": round(out[NAT]["value"] / out[VETH]["value"], 2),
            "proxy_vs_veth_throughput": round(out[PROXY]["value"] / out[VETH]["value"], 2),
            "microvm_restore_vs_cold_boot": ratio(out[VM_RESTORE], out[VM_COLD]),
        }
        out["start_phase_runtime_start"] = latency(self.start_only_ms)
        for name, samples in self.phases.items():
            out[name] = latency(samples)
        out["meta"] = meta
        return out


def host_meta(bench: Bench, quick: bool) -> dict[str, Any]:
    uname = os.uname()
    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu_model = next(
            (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), ""
        )
    runc_version = (
        proc.run([bench.runc_path, "--version"], timeout_s=10).stdout.decode().splitlines()[0]
    )
    return {
        "kernel": uname.release,
        "kernel_version": uname.version,
        "arch": uname.machine,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "runc": runc_version,
        "cgroup": "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1",
        "image_id": bench.image.image_id,
        "id_shift": bench.id_shift,
        "quick": quick,
        "plan": asdict(bench.plan),
        "id_prefix": bench.prefix,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_before": list(os.getloadavg()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="few samples: the whole run in well under a minute"
    )
    parser.add_argument(
        "--data-dir", default=os.environ.get("EMBER_TEST_DATA_DIR", "/var/lib/ember-test")
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    args = parser.parse_args()
    if os.geteuid() != 0:
        log("needs root (runc, mounts)")
        return 2

    bench = Bench(args.data_dir, QUICK if args.quick else NORMAL)
    meta = host_meta(bench, args.quick)
    started = time.monotonic()

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None

        def terminated() -> None:
            log("SIGTERM: stopping")
            task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminated)
        await bench.run()

    try:
        asyncio.run(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        traceback.print_exc()  # where it landed: a stray cancellation is a bug to find
        log("interrupted (cleanup ran, see above)")
        return 130
    meta["duration_s"] = round(time.monotonic() - started, 1)
    meta["loadavg_after"] = list(os.getloadavg())
    meta["notes"] = {
        "throughput": f"{TRANSFER_BYTES} bytes, median of {bench.plan.transfers}; MB = 10^6 bytes; "
        "read_file right after write_tar (warm page cache)",
        "sampling": "metrics interleaved over the run; each warmed up once",
        "phases": "start_phase_runtime_start: start() alone, within the headline start samples; "
        "the other start_phase_*/discard_phase_*: a separate pass with start() and discard() "
        "instrumented step by step (discard_phase_umount_each: one umount, two per session)",
        "transfer_seconds": {
            k: [round(s, 3) for s in v] for k, v in bench.transfer_seconds.items()
        },
    }
    results = bench.results(meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
