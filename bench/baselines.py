"""Host baselines: a bare `runc run` of the image rootfs, and a plain host process."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from ember.runtime import proc
from measure import ms_since, now

ECHO = "/bin/echo"
ECHO_ARGV = [ECHO, "hi"]
EXPECTED = b"hi\n"


def which(tool: str) -> str:
    """The absolute path of a host tool, looked up on Ember's own PATH."""
    path = shutil.which(tool, path=proc.BASE_ENV["PATH"])
    if path is None:
        raise SystemExit(f"{tool} not found on {proc.BASE_ENV['PATH']}")
    return path


def subprocess_echo() -> float:
    """One host `echo hi` with its output captured, in ms."""
    start = now()
    done = proc.run(ECHO_ARGV, timeout_s=10)
    elapsed = ms_since(start)
    if done.stdout != EXPECTED:
        raise RuntimeError(f"host echo printed {done.stdout!r}")
    return elapsed


class RuncBaseline:
    """A minimal OCI bundle (from `runc spec`) over the image rootfs, read-only.

    No user namespace: host root runs `echo` from the shifted rootfs. Every
    container id this object hands to runc is force-deleted in `close()`.
    """

    def __init__(self, runc: str, rootfs: Path, id_prefix: str) -> None:
        self.runc = runc
        self.rootfs = rootfs
        self.id_prefix = id_prefix
        self.bundle: Path | None = None
        self.used_ids: list[str] = []
        self._n = 0

    def prepare(self) -> None:
        self.bundle = Path(tempfile.mkdtemp(prefix=f"{self.id_prefix}-bundle-"))
        proc.run([self.runc, "spec", "--bundle", str(self.bundle)], timeout_s=30)
        config_path = self.bundle / "config.json"
        config = json.loads(config_path.read_text())
        config["root"] = {"path": str(self.rootfs), "readonly": True}
        config["process"]["terminal"] = False
        config["process"]["args"] = ECHO_ARGV
        config_path.write_text(json.dumps(config, indent=2))

    def run_echo(self) -> float:
        """One `runc run` to completion with stdout captured, in ms."""
        assert self.bundle is not None, "prepare() first"
        self._n += 1
        container_id = f"{self.id_prefix}-runc-{self._n}"
        self.used_ids.append(container_id)
        argv = [self.runc, "run", "--bundle", str(self.bundle), container_id]
        start = now()
        done = proc.run(argv, timeout_s=30)
        elapsed = ms_since(start)
        self._delete(container_id)
        if done.stdout != EXPECTED:
            raise RuntimeError(f"runc echo printed {done.stdout!r}")
        return elapsed

    def _delete(self, container_id: str) -> None:
        # `runc run` removes a foreground container when it exits; this is the
        # belt and braces for one that was interrupted half way.
        proc.run([self.runc, "delete", "--force", container_id], timeout_s=30, check=False)
        self.used_ids.remove(container_id)

    def close(self) -> None:
        for container_id in list(self.used_ids):
            self._delete(container_id)
        if self.bundle is not None:
            shutil.rmtree(self.bundle, ignore_errors=True)
            self.bundle = None
