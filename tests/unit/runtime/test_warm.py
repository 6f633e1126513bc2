"""Warm guests a gone emberd left are ended; a live owner's are not touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ember.runtime.warm import WarmPool, end_orphans


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _leave(vms: Path, name: str, owner: int) -> Path:
    root = vms / name
    (root / "guest1").mkdir(parents=True)
    (root / "guest1" / "disk.qcow2").write_bytes(b"x")
    (root / "owner").write_text(str(owner))
    return root


def test_orphans_of_a_dead_owner_go_and_a_live_owner_s_stay(tmp_path: Path) -> None:
    dead = _leave(tmp_path, ".warm-dead0001", _dead_pid())
    live = _leave(tmp_path, ".warm-live0001", os.getpid())
    session = tmp_path / "sbx_1"  # a session's directory is never a warm guest's
    session.mkdir()
    end_orphans(tmp_path)
    assert not dead.exists()
    assert (live / "guest1" / "disk.qcow2").exists()
    assert session.exists()


def test_a_pool_keeps_its_guests_under_its_own_owned_root(tmp_path: Path) -> None:
    async def never(template: Path, directory: Path) -> object:
        raise AssertionError("not called")

    pool = WarmPool(tmp_path, 1, never)  # type: ignore[arg-type]
    assert pool.root.parent == tmp_path and pool.root.name.startswith(".warm-")
    assert (pool.root / "owner").read_text() == str(os.getpid())
    assert pool.take(tmp_path / "template") is None
    pool.close()
    assert not pool.root.exists()
    assert WarmPool(tmp_path, 0, never).root.exists() is False  # type: ignore[arg-type]
