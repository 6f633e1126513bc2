"""The egress proxy: where a session's TCP goes when its policy lists domains.

nftables redirects the connection here; the proxy finds the session by its
source address and the address it dialled (SO_ORIGINAL_DST), then reads the
name the client wants: the SNI of a TLS ClientHello (peeked, so the
handshake itself passes untouched) or the Host of an HTTP request. It lets
the connection through only when the name is allowed and resolves, through
Ember's own resolver, to the very address dialled: a session that points an
allowed name at another address (its own /etc/hosts, a raw IP) is refused.
Allowed connections are spliced to the real server, or, for domains with
header rules, intercepted (`intercept.py`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass

import h11

from .ca import EgressCA
from .firewall import LISTEN_ADDRESS
from .intercept import CONNECT_TIMEOUT_S, UpstreamFailed, intercept
from .policy import NetworkPolicy, is_blocked, is_ip_literal, normalise_name
from .relay import relay
from .resolver import ResolveError, UpstreamResolver

log = logging.getLogger("ember.network.proxy")
PolicyLookup = Callable[[str], NetworkPolicy | None]
SO_ORIGINAL_DST = 80
FIRST_BYTES_TIMEOUT_S = 10.0
MAX_HELLO_BYTES = 64 * 1024
MAX_HTTP_HEAD_BYTES = 16 * 1024
TLS_HANDSHAKE = 0x16
# A thread serves each connection: a session cannot hold more than its share.
MAX_PER_SESSION = 256
MAX_CONNECTIONS = 4096
HOST_NAME = re.compile(r"[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*")


class Refused(Exception):
    """The connection is not allowed; the message says why (for the log and HTTP)."""


def original_destination(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(packed), port


class _SniReader:
    """The server name of a ClientHello, parsed by OpenSSL itself: a server-side
    handshake over memory that stops in the SNI callback (no hand-written
    parser meets the hostile bytes)."""

    def __init__(self) -> None:
        self._found = threading.local()
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.sni_callback = self._capture

    def _capture(self, _obj: object, name: str | None, _ctx: object) -> int:
        self._found.name = name
        return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE

    def read(self, hello: bytes) -> str | bool | None:
        """The name, None when the hello has none, False when it needs more bytes."""
        self._found.name = None
        incoming = ssl.MemoryBIO()
        tls = self._context.wrap_bio(incoming, ssl.MemoryBIO(), server_side=True)
        incoming.write(hello)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            return False if self._found.name is None else self._found.name
        except ssl.SSLError:
            pass
        name: str | None = self._found.name
        return name


def _peek_hello(client: socket.socket, reader: _SniReader) -> str | None:
    """Peek whole TLS records until the ClientHello's name is known."""
    size = 0
    while size < MAX_HELLO_BYTES:
        header = client.recv(size + 5, socket.MSG_PEEK | socket.MSG_WAITALL)
        if len(header) < size + 5 or header[size] != TLS_HANDSHAKE:
            return None
        size += 5 + struct.unpack("!H", header[size + 3 : size + 5])[0]
        hello = client.recv(size, socket.MSG_PEEK | socket.MSG_WAITALL)
        if len(hello) < size:
            return None
        name = reader.read(hello)
        if name is not False:
            return name if isinstance(name, str) else None
    return None


def _read_http_head(client: socket.socket) -> tuple[bytes, str | None]:
    """The request's first bytes (to be sent on) and its Host."""
    head = b""
    while b"\r\n\r\n" not in head:
        if len(head) > MAX_HTTP_HEAD_BYTES:
            return head, None
        data = client.recv(4096)
        if not data:
            return head, None
        head += data
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return head, None
    if not isinstance(event, h11.Request):
        return head, None
    hosts = [v.decode("latin-1") for k, v in event.headers if k == b"host"]
    if len(hosts) != 1:
        return head, None
    host = hosts[0]
    if host.startswith("["):
        return head, host.partition("]")[0] + "]"
    return head, host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass
class _Request:
    source: str
    destination: tuple[str, int]
    kind: str  # "tls", "http" or "other"
    name: str | None
    head: bytes = b""


