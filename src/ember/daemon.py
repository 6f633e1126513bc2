"""emberd's composition root: settings → store, image, runtime, control plane, API."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy.orm import Session as DbSession

from ember.control import ControlPlane, Settings, create_token, ensure_project, has_tokens
from ember.control.auth import DEFAULT_PROJECT
from ember.image import ImageRecipe, ImageStore
from ember.image.kernel import GuestAssetError
from ember.network import EgressSettings, NetworkManager
from ember.runtime import proc
from ember.runtime.container import ContainerRuntime, default_id_shift
from ember.runtime.microvm import MicroVmRuntime
from ember.runtime.select import Runtimes
from ember.snapshots import LayerStore
from ember.store import Database, models

log = logging.getLogger("ember.daemon")
CLIENT_CONFIG = "client.json"


@dataclass(frozen=True)
class FirstToken:
    token: str
    project_id: str
    team_id: str
    path: Path


def open_database(data_dir: Path) -> Database:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    database = Database.sqlite(data_dir / "ember.db")
    database.migrate()
    for name in ("ember.db", "ember.db-wal", "ember.db-shm"):
        if (data_dir / name).exists():
            (data_dir / name).chmod(0o600)
    return database


def build_plane(
    settings: Settings, on_progress: Callable[[str], None] = lambda _: None
) -> ControlPlane:
    database = open_database(settings.data_dir)
    shift = default_id_shift()
    image = ImageStore(settings.data_dir).ensure(ImageRecipe().with_id_shift(shift), on_progress)
    layers = LayerStore(settings.data_dir)
    network = (
        NetworkManager(
            settings.data_dir,
            egress=EgressSettings(settings.dns_servers, settings.upstream_ca),
        )
        if settings.network
        else None
    )
    container = ContainerRuntime(settings.data_dir, layers=layers, id_shift=shift, network=network)
    microvm, settings = _microvm(settings, layers, shift, network, on_progress)
    return ControlPlane(settings, database, Runtimes(container, microvm), layers, image.image_id)


def _microvm(
    settings: Settings,
    layers: LayerStore,
    shift: int,
    network: NetworkManager | None,
    on_progress: Callable[[str], None],
) -> tuple[MicroVmRuntime | None, Settings]:
    """The microVM runtime, if this host can run it, and the settings that say so.

    `auto` (the default) makes microVMs the default where the probe boot shows
    hardware virtualization works; under software emulation (TCG) they stay
    available on request, and containers are the default.
    """
    if settings.runtime == "container":
        return None, replace(settings, runtimes=("container",), default_runtime="container")
    microvm = MicroVmRuntime(settings.data_dir, layers=layers, id_shift=shift, network=network)
    try:
        on_progress("microVM guest kernel and initramfs")
        verdict = microvm.prepare()
    except (GuestAssetError, OSError, proc.ProcessError) as exc:
        if settings.runtime == "microvm":
            raise
        log.warning("microVMs are not available on this host: %s", exc)
        return None, replace(settings, runtimes=("container",), default_runtime="container")
    log.info("microVM acceleration: %s (%s)", verdict["accel"], verdict["why"])
    if settings.runtime == "microvm" or verdict["accel"] == "kvm":
        default = "microvm"
    else:
        default = "container"
    warm = settings.microvm_warm
    microvm.keep_warm(warm if warm is not None else int(default == "microvm"))
    return microvm, replace(settings, runtimes=("container", "microvm"), default_runtime=default)


def write_client_config(data_dir: Path, url: str, token: str, project: models.Project) -> Path:
    """Where the SDK and CLI find a server and a token when nothing else says."""
    path = data_dir / CLIENT_CONFIG
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(
            {"url": url, "token": token, "projectId": project.id, "teamId": project.team_id},
            f,
            indent=2,
        )
    return path


def ensure_first_token(database: Database, data_dir: Path, url: str) -> FirstToken | None:
    """On the very first start: a default project and a token for it."""

    def first(db: DbSession) -> tuple[str, models.Project] | None:
        if has_tokens(db):
            ensure_project(db, DEFAULT_PROJECT)
            return None
        return create_token(db, DEFAULT_PROJECT)

    created = database.run_sync(first)
    if created is None:
        return None
    token, project = created
    path = write_client_config(data_dir, url, token, project)
    return FirstToken(token, project.id, project.team_id, path)
