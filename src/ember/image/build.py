"""Build a base image's root filesystem with mmdebstrap."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ember.runtime import proc

from .idshift import shift_tree
from .recipe import ImageRecipe

BUILD_TIMEOUT_S = 3600.0

# Trimmed from the image: documentation and translations nobody reads inside a
# sandbox. Copyright files stay, as Debian's licences ask.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)


class ImageBuildError(Exception):
    """The base image could not be built; the message says why."""


def check_mirror(recipe: ImageRecipe, timeout_s: float = 15.0) -> None:
    """Fail early, with a message a person can act on, if the mirror is unreachable."""
    url = f"{recipe.mirror.rstrip('/')}/dists/{recipe.suite}/InRelease"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - http(s) mirror from the recipe
            response.read(1)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageBuildError(
            f"cannot reach the Debian mirror {recipe.mirror} ({url}: {reason}); "
            "check the network or pass --mirror with a reachable Debian mirror"
        ) from exc


def mmdebstrap_argv(recipe: ImageRecipe, target: str) -> list[str]:
    return [
        "mmdebstrap",
        "--mode=root",
        "--variant=apt",
        "--format=directory",
        f"--include={','.join(recipe.packages)}",
        *(f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES),
        '--aptopt=APT::Install-Recommends "false"',
        recipe.suite,
        target,
        *recipe.sources(),
    ]


def sudoers(recipe: ImageRecipe) -> str:
    # Matches the reference's images: sudo keeps the caller's environment
    # (PATH included) and sets HOME to root's.
    return (
        f"Defaults:{recipe.user} !env_reset, always_set_home, !secure_path, !requiretty\n"
        f"{recipe.user} ALL=(ALL:ALL) NOPASSWD: ALL\n"
    )


def configure_rootfs(recipe: ImageRecipe, rootfs: str) -> None:
    """Add the sandbox user, sudo rule, working directory and agent mount point."""
    proc.run(
        [
            "useradd",
            "--root",
            rootfs,
            "--uid",
            str(recipe.uid),
            "--user-group",
            "--create-home",
            "--shell",
            "/bin/bash",
            recipe.user,
        ]
    )
    sudoers_path = Path(rootfs, "etc/sudoers.d/ember")
    sudoers_path.write_text(sudoers(recipe))
    sudoers_path.chmod(0o440)
    workdir = Path(rootfs, recipe.workdir.lstrip("/"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chown(workdir, recipe.uid, recipe.uid)
    workdir.chmod(0o755)
    # Mount point for the agent, which is bind-mounted read-only at start.
    Path(rootfs, ".ember").mkdir(mode=0o755, exist_ok=True)
    # Session-specific files are bind-mounted over these at start.
    for name in ("etc/hostname", "etc/hosts", "etc/resolv.conf"):
        path = Path(rootfs, name)
        if path.is_symlink():
            path.unlink()
        path.touch(exist_ok=True)


def build_rootfs(
    recipe: ImageRecipe, rootfs: str, on_progress: Callable[[str], None] = lambda _: None
) -> None:
    """Build the root filesystem of `recipe` into the empty directory `rootfs`."""
    check_mirror(recipe)
    on_progress(f"mmdebstrap {recipe.suite} with {len(recipe.packages)} packages")
    try:
        proc.run_streaming(mmdebstrap_argv(recipe, rootfs), on_progress, timeout_s=BUILD_TIMEOUT_S)
    except proc.ProcessError as exc:
        raise ImageBuildError(f"mmdebstrap failed: {exc}") from exc
    on_progress("configuring the sandbox user")
    configure_rootfs(recipe, rootfs)
    if recipe.id_shift:
        on_progress(f"shifting owners by {recipe.id_shift} for the user namespace")
        shift_tree(rootfs, recipe.id_shift)
