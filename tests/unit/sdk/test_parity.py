"""The sync and async twins have the same public surface (STYLE.md §2, E2B's parity test).

For every pair, each public method, property and context-manager hook of one
class has its counterpart in the other, with the same signature once `AsyncX`
is read as `X`; every async method is a coroutine function or an async
generator, except the listed I/O-free ones, which must be plain in both.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

from ember.sdk import (
    AsyncClient,
    AsyncCommand,
    AsyncFilesystem,
    AsyncSandbox,
    AsyncSnapshot,
    Client,
    Command,
    Filesystem,
    Sandbox,
    Snapshot,
    _async,
    _core,
    _sync,
)
from ember.wire.command import Command as CommandModel
from ember.wire.sandbox import Sandbox as SandboxModel
from ember.wire.snapshot import Snapshot as SnapshotModel

PAIRS = [
    (Client, AsyncClient),
    (Sandbox, AsyncSandbox),
    (Command, AsyncCommand),
    (Filesystem, AsyncFilesystem),
    (Snapshot, AsyncSnapshot),
]
PAIR_IDS = [sync.__name__ for sync, _ in PAIRS]

# Methods that do no I/O, so they stay plain functions in the async twin.
IO_FREE = {("Sandbox", "domain")}

# Context-manager hooks are dunders, but part of the public surface.
HOOKS = {"__enter__": "__aenter__", "__exit__": "__aexit__"}


def public_members(cls: type) -> dict[str, Any]:
    """Public names defined by `cls` or its SDK bases, as the raw descriptors."""
    members: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_"):
                members[name] = value
    return members


def unasync(annotation: str) -> str:
    """`AsyncIterator[AsyncSandbox] | None` reads as `Iterator[Sandbox] | None`."""
    return re.sub(r"\bAsync(?=[A-Z])", "", annotation)


def normalised(func: Any) -> tuple[tuple[str, str, str, str], ...]:
    signature = inspect.signature(func)
    params = tuple(
        (p.name, str(p.kind), repr(p.default), unasync(str(p.annotation)))
        for p in signature.parameters.values()
    )
    return (*params, ("return", "", "", unasync(str(signature.return_annotation))))


def kind(descriptor: Any) -> str:
    return type(descriptor).__name__  # function, classmethod, staticmethod, property


def underlying(descriptor: Any) -> Any:
    if isinstance(descriptor, classmethod | staticmethod):
        return descriptor.__func__
    if isinstance(descriptor, property):
        return descriptor.fget
    return descriptor


def is_async(func: Any) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)


def test_every_twin_is_named_async_plus_its_sync_name() -> None:
    for sync_cls, async_cls in PAIRS:
        assert async_cls.__name__ == "Async" + sync_cls.__name__


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS, ids=PAIR_IDS)
def test_same_public_names(sync_cls: type, async_cls: type) -> None:
    assert sorted(public_members(sync_cls)) == sorted(public_members(async_cls))


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS, ids=PAIR_IDS)
def test_same_kinds_and_signatures(sync_cls: type, async_cls: type) -> None:
    sync_members, async_members = public_members(sync_cls), public_members(async_cls)
    for name in sorted(sync_members.keys() & async_members.keys()):
        sync_member, async_member = sync_members[name], async_members[name]
        assert kind(sync_member) == kind(async_member), f"{sync_cls.__name__}.{name}"
        assert normalised(underlying(sync_member)) == normalised(underlying(async_member)), (
            f"{sync_cls.__name__}.{name} and {async_cls.__name__}.{name} differ"
        )


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS, ids=PAIR_IDS)
def test_async_methods_are_coroutines_and_sync_ones_are_not(
    sync_cls: type, async_cls: type
) -> None:
    for name, descriptor in public_members(async_cls).items():
        if isinstance(descriptor, property):
            continue
        async_func = underlying(descriptor)
        sync_func = underlying(public_members(sync_cls)[name])
        where = f"{async_cls.__name__}.{name}"
        assert not is_async(sync_func), f"{sync_cls.__name__}.{name} is async"
        if (sync_cls.__name__, name) in IO_FREE:
            assert not is_async(async_func), f"{where} is listed as I/O-free but is async"
        else:
            assert is_async(async_func), f"{where} is neither a coroutine nor an async generator"


def test_the_io_free_list_names_real_methods() -> None:
    names = {sync.__name__: sync for sync, _ in PAIRS}
    for cls_name, method in IO_FREE:
        assert method in public_members(names[cls_name])


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS, ids=PAIR_IDS)
def test_context_manager_hooks_match(sync_cls: type, async_cls: type) -> None:
    for sync_hook, async_hook in HOOKS.items():
        has_sync = sync_hook in vars(sync_cls)
        assert has_sync == (async_hook in vars(async_cls)), f"{sync_cls.__name__}.{sync_hook}"
        assert sync_hook not in vars(async_cls), f"{async_cls.__name__} has {sync_hook}"
        if has_sync:
            sync_func, async_func = vars(sync_cls)[sync_hook], vars(async_cls)[async_hook]
            assert not is_async(sync_func)
            assert inspect.iscoroutinefunction(async_func)
            assert normalised(sync_func) == normalised(async_func)


def test_module_level_functions_match() -> None:
    sync_funcs = {
        n
        for n, f in vars(_sync).items()
        if inspect.isfunction(f) and f.__module__ == _sync.__name__
    }
    async_funcs = {
        n
        for n, f in vars(_async).items()
        if inspect.isfunction(f) and f.__module__ == _async.__name__
    }
    assert sync_funcs == async_funcs
    for name in sync_funcs:
        assert normalised(getattr(_sync, name)) == normalised(getattr(_async, name))


# -- instance attributes, which the class dictionaries do not show ------------------------

SANDBOX = SandboxModel.model_validate(
    {
        "name": "twin",
        "persistent": True,
        "createdAt": 1,
        "updatedAt": 1,
        "currentSessionId": None,
        "status": "stopped",
    }
)
COMMAND = CommandModel.model_validate(
    {
        "id": "cmd_1",
        "name": "true",
        "args": [],
        "cwd": "/",
        "sessionId": "sbx_1",
        "exitCode": None,
        "startedAt": 1,
    }
)
SNAPSHOT = SnapshotModel.model_validate(
    {
        "id": "snap_1",
        "sourceSessionId": "sbx_1",
        "region": "local",
        "status": "created",
        "sizeBytes": 0,
        "createdAt": 1,
        "updatedAt": 1,
    }
)


def public_attributes(obj: object) -> set[str]:
    return {name for name in vars(obj) if not name.startswith("_")}


async def test_instances_have_the_same_public_attributes() -> None:
    sync_client = Client("http://127.0.0.1:9", "token")
    async_client = AsyncClient("http://127.0.0.1:9", "token")
    try:
        state = _core.SandboxState(SANDBOX, None)
        sync_sandbox = Sandbox(state, sync_client)
        async_sandbox = AsyncSandbox(state, async_client)
        instances = [
            (sync_client, async_client),
            (sync_sandbox, async_sandbox),
            (Command(sync_sandbox, COMMAND), AsyncCommand(async_sandbox, COMMAND)),
            (sync_sandbox.fs, async_sandbox.fs),
            (Snapshot(SNAPSHOT, sync_client), AsyncSnapshot(SNAPSHOT, async_client)),
        ]
        for sync_obj, async_obj in instances:
            assert public_attributes(sync_obj) == public_attributes(async_obj), type(sync_obj)
        assert isinstance(sync_sandbox.fs, Filesystem)
        assert isinstance(async_sandbox.fs, AsyncFilesystem)
    finally:
        sync_client.close()
        await async_client.close()
