#!/usr/bin/python3 -IS
"""`sudo` inside a session: asks the agent to run the command (see sudo_service.py).

Understands the options people use with passwordless sudo: -u USER, -i, -s,
-E, -H, -n, -k, -v, -l and --. Mounted read-only over /usr/bin/sudo.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

sys.path.insert(0, "/.ember")
from agent import protocol  # type: ignore[import-not-found]

SOCKET_NAME = b"\0ember-sudo"
FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
USAGE = "usage: sudo [-u user] [-i | -s] [-EHnkv] [--] command [args...]"


def fail(message: str, code: int = 1) -> None:
    sys.stderr.write(f"sudo: {message}\n")
    raise SystemExit(code)


def parse(args: list[str]) -> tuple[str, bool, bool, list[str]]:
    user, login, shell = "root", False, False
    while args and args[0].startswith("-") and args[0] != "-":
        arg = args.pop(0)
        if arg == "--":
            break
        if arg in ("-u", "--user"):
            if not args:
                fail(USAGE)
            user = args.pop(0)
        elif arg.startswith("--user="):
            user = arg.split("=", 1)[1]
        elif arg.startswith("-u") and len(arg) > 2:
            user = arg[2:]
        elif arg in ("-l", "--list"):
            print("User may run these commands on this sandbox:\n    (ALL : ALL) NOPASSWD: ALL")
            raise SystemExit(0)
        elif arg in ("-h", "--help"):
            print(USAGE)
            raise SystemExit(0)
        elif arg.startswith("--") or len(arg) < 2:
            if arg not in (
                "--login",
                "--shell",
                "--preserve-env",
                "--non-interactive",
                "--set-home",
            ):
                fail(f"option {arg} is not supported here\n{USAGE}")
            login = login or arg == "--login"
            shell = shell or arg == "--shell"
        else:
            for flag in arg[1:]:
                if flag == "i":
                    login = True
                elif flag == "s":
                    shell = True
                elif flag not in "EHnkvSA":
                    fail(f"option -{flag} is not supported here\n{USAGE}")
    return user, login, shell, args


def main() -> None:
    user, login, shell, command = parse(sys.argv[1:])
    if not command and not (login or shell):
        if any(a in ("-v", "-k", "--validate") for a in sys.argv[1:]):
            raise SystemExit(0)
        fail(USAGE)
    cwd = os.getcwd()
    if login or shell:
        # The agent fills in the user's shell and home; -c joins like sudo does.
        argv = [
            "/bin/bash",
            *(["-l"] if login else []),
            *(["-c", " ".join(command)] if command else []),
        ]
        if login:
            cwd = "~"
    else:
        argv = command
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(SOCKET_NAME)
    except OSError as exc:
        fail(f"cannot reach the Ember agent: {exc.strerror}")
    request = {"argv": argv, "env": dict(os.environ), "cwd": cwd, "user": user}
    socket.send_fds(sock, [protocol.encode_json(request)], [0, 1, 2])
    framed = protocol.FramedSocket(sock)

    def forward(signum: int, _frame: object) -> None:
        sock.sendall(protocol.encode_json({"signal": signum}))

    for signum in FORWARDED:
        signal.signal(signum, forward)
    try:
        started = framed.read_json()
        if not started.get("ok"):
            fail(started.get("error", {}).get("message", "refused"))
        finished = framed.read_json()
    except protocol.ProtocolError:
        fail("lost the connection to the Ember agent")
    raise SystemExit(int(finished.get("exit_code", 1)))


if __name__ == "__main__":
    main()
