"""`ember`: the command line."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ember.image import ImageBuildError, ImageRecipe, ImageStore
from ember.image.recipe import DEFAULT_MIRROR, DEFAULT_SECURITY_MIRROR

DEFAULT_DATA_DIR = Path("/var/lib/ember")

app = typer.Typer(no_args_is_help=True, help="Ember: self-hosted, isolated Linux sandboxes.")
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
                console.print(f"[red]error:[/red] {exc}", markup=True)
                raise typer.Exit(1) from None
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


def main() -> None:
    app()
