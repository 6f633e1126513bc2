"""The agent's entry point: accept connections and serve one request on each."""

from __future__ import annotations

import _queue
import contextlib
import os
import signal
import socket
import threading

from . import files, protocol
from .commands import CommandTable, User, now_ms
from .sudo_service import SudoService
from .terminal import run_terminal

TYPE_CHECKING = False  # like typing.TYPE_CHECKING, without importing typing (3 ms)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .channels import ChannelListener

CMD_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
RNDRESEEDCRNG = 0x5207  # linux/random.h
HOSTNAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
USAGE = "usage: agent --user USER --workdir DIR [--listen-fd N | --serial PORT]"


def is_cmd_id(value: str) -> bool:
    """`[A-Za-z0-9_-]{1,64}`, checked without `re` (importing it costs the start 5 ms)."""
    return 0 < len(value) <= 64 and set(value) <= CMD_ID_CHARS


def _field(request: dict[str, Any], name: str, kind: type, *, default: Any = None) -> Any:
    value = request.get(name, default)
    if value is None and default is None and name not in request:
        raise protocol.AgentError(protocol.BAD_REQUEST, f"missing field {name!r}")
    wrong_type = value is not None and not isinstance(value, kind)
    if wrong_type or (isinstance(value, bool) and kind is int):
        raise protocol.AgentError(protocol.BAD_REQUEST, f"field {name!r} must be {kind.__name__}")
    return value


def _optional(request: dict[str, Any], name: str, kind: type) -> Any:
    if request.get(name) is None:
        return None
    return _field(request, name, kind)


def _string_map(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and "\0" not in k + v for k, v in value.items()
    ):
        raise protocol.AgentError(protocol.BAD_REQUEST, f"{name} must map strings to strings")
    return value


def parse_restored(request: dict[str, Any]) -> tuple[float, bytes, str | None]:
    """The `restored` request's (time, seed, hostname), or a BAD_REQUEST."""
    try:
        seed = bytes.fromhex(_field(request, "seed", str))
    except ValueError:
        seed = b""
    if not 16 <= len(seed) <= 512:
        raise protocol.AgentError(protocol.BAD_REQUEST, "seed must be 16 to 512 bytes of hex")
    now = request.get("time")
    if not isinstance(now, (int, float)) or isinstance(now, bool):
        raise protocol.AgentError(protocol.BAD_REQUEST, "time must be a number")
    hostname = _optional(request, "hostname", str)
    if hostname is not None and not (0 < len(hostname) <= 63 and set(hostname) <= HOSTNAME_CHARS):
        raise protocol.AgentError(protocol.BAD_REQUEST, "hostname must match [A-Za-z0-9-]{1,63}")
    return float(now), seed, hostname


