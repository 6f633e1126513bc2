"""`ember`: the command line."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ember.image import ImageBuildError, ImageRecipe, ImageStore
from ember.image.recipe import DEFAULT_MIRROR, DEFAULT_SECURITY_MIRROR

from .durations import parse_ms
from .output import fail
from .sandboxes import Connection
from .sandboxes import register as register_sandbox_commands

DEFAULT_DATA_DIR = Path("/var/lib/ember")

app = typer.Typer(no_args_is_help=True, help="Ember: self-hosted, isolated Linux sandboxes.")


@app.callback()
def connection(
    url: Annotated[str | None, typer.Option(envvar="EMBER_URL", help="emberd's URL.")] = None,
    token: Annotated[str | None, typer.Option(envvar="EMBER_TOKEN", help="API token.")] = None,
) -> None:
    """Sandbox commands find the server from --url/--token, EMBER_URL/EMBER_TOKEN, or the
    client.json that `ember serve` writes."""
    Connection.url, Connection.token = url, token


register_sandbox_commands(app)
image_app = typer.Typer(no_args_is_help=True, help="Build and list base images.")
app.add_typer(image_app, name="image")
console = Console(stderr=True)

DataDir = Annotated[Path, typer.Option("--data-dir", help="Where Ember keeps its state.")]


def _recipe(mirror: str, security_mirror: str) -> ImageRecipe:
    from ember.runtime.container import default_id_shift

    return ImageRecipe(mirror=mirror, security_mirror=security_mirror).with_id_shift(
        default_id_shift()
    )


@image_app.command("build")
def image_build(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    mirror: Annotated[str, typer.Option(help="Debian mirror.")] = DEFAULT_MIRROR,
    security_mirror: Annotated[
        str, typer.Option(help="Debian security mirror ('' for none).")
    ] = DEFAULT_SECURITY_MIRROR,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Build the default base image (cached: a second build is instant)."""
    recipe = _recipe(mirror, security_mirror)
    store = ImageStore(data_dir)
    cached = store.get(recipe.image_id)
    started = time.monotonic()
    if cached is None:
        with console.status(f"building image {recipe.image_id}") as status:

            def progress(line: str) -> None:
                status.update(f"building image {recipe.image_id}: {line[:100]}")
                if line.startswith("I: ") or not line.startswith(("Get:", "Hit:")):
                    console.log(line, markup=False, highlight=False)

            try:
                info = store.ensure(recipe, progress)
            except ImageBuildError as exc:
                fail(str(exc))
    else:
        info = cached
    elapsed = time.monotonic() - started
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "image_id": info.image_id,
                    "cached": cached is not None,
                    "size_bytes": info.size_bytes,
                }
            )
        )
    else:
        state = "cached" if cached else f"built in {elapsed:.0f}s"
        console.print(
            f"image {info.image_id} ({state}, {info.size_bytes / 2**20:.0f} MiB) at {info.rootfs}"
        )


