"""Filesystem layers: frozen writable layers of sessions, with parent pointers.

A layer is `<data_dir>/layers/<id>/` holding `disk.img` (an ext4 image whose
`upper/` directory is an overlayfs upper layer) and `meta.json`. A layer is
published by renaming its staging directory into place after an fsync, so a
crash never leaves a half layer visible. Layers never change once published.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from ember.runtime import disk, mounts, proc

from .merge import merge_layer

LAYER_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class LayerError(Exception):
    """A layer is missing, malformed or cannot be published."""


@dataclass(frozen=True)
class Layer:
    layer_id: str
    parent: str | None
    image_id: str
    created_at_ms: int
    size_bytes: int
    depth: int
    flattened_from: str | None = None
    # "ext4": a container session's disk; "qcow2": a microVM's overlay, whose
    # backing file is its parent layer's disk (or the image's root disk).
    format: str = "ext4"

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LayerStore:
    def __init__(self, data_dir: str | os.PathLike[str], *, max_depth: int = 16) -> None:
        self.root = Path(data_dir) / "layers"
        self.max_depth = max_depth
        self.root.mkdir(parents=True, exist_ok=True)
        self._mount_lock = threading.Lock()

    def path(self, layer_id: str) -> Path:
        if not LAYER_ID.fullmatch(layer_id):
            raise LayerError(f"invalid layer id {layer_id!r}")
        return self.root / layer_id

    def disk(self, layer_id: str) -> Path:
        return self.path(layer_id) / "disk.img"

    def get(self, layer_id: str) -> Layer:
        try:
            data = json.loads((self.path(layer_id) / "meta.json").read_text())
        except FileNotFoundError:
            raise LayerError(f"no layer {layer_id!r}") from None
        return Layer(**data)

    def exists(self, layer_id: str) -> bool:
        return (self.path(layer_id) / "meta.json").is_file()

    def list_layers(self) -> list[Layer]:
        return [
            self.get(p.name)
            for p in self.root.iterdir()
            if not p.name.startswith(".") and self.exists(p.name)
        ]

    def chain(self, layer_id: str) -> list[Layer]:
        """The layer and its ancestors, top first."""
        chain = [self.get(layer_id)]
        while chain[-1].parent:
            chain.append(self.get(chain[-1].parent))
        return chain

    def publish(
        self,
        disk_image: str,
        *,
        layer_id: str,
        parent: str | None,
        image_id: str,
        flattened_from: str | None = None,
        disk_format: str = "ext4",
    ) -> Layer:
        """Turn a stopped session's disk image into a layer: a rename, not a copy."""
        final = self.path(layer_id)
        if final.exists():
            raise LayerError(f"layer {layer_id!r} already exists")
        depth = 1 + (self.get(parent).depth if parent else 0)
        staging = self.root / f".staging-{layer_id}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            target = staging / "disk.img"
            os.rename(disk_image, target)
            _fsync_path(target)
            layer = Layer(
                layer_id=layer_id,
                parent=parent,
                image_id=image_id,
                created_at_ms=int(time.time() * 1000),
                size_bytes=os.stat(target).st_blocks * 512,
                depth=depth,
                flattened_from=flattened_from,
                format=disk_format,
            )
            meta = staging / "meta.json"
            meta.write_text(json.dumps(layer.to_json()))
            _fsync_path(meta)
            _fsync_path(staging)
            os.rename(staging, final)
            _fsync_path(self.root)
        except BaseException:
            if (staging / "disk.img").exists() and not os.path.exists(disk_image):
                os.rename(staging / "disk.img", disk_image)  # give the session its disk back
            mounts.remove_tree(str(staging))
            raise
        return layer

    def delete(self, layer_id: str) -> None:
        path = self.path(layer_id)
        if not path.exists():
            return
        doomed = self.root / f".deleting-{layer_id}-{uuid.uuid4().hex[:8]}"
        os.rename(path, doomed)
        mounts.remove_tree(str(doomed))

    def clean_staging(self) -> None:
        """Remove what a crash left half-done (never visible as layers)."""
        for entry in self.root.iterdir():
            if entry.name.startswith((".staging-", ".deleting-", ".flatten-")):
                mounts.remove_tree(str(entry))

    def upper_dir(self, layer_id: str) -> str:
        """The layer's files, for use as an overlayfs lower directory.

        Each layer is mounted read-only once, at `<layer>/mnt`, and shared by
        every session and flatten that stacks on it (a loop mount costs ~6 ms;
        a session may stack many layers). It stays mounted until the layer is
        deleted, across restarts of emberd.
        """
        target = self.path(layer_id) / "mnt"
        with self._mount_lock:
            if not mounts.is_mountpoint(str(target)):
                if not self.exists(layer_id):
                    raise LayerError(f"no layer {layer_id!r}")
                disk.mount_disk(str(self.disk(layer_id)), str(target), read_only=True)
        return str(target / disk.UPPER)

    def flatten(self, layer_id: str, *, new_layer_id: str, size_mib: int, root_id: int) -> Layer:
        """Merge a layer and its ancestors into one layer with the same content."""
        chain = self.chain(layer_id)
        work = self.root / f".flatten-{new_layer_id}-{uuid.uuid4().hex[:8]}"
        work.mkdir()
        try:
            image = str(work / "flat.img")
            disk.create_disk(image, size_mib, root_id=root_id)
            target = str(work / "target")
            disk.mount_disk(image, target, read_only=False)
            try:
                upper, _ = disk.prepare_upper(target, root_id=root_id)
                for layer in reversed(chain):  # bottom first
                    merge_layer(self.upper_dir(layer.layer_id), upper)
                proc.run(["sync", "--file-system", target], timeout_s=600)
            finally:
                mounts.unmount(target)
            return self.publish(
                image,
                layer_id=new_layer_id,
                parent=None,
                image_id=chain[0].image_id,
                flattened_from=layer_id,
            )
        finally:
            mounts.remove_tree(str(work))
