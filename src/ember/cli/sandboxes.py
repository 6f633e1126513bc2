"""The user commands of the `ember` CLI, modelled on the reference's `sandbox` CLI (§8)."""

from __future__ import annotations

import functools
import io
import os
import posixpath
import sys
import tarfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from ember.sdk import Client, EmberError, Sandbox, Snapshot
from ember.wire.common import NAME_PATTERN
from ember.wire.errors import SandboxNotFoundError

from . import terminal
from .durations import human, parse_ms
from .output import console, fail, note, print_json, print_table, shown, stdout, when

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]
RuntimeOpt = Annotated[
    str | None, typer.Option(help="Isolation: container or microvm (the server's default).")
]
EnvOpt = Annotated[
    list[str] | None,
    typer.Option("--env", "-e", help="KEY=VALUE (repeatable; bare KEY copies it from here)."),
]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", "-t", help="KEY=VALUE (repeatable).")]
PortOpt = Annotated[
    list[int] | None, typer.Option("--publish-port", "-p", help="Port to expose (repeatable).")
]


class Connection:
    """The server and token to use: --url/--token, EMBER_URL/EMBER_TOKEN, or client.json."""

    url: str | None = None
    token: str | None = None
    _client: Client | None = None

    @classmethod
    def client(cls) -> Client:
        if cls._client is None:
            try:
                cls._client = Client(cls.url, cls.token)
            except EmberError as exc:
                fail(exc.message)
        return cls._client


def key_values(items: list[str] | None, *, from_env: bool = False) -> dict[str, str] | None:
    if not items:
        return None
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            if not from_env or key not in os.environ:
                raise typer.BadParameter(f"{item!r} is not KEY=VALUE")
            value = os.environ[key]
        result[key] = value
    return result


def checked_name(name: str, what: str = "sandbox name") -> str:
    """Names and ids go into URL paths: `a/b` or `..` must not reach another endpoint."""
    if not NAME_PATTERN.fullmatch(name):
        fail(f"{name!r} is not a valid {what} (letters, digits, '_' and '-')")
    return name


def sandbox_or_fail(name: str, *, resume: bool = False) -> Sandbox:
    checked_name(name)
    try:
        return Sandbox.get(name, resume=resume, client=Connection.client())
    except SandboxNotFoundError:
        fail(f"no sandbox named {name!r}")


def _snapshot(snapshot_id: str) -> Snapshot:
    return Snapshot.get(checked_name(snapshot_id, "snapshot id"), client=Connection.client())