class Agent:
    def __init__(self, user: User, workdir: str) -> None:
        self.user = user
        self.workdir = workdir
        self.started_at_ms = now_ms()
        self.commands = CommandTable(user, workdir)
        self.handlers: dict[str, Callable[[Connection, dict[str, Any]], None]] = {
            "hello": self.op_hello,
            "exec": self.op_exec,
            "logs": self.op_logs,
            "wait": self.op_wait,
            "status": self.op_status,
            "list": self.op_list,
            "signal": self.op_signal,
            "stdin": self.op_stdin,
            "write_tar": self.op_write_tar,
            "read_file": self.op_read_file,
            "mkdir": self.op_mkdir,
            "stat": self.op_stat,
            "listdir": self.op_listdir,
            "remove": self.op_remove,
            "rename": self.op_rename,
            "sync": self.op_sync,
            "terminal": self.op_terminal,
            "restored": self.op_restored,
        }

    def path(self, request: dict[str, Any], name: str = "path") -> str:
        return files.resolve(request.get(name), request.get("cwd"), self.workdir)

    # -- operations ---------------------------------------------------------

    def op_hello(self, conn: Connection, request: dict[str, Any]) -> None:
        conn.send_json(
            {
                "ok": True,
                "protocol": protocol.PROTOCOL_VERSION,
                "pid": os.getpid(),
                "started_at_ms": self.started_at_ms,
                "user": self.user.name,
                "workdir": self.workdir,
            }
        )

    def op_restored(self, conn: Connection, request: dict[str, Any]) -> None:
        """After a microVM's memory was restored: the clock is the save's and the
        RNG state a copy (of a template's, or of a fork's sibling). Set the one,
        reseed the other with the host's randomness, and take the session's
        hostname and network address. Needs the guest's root (CAP_SYS_TIME,
        CAP_SYS_ADMIN, CAP_NET_ADMIN)."""
        import fcntl  # only here: a container's agent never needs these
        import time

        from . import guestnet

        now, seed, hostname = parse_restored(request)
        network = guestnet.parse_network(request.get("network"))
        try:
            time.clock_settime(time.CLOCK_REALTIME, now)
            fd = os.open("/dev/urandom", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, seed)
                fcntl.ioctl(fd, RNDRESEEDCRNG)  # use what was just added, now
            finally:
                os.close(fd)
            if hostname is not None:
                socket.sethostname(hostname)
                with open("/etc/hostname", "w") as f:
                    f.write(hostname + "\n")
                with open("/etc/hosts", "w") as f:
                    f.write(
                        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                        f"127.0.1.1\t{hostname}\n"
                    )
            if network is not None:
                guestnet.configure(*network)
        except OSError as exc:
            raise protocol.AgentError(protocol.IO_ERROR, f"restore setup failed: {exc}") from None
        conn.send_json({"ok": True})

    def op_exec(self, conn: Connection, request: dict[str, Any]) -> None:
        cmd_id = _field(request, "cmd_id", str)
        if not is_cmd_id(cmd_id):
            raise protocol.AgentError(protocol.BAD_REQUEST, "cmd_id must match [A-Za-z0-9_-]{1,64}")
        argv = _field(request, "argv", list)
        if not argv or not all(isinstance(a, str) and "\0" not in a for a in argv):
            raise protocol.AgentError(
                protocol.BAD_REQUEST, "argv must be a non-empty list of strings"
            )
        cwd = _optional(request, "cwd", str)
        if cwd is not None:
            cwd = files.resolve(cwd, None, self.workdir)
        timeout_ms = _optional(request, "timeout_ms", int)
        if timeout_ms is not None and timeout_ms <= 0:
            raise protocol.AgentError(protocol.BAD_REQUEST, "timeout_ms must be positive")
        command = self.commands.spawn(
            cmd_id,
            argv,
            cwd=cwd,
            env=_string_map(request.get("env"), "env"),
            user_name=_field(request, "user", str, default="default"),
            timeout_ms=timeout_ms,
            with_stdin=bool(_field(request, "stdin", bool, default=False)),
        )
        conn.send_json(
            {
                "ok": True,
                "cmd_id": cmd_id,
                "pid": command.pid,
                "started_at_ms": command.started_at_ms,
            }
        )
        if _field(request, "follow", bool, default=False):
            self._stream_logs(conn, cmd_id)

    def op_logs(self, conn: Connection, request: dict[str, Any]) -> None:
        cmd_id = _field(request, "cmd_id", str)
        self.commands.get(cmd_id)
        conn.send_json({"ok": True})
        self._stream_logs(conn, cmd_id)

    def _stream_logs(self, conn: Connection, cmd_id: str) -> None:
        for kind, data in self.commands.follow(cmd_id):
            conn.send(protocol.encode_frame(kind, data))
        command = self.commands.wait(cmd_id)
        conn.send_json(
            {
                "exit_code": command.exit_code,
                "duration_ms": command.duration_ms,
                "dropped_bytes": command.dropped_bytes,
            }
        )

    def op_wait(self, conn: Connection, request: dict[str, Any]) -> None:
        command = self.commands.wait(_field(request, "cmd_id", str))
        conn.send_json(
            {"ok": True, "exit_code": command.exit_code, "duration_ms": command.duration_ms}
        )

    def op_status(self, conn: Connection, request: dict[str, Any]) -> None:
        conn.send_json(
            {"ok": True, "command": self.commands.describe(_field(request, "cmd_id", str))}
        )

    def op_list(self, conn: Connection, request: dict[str, Any]) -> None:
        conn.send_json({"ok": True, "commands": self.commands.list()})

    def op_signal(self, conn: Connection, request: dict[str, Any]) -> None:
        signum = _field(request, "signal", int)
        if signum not in {s.value for s in signal.Signals}:
            raise protocol.AgentError(protocol.BAD_REQUEST, f"unknown signal {signum}")
        self.commands.signal(_field(request, "cmd_id", str), signum)
        conn.send_json({"ok": True})

    def op_stdin(self, conn: Connection, request: dict[str, Any]) -> None:
        cmd_id = _field(request, "cmd_id", str)
        close = bool(_field(request, "close", bool, default=True))
        if self.commands.get(cmd_id).stdin_fd is None:
            raise protocol.AgentError(protocol.BAD_REQUEST, f"command {cmd_id!r} has no open stdin")
        conn.send_json({"ok": True})
        total = 0
        while (data := conn.read_data()) is not None:
            self.commands.write_stdin(cmd_id, data)
            total += len(data)
        if close:
            self.commands.close_stdin(cmd_id)
        conn.send_json({"ok": True, "bytes": total})

    def op_write_tar(self, conn: Connection, request: dict[str, Any]) -> None:
        root = files.resolve(_field(request, "root", str), None, self.workdir)
        owner = self.commands.user_for(_field(request, "user", str, default="default"))
        conn.send_json({"ok": True})
        with files.spool(conn.read_data) as archive:
            entries = files.extract(archive, root, owner)
        conn.send_json({"ok": True, "entries": entries})

    def op_read_file(self, conn: Connection, request: dict[str, Any]) -> None:
        st, chunks = files.read_file(self.path(request))
        conn.send_json({"ok": True, "size": st.st_size, "mode": st.st_mode & 0o7777})
        for data in chunks:
            conn.send(protocol.encode_frame(protocol.DATA, data))
        conn.send(protocol.encode_frame(protocol.END))

    def op_mkdir(self, conn: Connection, request: dict[str, Any]) -> None:
        owner = self.commands.user_for(_field(request, "user", str, default="default"))
        parents = bool(_field(request, "parents", bool, default=False))
        files.mkdir(self.path(request), parents=parents, owner=owner)
        conn.send_json({"ok": True})

    def op_stat(self, conn: Connection, request: dict[str, Any]) -> None:
        conn.send_json({"ok": True, "stat": files.stat_path(self.path(request))})

    def op_listdir(self, conn: Connection, request: dict[str, Any]) -> None:
        conn.send_json({"ok": True, "entries": files.listdir(self.path(request))})

    def op_remove(self, conn: Connection, request: dict[str, Any]) -> None:
        recursive = bool(_field(request, "recursive", bool, default=False))
        files.remove(self.path(request), recursive=recursive)
        conn.send_json({"ok": True})

    def op_rename(self, conn: Connection, request: dict[str, Any]) -> None:
        files.rename(self.path(request, "src"), self.path(request, "dst"))
        conn.send_json({"ok": True})

    def op_terminal(self, conn: Connection, request: dict[str, Any]) -> None:
        argv = _field(request, "argv", list)
        if not argv or not all(isinstance(a, str) and "\0" not in a for a in argv):
            raise protocol.AgentError(
                protocol.BAD_REQUEST, "argv must be a non-empty list of strings"
            )
        user = self.commands.user_for(_field(request, "user", str, default="default"))
        cwd = _optional(request, "cwd", str)
        run_terminal(
            conn,
            self.commands,
            argv,
            cwd=files.resolve(cwd, None, self.workdir) if cwd else self.workdir,
            env=self.commands.environment(user, _string_map(request.get("env"), "env")),
            user=user,
            cols=request.get("cols", 80),
            rows=request.get("rows", 24),
        )

    def op_sync(self, conn: Connection, request: dict[str, Any]) -> None:
        os.sync()
        conn.send_json({"ok": True})

    # -- serving ------------------------------------------------------------

    def serve_connection(self, sock: socket.socket) -> None:
        conn = Connection(sock)
        try:
            request = conn.read_json()
            op = request.get("op")
            handler = self.handlers.get(op) if isinstance(op, str) else None
            if handler is None:
                raise protocol.AgentError(protocol.BAD_REQUEST, f"unknown op {op!r}")
            handler(conn, request)
        except protocol.AgentError as exc:
            conn.try_send_json(exc.to_json())
        except (protocol.ProtocolError, ConnectionError):
            pass  # the client went away or spoke garbage; nothing to answer
        except Exception as exc:  # keep PID 1 alive whatever one request does
            conn.try_send_json(
                protocol.AgentError(protocol.IO_ERROR, f"agent error: {exc!r}").to_json()
            )
        finally:
            conn.close()

    def serve_forever(self, listener: socket.socket | ChannelListener) -> None:
        workers = Workers(self.serve_connection)
        while True:
            sock, _ = listener.accept()
            workers.submit(sock)


