"""MicroVM templates unused for a week are deleted; ones being built are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from ember.runtime import microvm
from ember.runtime.microvm import MicroVmRuntime


def _template(root: Path, name: str) -> Path:
    directory = root / "vm" / "templates" / name
    directory.mkdir(parents=True)
    (directory / "memory.bin").write_bytes(b"m")
    return directory


def test_unused_templates_go_and_fresh_or_building_ones_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = MicroVmRuntime(tmp_path)
    fresh = _template(tmp_path, "fresh")
    runtime._forget_stale_templates()
    assert fresh.exists()  # used (created) just now

    building = _template(tmp_path, ".b1234")
    monkeypatch.setattr(microvm, "TEMPLATE_UNUSED_DAYS", -1)  # everything is "a week old"
    runtime._forget_stale_templates()
    assert not fresh.exists()
    assert building.exists()
