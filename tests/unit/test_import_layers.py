"""The layering rules of STYLE.md §1, checked in fresh interpreters."""

import json
import subprocess
import sys

import pytest


def modules_after_import(*modules: str) -> set[str]:
    code = (
        "import sys, json\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, check=True, text=True
    )
    return set(json.loads(out.stdout))


def test_agent_uses_only_the_standard_library() -> None:
    loaded = modules_after_import("ember.agent.server", "ember.agent.files", "ember.agent.commands")
    foreign = {
        m
        for m in loaded
        if m not in sys.stdlib_module_names and m != "ember" and not m.startswith("_")
    }
    assert not foreign, foreign


@pytest.mark.parametrize("package", ["ember.runtime", "ember.image", "ember.snapshots"])
def test_lower_layers_do_not_import_the_server(package: str) -> None:
    loaded = modules_after_import(package)
    assert not loaded & {"fastapi", "starlette", "sqlalchemy", "httpx", "pydantic", "typer"}