class Workers:
    """Threads that serve connections, kept for the next one when done.

    Starting a thread costs ~0.15 ms (Thread.start waits for it to run), a
    noticeable share of a command's round trip; an idle worker takes a new
    connection from a queue instead. Connections may block for a long time
    (logs of a long command), so the pool grows to the peak concurrency.
    """

    RESERVE = 4

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self._handle = handle
        self._lock = threading.Lock()
        self._idle = 0
        self._queue: _queue.SimpleQueue[socket.socket] = _queue.SimpleQueue()
        # Started now, while pids are plentiful: a fork bomb in the session
        # may later leave none for new threads, and the host must still get in.
        for _ in range(self.RESERVE):
            with self._lock:
                self._idle += 1
            threading.Thread(target=self._wait_for_work, daemon=True).start()

    def submit(self, sock: socket.socket) -> None:
        with self._lock:
            reuse = self._idle > 0
            if reuse:
                self._idle -= 1
        if not reuse:
            try:
                threading.Thread(target=self._work, args=(sock,), daemon=True).start()
                return
            except RuntimeError:  # no pid left for a thread: wait for a free worker
                pass
        self._queue.put(sock)

    def _work(self, sock: socket.socket) -> None:
        self._handle(sock)
        self._wait_for_work(already_idle=False)

    def _wait_for_work(self, already_idle: bool = True) -> None:
        if not already_idle:
            with self._lock:
                self._idle += 1
        while True:
            self._handle(self._queue.get())
            with self._lock:
                self._idle += 1


