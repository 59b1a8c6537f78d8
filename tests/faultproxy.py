"""A loopback HTTP proxy in front of an S3 endpoint that lies, stalls and hangs up.

Point a client at it (``AWS_ENDPOINT_URL=proxy.url``) and a share of its
requests (``rate``) meets one of the faults real object stores and networks
produce:

``500``            an ``InternalError`` reply; the request never reached the server
``503``            a ``SlowDown`` reply (S3's throttling); never reached the server
``reset``          the connection is reset before the request is forwarded
``reset-after``    the request is forwarded and applied, then the connection is
                   reset before the reply: the client cannot know it succeeded
``stall``          the reply comes ``stall_seconds`` late
``truncate``       the reply's headers promise the whole body, then the
                   connection closes half-way through it

Everything else is forwarded unchanged, keep-alive included, but for the rule
Toil's AWSJobStore puts on the buckets it creates to unblock SSE-C
(``BlockedEncryptionTypes``, added to AWS in 2025): moto cannot parse it yet,
so the proxy accepts it, as AWS does.

Run it in a thread with :class:`FaultProxy` (tests), or as ``python -m tests.faultproxy
UPSTREAM [--rate R] [--port P]`` in front of any S3 service by hand.
"""

from __future__ import annotations

import argparse
import http.client
import random
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

KINDS = ("500", "503", "reset", "reset-after", "stall", "truncate")
_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message>"
    "<RequestId>faultproxy</RequestId></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    """The proxy, serving from a thread for the duration of a ``with`` block."""

    def __init__(
        self,
        upstream: str,
        rate: float = 0.0,
        kinds: Iterable[str] = KINDS,
        seed: int | None = None,
        stall_seconds: float = 1.0,
        port: int = 0,
        record: bool = False,
    ) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"the upstream must be an http:// URL: {upstream!r}")
        self.upstream = (parsed.hostname, parsed.port or 80)
        self.rate = rate
        self.kinds = tuple(kinds)
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        self.stall_seconds = stall_seconds
        self.requests = 0
        self.faults: Counter[str] = Counter()
        #: With ``record``: (method, path and query, lowercased header names) of each request.
        self.seen: list[tuple[str, str, frozenset[str]]] = []
        self._record = record
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.proxy = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="faultproxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def pick(self, method: str, path: str, headers: Iterable[str]) -> str | None:
        """Count a request and decide its fate: a fault kind, or None to pass it."""
        with self._lock:
            self.requests += 1
            if self._record:
                self.seen.append((method, path, frozenset(h.lower() for h in headers)))
            if not self.kinds or self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(self.kinds)
            self.faults[kind] += 1
            return kind

    def truncation(self, length: int) -> int:
        with self._lock:
            return self._rng.randrange(length) if length else 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay quiet when a client hangs up: after an injected fault, clients do."""
        if not isinstance(sys.exception(), ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # no line per request on stderr

    def _relay(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        if self.command == "PUT" and b"BlockedEncryptionTypes" in body:
            self._reply(200, b"", [])
            return
        fault = proxy.pick(self.command, self.path, self.headers.keys())
        if fault in ("500", "503"):
            code, message = (
                ("InternalError", "injected") if fault == "500" else ("SlowDown", "Slow down")
            )
            error = _ERROR_BODY.format(code=code, message=message).encode()
            self._reply(int(fault), error, [("Content-Type", "application/xml")])
            return
        if fault == "reset":
            self._reset()
            return
        if fault == "stall":
            time.sleep(proxy.stall_seconds)
        status, headers, payload = self._forward(body)
        if fault == "reset-after":
            self._reset()
            return
        if fault == "truncate" and payload and self.command != "HEAD":
            self._reply(status, payload, headers, cut=proxy.truncation(len(payload)))
            return
        self._reply(status, payload, headers)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.server.proxy.upstream, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            return response.status, response.getheaders(), payload
        finally:
            conn.close()

    def _reply(
        self,
        status: int,
        payload: bytes,
        headers: list[tuple[str, str]],
        cut: int | None = None,
    ) -> None:
        """Send a reply; with ``cut``, only that much of a body whose full length was promised."""
        self.send_response_only(status)
        for key, value in headers:
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        length = dict((k.lower(), v) for k, v in headers).get("content-length")
        if self.command != "HEAD" or length is not None:
            self.send_header(
                "Content-Length", length if self.command == "HEAD" else str(len(payload))
            )
        if cut is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload if cut is None else payload[:cut])
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True

    def _reset(self) -> None:
        """Close with RST instead of FIN, as a crashed peer or a middlebox does."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("upstream", help="the S3 endpoint, e.g. http://127.0.0.1:9000")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.05)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--stall-seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args()
    proxy = FaultProxy(
        args.upstream,
        rate=args.rate,
        kinds=args.kinds.split(","),
        seed=args.seed,
        stall_seconds=args.stall_seconds,
        port=args.port,
    )
    with proxy:
        print(f"AWS_ENDPOINT_URL={proxy.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    print(f"{proxy.requests} requests, faults: {dict(proxy.faults)}")


if __name__ == "__main__":
    main()