def guarded(fn: Any) -> Any:
    """Turn server errors into one red line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EmberError as exc:
            code = getattr(exc, "api_code", exc.code)
            fail(exc.message if code == EmberError.code else f"{exc.message} ({code})")

    return wrapper


def register(app: typer.Typer) -> None:
    """Add the sandbox commands to the root `ember` app."""
    snapshots = typer.Typer(no_args_is_help=True, help="List, inspect and delete snapshots.")
    sessions = typer.Typer(no_args_is_help=True, help="List a sandbox's sessions.")
    config = typer.Typer(no_args_is_help=True, help="Show or change a sandbox's configuration.")
    app.add_typer(snapshots, name="snapshots")
    app.add_typer(sessions, name="sessions")
    app.add_typer(config, name="config")

    @app.command("create")
    @guarded
    def create(
        name: Annotated[
            str | None, typer.Option(help="Sandbox name (generated if absent).")
        ] = None,
        non_persistent: Annotated[
            bool, typer.Option("--non-persistent", help="Start clean every session.")
        ] = False,
        image: Annotated[str | None, typer.Option(help="Base image.")] = None,
        timeout: Annotated[str, typer.Option(help="Session timeout, e.g. 5m.")] = "5m",
        vcpus: Annotated[
            float | None, typer.Option(help="vCPUs (memory is 2048 MiB each).")
        ] = None,
        ports: PortOpt = None,
        snapshot: Annotated[
            str | None, typer.Option("--snapshot", "-s", help="Start from this snapshot.")
        ] = None,
        env: EnvOpt = None,
        tags: TagOpt = None,
        snapshot_expiration: Annotated[str | None, typer.Option(help="e.g. 7d, or none.")] = None,
        keep_last_snapshots: Annotated[
            int | None, typer.Option(help="Keep only the newest N (1-10).")
        ] = None,
        runtime: RuntimeOpt = None,
        connect: Annotated[bool, typer.Option("--connect", help="Open a shell in it.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Create a sandbox and start it."""
        sandbox = Sandbox.create(
            client=Connection.client(),
            name=name,
            image=image,
            source_snapshot=snapshot,
            ports=ports,
            timeout=parse_ms(timeout) / 1000,
            vcpus=vcpus,
            env=key_values(env, from_env=True),
            tags=key_values(tags),
            persistent=not non_persistent,
            snapshot_expiration=parse_ms(snapshot_expiration, allow_none=True) / 1000
            if snapshot_expiration
            else None,
            keep_last_snapshots=keep_last_snapshots,
            runtime=runtime,
        )
        if as_json:
            print_json(sandbox.info)
        else:
            stdout.print(sandbox.name)
        if connect:
            raise typer.Exit(_attach(sandbox, [], None, {}))

    @app.command("list")
    @guarded
    def list_(
        all_: Annotated[bool, typer.Option("--all", "-a", help="Also stopped sandboxes.")] = False,
        name_prefix: Annotated[str | None, typer.Option(help="Only names starting so.")] = None,
        sort_by: Annotated[
            str | None, typer.Option(help="createdAt, name or statusUpdatedAt.")
        ] = None,
        sort_order: Annotated[str | None, typer.Option(help="asc or desc.")] = None,
        tags: TagOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """List sandboxes (running and paused ones unless --all)."""
        found = [
            s.info
            for s in Sandbox.list(
                client=Connection.client(),
                name_prefix=name_prefix,
                sort_by=sort_by,
                sort_order=sort_order,
                tags=key_values(tags),
            )
            if all_ or s.status in ("running", "pending") or s.info.paused
        ]
        if as_json:
            print_json(found)
            return
        print_table(
            ("NAME", "STATUS", "CREATED", "MEMORY", "VCPUS", "TIMEOUT", "SNAPSHOT", "TAGS"),
            (
                (
                    s.name,
                    "paused" if s.paused else s.status,
                    when(s.created_at),
                    f"{s.memory} MiB",
                    s.vcpus,
                    human(s.timeout),
                    s.current_snapshot_id,
                    ",".join(f"{k}={v}" for k, v in (s.tags or {}).items()),
                )
                for s in found
            ),
        )

    app.command("ls", help="List sandboxes (alias of list).")(list_)

    @app.command("exec", context_settings={"allow_interspersed_args": False})
    @guarded
    def exec_(
        name: str,
        command: str,
        args: Annotated[list[str] | None, typer.Argument()] = None,
        sudo: Annotated[bool, typer.Option(help="Run as root.")] = False,
        interactive: Annotated[
            bool, typer.Option("--interactive", "-i", help="On a terminal.")
        ] = False,
        workdir: Annotated[
            str | None, typer.Option("--workdir", "-w", help="Working directory.")
        ] = None,
        env: EnvOpt = None,
        timeout: Annotated[
            str | None, typer.Option(help="SIGKILL after this long (exit 137).")
        ] = None,
    ) -> None:
        """Run a command in a sandbox (resuming it); its exit code is ember's."""
        sandbox = sandbox_or_fail(name, resume=True)
        raise typer.Exit(
            _run(sandbox, [command, *(args or [])], sudo, interactive, workdir, env, timeout)
        )

    @app.command("run", context_settings={"allow_interspersed_args": False})
    @guarded
    def run(
        command: str,
        args: Annotated[list[str] | None, typer.Argument()] = None,
        name: Annotated[
            str | None, typer.Option(help="Use this sandbox (created if missing).")
        ] = None,
        rm: Annotated[bool, typer.Option("--rm", help="Delete the sandbox afterwards.")] = False,
        stop: Annotated[bool, typer.Option("--stop", help="Stop the sandbox afterwards.")] = False,
        sudo: Annotated[bool, typer.Option(help="Run as root.")] = False,
        interactive: Annotated[
            bool, typer.Option("--interactive", "-i", help="On a terminal.")
        ] = False,
        workdir: Annotated[
            str | None, typer.Option("--workdir", "-w", help="Working directory.")
        ] = None,
        env: EnvOpt = None,
        timeout: Annotated[
            str | None, typer.Option(help="SIGKILL after this long (exit 137).")
        ] = None,
    ) -> None:
        """Create (or resume, with --name) a sandbox and run a command in it."""
        client = Connection.client()
        if name:
            sandbox = Sandbox.get_or_create(checked_name(name), client=client, persistent=not rm)
        else:
            sandbox = Sandbox.create(client=client, persistent=not rm)
            if not rm:  # else nothing would tell which sandbox is left behind
                note(f"created sandbox {sandbox.name}")
        try:
            code = _run(sandbox, [command, *(args or [])], sudo, interactive, workdir, env, timeout)
        finally:
            if rm:
                sandbox.delete(delete_snapshots=True)
            elif stop:
                sandbox.stop()
        raise typer.Exit(code)

    @app.command("connect")
    @guarded
    def connect_(
        name: str,
        sudo: Annotated[bool, typer.Option(help="A root shell.")] = False,
        workdir: Annotated[
            str | None, typer.Option("--workdir", "-w", help="Working directory.")
        ] = None,
        env: EnvOpt = None,
    ) -> None:
        """Open a shell in a sandbox, on a real terminal."""
        sandbox = sandbox_or_fail(name, resume=True)
        argv = ["sudo", "-i"] if sudo else []
        raise typer.Exit(_attach(sandbox, argv, workdir, key_values(env, from_env=True) or {}))

    app.command("ssh", help="Open a shell in a sandbox (alias of connect).")(connect_)
    app.command("shell", help="Open a shell in a sandbox (alias of connect).")(connect_)

    @app.command("cp")
    @guarded
    def copy(
        src: str,
        dst: str,
    ) -> None:
        """Copy files or directories: `ember cp ./dir box:/vercel/sandbox/dir`, or the other way."""
        remote_src, remote_dst = _remote(src), _remote(dst)
        if bool(remote_src) == bool(remote_dst):
            fail("exactly one side must be remote, written NAME:PATH")
        try:
            if remote_dst:
                name, path = remote_dst
                _upload(sandbox_or_fail(name, resume=True), Path(src), path)
            else:
                assert remote_src
                name, path = remote_src
                _download(sandbox_or_fail(name, resume=True), path, Path(dst))
        except OSError as exc:
            fail(f"{shown(exc.filename or '')}: {exc.strerror or exc}")

    @app.command("stop")
    @guarded
    def stop_(names: list[str], as_json: JsonOpt = False) -> None:
        """Stop sandboxes (persistent ones keep their files in a snapshot)."""
        for name in names:
            sandbox = sandbox_or_fail(name)
            snapshot = sandbox.stop()
            session = sandbox.session
            if as_json:
                print_json(
                    {
                        "name": name,
                        "session": session.model_dump(mode="json") if session else None,
                        "snapshot": snapshot.model_dump(mode="json") if snapshot else None,
                    }
                )
                continue
            stdout.print(f"{name}: stopped")
            if session is not None:
                stdout.print(f"  active CPU  {session.active_cpu_duration_ms or 0} ms")
                stdout.print(f"  duration    {human(session.duration)}")
            if snapshot is not None:
                stdout.print(f"  snapshot    {snapshot.id} ({snapshot.size_bytes} bytes)")

    @app.command("rm")
    @guarded
    def remove(names: list[str]) -> None:
        """Delete sandboxes for good."""
        for name in names:
            sandbox_or_fail(name).delete()
            stdout.print(f"{name}: deleted")

    @app.command("fork")
    @guarded
    def fork(
        source: str,
        name: Annotated[str | None, typer.Option(help="The new sandbox's name.")] = None,
        env: EnvOpt = None,
        tags: TagOpt = None,
        with_memory: Annotated[
            bool,
            typer.Option(
                "--with-memory",
                help="Copy the running or paused session itself: memory, processes, files "
                "(microVM sandboxes).",
            ),
        ] = False,
        runtime: RuntimeOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """A new sandbox with the source's configuration and the files of its current snapshot."""
        original = sandbox_or_fail(source)
        if original.status in ("running", "pending") and not with_memory:
            note(
                f"{source} is running: the fork starts from its last snapshot, without the "
                f"changes since (`ember stop {source}` first, or --with-memory, to include them)",
                "yellow",
            )
        forked = original.fork(
            name=name,
            env=key_values(env, from_env=True),
            tags=key_values(tags),
            with_memory=with_memory,
            runtime=runtime,
        )
        print_json(forked.info) if as_json else stdout.print(forked.name)

    @app.command("pause")
    @guarded
    def pause(names: list[str], as_json: JsonOpt = False) -> None:
        """Pause sandboxes with their memory (microVM sandboxes); `ember resume` or any
        use brings them back as they were. Their timeout stands still meanwhile."""
        for name in names:
            sandbox = sandbox_or_fail(name).pause()
            print_json(sandbox.info) if as_json else stdout.print(f"{name}: paused")

    @app.command("resume")
    @guarded
    def resume(names: list[str], as_json: JsonOpt = False) -> None:
        """Resume paused sandboxes (processes and memory as they were); a stopped
        sandbox starts a new session from its snapshot."""
        for name in names:
            sandbox = sandbox_or_fail(name)
            sandbox = sandbox.resume() if sandbox.paused else sandbox_or_fail(name, resume=True)
            print_json(sandbox.info) if as_json else stdout.print(f"{name}: running")

    @app.command("snapshot")
    @guarded
    def snapshot_(
        name: str,
        stop: Annotated[
            bool, typer.Option("--stop", help="Confirm: snapshotting stops the sandbox.")
        ] = False,
        expiration: Annotated[str | None, typer.Option(help="e.g. 14d, or none.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Snapshot a running sandbox (this stops it)."""
        if not stop:
            fail("snapshotting stops the sandbox; pass --stop to confirm")
        sandbox = sandbox_or_fail(name)
        taken = sandbox.snapshot(
            expiration=parse_ms(expiration, allow_none=True) / 1000 if expiration else None
        )
        print_json(taken.model) if as_json else stdout.print(taken.id)

    @snapshots.command("ls")
    @guarded
    def snapshots_ls(
        name: Annotated[str | None, typer.Option(help="Only this sandbox's.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """List snapshots."""
        checked = checked_name(name) if name is not None else None
        found = [s.model for s in Snapshot.list(sandbox=checked, client=Connection.client())]
        if as_json:
            print_json(found)
            return
        print_table(
            ("ID", "SANDBOX", "STATUS", "SIZE", "CREATED", "EXPIRES", "PARENT"),
            (
                (
                    s.id,
                    s.sandbox_name,
                    s.status,
                    s.size_bytes,
                    when(s.created_at),
                    when(s.expires_at),
                    s.parent_id,
                )
                for s in found
            ),
        )

    snapshots.command("list", help="List snapshots (alias of ls).")(snapshots_ls)

    @snapshots.command("get")
    @guarded
    def snapshots_get(snapshot_id: str) -> None:
        """Show one snapshot as JSON."""
        print_json(_snapshot(snapshot_id).model)

    @snapshots.command("tree")
    @guarded
    def snapshots_tree(name: str) -> None:
        """A sandbox's snapshots as parent/child lines, oldest first."""
        listed = Snapshot.list(sandbox=checked_name(name), client=Connection.client())
        found = sorted(
            (s.model for s in listed),
            key=lambda s: s.created_at,
        )
        depth: dict[str, int] = {}
        for snap in found:
            depth[snap.id] = depth.get(snap.parent_id or "", -1) + 1
            stdout.print(
                f"{'  ' * depth[snap.id]}{snap.id}  {snap.status}  {when(snap.created_at)}"
            )

    @snapshots.command("rm")
    @guarded
    def snapshots_rm(snapshot_ids: list[str]) -> None:
        """Delete snapshots."""
        for snapshot_id in snapshot_ids:
            _snapshot(snapshot_id).delete()
            stdout.print(f"{snapshot_id}: deleted")

    @sessions.command("ls")
    @guarded
    def sessions_ls(name: str, as_json: JsonOpt = False) -> None:
        """List a sandbox's sessions, newest first."""
        found = list(sandbox_or_fail(name).sessions())
        if as_json:
            print_json(found)
            return
        print_table(
            ("ID", "STATUS", "STARTED", "STOPPED", "CPU", "SNAPSHOT FROM"),
            (
                (
                    s.id,
                    s.status,
                    when(s.started_at),
                    when(s.stopped_at),
                    f"{s.active_cpu_duration_ms or 0} ms",
                    s.source_snapshot_id,
                )
                for s in found
            ),
        )

    @config.command("list")
    @guarded
    def config_list(name: str) -> None:
        """Show a sandbox's configuration."""
        info = sandbox_or_fail(name).info
        for key in (
            "vcpus",
            "memory",
            "timeout",
            "persistent",
            "ports",
            "tags",
            "env",
            "network_policy",
            "snapshot_expiration",
            "keep_last_snapshots",
            "current_snapshot_id",
            "region",
        ):
            stdout.print(f"{key:<22} {_config_value(key, getattr(info, key))}", markup=False)

    def _config_setter(command: str, help_text: str, convert: Any, field: str) -> None:
        @config.command(command, help=help_text)
        @guarded
        def setter(name: str, value: str) -> None:
            converted = convert(value)  # a bad value is a usage error before any request
            sandbox_or_fail(name).update(**{field: converted})
            stdout.print(f"{name}: {command} = {value}", markup=False)

    _config_setter("vcpus", "Set vCPUs (next session).", _number, "vcpus")
    _config_setter(
        "timeout", "Set the session timeout, e.g. 30m.", lambda v: parse_ms(v) / 1000, "timeout"
    )
    _config_setter("persistent", "true or false.", _boolean, "persistent")
    _config_setter(
        "current-snapshot", "Roll back to a snapshot (next session).", str, "current_snapshot_id"
    )
    _config_setter(
        "snapshot-expiration",
        "e.g. 7d, or none.",
        lambda v: parse_ms(v, allow_none=True) / 1000,
        "snapshot_expiration",
    )

    @config.command("ports")
    @guarded
    def config_ports(name: str, ports: PortOpt = None) -> None:
        """Replace the exposed ports (none: clear them)."""
        sandbox_or_fail(name).update(ports=ports or [])
        stdout.print(f"{name}: ports = {','.join(map(str, ports or [])) or '(none)'}")

    @config.command("tags")
    @guarded
    def config_tags(name: str, tags: TagOpt = None) -> None:
        """Replace the tags (none: clear them)."""
        values = key_values(tags) or {}
        sandbox_or_fail(name).update(tags=values)
        shown_tags = ",".join(f"{k}={v}" for k, v in values.items()) or "(none)"
        stdout.print(f"{name}: tags = {shown_tags}", markup=False)


# -- helpers -------------------------------------------------------------------------


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number") from None


def _boolean(text: str) -> bool:
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if text.lower() not in value:
        raise typer.BadParameter(f"{text!r} is not true or false")
    return value[text.lower()]


def _config_value(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("timeout", "snapshot_expiration"):
        return human(value) if value else "none"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    if hasattr(value, "model_dump_json"):
        return str(value.model_dump_json(exclude_none=True, by_alias=True))
    return shown(value)


def _run(
    sandbox: Sandbox,
    argv: list[str],
    sudo: bool,
    interactive: bool,
    workdir: str | None,
    env: list[str] | None,
    timeout: str | None,
) -> int:
    variables = key_values(env, from_env=True) or {}
    if interactive:
        return _attach(sandbox, ["sudo", *argv] if sudo else argv, workdir, variables)
    finished = sandbox.run_command(
        argv[0],
        argv[1:],
        cwd=workdir,
        env=variables,
        sudo=sudo,
        timeout=parse_ms(timeout) / 1000 if timeout else None,
        stdout=sys.stdout,
        stderr=sys.stderr,
    )
    sys.stdout.flush()
    exit_code = finished.exit_code if finished.exit_code is not None else 1
    if exit_code == 137 and timeout:
        note(f"killed after {timeout}", "yellow")
    return exit_code


def _attach(sandbox: Sandbox, argv: list[str], workdir: str | None, env: dict[str, str]) -> int:
    url, token = sandbox.interactive()
    try:
        return terminal.attach(url, token, argv, cwd=workdir, env=env)
    except RuntimeError as exc:
        fail(str(exc))


def _remote(spec: str) -> tuple[str, str] | None:
    name, sep, path = spec.partition(":")
    if not sep or "/" in name or not name:
        return None
    return name, path or "."


def _upload(sandbox: Sandbox, local: Path, remote: str) -> None:
    if not local.exists() and not local.is_symlink():
        fail(f"{shown(local)} does not exist")
    base = remote if posixpath.isabs(remote) else posixpath.join(sandbox.cwd, remote)
    buffer = io.BytesIO()
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("packing", total=None)
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
            tar.add(local, arcname=base.lstrip("/"), recursive=True)
        progress.update(task, description=f"uploading {len(buffer.getvalue()) >> 10} KiB")
        sandbox.write_archive(buffer.getvalue())
    note(f"copied {shown(local)} to {sandbox.name}:{shown(base)}")


# -- downloading: the sandbox is not trusted ------------------------------------------
#
# Whatever runs in a sandbox may have made its files, and with sudo even its agent, to
# trick whoever copies them out. So a download builds every local path itself from
# checked names, never writes through a symlink (one already here, or one the copy
# made), recreates only relative links that stay inside the copy (checked by name and
# again, after the copy, on the local disk), and takes permission bits but never
# setuid, setgid or sticky bits.


def _download(sandbox: Sandbox, remote: str, local: Path) -> None:
    kind = sandbox.fs.stat(remote)
    if kind.type == "directory":
        _download_tree(sandbox, kind.path, remote, local)
        return
    if kind.type == "other":
        fail(f"{sandbox.name}:{shown(remote)} is not a regular file or a directory")
    content = sandbox.read_file(remote)
    if content is None:
        fail(f"{sandbox.name}:{shown(remote)} does not exist")
    name = posixpath.basename(posixpath.normpath(remote))
    target = local / name if local.is_dir() and _safe_name(name) else local
    _write_local(target, content, kind.mode & 0o777)
    note(f"copied {sandbox.name}:{shown(remote)} to {shown(target)}")


def _safe_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _inside(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def _download_tree(sandbox: Sandbox, root: str, remote: str, local: Path) -> None:
    created: list[tuple[Path, int]] = []  # directories this copy made, and their modes
    links: list[Path] = []
    count = 0
    root_mode = sandbox.fs.stat(root).mode & 0o777
    if _make_dir(local, parents=True):
        created.append((local, root_mode))
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("downloading", total=None)
        pending = [(root, local)]
        while pending:
            remote_dir, local_dir = pending.pop()
            for entry in sandbox.fs.listdir(remote_dir):
                path = posixpath.join(remote_dir, entry.name)
                if not _safe_name(entry.name):
                    note(f"skipped {shown(entry.name)} in {shown(remote_dir)}: not a file name")
                    continue
                target = local_dir / entry.name
                if entry.type == "directory":
                    if _make_dir(target):
                        created.append((target, entry.mode & 0o777))
                    pending.append((path, target))
                elif entry.type == "symlink" and entry.link_target is not None:
                    link = entry.link_target
                    resolved = posixpath.normpath(posixpath.join(remote_dir, link))
                    if posixpath.isabs(link) or "\0" in link or not _inside(resolved, root):
                        note(f"skipped link {shown(path)} -> {shown(link)}", "yellow")
                        continue
                    _clear(target)
                    target.symlink_to(link)
                    links.append(target)
                elif entry.type == "file":
                    content = sandbox.read_file(path)
                    if content is None:
                        continue  # removed while we copied
                    _write_local(target, content, entry.mode & 0o777)
                    count += 1
                    progress.update(task, description=f"downloaded {count} files")
                else:
                    note(f"skipped {shown(path)}: not a regular file", "yellow")
    _drop_escaping_links(links, local)
    for directory, mode in reversed(created):  # children first: a read-only parent is last
        directory.chmod(mode)
    note(f"copied {count} files from {sandbox.name}:{shown(remote)} to {shown(local)}")


def _clear(target: Path) -> None:
    """Remove a symlink or file standing where the copy puts something else."""
    if target.is_symlink() or target.is_file():
        target.unlink()


def _make_dir(target: Path, *, parents: bool = False) -> bool:
    """A real directory at `target` (never a symlink's target); True if made here."""
    if target.is_symlink() and not parents:
        target.unlink()
    if target.is_dir():
        return False
    target.mkdir(mode=0o700, parents=parents)
    return True


def _drop_escaping_links(links: list[Path], root: Path) -> None:
    """Links the name check passed can still leave the copy through other links
    (`d/up -> ..` and `x -> d/up/../../etc`): check them on the disk, until none is left."""
    top = os.path.realpath(root)
    remaining = list(links)
    changed = True
    while changed:
        changed = False
        for link in list(remaining):
            if not _inside(os.path.realpath(link), top):
                note(f"skipped link {shown(link)} -> {shown(os.readlink(link))}", "yellow")
                link.unlink()
                remaining.remove(link)
                changed = True


def _write_local(target: Path, data: bytes, mode: int) -> None:
    """Write a file without following a symlink that may already stand at `target`."""
    if target.is_symlink():
        target.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(target, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, mode)
        f.write(data)
