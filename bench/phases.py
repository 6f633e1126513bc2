"""Where the time of `ContainerRuntime.start` (and `discard`) goes.

Wraps the runtime's steps for the duration of a `with Phases(runtime):`
block — module functions and instance methods, restored afterwards — and
records each step's wall time. Used in a separate pass so the headline
samples run on unmodified code.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections import defaultdict
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import Any

from ember.runtime import disk, mounts
from ember.runtime.container import ContainerRuntime

# Report order: start() and its steps as they happen, then discard()'s.
START_STEPS = ("prepare_rootfs_total", "runc_run_detach", "agent_hello")
ORDER = (
    "start_total",
    "prepare_rootfs_total",
    "create_disk_mkfs",
    "mount_ext4",
    "mount_overlay",
    "runc_run_detach",
    "agent_hello",
    "other",
    "first_output_after_start",
    "discard_teardown",
    "discard_umount_each",
    "discard_remove_tree",
)


class Phases:
    def __init__(self, runtime: ContainerRuntime) -> None:
        self.runtime = runtime
        self.samples: dict[str, list[float]] = defaultdict(list)
        self._undo: list[Callable[[], None]] = []

    def record(self, phase: str, ms: float) -> None:
        self.samples[phase].append(ms)

    def metrics(self) -> dict[str, list[float]]:
        """Samples per metric name (`start_phase_*`, `discard_phase_*`), in ORDER.

        `other` is what start() spends outside its three big steps (config,
        bundle, bookkeeping, thread hops), per start.
        """
        samples = dict(self.samples)
        steps = [samples.get(step, []) for step in START_STEPS]
        totals = samples.get("start_total", [])
        if totals and all(len(s) == len(totals) for s in steps):
            samples["other"] = [t - sum(parts) for t, *parts in zip(totals, *steps, strict=True)]
        names = [n for n in ORDER if n in samples] + sorted(set(samples) - set(ORDER))
        out = {}
        for name in names:
            kind, _, step = name.partition("_")
            key = f"discard_phase_{step}" if kind == "discard" else f"start_phase_{name}"
            out[key] = samples[name]
        return out

    def __enter__(self) -> Phases:
        rt = self.runtime
        self._wrap_module(disk, "create_disk", lambda *a, **k: "create_disk_mkfs")
        self._wrap_module(mounts, "mount", _mount_phase)
        self._wrap_module(mounts, "unmount", lambda *a, **k: "discard_umount_each")
        self._wrap_module(mounts, "remove_tree", lambda *a, **k: "discard_remove_tree")
        self._wrap_method(rt, "_prepare_rootfs", "prepare_rootfs_total")
        self._wrap_method(rt, "_run_container", "runc_run_detach")
        self._wrap_method(rt, "_wait_for_agent", "agent_hello")
        self._wrap_method(rt, "_teardown", "discard_teardown")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        while self._undo:
            self._undo.pop()()

    def _wrap_module(self, module: ModuleType, name: str, phase_of: Callable[..., str]) -> None:
        original = getattr(module, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.record(phase_of(*args, **kwargs), (time.perf_counter() - start) * 1000)

        setattr(module, name, timed)
        self._undo.append(lambda: setattr(module, name, original))

    def _wrap_method(self, obj: object, name: str, phase: str) -> None:
        original = getattr(obj, name)
        if inspect.iscoroutinefunction(original):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    self.record(phase, (time.perf_counter() - start) * 1000)

            setattr(obj, name, timed_async)
        else:

            def timed(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self.record(phase, (time.perf_counter() - start) * 1000)

            setattr(obj, name, timed)
        self._undo.append(lambda: delattr(obj, name))  # back to the class's method


def _mount_phase(source: str, target: str, *, fstype: str | None = None, **_: Any) -> str:
    return "mount_overlay" if fstype == "overlay" else f"mount_{fstype or 'other'}"
