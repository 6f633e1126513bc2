"""The tables. Rows stay in this package; `control` turns them into wire models."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        int: BigInteger,
    }


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    team_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int]


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int]


class Sandbox(Base):
    __tablename__ = "sandboxes"
    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        Index("ix_sandboxes_project_created", "project_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(128))
    persistent: Mapped[bool] = mapped_column(Boolean)
    vcpus: Mapped[float] = mapped_column(Float)
    memory: Mapped[int]
    timeout_ms: Mapped[int]
    image_id: Mapped[str] = mapped_column(String(64))
    runtime: Mapped[str] = mapped_column(String(32))
    region: Mapped[str] = mapped_column(String(32))
    env: Mapped[dict[str, Any]]
    tags: Mapped[dict[str, Any]]
    ports: Mapped[list[Any]]
    network_policy: Mapped[dict[str, Any]]
    snapshot_expiration_ms: Mapped[int | None]
    keep_last_snapshots: Mapped[dict[str, Any] | None]
    current_snapshot_id: Mapped[str | None] = mapped_column(String(64))
    current_session_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    status_updated_at: Mapped[int]
    created_at: Mapped[int]
    updated_at: Mapped[int]
    total_active_cpu_ms: Mapped[int] = mapped_column(default=0)
    total_duration_ms: Mapped[int] = mapped_column(default=0)
    total_ingress_bytes: Mapped[int] = mapped_column(default=0)
    total_egress_bytes: Mapped[int] = mapped_column(default=0)


class Session(Base):
    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_status", "status"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sandbox_id: Mapped[str] = mapped_column(ForeignKey("sandboxes.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    vcpus: Mapped[float] = mapped_column(Float)
    memory: Mapped[int]
    timeout_ms: Mapped[int]
    runtime: Mapped[str] = mapped_column(String(32))
    region: Mapped[str] = mapped_column(String(32))
    cwd: Mapped[str] = mapped_column(String(4096))
    persistent: Mapped[bool] = mapped_column(Boolean)
    source_snapshot_id: Mapped[str | None] = mapped_column(String(64))
    network_policy: Mapped[dict[str, Any]]
    requested_at: Mapped[int]
    started_at: Mapped[int | None]
    expires_at: Mapped[int | None]
    requested_stop_at: Mapped[int | None]
    stopped_at: Mapped[int | None]
    aborted_at: Mapped[int | None]
    snapshotted_at: Mapped[int | None]
    paused_at: Mapped[int | None] = mapped_column(default=None)  # while paused
    snapshot_id: Mapped[str | None] = mapped_column(String(64))  # the snapshot its stop took
    created_at: Mapped[int]
    updated_at: Mapped[int]
    active_cpu_ms: Mapped[int] = mapped_column(default=0)
    memory_peak_bytes: Mapped[int] = mapped_column(default=0)
    ingress_bytes: Mapped[int] = mapped_column(default=0)
    egress_bytes: Mapped[int] = mapped_column(default=0)


class Command(Base):
    __tablename__ = "commands"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(4096))
    args: Mapped[list[Any]]
    cwd: Mapped[str] = mapped_column(String(4096))
    sudo: Mapped[bool] = mapped_column(Boolean)
    started_at: Mapped[int]
    exit_code: Mapped[int | None]
    duration_ms: Mapped[int | None]


class Snapshot(Base):
    __tablename__ = "snapshots"
    __table_args__ = (Index("ix_snapshots_project_created", "project_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    sandbox_id: Mapped[str | None] = mapped_column(String(64), index=True)
    sandbox_name: Mapped[str] = mapped_column(String(128))
    source_session_id: Mapped[str] = mapped_column(String(64))
    parent_id: Mapped[str | None] = mapped_column(String(64), index=True)
    layer_id: Mapped[str] = mapped_column(String(128))
    image_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    region: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int]
    creation_method: Mapped[str] = mapped_column(String(16))
    expiration_ms: Mapped[int | None]
    expires_at: Mapped[int | None]
    last_used_at: Mapped[int | None]
    created_at: Mapped[int]
    updated_at: Mapped[int]
