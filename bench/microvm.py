"""MicroVMs: boot, restore, round trip, memory, pause and resume, and QEMU's floor.

All in this host's acceleration (the probe's verdict; TCG on the development
machine, where /dev/kvm cannot run a stock kernel).

  microvm_cold_boot_to_first_output  start() with no template (kernel, initramfs,
                                     agent over virtio-serial) → `echo hi`'s output
  microvm_restore_to_first_output    start() from the image's template (a copy of a
                                     booted, paused guest) → `echo hi`'s output
  microvm_warm_start_to_first_output start() taking a warm guest (restored from the
                                     template ahead of time, runtime/warm.py), with
                                     one ready → `echo hi`'s output
  microvm_command_roundtrip          `/bin/true` through a running guest's agent
  microvm_idle_host_memory           PSS of an idle guest's QEMU (MiB), 2 s after start
  microvm_pause / microvm_resume     a 256 MiB guest: memory saved to a file and the VM
                                     ended; restored until its agent answers
  baseline_qemu_boot_to_marker       the same kernel and initramfs booted to init's
                                     marker (no disk, no agent): QEMU's floor
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ember.runtime import Resources, SessionSpec
from ember.runtime.microvm import MicroVmRuntime
from ember.runtime.qemu import boot_to_marker
from measure import ms_since, now
from sessions import RoundTrip, Sessions, finish_even_if_cancelled, start_to_first_output

SMALL_GUEST = Resources(vcpus=1, memory_mib=256)


def _pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no Pss for {pid}")


class MicroVmBench:
    def __init__(self, data_dir: str, image_id: str, prefix: str, id_shift: int) -> None:
        self.cold = MicroVmRuntime(data_dir, id_shift=id_shift, templates=False)
        self.warm = MicroVmRuntime(data_dir, id_shift=id_shift, templates=True)
        self.pooled = MicroVmRuntime(data_dir, id_shift=id_shift, templates=True, warm=1)
        self.pooled_sessions = Sessions(self.pooled, image_id, f"{prefix}-vp")  # type: ignore[arg-type]
        self.cold_sessions = Sessions(self.cold, image_id, f"{prefix}-vc")  # type: ignore[arg-type]
        self.warm_sessions = Sessions(self.warm, image_id, f"{prefix}-vw")  # type: ignore[arg-type]
        self.roundtrip = RoundTrip(self.warm_sessions)
        self.image_id = image_id
        self.verdict: dict[str, object] = {}

    async def open(self) -> None:
        self.verdict = await asyncio.to_thread(self.warm.prepare)
        await asyncio.to_thread(self.cold.prepare)
        await start_to_first_output(self.warm_sessions)  # builds the template if needed
        await self.roundtrip.open()

    async def close(self) -> list[str]:
        errors = [
            *await self.warm_sessions.close(),
            *await self.cold_sessions.close(),
            *await self.pooled_sessions.close(),
        ]
        await asyncio.to_thread(self.pooled.close)
        return errors

    async def cold_boot_ms(self) -> float:
        return (await start_to_first_output(self.cold_sessions))[0]

    async def restore_ms(self) -> float:
        return (await start_to_first_output(self.warm_sessions))[0]

    async def warm_start_ms(self) -> float:
        """A start that takes a warm guest: waits (untimed) until one is ready."""
        await asyncio.to_thread(self.pooled.prepare)
        template = self.pooled._template_dir(SessionSpec("probe", self.image_id))
        for _ in range(1200):
            if self.pooled.warm.ready.get(template):
                break
            if not self.pooled.warm.filling.get(template):
                await start_to_first_output(self.pooled_sessions)  # the first one fills it
                continue
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("no warm guest became ready in a minute")
        return (await start_to_first_output(self.pooled_sessions))[0]

    async def roundtrip_ms(self) -> float:
        return await self.roundtrip.once()

    async def idle_memory_mib(self) -> float:
        session_id = self.warm_sessions.new_id("mem")
        await self.warm_sessions.start(session_id)
        try:
            await asyncio.sleep(2)
            pid = int((self.warm.vms_dir / session_id / "qemu.pid").read_text())
            return _pss_mib(pid)
        finally:
            await self.warm_sessions.discard(session_id)

    async def pause_resume_ms(self) -> tuple[float, float]:
        session_id = self.warm_sessions.new_id("pause")
        self.warm_sessions.live.append(session_id)
        spec = SessionSpec(session_id, self.image_id, resources=SMALL_GUEST)
        await finish_even_if_cancelled(self.warm.start(spec))
        try:
            started = now()
            await self.warm.pause(session_id)
            paused_ms = ms_since(started)
            started = now()
            await self.warm.resume(session_id)
            return paused_ms, ms_since(started)
        finally:
            await self.warm_sessions.discard(session_id)

    def qemu_floor_ms(self) -> float:
        kernel, initramfs = self.warm._kernel, self.warm._initramfs
        assert kernel is not None and initramfs is not None
        seconds, what = boot_to_marker(kernel.vmlinuz, initramfs, str(self.verdict["accel"]))
        if seconds is None:
            raise RuntimeError(f"the floor boot failed: {what}")
        return seconds * 1000
