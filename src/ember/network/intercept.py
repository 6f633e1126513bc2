"""Header injection: HTTPS to a domain with `transform` rules is terminated by
the proxy (with a certificate from the installation's CA), its requests get
the rules' headers, and they go on over a new TLS connection to the real
server, verified as any client would.

HTTP/1.1 only (the proxy offers no other ALPN protocol), parsed by h11.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Sequence

import h11

from .ca import EgressCA
from .policy import InjectionRule, RequestInfo, inject_headers

CONNECT_TIMEOUT_S = 10.0
READ_SIZE = 65536


class UpstreamFailed(Exception):
    """The real server could not be reached or failed verification."""


def _next_event(conn: h11.Connection, sock: socket.socket) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = sock.recv(READ_SIZE)
        except (ssl.SSLError, OSError):
            data = b""
        conn.receive_data(data)


def _text_headers(headers: Sequence[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    return tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)


class HttpRelay:
    """One intercepted connection: requests from the session, with headers set,
    and the answers back."""

    def __init__(
        self, session: ssl.SSLSocket, upstream: ssl.SSLSocket, rules: Sequence[InjectionRule]
    ) -> None:
        self.session, self.upstream, self.rules = session, upstream, rules
        self.from_session = h11.Connection(h11.SERVER)
        self.to_upstream = h11.Connection(h11.CLIENT)

    def _to_session(self, event: h11.Event) -> None:
        data = self.from_session.send(event)
        if data:
            self.session.sendall(data)

    def _to_upstream(self, event: h11.Event) -> None:
        data = self.to_upstream.send(event)
        if data:
            self.upstream.sendall(data)

    def run(self) -> None:
        with contextlib.suppress(h11.ProtocolError, ssl.SSLError, OSError):
            while self._exchange():
                if h11.MUST_CLOSE in (
                    self.from_session.our_state,
                    self.to_upstream.our_state,
                    self.to_upstream.their_state,
                ):
                    return
                self.from_session.start_next_cycle()
                self.to_upstream.start_next_cycle()

    def _exchange(self) -> bool:
        """Relay one request and its response; False when the connection is over."""
        event = _next_event(self.from_session, self.session)
        if not isinstance(event, h11.Request):
            return False
        request = RequestInfo(
            event.method.decode("latin-1"),
            event.target.decode("latin-1"),
            _text_headers(event.headers),
        )
        headers = inject_headers(self.rules, request) or list(request.headers)
        if self.from_session.they_are_waiting_for_100_continue:
            self._to_session(h11.InformationalResponse(status_code=100, headers=[]))
        headers = [(k, v) for k, v in headers if k.lower() != "expect"]
        self._to_upstream(h11.Request(method=event.method, target=event.target, headers=headers))
        while True:
            event = _next_event(self.from_session, self.session)
            if isinstance(event, h11.Data):
                self._to_upstream(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._to_upstream(h11.EndOfMessage(headers=event.headers))
                break
            else:
                return False
        while True:
            event = _next_event(self.to_upstream, self.upstream)
            if isinstance(event, h11.InformationalResponse):
                continue  # a 100 Continue went to the session already
            if isinstance(event, h11.Response):
                self._to_session(
                    h11.Response(
                        status_code=event.status_code, headers=event.headers, reason=event.reason
                    )
                )
            elif isinstance(event, h11.Data):
                self._to_session(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._to_session(h11.EndOfMessage(headers=event.headers))
                return True
            else:
                return False


def refuse_upstream(session: ssl.SSLSocket, reason: str) -> None:
    """Tell the session's client, in HTTP, why its request went nowhere."""
    body = f"ember egress proxy: {reason}\n".encode()
    conn = h11.Connection(h11.SERVER)
    with contextlib.suppress(h11.ProtocolError, ssl.SSLError, OSError):
        if isinstance(_next_event(conn, session), h11.Request):
            headers = [("content-type", "text/plain"), ("content-length", str(len(body)))]
            data = conn.send(h11.Response(status_code=502, headers=headers))
            session.sendall((data or b"") + (conn.send(h11.Data(data=body)) or b""))
            session.sendall(conn.send(h11.EndOfMessage()) or b"")


def intercept(
    client: socket.socket,
    name: str,
    destination: tuple[str, int],
    rules: Sequence[InjectionRule],
    ca: EgressCA,
    upstream_context: ssl.SSLContext,
) -> None:
    session = ca.server_context(name).wrap_socket(client, server_side=True)
    session.settimeout(None)  # handshake done: requests may come at any pace
    try:
        raw: socket.socket | None = None
        try:
            raw = socket.create_connection(destination, timeout=CONNECT_TIMEOUT_S)
            upstream = upstream_context.wrap_socket(raw, server_hostname=name)
        except (ssl.SSLError, OSError) as exc:
            if raw is not None:
                raw.close()
            refuse_upstream(session, f"cannot reach {name} securely: {exc}")
            raise UpstreamFailed(str(exc)) from exc
        upstream.settimeout(None)
        try:
            HttpRelay(session, upstream, rules).run()
        finally:
            upstream.close()
    finally:
        session.close()