@image_app.command("guest")
def image_guest(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Prepare microVM guests (cached): kernel, initramfs, the image's root disk, the probe."""
    from ember.image.kernel import GuestAssetError
    from ember.image.vmdisk import root_disk
    from ember.runtime.container import default_id_shift
    from ember.runtime.microvm import MicroVmRuntime

    shift = default_id_shift()
    recipe = ImageRecipe().with_id_shift(shift)
    info = ImageStore(data_dir).get(recipe.image_id)
    if info is None:
        fail(f"no image {recipe.image_id} yet: run `ember image build` first")
    assert info is not None
    try:
        with console.status("fetching the guest kernel, building the initramfs"):
            verdict = MicroVmRuntime(data_dir, id_shift=shift).prepare()
        with console.status("making the image's root disk"):
            disk = root_disk(data_dir, info, shift)
    except (GuestAssetError, OSError) as exc:
        fail(f"cannot prepare microVM guests: {exc}")
    console.print(f"microVM guests ready: root disk {disk}; acceleration {verdict['accel']}")
    console.print(f"  {verdict['why']}", markup=False, highlight=False)


@image_app.command("ls")
def image_ls(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List built images."""
    images = ImageStore(data_dir).list()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "image_id": i.image_id,
                        "created_at_ms": i.created_at_ms,
                        "size_bytes": i.size_bytes,
                        "recipe": i.recipe,
                    }
                    for i in images
                ]
            )
        )
        return
    table = Table("IMAGE", "SUITE", "PACKAGES", "SIZE", "BUILT")
    for i in images:
        built = datetime.fromtimestamp(i.created_at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        packages = i.recipe.get("packages", [])
        table.add_row(
            i.image_id,
            str(i.recipe.get("suite")),
            str(len(packages) if isinstance(packages, list) else "?"),
            f"{i.size_bytes / 2**20:.0f} MiB",
            built,
        )
    Console().print(table)


token_app = typer.Typer(no_args_is_help=True, help="Manage API tokens.")
app.add_typer(token_app, name="token")


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    max_timeout: Annotated[
        str, typer.Option(help="Longest session timeout allowed, e.g. 24h.")
    ] = "24h",
    domain: Annotated[str, typer.Option(help="Domain of exposed ports' URLs.")] = "localhost",
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
    network: Annotated[
        bool,
        typer.Option(help="Give sessions networks (egress per policy); off: loopback only."),
    ] = True,
    dns_server: Annotated[
        list[str] | None,
        typer.Option(help="Nameserver for sessions' lookups (repeatable); default: the host's."),
    ] = None,
    upstream_ca: Annotated[
        Path | None,
        typer.Option(help="Extra CA bundle the egress proxy trusts when it re-encrypts."),
    ] = None,
    runtime: Annotated[
        str,
        typer.Option(
            help="Default isolation: auto (microVMs where hardware virtualization works, "
            "else containers), container (no microVMs), or microvm."
        ),
    ] = "auto",
    microvm_warm: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=8,
            help="Warm microVM guests kept per image and size, restored ahead of time so "
            "sessions start faster (default: 1 where microVMs are the default, else 0).",
        ),
    ] = None,
) -> None:
    """Run emberd, the Ember server."""
    import logging

    import uvicorn

    from ember.api import create_app
    from ember.control import Settings
    from ember.daemon import build_plane, ensure_first_token

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings(
        data_dir=data_dir.resolve(),
        max_timeout_ms=parse_ms(max_timeout),
        public_domain=domain,
        public_port=port,
        network=network,
        dns_servers=tuple(dns_server or ()),
        upstream_ca=upstream_ca.resolve() if upstream_ca else None,
        runtime=runtime,
        microvm_warm=microvm_warm,
    )
    if runtime not in ("auto", "container", "microvm"):
        fail("--runtime must be auto, container or microvm")
    # The API's port first: the plane's own listeners (DNS, proxy) take ports
    # the kernel picks, and must never take this one.
    listener = _listen(host, port)
    with console.status("preparing the base image") as status:
        plane = build_plane(settings, lambda line: status.update(f"base image: {line[:100]}"))
    url = f"http://{host}:{port}"
    first = ensure_first_token(plane.db, settings.data_dir, url)
    if first:
        console.print(
            f"created project 'default' ({first.project_id}, team {first.team_id}) "
            "and its first token;\n"
            f"token and URL are in {first.path}:\n  EMBER_URL={url}\n  EMBER_TOKEN={first.token}"
        )
    console.print(f"emberd listening on {url}")
    config = uvicorn.Config(create_app(plane), log_level=log_level, access_log=False)
    uvicorn.Server(config).run(sockets=[listener])


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror}")
    return listener


@token_app.command("create")
def token_create(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    project: Annotated[
        str, typer.Option(help="Project the token belongs to (created if new).")
    ] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a new bearer token for a project."""
    from ember.control import create_token
    from ember.daemon import open_database

    if not (data_dir / "ember.db").is_file():  # a mistyped --data-dir would get a new database
        fail(
            f"no Ember database in {data_dir}: pass the --data-dir that `ember serve` uses, "
            "or start it there first"
        )
    database = open_database(data_dir)
    token, row = database.run_sync(lambda db: create_token(db, project))
    database.close()
    if as_json:
        typer.echo(
            json.dumps(
                {"token": token, "project": row.name, "projectId": row.id, "teamId": row.team_id}
            )
        )
    else:
        typer.echo(token)


@app.command("doctor")
def doctor(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What this host supports: runtimes, KVM or TCG, cgroups, nftables, free disk."""
    from ember.cli.doctor import run_probes

    probes = run_probes(str(data_dir))
    if as_json:
        typer.echo(json.dumps([{"name": p.name, "ok": p.ok, "detail": p.detail} for p in probes]))
        return
    table = Table("CHECK", "", "DETAIL", box=None)
    for probe in probes:
        table.add_row(
            probe.name, "[green]ok[/green]" if probe.ok else "[yellow]no[/yellow]", probe.detail
        )
    Console().print(table)


def main() -> None:
    app()
