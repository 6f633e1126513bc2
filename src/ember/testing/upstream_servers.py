"""The fake internet's servers, run inside the tests' "upstream" namespace.

- DNS (UDP and TCP, port 53): the test zone below; other names NXDOMAIN.
- HTTP on 80 and 8080, HTTPS on 443 (a certificate for every test name,
  from the tests' own CA): each answers a JSON echo of what it received:
  the local address it was reached on, Host, path and headers.

Prints "ready" once every socket listens.
"""

from __future__ import annotations

import argparse
import json
import socket
import socketserver
import ssl
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

# Every address of the upstream namespace (its own, isolated network).
EVERYWHERE = "0.0.0.0"  # noqa: S104
ZONE = {
    "api.example.test": "198.18.0.1",
    "a.good.test": "198.18.0.1",
    "deep.a.good.test": "198.18.0.1",
    "bad.test": "198.18.0.1",
    "secret.test": "198.18.0.1",
    "sink.test": "198.18.0.1",
    "loop.test": "127.0.0.1",
}


def dns_answer(wire: bytes) -> bytes:
    query = dns.message.from_wire(wire)
    response = dns.message.make_response(query)
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    if name not in ZONE:
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif question.rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(question.name, 30, "IN", "A", ZONE[name]))
    return response.to_wire()


class DnsUdp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(dns_answer(data), self.client_address)


class DnsTcp(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        size = struct.unpack("!H", self.rfile.read(2))[0]
        reply = dns_answer(self.rfile.read(size))
        self.wfile.write(struct.pack("!H", len(reply)) + reply)


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        payload = json.dumps(
            {
                "server": self.connection.getsockname()[0],
                "host": self.headers.get("host"),
                "path": self.path,
                "method": self.command,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_bytes": len(body),
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _echo

    def log_message(self, *args: object) -> None:
        pass


class Sink(socketserver.StreamRequestHandler):
    """Port 9000: reads and counts whatever comes, for throughput runs."""

    def handle(self) -> None:
        total = 0
        while data := self.request.recv(1 << 20):
            total += len(data)
        self.wfile.write(str(total).encode())


def serve(server: socketserver.BaseServer) -> None:
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True, help="PEM: the server certificate and key")
    args = parser.parse_args()
    socketserver.ThreadingUDPServer.daemon_threads = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    serve(socketserver.ThreadingUDPServer((EVERYWHERE, 53), DnsUdp))
    serve(socketserver.ThreadingTCPServer((EVERYWHERE, 53), DnsTcp))
    serve(socketserver.ThreadingTCPServer((EVERYWHERE, 9000), Sink))
    for port in (80, 8080):
        serve(ThreadingHTTPServer((EVERYWHERE, port), Echo))
    https = ThreadingHTTPServer((EVERYWHERE, 443), Echo)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert)
    https.socket = context.wrap_socket(https.socket, server_side=True)
    serve(https)
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    main()
