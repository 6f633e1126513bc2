"""A microVM guest's `eth0`, given its session's address after a restore.

The agent does this itself, with the kernel's old interface ioctls, rather
than running `ip`: under TCG every process a restore starts costs tens of
milliseconds (four `ip` runs and a shell were a third of a restore), and the
agent is stdlib only (no netlink library). IPv4 only, as sessions are.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import struct

from . import protocol

SIOCADDRT = 0x890B
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
SIOCSIFADDR, SIOCSIFNETMASK = 0x8916, 0x891C
IFF_UP = 0x1
RTF_UP, RTF_GATEWAY = 0x1, 0x2
# struct rtentry (linux/route.h) in native layout; "0L" pads it to its C size.
RTENTRY = "@L16s16s16sHhLPhPLLH0L"
INTERFACE = b"eth0"


def parse_network(value: object) -> tuple[str, int, str] | None:
    """`{"address", "prefix", "gateway"}` of the `restored` request, checked."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise protocol.AgentError(protocol.BAD_REQUEST, "network must be an object")
    address, prefix, gateway = value.get("address"), value.get("prefix"), value.get("gateway")
    try:
        for each in (address, gateway):
            if not isinstance(each, str):
                raise OSError
            socket.inet_pton(socket.AF_INET, each)
    except OSError:
        raise protocol.AgentError(
            protocol.BAD_REQUEST, "network address and gateway must be IPv4 addresses"
        ) from None
    if not isinstance(prefix, int) or isinstance(prefix, bool) or not 1 <= prefix <= 32:
        raise protocol.AgentError(protocol.BAD_REQUEST, "network prefix must be 1 to 32")
    assert isinstance(address, str) and isinstance(gateway, str)
    return address, prefix, gateway


def _sockaddr(address: str) -> bytes:
    return struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton(address))


def _ifreq(payload: bytes) -> bytes:
    return struct.pack("16s24s", INTERFACE, payload)


def _route(gateway: str) -> bytes:
    """A default route via `gateway`, as `struct rtentry`."""
    any_ = _sockaddr("0.0.0.0")  # noqa: S104  (the default route's destination, not a bind)
    flags = RTF_UP | RTF_GATEWAY
    return struct.pack(RTENTRY, 0, any_, _sockaddr(gateway), any_, flags, 0, 0, 0, 0, 0, 0, 0, 0)


def configure(address: str, prefix: int, gateway: str) -> None:
    """`eth0` up with `address/prefix`, the only default route via `gateway`, and
    `gateway` as the resolver (emberd's DNS server answers there).

    The link goes down first: that drops its routes and its neighbour cache,
    which a restored guest's memory still holds for the host end it had before
    (another veth, another MAC address, even when the address is the same).
    """
    mask = socket.inet_ntoa(struct.pack("!I", (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack_from("H", fcntl.ioctl(s, SIOCGIFFLAGS, _ifreq(b"")), 16)[0]
        fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq(struct.pack("H", flags & ~IFF_UP)))
        fcntl.ioctl(s, SIOCSIFADDR, _ifreq(_sockaddr(address)))
        fcntl.ioctl(s, SIOCSIFNETMASK, _ifreq(_sockaddr(mask)))
        fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq(struct.pack("H", flags | IFF_UP)))
        try:
            fcntl.ioctl(s, SIOCADDRT, _route(gateway))
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
    with open("/etc/resolv.conf", "w") as f:
        f.write(f"nameserver {gateway}\n")
