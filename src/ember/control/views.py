"""Rows of the store turned into wire models."""

from __future__ import annotations

from ember.store import models
from ember.wire.command import Command
from ember.wire.common import Route
from ember.wire.network import normalise_network_policy
from ember.wire.sandbox import Sandbox
from ember.wire.session import NetworkTransfer, Session
from ember.wire.snapshot import Snapshot

from .settings import Settings
from .states import PAUSED, WIRE_STATUS

ROUTE_PREFIX = "sb-"


def route_subdomain(sandbox: models.Sandbox, port: int) -> str:
    """`sb-<the sandbox id's random part>-<port>`: unique across projects, a valid DNS label."""
    return f"{ROUTE_PREFIX}{sandbox.id.split('_', 1)[1]}-{port}"


def routes(sandbox: models.Sandbox, settings: Settings) -> list[Route]:
    host_port = f":{settings.public_port}" if settings.public_port else ""
    base = f"{settings.public_scheme}://{{}}.{settings.public_domain}{host_port}"
    return [
        Route(
            url=base.format(route_subdomain(sandbox, port)),
            subdomain=route_subdomain(sandbox, port),
            port=port,
        )
        for port in sandbox.ports
    ]


def session_view(row: models.Session, sandbox_name: str | None = None) -> Session:
    end = row.stopped_at or row.aborted_at
    return Session(
        id=row.id,
        memory=row.memory,
        vcpus=row.vcpus,
        region=row.region,
        runtime=row.runtime,
        timeout=row.timeout_ms,
        status=WIRE_STATUS.get(row.status, row.status),
        paused=True if row.status == PAUSED else None,
        requested_at=row.requested_at,
        started_at=row.started_at,
        requested_stop_at=row.requested_stop_at,
        stopped_at=row.stopped_at,
        aborted_at=row.aborted_at,
        duration=(end - row.started_at) if end and row.started_at else None,
        source_snapshot_id=row.source_snapshot_id,
        snapshotted_at=row.snapshotted_at,
        created_at=row.created_at,
        cwd=row.cwd,
        updated_at=row.updated_at,
        network_policy=normalise_network_policy(row.network_policy),
        active_cpu_duration_ms=row.active_cpu_ms,
        network_transfer=NetworkTransfer(ingress=row.ingress_bytes, egress=row.egress_bytes),
        expires_at=None if row.status == PAUSED else row.expires_at,  # no timeout while paused
        sandbox_name=sandbox_name,
        memory_peak_bytes=row.memory_peak_bytes or None,
    )


def _session_status(sandbox_status: str) -> str:
    return "stopped" if sandbox_status == "deleted" else sandbox_status


def sandbox_view(
    row: models.Sandbox, session: models.Session | None, settings: Settings
) -> Sandbox:
    running = session is not None and session.status in ("pending", "running")
    return Sandbox(
        name=row.name,
        persistent=row.persistent,
        region=row.region,
        vcpus=row.vcpus,
        memory=row.memory,
        runtime=row.runtime,  # for its next sessions; each session reports its own
        image=row.image_id,
        timeout=row.timeout_ms,
        network_policy=normalise_network_policy(row.network_policy),
        total_egress_bytes=row.total_egress_bytes,
        total_ingress_bytes=row.total_ingress_bytes,
        total_active_cpu_duration_ms=row.total_active_cpu_ms,
        total_duration_ms=row.total_duration_ms,
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=session.expires_at if running and session else None,
        current_session_id=row.current_session_id,
        current_snapshot_id=row.current_snapshot_id,
        # The official clients accept only session statuses here; a deleted sandbox
        # (its sessions stopped and gone) reads as stopped.
        status=WIRE_STATUS.get(session.status, session.status)
        if session
        else _session_status(row.status),
        paused=True if session is not None and session.status == PAUSED else None,
        status_updated_at=row.status_updated_at,
        cwd=session.cwd if session else None,
        tags=row.tags,
        env=row.env,
        ports=row.ports,
        snapshot_expiration=row.snapshot_expiration_ms,
        keep_last_snapshots=row.keep_last_snapshots,
        project_id=row.project_id,
    )


def command_view(row: models.Command) -> Command:
    return Command(
        id=row.id,
        name=row.name,
        args=row.args,
        cwd=row.cwd,
        session_id=row.session_id,
        exit_code=row.exit_code,
        duration_ms=row.duration_ms,
        started_at=row.started_at,
        sudo=row.sudo,
    )


def snapshot_view(row: models.Snapshot) -> Snapshot:
    return Snapshot(
        id=row.id,
        source_session_id=row.source_session_id,
        region=row.region,
        regions=[row.region],
        status=row.status,
        size_bytes=row.size_bytes,
        expires_at=row.expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_used_at=row.last_used_at,
        creation_method=row.creation_method,
        parent_id=row.parent_id,
        sandbox_name=row.sandbox_name,
    )
