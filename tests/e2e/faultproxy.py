"""A loopback HTTP proxy in front of an S3 endpoint that injects transient faults.

Clients (s3fs/botocore, in this process or in Dask worker processes) talk to the proxy as if it
were S3 (`endpoint_url=proxy.url`); the proxy forwards each request to the upstream endpoint
(moto) and relays the answer, except for the requests it chooses to fail:

- ``"503"``: answer ``503 SlowDown`` with S3's XML error body, without forwarding (what S3 does
  while it scales a prefix);
- ``"reset"``: read the request, then reset the TCP connection without answering;
- ``"reset_after"``: forward the request (the write *is* applied upstream), then reset the
  connection instead of relaying the answer - the client cannot know its request succeeded.

Which requests fail: those whose method is in ``methods`` and that are the ``first`` N, every
``every``-th, or a random ``rate`` fraction (seeded), capped at ``max_faults``; for each
method, the fault kinds cycle through ``modes``. ``counters`` tells what happened, per method
and outcome (`<KIND> calls` counts every request by kind: LIST, GET, PUT, ...).

``hold(part)``: the next GET whose path contains ``part`` waits, unanswered, until
``release()`` (``holding`` is set while it waits): a read that stalls for as long as a test
needs, e.g. to keep a task busy on one item.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "expect"}
SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message>"
             b"<RequestId>faultproxy</RequestId></Error>")


class FaultProxy:
    def __init__(self, upstream: str, *, methods: Sequence[str] = ("PUT", "GET"),
                 every: int = 0, first: int = 0, rate: float = 0.0, seed: int = 0,
                 max_faults: int | None = None,
                 modes: Sequence[str] = ("503", "reset", "reset_after")) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port, upstream
        self.upstream = (parts.hostname, parts.port)
        self.methods = {m.upper() for m in methods}
        self.every, self.first, self.rate = every, first, rate
        self.max_faults = max_faults
        for m in modes:
            assert m in ("503", "reset", "reset_after"), m
        self.modes = tuple(modes)
        self.counters: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._matched = 0
        self._faults = 0
        self._server: ThreadingHTTPServer | None = None
        self._hold: str | None = None
        self.holding = threading.Event()
        self._released = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True,
                                        name="faultproxy")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the proxy first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def faults(self) -> int:
        return self._faults

    # -- holding one read --------------------------------------------------------------------
    def hold(self, part: str) -> None:
        self._hold = part
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def _maybe_hold(self, method: str, path: str) -> None:
        with self._lock:
            held = method == "GET" and self._hold is not None and self._hold in path
            if held:
                self._hold = None
        if held:
            self.holding.set()
            self._released.wait(timeout=120)

    # -- policy ------------------------------------------------------------------------------
    def decide(self, method: str) -> str | None:
        """The fault to inject for this request, or None to forward it."""
        with self._lock:
            self.counters[f"{method} requests"] += 1
            if method not in self.methods:
                return None
            self._matched += 1
            n = self._matched
            if self.max_faults is not None and self._faults >= self.max_faults:
                return None
            hit = (n <= self.first or (self.every > 0 and n % self.every == 0)
                   or (self.rate > 0 and self._rng.random() < self.rate))
            if not hit:
                return None
            nth = self.counters[f"{method} faults"]  # kinds cycle per method
            mode = self.modes[nth % len(self.modes)]
            self._faults += 1
            self.counters[f"{method} faults"] += 1
            self.counters[f"{method} {mode}"] += 1
            return mode


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), answering nothing."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """One request upstream on this client connection's own keep-alive connection (one
        TCP connection and server thread per request made the proxy and moto spend CPU on
        connects and thread starts); a reused connection the upstream had closed while idle
        is retried once on a fresh one, as HTTP clients do."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if self.command not in ("GET", "HEAD", "DELETE") or body:
            headers["Content-Length"] = str(len(body))
        for attempt in (0, 1):
            conn, reused = self._upstream_conn()
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop_upstream()
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                self._drop_upstream()
                raise
            if resp.will_close:
                self._drop_upstream()
            return resp.status, resp.reason, resp.getheaders(), data
        raise AssertionError("unreachable")

    def _upstream_conn(self) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self, "_upstream", None)
        if conn is not None:
            return conn, True
        self._upstream = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        return self._upstream, False

    def _drop_upstream(self) -> None:
        conn, self._upstream = getattr(self, "_upstream", None), None
        if conn is not None:
            conn.close()

    def _handle(self) -> None:
        body = self._read_body()
        kind = ("LIST" if self.command == "GET" and "list-type=" in self.path
                else self.command)
        with self.owner._lock:
            self.owner.counters[f"{kind} calls"] += 1
        self.owner._maybe_hold(self.command, self.path)
        mode = self.owner.decide(self.command)
        if mode == "503":
            self.send_response_only(503, "Slow Down")
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(SLOW_DOWN)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(SLOW_DOWN)
            return
        if mode == "reset":
            self._reset()
            return
        try:
            status, reason, headers, data = self._forward(body)
        except OSError:
            with self.owner._lock:
                self.owner.counters["upstream errors"] += 1
            self._reset()
            return
        if mode == "reset_after":
            self._reset()
            return
        with self.owner._lock:
            self.owner.counters[f"{self.command} forwarded"] += 1
        self.send_response_only(status, reason)
        for k, v in headers:
            if k.lower() in HOP_BY_HOP or k.lower() == "content-length":
                continue
            self.send_header(k, v)
        if self.command == "HEAD":
            length = dict((k.lower(), v) for k, v in headers).get("content-length")
            if length is not None:
                self.send_header("Content-Length", length)
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    def finish(self) -> None:
        self._drop_upstream()
        with contextlib.suppress(OSError):
            super().finish()
