"""The image cache: built root filesystems under `<data_dir>/images/<image_id>`."""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ember.runtime import mounts, proc

from .build import build_rootfs
from .recipe import ImageRecipe


@dataclass(frozen=True)
class ImageInfo:
    image_id: str
    path: Path
    recipe: dict[str, object]
    created_at_ms: int
    size_bytes: int
    build_seconds: float

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"


def _tree_size_bytes(path: Path) -> int:
    out = proc.run(["du", "-sb", "--one-file-system", str(path)], timeout_s=300).stdout
    return int(out.split()[0])


class ImageStore:
    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir) / "images"

    def get(self, image_id: str) -> ImageInfo | None:
        meta = self.root / image_id / "meta.json"
        try:
            data = json.loads(meta.read_text())
        except FileNotFoundError:
            return None
        return ImageInfo(
            image_id=image_id,
            path=self.root / image_id,
            recipe=data["recipe"],
            created_at_ms=data["created_at_ms"],
            size_bytes=data["size_bytes"],
            build_seconds=data["build_seconds"],
        )

    def list(self) -> list[ImageInfo]:
        if not self.root.is_dir():
            return []
        found = (
            self.get(entry.name) for entry in self.root.iterdir() if not entry.name.startswith(".")
        )
        return sorted((i for i in found if i), key=lambda i: i.created_at_ms)

    @contextmanager
    def _build_lock(self, image_id: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".lock-{image_id}", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def ensure(
        self, recipe: ImageRecipe, on_progress: Callable[[str], None] = lambda _: None
    ) -> ImageInfo:
        """Return the cached image for `recipe`, building it first if needed.

        The build happens in a hidden directory and is published by one
        rename, so a crash mid-build never leaves a half image in the cache.
        """
        image_id = recipe.image_id
        cached = self.get(image_id)
        if cached:
            return cached
        with self._build_lock(image_id):
            cached = self.get(image_id)
            if cached:
                return cached
            for stale in self.root.glob(f".build-{image_id}-*"):
                mounts.remove_tree(str(stale))
            staging = self.root / f".build-{image_id}-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            try:
                started = time.monotonic()
                build_rootfs(recipe, str(staging / "rootfs"), on_progress)
                meta = {
                    "recipe": recipe.to_json(),
                    "created_at_ms": int(time.time() * 1000),
                    "size_bytes": _tree_size_bytes(staging / "rootfs"),
                    "build_seconds": round(time.monotonic() - started, 1),
                }
                meta_path = staging / "meta.json"
                meta_path.write_text(json.dumps(meta, indent=2))
                proc.run(["sync", "--file-system", str(meta_path)], timeout_s=600)
                os.rename(staging, self.root / image_id)
            except BaseException:
                mounts.remove_tree(str(staging))
                raise
        info = self.get(image_id)
        assert info is not None
        on_progress(f"image {image_id} ready")
        return info

    def remove(self, image_id: str) -> bool:
        path = self.root / image_id
        if not path.exists():
            return False
        doomed = self.root / f".remove-{image_id}-{uuid.uuid4().hex[:8]}"
        os.rename(path, doomed)
        mounts.remove_tree(str(doomed))
        return True
