"""Control-plane settings, read once at start-up and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MINUTE_MS = 60_000
DAY_MS = 24 * 60 * MINUTE_MS

# Image names a client may ask for; all resolve to the server's default image.
# Vercel's managed images are accepted so official clients work unchanged.
DEFAULT_IMAGE_ALIASES = (
    "default",
    "ember/default",
    "debian:bookworm",
    "vercel/sandbox/universal",
    "vercel/sandbox/universal:latest",
    "vercel/sandbox/ubuntu",
    "vercel/sandbox/ubuntu:latest",
    "vercel/sandbox/node:22",
    "vercel/sandbox/node:24",
    "vercel/sandbox/node:26",
    "vercel/sandbox/python:3.14",
)
LEGACY_RUNTIMES = ("node22", "node24", "node26", "python3.13")
ISOLATION = ("container", "microvm")  # Ember's own values of `runtime`


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    default_timeout_ms: int = 5 * MINUTE_MS
    max_timeout_ms: int = 24 * 60 * MINUTE_MS
    default_vcpus: float = 2
    default_snapshot_expiration_ms: int = 30 * DAY_MS
    region: str = "local"
    public_domain: str = "localhost"
    public_scheme: str = "http"
    public_port: int | None = None
    image_aliases: tuple[str, ...] = field(default=DEFAULT_IMAGE_ALIASES)
    disk_mib: int = 10 * 1024
    snapshot_sweep_interval_s: float = 60.0
    microvm_warm: int | None = (
        None  # warm guests per template; None: 1 where microVMs are the default
    )
    liveness_interval_s: float = 2.0  # how often running sessions are checked for a quiet end
    network: bool = True  # per-session networks (off: sessions have loopback only)
    dns_servers: tuple[str, ...] = ()  # sessions' names resolve here; none: the host's
    upstream_ca: Path | None = None  # extra CAs the egress proxy trusts upstream
    runtime: str = "auto"  # `ember serve --runtime`: auto | container | microvm
    runtimes: tuple[str, ...] = ("container",)  # what this server runs (from `runtime`)
    default_runtime: str = "container"  # for a create that names none

    @property
    def database_path(self) -> Path:
        return self.data_dir / "ember.db"
