"""`ember.sdk`'s public names are pinned (httpx tests/test_exported_members.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import ember.sdk
from ember.wire.errors import EmberError

EXPORTED = [
    "AsyncClient",
    "AsyncCommand",
    "AsyncFilesystem",
    "AsyncSandbox",
    "AsyncSnapshot",
    "Client",
    "Command",
    "Config",
    "EmberApiError",
    "EmberConfigError",
    "EmberConnectionError",
    "EmberError",
    "EmberTimeoutError",
    "Filesystem",
    "LogLine",
    "Sandbox",
    "Snapshot",
]


def test_all_is_pinned() -> None:
    assert ember.sdk.__all__ == EXPORTED


def test_all_is_sorted_and_without_duplicates() -> None:
    assert ember.sdk.__all__ == sorted(set(ember.sdk.__all__), key=str.casefold)


def test_every_public_name_of_the_package_is_exported() -> None:
    public = sorted(name for name in vars(ember.sdk) if not name.startswith("_"))
    assert public == sorted(ember.sdk.__all__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from ember.sdk import *", namespace)
    assert sorted(n for n in namespace if n != "__builtins__") == EXPORTED


def test_error_classes_share_the_wire_root() -> None:
    assert ember.sdk.EmberError is EmberError
    for name in ("EmberApiError", "EmberConfigError", "EmberConnectionError", "EmberTimeoutError"):
        assert issubclass(getattr(ember.sdk, name), EmberError), name


def test_importing_the_sdk_loads_no_server_package() -> None:
    code = "import sys, json, ember.sdk; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, check=True)
    loaded = {name.split(".")[0] for name in json.loads(out.stdout)}
    assert not loaded & {"fastapi", "starlette", "sqlalchemy", "uvicorn", "typer", "alembic"}
    server_parts = {
        name
        for name in json.loads(out.stdout)
        if name.startswith(("ember.control", "ember.api", "ember.runtime", "ember.store"))
    }
    assert not server_parts
