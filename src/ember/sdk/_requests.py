"""Request builders shared by both twins: Python-style options to wire bodies."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

from ._core import Call, Duration, Files, drop_none, ms, tar_gz


def _policy(network_policy: str | Mapping[str, Any] | None) -> Any:
    if isinstance(network_policy, str):
        return {"mode": network_policy}
    return dict(network_policy) if network_policy is not None else None


def _resources(vcpus: float | None, memory_mib: int | None) -> dict[str, Any] | None:
    resources = drop_none({"vcpus": vcpus, "memory": memory_mib})
    return resources or None


def create_body(
    *,
    name: str | None = None,
    image: str | None = None,
    source_snapshot: str | None = None,
    ports: Iterable[int] | None = None,
    timeout: Duration | None = None,
    vcpus: float | None = None,
    memory_mib: int | None = None,
    env: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    persistent: bool | None = None,
    network_policy: str | Mapping[str, Any] | None = None,
    snapshot_expiration: Duration | None = None,
    keep_last_snapshots: int | None = None,
    runtime: str | None = None,
) -> dict[str, Any]:
    """The body of `POST /v3/sandboxes`. Durations are seconds or timedeltas;
    `runtime` ("container" or "microvm") is Ember's choice of isolation."""
    shared = update_body(
        ports=ports,
        timeout=timeout,
        vcpus=vcpus,
        memory_mib=memory_mib,
        env=env,
        tags=tags,
        persistent=persistent,
        network_policy=network_policy,
        snapshot_expiration=snapshot_expiration,
        runtime=runtime,
    )
    source = {"type": "snapshot", "snapshotId": source_snapshot} if source_snapshot else None
    keep = {"count": keep_last_snapshots} if keep_last_snapshots else None
    return (
        drop_none({"name": name, "image": image, "source": source, "keepLastSnapshots": keep})
        | shared
    )


def update_body(
    *,
    ports: Iterable[int] | None = None,
    timeout: Duration | None = None,
    vcpus: float | None = None,
    memory_mib: int | None = None,
    env: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    persistent: bool | None = None,
    network_policy: str | Mapping[str, Any] | None = None,
    snapshot_expiration: Duration | None = None,
    current_snapshot_id: str | None = None,
    runtime: str | None = None,
) -> dict[str, Any]:
    """The body of `PATCH /v2/sandboxes/{name}` (and of fork's overrides)."""
    return drop_none(
        {
            "ports": list(ports) if ports is not None else None,
            "timeout": ms(timeout) if timeout is not None else None,
            "resources": _resources(vcpus, memory_mib),
            "env": dict(env) if env is not None else None,
            "tags": dict(tags) if tags is not None else None,
            "persistent": persistent,
            "networkPolicy": _policy(network_policy),
            "snapshotExpiration": ms(snapshot_expiration)
            if snapshot_expiration is not None
            else None,
            "currentSnapshotId": current_snapshot_id,
            "runtime": runtime,
        }
    )


def list_sandboxes(
    page_size: int | None,
    cursor: str | None,
    *,
    name_prefix: str | None = None,
    tags: Mapping[str, str] | None = None,
    sort_by: str | None = None,
    sort_order: str | None = None,
) -> Call:
    params: dict[str, Any] = drop_none(
        {
            "limit": page_size,
            "cursor": cursor,
            "namePrefix": name_prefix,
            "sortBy": sort_by,
            "sortOrder": sort_order,
        }
    )
    if tags:
        params["tags"] = [f"{k}:{v}" for k, v in tags.items()]
    return Call("GET", "/v2/sandboxes", params=params)


def list_sessions(sandbox: str | None, cursor: str | None) -> Call:
    return Call(
        "GET", "/v2/sandboxes/sessions", params=drop_none({"name": sandbox, "cursor": cursor})
    )


def list_snapshots(sandbox: str | None, cursor: str | None) -> Call:
    return Call(
        "GET", "/v2/sandboxes/snapshots", params=drop_none({"name": sandbox, "cursor": cursor})
    )


def fs(session_id: str, op: str, body: Mapping[str, Any]) -> Call:
    return Call("POST", f"/v2/sandboxes/sessions/{session_id}/fs/{op}", json=dict(body))


def archive(files: Files, cwd: str) -> bytes:
    """A gzip tar of absolute paths (relative ones joined to `cwd`), for extraction at `/`."""
    items = (
        [(path, content, 0o644) for path, content in files.items()]
        if isinstance(files, Mapping)
        else list(files)
    )
    return tar_gz([(posixpath.join(cwd, path), content, mode) for path, content, mode in items])


def write(session_id: str, data: bytes, cwd: str = "/") -> Call:
    return Call(
        "POST",
        f"/v2/sandboxes/sessions/{session_id}/fs/write",
        content=data,
        headers={"content-type": "application/gzip", "x-cwd": cwd},
    )
