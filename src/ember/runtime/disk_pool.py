"""Writable-layer disks made and mounted ahead of time.

Copying a disk from its template and loop-mounting it costs ~13 ms, a good
share of a session's start. The pool keeps a few ready, mounted and with the
overlay's upper and work directories made; a start moves one into its
session directory (a rename and a mount move) and a background thread makes
the next. Each process has its own pool directory; those of dead processes
are removed when a new pool opens, and `close()` removes this one's.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from pathlib import Path

from . import disk, mounts, proc

DISK = "disk.img"
MOUNT = "mnt"


class DiskPool:
    def __init__(
        self, root: Path, templates: Path, *, size_mib: int, root_id: int, target: int
    ) -> None:
        self.size_mib = size_mib
        self.root_id = root_id
        self.target = target
        self.templates = templates
        root.mkdir(parents=True, exist_ok=True)
        self._remove_dead(root)
        self.dir = root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir()
        self._ready: list[Path] = []
        self._lock = threading.Lock()
        self._filling: threading.Thread | None = None
        self._closed = threading.Event()

    @staticmethod
    def _remove_dead(root: Path) -> None:
        for entry in root.iterdir():
            pid = entry.name.split("-", 1)[0]
            if pid.isdigit() and proc.pid_alive(int(pid)):
                continue
            mounts.remove_tree(str(entry))

    def take(self, target_dir: Path) -> bool:
        """Move a ready disk into `target_dir` (as disk.img, mounted at upper/)."""
        with self._lock:
            entry = self._ready.pop() if self._ready else None
        self.refill()
        if entry is None:
            return False
        os.rename(entry / DISK, target_dir / DISK)
        (target_dir / "upper").mkdir()
        mounts.move(str(entry / MOUNT), str(target_dir / "upper"))
        shutil.rmtree(entry)
        return True

    def refill(self) -> None:
        """Make disks up to the target, in one background thread."""
        with self._lock:
            if self._closed.is_set() or (self._filling is not None and self._filling.is_alive()):
                return
            self._filling = threading.Thread(target=self._fill, name="disk-pool", daemon=True)
            self._filling.start()

    def _fill(self) -> None:
        while True:
            with self._lock:
                if self._closed.is_set() or len(self._ready) >= self.target:
                    return
            entry = self.dir / uuid.uuid4().hex[:12]
            entry.mkdir()
            try:
                disk.create_disk(
                    str(entry / DISK),
                    self.size_mib,
                    root_id=self.root_id,
                    templates=str(self.templates),
                )
                disk.mount_disk(str(entry / DISK), str(entry / MOUNT), read_only=False)
                disk.prepare_upper(str(entry / MOUNT), root_id=self.root_id)
            except (OSError, proc.ProcessError):
                mounts.remove_tree(str(entry))
                return  # the start path makes its own disk
            with self._lock:
                if self._closed.is_set():
                    mounts.remove_tree(str(entry))
                    return
                self._ready.append(entry)

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            filling = self._filling
        if filling is not None:
            filling.join()
        mounts.remove_tree(str(self.dir))
