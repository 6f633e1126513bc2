"""Commands: spawn, supervise, reap, time out, and keep their output.

Threads: one reaper blocks in waitpid(-1) (the agent is PID 1, so every
orphan in the session ends up as its child), one pump reads every pipe
through a selector, and a timer per command with a timeout.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import selectors
import signal
import subprocess
import threading
import time

from . import protocol

TYPE_CHECKING = False  # like typing.TYPE_CHECKING, without importing typing (3 ms)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any

MAX_LOG_BYTES = 64 * 1024 * 1024
READ_BYTES = 64 * 1024
# A command ends when its process exits and its pipes reach EOF, or this long
# after exit when a background child keeps them open, so a daemon started
# from a command cannot make `wait` hang.
PIPE_GRACE_S = 0.5
TERM_GRACE_S = 2.0
COMMAND_OOM_SCORE_ADJ = b"1000"
# Set per command for its user, never passed on from the agent's environment.
PER_USER_VARIABLES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "PWD"})
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def now_ms() -> int:
    return int(time.time() * 1000)


class User:
    """A user commands run as. (Plain classes here: dataclasses cost the agent's start 7 ms.)"""

    __slots__ = ("gid", "groups", "home", "name", "uid")

    def __init__(self, name: str, uid: int, gid: int, groups: tuple[int, ...], home: str) -> None:
        self.name, self.uid, self.gid, self.groups, self.home = name, uid, gid, groups, home

    @classmethod
    def lookup(cls, name: str) -> User:
        entry = pwd.getpwnam(name)
        groups = tuple(g for g in os.getgrouplist(name, entry.pw_gid) if g != entry.pw_gid)
        return cls(name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


class Command:
    """A started process, its output (as (kind, bytes) chunks) and its end."""

    def __init__(
        self,
        cmd_id: str,
        argv: list[str],
        cwd: str,
        user: str,
        started_at_ms: int,
        started_mono: float,
    ) -> None:
        self.cmd_id, self.argv, self.cwd, self.user = cmd_id, argv, cwd, user
        self.started_at_ms, self.started_mono = started_at_ms, started_mono
        self.pid = 0
        self.popen: subprocess.Popen[bytes] | None = None
        self.stdin_fd: int | None = None
        self.chunks: list[tuple[bytes, bytes]] = []
        self.first_index = 0  # chunks dropped from the front
        self.kept_bytes = 0
        self.dropped_bytes = 0
        self.open_pipes = 0
        self.exit_code: int | None = None
        self.duration_ms: int | None = None
        self.exited_mono: float | None = None
        self.done = False
        self.timer: threading.Timer | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cmd_id": self.cmd_id,
            "argv": self.argv,
            "cwd": self.cwd,
            "user": self.user,
            "pid": self.pid,
            "started_at_ms": self.started_at_ms,
            "exit_code": self.exit_code if self.done else None,
            "duration_ms": self.duration_ms if self.done else None,
        }


class CommandTable:
    def __init__(self, default_user: User, workdir: str) -> None:
        self.default_user = default_user
        self.workdir = workdir
        self._root = User("root", 0, 0, (), "/root")
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._commands: dict[str, Command] = {}
        self._by_pid: dict[int, Command] = {}
        self._selector = selectors.DefaultSelector()
        self._pipes: dict[int, tuple[Command, bytes]] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._has_children = threading.Event()
        threading.Thread(target=self._reap_forever, name="reaper", daemon=True).start()
        threading.Thread(target=self._pump_forever, name="pump", daemon=True).start()

    # -- spawning -----------------------------------------------------------

    def user_for(self, name: str) -> User:
        if name == "root":
            return self._root
        if name == "default":
            return self.default_user
        raise protocol.AgentError(
            protocol.BAD_REQUEST, f"user must be 'default' or 'root', not {name!r}"
        )

    def environment(self, user: User, extra: Mapping[str, str]) -> dict[str, str]:
        """The agent's own variables (the runtime's, e.g. CA bundles), the user's, then `extra`."""
        env = {k: v for k, v in os.environ.items() if k not in PER_USER_VARIABLES}
        env |= {
            "PATH": BASE_PATH,
            "HOME": user.home,
            "USER": user.name,
            "LOGNAME": user.name,
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
        }
        env.update(extra)
        return env

    def spawn(
        self,
        cmd_id: str,
        argv: list[str],
        *,
        cwd: str | None,
        env: Mapping[str, str],
        user_name: str,
        timeout_ms: int | None,
        with_stdin: bool,
    ) -> Command:
        user = self.user_for(user_name)
        cwd = cwd or self.workdir
        command = Command(cmd_id, argv, cwd, user_name, now_ms(), time.monotonic())
        with self._lock:
            if cmd_id in self._commands:
                raise protocol.AgentError(protocol.EXISTS, f"command {cmd_id!r} already exists")
            self._commands[cmd_id] = command
            # Our own pipes, passed as fds: cheaper than Popen's pipe objects.
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            in_r, in_w = os.pipe2(os.O_CLOEXEC) if with_stdin else (subprocess.DEVNULL, -1)
            try:
                self._popen(command, self.environment(user, env), user, (in_r, out_w, err_w))
            finally:
                for fd in (out_w, err_w, in_r):
                    if fd >= 0:
                        os.close(fd)
            if command.done:  # it could not start
                for fd in (out_r, err_r, in_w):
                    if fd >= 0:
                        os.close(fd)
                return command
            command.stdin_fd = in_w if with_stdin else None
            for fd, kind in ((out_r, protocol.STDOUT), (err_r, protocol.STDERR)):
                os.set_blocking(fd, False)
                self._pipes[fd] = (command, kind)
                command.open_pipes += 1
        self._wake_pump()
        if timeout_ms:
            command.timer = threading.Timer(timeout_ms / 1000, self._time_out, (command,))
            command.timer.daemon = True
            command.timer.start()
        return command

    def _popen(
        self,
        command: Command,
        env: Mapping[str, str],
        user: User,
        stdio: tuple[int, int, int],
        *,
        new_session: bool = True,
    ) -> None:
        """Start the process (the caller holds the lock, so the reaper finds it registered)."""
        try:
            popen = subprocess.Popen(
                command.argv,
                cwd=command.cwd,
                env=env,
                stdin=stdio[0],
                stdout=stdio[1],
                stderr=stdio[2],
                user=user.uid,
                group=user.gid,
                extra_groups=list(user.groups),
                start_new_session=new_session,
                close_fds=True,
            )
        except OSError as exc:
            self._fail_to_start(command, exc)
            return
        command.popen, command.pid = popen, popen.pid
        self._by_pid[popen.pid] = command
        self._has_children.set()
        # The OOM killer must pick a command, never the agent; raising a
        # score needs no privilege, lowering one does.
        try:
            fd = os.open(f"/proc/{popen.pid}/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, COMMAND_OOM_SCORE_ADJ)
            finally:
                os.close(fd)
        except OSError:
            pass  # it has already exited

    def spawn_with_fds(
        self,
        argv: list[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        user: User,
        fds: tuple[int, int, int],
        new_session: bool = True,
    ) -> Command:
        """Start a process on given stdin/stdout/stderr (the sudo service, terminals).

        It is supervised and reaped like a command but not listed.
        """
        command = Command("", argv, cwd, user.name, now_ms(), time.monotonic())
        with self._lock:
            self._popen(command, env, user, fds, new_session=new_session)
        return command

    def signal_command(self, command: Command, signum: int) -> None:
        """Signal the command's process group (or the process, if it left it)."""
        with self._lock:
            if command.done or not command.pid:
                return
            try:
                os.killpg(command.pid, signum)
            except ProcessLookupError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(command.pid, signum)

    def _fail_to_start(self, command: Command, exc: OSError) -> None:
        """Record a command that could not start, the way a shell reports it."""
        if exc.filename == command.cwd or (
            exc.errno == errno.ENOENT and not os.path.isdir(command.cwd)
        ):
            message, code = f"ember: cd: {command.cwd}: {exc.strerror}\n", 1
        elif exc.errno == errno.ENOENT:
            message, code = f"ember: {command.argv[0]}: command not found\n", 127
        else:
            message, code = f"ember: {command.argv[0]}: {exc.strerror}\n", 126
        self._append(command, protocol.STDERR, message.encode())
        command.exit_code, command.duration_ms, command.done = code, 0, True
        self._changed.notify_all()

    # -- supervision --------------------------------------------------------

    def _reap_forever(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                self._has_children.wait(0.5)
                self._has_children.clear()
                continue
            except InterruptedError:
                continue
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                code = 128 - code
            with self._lock:
                command = self._by_pid.pop(pid, None)
                if command is None:
                    continue  # an orphan re-parented to us
                if command.popen is not None:
                    command.popen.returncode = code  # so Popen never waits on a reused pid
                if command.timer:
                    command.timer.cancel()
                command.exit_code = code
                command.exited_mono = time.monotonic()
                command.duration_ms = int((command.exited_mono - command.started_mono) * 1000)
                self._maybe_finish(command)
            self._wake_pump()

    def _maybe_finish(self, command: Command) -> None:
        if command.exit_code is not None and command.open_pipes == 0 and not command.done:
            command.done = True
            if command.stdin_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(command.stdin_fd)
                command.stdin_fd = None
            self._changed.notify_all()

    def _append(self, command: Command, kind: bytes, data: bytes) -> None:
        command.chunks.append((kind, data))
        command.kept_bytes += len(data)
        while command.kept_bytes > MAX_LOG_BYTES and len(command.chunks) > 1:
            _, old = command.chunks.pop(0)
            command.kept_bytes -= len(old)
            command.dropped_bytes += len(old)
            command.first_index += 1

    def _wake_pump(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _close_pipe(self, fd: int) -> None:
        command, _ = self._pipes.pop(fd)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fd)
        os.close(fd)
        command.open_pipes -= 1
        self._maybe_finish(command)

    def _pump_forever(self) -> None:
        while True:
            with self._lock:
                for fd in self._pipes:
                    if fd not in self._selector.get_map():
                        self._selector.register(fd, selectors.EVENT_READ)
                deadlines = [
                    c.exited_mono + PIPE_GRACE_S
                    for c, _ in self._pipes.values()
                    if c.exited_mono is not None
                ]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            events = self._selector.select(timeout)
            with self._lock:
                for key, _ in events:
                    fd = key.fd
                    if fd == self._wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(fd, 4096)
                        continue
                    if fd not in self._pipes:
                        continue
                    command, kind = self._pipes[fd]
                    try:
                        data = os.read(fd, READ_BYTES)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        self._append(command, kind, data)
                        self._changed.notify_all()
                    else:
                        self._close_pipe(fd)
                now = time.monotonic()
                for fd, (command, _) in list(self._pipes.items()):
                    if (
                        command.exited_mono is not None
                        and now >= command.exited_mono + PIPE_GRACE_S
                    ):
                        self._close_pipe(fd)

    def _time_out(self, command: Command) -> None:
        self.signal(command.cmd_id, signal.SIGKILL)

    # -- queries and control ------------------------------------------------

    def get(self, cmd_id: str) -> Command:
        with self._lock:
            try:
                return self._commands[cmd_id]
            except KeyError:
                raise protocol.AgentError(protocol.NOT_FOUND, f"no command {cmd_id!r}") from None

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [c.to_json() for c in self._commands.values()]

    def describe(self, cmd_id: str) -> dict[str, Any]:
        command = self.get(cmd_id)
        with self._lock:
            return command.to_json()

    def signal(self, cmd_id: str, signum: int) -> None:
        self.signal_command(self.get(cmd_id), signum)

    def wait(self, cmd_id: str) -> Command:
        return self.wait_for(self.get(cmd_id))

    def wait_for(self, command: Command) -> Command:
        with self._lock:
            while not command.done:
                self._changed.wait()
        return command

    def follow(self, cmd_id: str) -> Iterator[tuple[bytes, bytes]]:
        """Every output chunk from the start, live, until the command is done."""
        command = self.get(cmd_id)
        index = 0
        while True:
            with self._lock:
                while True:
                    index = max(index, command.first_index)
                    available = command.chunks[index - command.first_index :]
                    if available or command.done:
                        break
                    self._changed.wait()
            if not available:
                return
            index += len(available)
            yield from available

    def write_stdin(self, cmd_id: str, data: bytes) -> None:
        command = self.get(cmd_id)
        fd = command.stdin_fd
        if fd is None:
            raise protocol.AgentError(protocol.BAD_REQUEST, f"command {cmd_id!r} has no open stdin")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BrokenPipeError:
            raise protocol.AgentError(protocol.IO_ERROR, "the command closed its stdin") from None

    def close_stdin(self, cmd_id: str) -> None:
        command = self.get(cmd_id)
        with self._lock:
            if command.stdin_fd is not None:
                os.close(command.stdin_fd)
                command.stdin_fd = None

    def terminate_all(self) -> None:
        """SIGTERM every running command, then SIGKILL what is left."""
        with self._lock:
            running = [c.pid for c in self._commands.values() if c.pid and not c.done]
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE_S
        while time.monotonic() < deadline:
            with self._lock:
                if all(c.done or not c.pid for c in self._commands.values()):
                    return
            time.sleep(0.05)
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
