"""Warm microVM guests: restored from a template ahead of time, waiting for a session.

A session that starts from the image takes a warm guest instead of restoring
one: its directory is renamed to the session's, its network namespace (where
QEMU holds the tap) becomes the session's, and the agent's `restored` sets the
clock, reseeds the RNG and gives it the session's hostname and address. A new
warm guest is then restored in the background. Under TCG this moves the
restore's QEMU start, memory load and cold first steps out of the session's
start (`docs/microvm.md`, "Warm guests").

Each runtime instance keeps its guests under `vms/.warm-<instance>/`, with an
`owner` file holding its process id: instances of other processes sharing the
data directory are never touched, and guests whose owner died (a crash of
emberd) are ended by the next instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from . import mounts, proc
from .channels import HostChannels

log = logging.getLogger("ember.runtime")
PREFIX = ".warm-"


@dataclass
class WarmGuest:
    directory: Path
    netns: str | None  # its namespace (with the tap QEMU opened), when networked
    channels: HostChannels  # the agent's host end, connected
    pid: int  # QEMU's


def warm_netns(directory: Path) -> str:
    return f"ember-warm-{directory.parent.name[len(PREFIX) :]}-{directory.name}"


def end_guest_files(directory: Path) -> None:
    """End a warm guest by what it left on disk: its QEMU (by its pid file, under
    this directory), its namespace, its files. Idempotent; for any thread."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((directory / "qemu.pid").read_text())
        if proc.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while proc.pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
    if os.path.exists(f"/run/netns/{warm_netns(directory)}"):
        subprocess.run(
            ["ip", "netns", "del", warm_netns(directory)], check=False, capture_output=True
        )
    mounts.remove_tree(str(directory))


class WarmPool:
    """Up to `size` warm guests per template, refilled in the background."""

    def __init__(
        self,
        vms_dir: Path,
        size: int,
        make: Callable[[Path, Path], Awaitable[WarmGuest]],
    ) -> None:
        self.size = size
        self.make = make  # (template, new guest's directory) -> a warm guest
        self.root = vms_dir / f"{PREFIX}{uuid.uuid4().hex[:8]}"
        self.ready: dict[Path, list[WarmGuest]] = {}
        self.filling: dict[Path, asyncio.Task[None]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None  # where the guests' channels live
        self.closed = False
        end_orphans(vms_dir)
        if size:
            self.root.mkdir(mode=0o700)
            (self.root / "owner").write_text(str(os.getpid()))

    def take(self, template: Path) -> WarmGuest | None:
        guests = self.ready.get(template)
        return guests.pop(0) if guests else None

    def refill(self, template: Path) -> None:
        """Start restoring warm guests of `template` until there are `size`."""
        if not self.size or self.closed:
            return
        self.loop = asyncio.get_running_loop()
        task = self.filling.get(template)
        if task is None or task.done():
            self.filling[template] = asyncio.create_task(self._fill(template))

    async def _fill(self, template: Path) -> None:
        while not self.closed and len(self.ready.get(template, [])) < self.size:
            directory = self.root / uuid.uuid4().hex[:8]
            try:
                guest = await self.make(template, directory)
            except Exception:
                log.warning("a warm guest of %s could not be made", template, exc_info=True)
                await asyncio.to_thread(end_guest_files, directory)
                return
            except BaseException:  # cancelled by close(): nothing may be left
                await asyncio.shield(asyncio.to_thread(end_guest_files, directory))
                raise
            if self._closed():  # while it was being made
                await asyncio.to_thread(end_guest_files, directory)
                return
            self.ready.setdefault(template, []).append(guest)

    def _closed(self) -> bool:
        return self.closed

    def close(self) -> None:
        """End every warm guest and stop refilling (from any thread)."""
        self.closed = True
        for task in self.filling.values():
            with contextlib.suppress(RuntimeError):  # its loop is gone: nothing runs it
                task.get_loop().call_soon_threadsafe(task.cancel)
        guests = [guest for each in self.ready.values() for guest in each]
        self.ready.clear()
        if guests and self.loop is not None and self.loop.is_running() and not _on(self.loop):
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_close_channels(guests), self.loop).result(
                    timeout=5
                )
        if self.root.exists():
            for directory in self.root.iterdir():
                if directory.is_dir():
                    end_guest_files(directory)
            mounts.remove_tree(str(self.root))


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this thread runs `loop` (it cannot then wait for work on it)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


async def _close_channels(guests: list[WarmGuest]) -> None:
    for guest in guests:
        await guest.channels.close()


def end_orphans(vms_dir: Path) -> None:
    """End the warm guests of runtime instances whose process is gone."""
    for root in vms_dir.glob(f"{PREFIX}*"):
        try:
            owner = int((root / "owner").read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and proc.pid_alive(owner):
            continue
        log.info("ending the warm guests a gone emberd left: %s", root)
        for directory in root.iterdir():
            if directory.is_dir():
                end_guest_files(directory)
        mounts.remove_tree(str(root))
