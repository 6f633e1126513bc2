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


class Phases:
    def __init__(self, runtime: ContainerRuntime) -> None:
        self.runtime = runtime
        self.samples: dict[str, list[float]] = defaultdict(list)
        self._undo: list[Callable[[], None]] = []

    def record(self, phase: str, ms: float) -> None:
        self.samples[phase].append(ms)

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
