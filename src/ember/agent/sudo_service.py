"""Root commands for processes inside the session: the other half of `sudo`.

Sessions run with no_new_privs, so the image's setuid sudo cannot elevate.
Instead /usr/bin/sudo is our shim (sudo_shim.py), which hands its argv,
environment and stdio descriptors to this service over an abstract Unix
socket (private to the session's network namespace). The service admits the
image's default user and root, as the image's sudoers rule does, and runs
the command as the requested user on the caller's own descriptors.
"""

from __future__ import annotations

import array
import contextlib
import os
import pwd
import socket
import struct
import threading

from . import protocol
from .commands import User

TYPE_CHECKING = False  # like typing.TYPE_CHECKING, without importing typing (3 ms)

if TYPE_CHECKING:
    from typing import Any

    from .commands import CommandTable

SOCKET_NAME = b"\0ember-sudo"
MAX_REQUEST_BYTES = 1024 * 1024


def _recv_request(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """Read the first frame and the three descriptors sent with it."""
    fds = array.array("i")
    data, ancdata, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, message_type, payload in ancdata:
        if level == socket.SOL_SOCKET and message_type == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    received = list(fds)
    if len(data) < protocol.HEADER_BYTES:
        raise protocol.ProtocolError("short sudo request")
    kind, length = protocol.decode_header(data[: protocol.HEADER_BYTES])
    if kind != protocol.JSON or length > MAX_REQUEST_BYTES:
        raise protocol.ProtocolError("bad sudo request frame")
    body = data[protocol.HEADER_BYTES :]
    while len(body) < length:
        more = sock.recv(length - len(body))
        if not more:
            raise protocol.ProtocolError("sudo request cut short")
        body += more
    return protocol.decode_json(body), received


class SudoService:
    def __init__(self, commands: CommandTable, default_user: User) -> None:
        self.commands = commands
        self.allowed_uids = {0, default_user.uid}

    def listen(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(SOCKET_NAME)
        listener.listen(64)
        threading.Thread(
            target=self._accept_forever, args=(listener,), name="sudo", daemon=True
        ).start()

    def _accept_forever(self, listener: socket.socket) -> None:
        while True:
            sock, _ = listener.accept()
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        fds: list[int] = []
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", creds)
            request, fds = _recv_request(sock)
            if uid not in self.allowed_uids:
                raise protocol.AgentError(
                    protocol.PERMISSION_DENIED, "user is not in the sudoers file"
                )
            if len(fds) != 3:
                raise protocol.AgentError(protocol.BAD_REQUEST, "expected stdin, stdout and stderr")
            self._run(sock, request, (fds[0], fds[1], fds[2]))
        except protocol.AgentError as exc:
            with contextlib.suppress(OSError):
                sock.sendall(protocol.encode_json(exc.to_json()))
        except (protocol.ProtocolError, OSError):
            pass
        finally:
            for fd in fds:
                os.close(fd)
            sock.close()

    def _run(self, sock: socket.socket, request: dict[str, Any], fds: tuple[int, int, int]) -> None:
        argv, env, cwd = request.get("argv"), request.get("env"), request.get("cwd")
        target = request.get("user", "root")
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            raise protocol.AgentError(
                protocol.BAD_REQUEST, "argv must be a non-empty list of strings"
            )
        if not (
            isinstance(env, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        ):
            raise protocol.AgentError(protocol.BAD_REQUEST, "env must map strings to strings")
        if not isinstance(cwd, str) or not isinstance(target, str):
            raise protocol.AgentError(protocol.BAD_REQUEST, "cwd and user must be strings")
        try:
            user = User.lookup(target)
        except KeyError:
            raise protocol.AgentError(protocol.NOT_FOUND, f"unknown user {target}") from None
        if cwd == "~":
            cwd = user.home
        entry = pwd.getpwnam(target)
        env = {
            **env,
            "HOME": user.home,
            "USER": user.name,
            "LOGNAME": user.name,
            "SHELL": entry.pw_shell,
        }
        command = self.commands.spawn_with_fds(argv, cwd=cwd, env=env, user=user, fds=fds)
        for _, data in command.chunks:  # it could not start: say why on the caller's stderr
            with contextlib.suppress(OSError):
                os.write(fds[2], b"sudo: " + data.removeprefix(b"ember: "))
        sock.sendall(protocol.encode_json({"ok": True, "pid": command.pid}))
        threading.Thread(target=self._forward_signals, args=(sock, command), daemon=True).start()
        self.commands.wait_for(command)
        sock.sendall(protocol.encode_json({"ok": True, "exit_code": command.exit_code}))

    def _forward_signals(self, sock: socket.socket, command: Any) -> None:
        framed = protocol.FramedSocket(sock)
        with contextlib.suppress(protocol.ProtocolError, OSError):
            while True:
                message = framed.read_json()
                signum = message.get("signal")
                if isinstance(signum, int) and not isinstance(signum, bool):
                    self.commands.signal_command(command, signum)
