"""Ember's Python SDK: sandboxes from Python, sync and async.

    from ember.sdk import Sandbox

    with Sandbox.create(name="demo") as sandbox:
        sandbox.write_files({"hello.py": "print('hi')"})
        print(sandbox.run_command("python3", ["hello.py"]).stdout())

The server and token come from arguments (`Client(url, token)`), else the
EMBER_URL and EMBER_TOKEN variables, else the file `ember serve` writes.
Imports only `ember.wire` and httpx.
"""

from ember.wire.errors import EmberError

from ._async import AsyncClient, AsyncCommand, AsyncFilesystem, AsyncSandbox, AsyncSnapshot
from ._config import Config
from ._core import LogLine
from ._errors import EmberApiError, EmberConfigError, EmberConnectionError, EmberTimeoutError
from ._sync import Client, Command, Filesystem, Sandbox, Snapshot

__all__ = [
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