class Connection(protocol.FramedSocket):
    def read_data(self) -> bytes | None:
        """The next `D` frame's bytes, or None at `E`."""
        kind, payload = self.read_frame()
        if kind == protocol.END:
            return None
        if kind != protocol.DATA:
            raise protocol.ProtocolError(f"expected data, got frame {kind!r}")
        return payload

    def try_send_json(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.send_json(message)


def make_undumpable() -> None:
    """Refuse ptrace and /proc/1/mem to the session's own root.

    Root in a session has no CAP_SYS_PTRACE, so once PID 1 is not dumpable the
    kernel denies attaching to it (and pidfd_getfd of its sockets). Commands
    are dumpable again after their execve, so debuggers work on them.
    """
    import ctypes

    pr_set_dumpable = 4
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def parse_args(argv: list[str]) -> dict[str, str]:
    """`--user U --workdir W [--listen-fd N | --serial PORT]`; by hand, since
    argparse costs 8 ms at start."""
    options = {"--listen-fd": "3"}
    pairs = iter(argv)
    for flag in pairs:
        if flag not in ("--user", "--workdir", "--listen-fd", "--serial"):
            raise SystemExit(f"unknown argument {flag!r}\n{USAGE}")
        options[flag] = next(pairs, "")
    if (
        not options.get("--user")
        or not options.get("--workdir")
        or not options["--listen-fd"].isdigit()
    ):
        raise SystemExit(USAGE)
    return options


def main(argv: list[str] | None = None) -> None:
    import sys

    options = parse_args(sys.argv[1:] if argv is None else argv)
    make_undumpable()
    listener: socket.socket | ChannelListener
    if "--serial" in options:
        # A microVM: connections come as channels over its serial port.
        # What a restore needs, imported now: a guest booted for a template is
        # saved with these loaded, so restored guests do not import them again.
        from . import guestnet  # noqa: F401
        from .channels import serve_port  # only here: containers start without it

        listener = serve_port(options["--serial"])
    else:
        listener = socket.socket(fileno=int(options["--listen-fd"]))
        os.set_inheritable(listener.fileno(), False)
    agent = Agent(User.lookup(options["--user"]), options["--workdir"])
    SudoService(agent.commands, agent.user).listen()

    def stop(signum: int, _frame: object) -> None:
        agent.commands.terminate_all()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.serve_forever(listener)
