"""The one place where Ember starts host processes.

Rules (see STYLE.md §5): argument lists only, never a shell; an explicit
environment; stdin is /dev/null unless given; every wait has a timeout; a child
is killed and reaped when the caller fails or is cancelled; failures raise
`ProcessError` carrying the argv, the exit status and the tail of stderr.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

# A small, predictable environment for host tools: nothing from the caller's
# shell (LD_PRELOAD, locale quirks) leaks into runc, mount or mkfs.
BASE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}

STDERR_TAIL_BYTES = 4096


def describe_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class ProcessError(Exception):
    """A host command failed; carries what is needed to reproduce it."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: bytes) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr[-STDERR_TAIL_BYTES:]
        status = "timed out" if returncode is None else describe_status(returncode)
        detail = self.stderr.decode(errors="replace").strip()
        super().__init__(f"{shlex.join(self.argv)}: {status}" + (f": {detail}" if detail else ""))


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(BASE_ENV)
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    timeout_s: float = 60.0,
    env: Mapping[str, str] | None = None,
    input_bytes: bytes | None = None,
    check: bool = True,
    cwd: str | None = None,
) -> Completed:
    """Run a host command to completion (blocking)."""
    try:
        done = subprocess.run(
            list(argv),
            input=input_bytes,
            stdin=None if input_bytes is not None else subprocess.DEVNULL,
            capture_output=True,
            env=_env(env),
            timeout=timeout_s,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ProcessError(argv, None, exc.stderr or b"") from exc
    if check and done.returncode != 0:
        raise ProcessError(argv, done.returncode, done.stderr)
    return Completed(list(argv), done.returncode, done.stdout, done.stderr)


def run_streaming(
    argv: Sequence[str],
    on_line: Callable[[str], None],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run a long host command, handing each line of its combined output to `on_line`."""
    tail: list[str] = []
    with subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_env(env),
        text=True,
        errors="replace",
    ) as child:
        try:
            assert child.stdout is not None
            for line in child.stdout:
                line = line.rstrip("\n")
                tail = [*tail, line][-40:]
                on_line(line)
            child.wait(timeout=timeout_s)
        except BaseException:
            child.kill()
            child.wait()
            raise
    if child.returncode != 0:
        raise ProcessError(argv, child.returncode, "\n".join(tail).encode())


async def run_async(
    argv: Sequence[str],
    *,
    timeout_s: float = 60.0,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    pass_fds: Sequence[int] = (),
) -> Completed:
    """Run a host command to completion without blocking the event loop."""
    child = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(env),
        pass_fds=tuple(pass_fds),
    )
    try:
        stdout, stderr = await asyncio.wait_for(child.communicate(), timeout_s)
    except BaseException as exc:
        if child.returncode is None:
            child.kill()
            await child.wait()
        if isinstance(exc, TimeoutError):
            raise ProcessError(argv, None, b"") from exc
        raise
    assert child.returncode is not None
    if check and child.returncode != 0:
        raise ProcessError(argv, child.returncode, stderr)
    return Completed(list(argv), child.returncode, stdout, stderr)


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (exited, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
