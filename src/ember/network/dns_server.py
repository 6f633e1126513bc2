"""The DNS server sessions use (every session's port 53 is redirected here).

It answers by the asking session's policy: allow-all is forwarded upstream
as asked; a custom policy gets answers only for its allowed names (others
are NXDOMAIN, so lookups fail at once), A records from the resolver the
proxy shares, and no AAAA (sessions have IPv4 only). Deny-all sessions
never get here: their port 53 is rejected in nftables.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socketserver
import struct
import threading
from collections.abc import Callable
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from .firewall import LISTEN_ADDRESS
from .policy import NetworkPolicy
from .resolver import ResolveError, UpstreamResolver

log = logging.getLogger("ember.network.dns")
PolicyLookup = Callable[[str], NetworkPolicy | None]
MAX_TCP_QUERIES = 100
MAX_IN_FLIGHT = 128


def _reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    return response


def answer(
    wire: bytes, source: str, policy_for: PolicyLookup, resolver: UpstreamResolver, *, tcp: bool
) -> bytes | None:
    """The reply to one query from `source`, or None for something that is not a query."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None
    if query.flags & dns.flags.QR:
        return None
    response = _respond(query, source, policy_for, resolver, tcp=tcp)
    limit = 65535 if tcp else max(512, query.payload if query.edns >= 0 else 512)
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        truncated = _reply(query, dns.rcode.NOERROR)
        truncated.flags |= dns.flags.TC
        return truncated.to_wire()


def _respond(
    query: dns.message.Message,
    source: str,
    policy_for: PolicyLookup,
    resolver: UpstreamResolver,
    *,
    tcp: bool,
) -> dns.message.Message:
    policy = policy_for(source)
    if policy is None or not policy.answers_dns:
        return _reply(query, dns.rcode.REFUSED)
    if len(query.question) != 1:
        return _reply(query, dns.rcode.FORMERR)
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True)
    try:
        if policy.mode == "allow-all":
            return resolver.forward(query, tcp=tcp)
        if not policy.allows_name(name):
            return _reply(query, dns.rcode.NXDOMAIN)
        if question.rdtype == dns.rdatatype.AAAA:
            return _reply(query, dns.rcode.NOERROR)
        if question.rdtype != dns.rdatatype.A:
            return resolver.forward(query, tcp=tcp)
        found = resolver.lookup(name)
        if found is None:
            return _reply(query, dns.rcode.NXDOMAIN)
        response = _reply(query, dns.rcode.NOERROR)
        response.answer = list(found.response.answer)
        return response
    except ResolveError as exc:
        log.info("DNS for %s: %s", source, exc)
        return _reply(query, dns.rcode.SERVFAIL)


class _Bounded(socketserver.ThreadingMixIn):
    """A thread per query, up to MAX_IN_FLIGHT: beyond that queries are dropped
    (clients retry), so a flooding session cannot make emberd spawn without end."""

    daemon_threads = True
    in_flight = threading.BoundedSemaphore(1)  # replaced per server

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.in_flight.acquire(blocking=False):
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.in_flight.release()


class _Udp(_Bounded, socketserver.UDPServer):
    allow_reuse_address = False


class _Tcp(_Bounded, socketserver.TCPServer):
    allow_reuse_address = False


class DnsServer:
    def __init__(self, policy_for: PolicyLookup, resolver: UpstreamResolver) -> None:
        self.policy_for = policy_for
        self.resolver = resolver
        self._udp, self._tcp = self._bind()
        self.port = self._udp.server_address[1]
        self._threads: list[threading.Thread] = []

    def _bind(self) -> tuple[_Udp, _Tcp]:
        """UDP and TCP on one free port (a few tries: the port is the kernel's pick)."""
        server = self

        class UdpHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = answer(
                    data, self.client_address[0], server.policy_for, server.resolver, tcp=False
                )
                if reply is not None:
                    with contextlib.suppress(OSError):
                        sock.sendto(reply, self.client_address)

        class TcpHandler(socketserver.StreamRequestHandler):
            timeout = 10

            def handle(self) -> None:
                with contextlib.suppress(OSError):
                    for _ in range(MAX_TCP_QUERIES):
                        head = self.rfile.read(2)
                        if len(head) < 2:
                            return
                        data = self.rfile.read(struct.unpack("!H", head)[0])
                        reply = answer(
                            data,
                            self.client_address[0],
                            server.policy_for,
                            server.resolver,
                            tcp=True,
                        )
                        if reply is None:
                            return
                        self.wfile.write(struct.pack("!H", len(reply)) + reply)

        for _ in range(20):
            udp = _Udp((LISTEN_ADDRESS, 0), UdpHandler)
            udp.in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
            try:
                tcp = _Tcp((LISTEN_ADDRESS, udp.server_address[1]), TcpHandler)
                tcp.in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
            except OSError as exc:
                udp.server_close()
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            return udp, tcp
        raise OSError(errno.EADDRINUSE, "no free port for the DNS server")

    def start(self) -> None:
        for server in (self._udp, self._tcp):
            thread = threading.Thread(target=server.serve_forever, name="ember-dns", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        for server in (self._udp, self._tcp):
            if self._threads:
                server.shutdown()
            server.server_close()
        self._threads.clear()