class EgressProxy:
    def __init__(
        self,
        policy_for: PolicyLookup,
        resolver: UpstreamResolver,
        ca: EgressCA,
        host_addresses: Callable[[], Collection[str]],
        upstream_context: ssl.SSLContext,
    ) -> None:
        self.policy_for = policy_for
        self.resolver = resolver
        self.ca = ca
        self.host_addresses = host_addresses
        self.upstream_context = upstream_context
        self._sni = _SniReader()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LISTEN_ADDRESS, 0))
        self._listener.listen(1024)
        self.port: int = self._listener.getsockname()[1]
        self._closing = False
        self._live: set[socket.socket] = set()
        self._per_session: dict[str, int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept, name="ember-proxy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            for sock in self._live:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, (source, _) = self._listener.accept()
            except OSError:
                continue
            if not self._admit(source):
                log.info("egress refused: %s has too many open connections", source)
                _refuse(client, "other", "too many connections")
                client.close()
                continue
            threading.Thread(
                target=self._serve, args=(client, source), name="ember-proxy-conn", daemon=True
            ).start()

    def _admit(self, source: str) -> bool:
        with self._lock:
            count = self._per_session.get(source, 0)
            if count >= MAX_PER_SESSION or len(self._live) >= MAX_CONNECTIONS:
                return False
            self._per_session[source] = count + 1
            return True

    def _serve(self, client: socket.socket, source: str) -> None:
        with self._lock:
            self._live.add(client)
        try:
            self._handle(client, source)
        except (OSError, ssl.SSLError, UpstreamFailed) as exc:
            log.debug("proxied connection from %s ended: %s", source, exc)
        finally:
            with self._lock:
                self._live.discard(client)
                left = self._per_session.pop(source, 1) - 1
                if left:
                    self._per_session[source] = left
            client.close()

    def _handle(self, client: socket.socket, source: str) -> None:
        request = self._read_request(client, source)
        policy = self.policy_for(source)
        try:
            if policy is None:
                raise Refused("no session has this address")
            self._check(policy, request)
        except Refused as refusal:
            log.info(
                "egress refused: %s -> %s:%d (%s): %s",
                source,
                *request.destination,
                request.name or "no name",
                refusal,
            )
            _refuse(client, request.kind, str(refusal))
            return
        rules = policy.injections_for(request.name) if request.name else []
        if request.kind == "tls" and rules:
            assert request.name is not None
            # The handshake keeps the first bytes' deadline; `intercept` lifts it.
            intercept(
                client, request.name, request.destination, rules, self.ca, self.upstream_context
            )
            return
        client.settimeout(None)
        with socket.create_connection(request.destination, timeout=CONNECT_TIMEOUT_S) as upstream:
            upstream.settimeout(None)
            if request.head:
                upstream.sendall(request.head)
            relay(client, upstream)

    def _read_request(self, client: socket.socket, source: str) -> _Request:
        destination = original_destination(client)
        client.settimeout(FIRST_BYTES_TIMEOUT_S)
        first = client.recv(1, socket.MSG_PEEK)
        if first and first[0] == TLS_HANDSHAKE:
            return _Request(source, destination, "tls", _peek_hello(client, self._sni))
        if first.isalpha():
            head, host = _read_http_head(client)
            return _Request(source, destination, "http", host, head)
        return _Request(source, destination, "other", None)

    def _check(self, policy: NetworkPolicy, request: _Request) -> None:
        address = request.destination[0]
        if is_blocked(address, self.host_addresses()) or policy.denies_address(address):
            raise Refused(f"{address} is not reachable from sandboxes")
        if policy.mode == "allow-all":  # changed since nftables sent this here
            return
        name = normalise_name(request.name) if request.name else None
        if name is None or is_ip_literal(name):
            if policy.any_domain:
                return
            raise Refused("a connection without a host name (TLS SNI or HTTP Host)")
        if not HOST_NAME.fullmatch(name) or len(name) > 253:
            raise Refused("not a valid host name")
        if not policy.allows_name(name):
            raise Refused(f"{name} is not allowed by the sandbox's network policy")
        try:
            addresses = self.resolver.addresses(name)
        except ResolveError as exc:
            raise Refused(str(exc)) from exc
        if address not in addresses:
            raise Refused(f"{name} does not resolve to {address}")
        request.name = name


def _refuse(client: socket.socket, kind: str, reason: str) -> None:
    """HTTP gets a 403 that says why; anything else a TCP reset."""
    with contextlib.suppress(OSError):
        if kind == "http":
            body = f"ember egress proxy: {reason}\n".encode()
            client.sendall(
                b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\nconnection: close\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            client.shutdown(socket.SHUT_WR)
        else:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
