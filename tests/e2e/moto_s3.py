"""moto's own S3 app on a threaded werkzeug server, without `moto_server`'s per-request costs.

    python tests/e2e/moto_s3.py [--host 127.0.0.1] [--port 0] [--preload BUCKET[/PREFIX]=DIR ...]

Prints `Running on http://HOST:PORT` once it listens (as `moto_server` does), then serves until
SIGINT/SIGTERM. The S3 semantics are moto's, untouched: every request is answered by the Flask
app that `moto_server` itself builds for S3 (`create_backend_app("s3")`, moto's request class,
routes and backend), on werkzeug's threaded server with moto's request handler, as
`moto_server` runs it. `/moto-api/...` (reset, state) goes to moto's own moto_api app.

What is left out is `moto_server`'s multi-service front, which on this 2-core box cost about
half of its CPU per S3 request (measured with py-spy, 2026-11-30): for every request it picks the
service under one global lock by listing moto's package folder (`os.listdir` plus ~300 `stat`
calls) and matching the host against every service's URL regexes; and it logs every request
line through `logging` to the server's log. Here the service is known (S3 only), and only errors
are logged.

`GET /_counts` answers the JSON count of the S3 requests served so far by kind (LIST, GET,
HEAD, PUT, POST, DELETE: a LIST is a GET with `list-type=`), `POST /_counts` resets it (no bucket
name has an underscore, so no S3 request is taken): a benchmark counts its job's requests where
they are served, with no counting proxy in their path (that proxy cost ~1.8 CPU-ms per request,
40 % of moto's own).

`--preload` puts every file under DIR into the bucket (created) before the server listens, by
the S3 backend's own `create_bucket` / `put_object` (what a PUT request ends in): a benchmark's
input of 200,000 objects is there in seconds instead of half an hour of single-process PUTs. The
objects are moto objects like any other; only the setup skips HTTP (so they carry no checksum
header of a client and no metadata).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
from moto.s3.models import s3_backends
from werkzeug.serving import make_server


class QuietRequestHandler(MotoRequestHandler):
    """moto's request handler without the access-log line per request (errors still log)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class S3Only:
    """WSGI app: `/moto-api` and `/favicon.ico` to moto's moto_api app, `/_counts` to the
    request counts, everything else to S3 (the routes `moto_server`'s dispatcher takes for
    these requests)."""

    def __init__(self) -> None:
        self.s3 = create_backend_app("s3")
        self.moto_api = create_backend_app("moto_api")
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api") or path == "/favicon.ico":
            return self.moto_api(environ, start_response)
        if path == "/_counts":
            return self._counts(environ, start_response)
        method = environ.get("REQUEST_METHOD", "")
        kind = ("LIST" if method == "GET" and "list-type=" in environ.get("QUERY_STRING", "")
                else method)
        with self._lock:
            self.counts[kind] += 1
        return self.s3(environ, start_response)

    def _counts(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with self._lock:
            body = json.dumps(dict(self.counts)).encode()
            if environ.get("REQUEST_METHOD") == "POST":
                self.counts.clear()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]


def preload(spec: str) -> int:
    """`BUCKET[/PREFIX]=DIR`: every file under DIR as PREFIX/<path relative to DIR>."""
    target, sep, folder = spec.partition("=")
    if not sep or not target or not folder:
        raise SystemExit(f"--preload wants BUCKET[/PREFIX]=DIR, got {spec!r}")
    bucket, _, prefix = target.partition("/")
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    if bucket not in backend.buckets:
        backend.create_bucket(bucket, "us-east-1")
    root, count = Path(folder), 0
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = path.relative_to(root).as_posix()
            backend.put_object(bucket, f"{prefix.strip('/')}/{key}" if prefix else key,
                               path.read_bytes())
            count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-H", "--host", default="127.0.0.1")
    ap.add_argument("-p", "--port", type=int, default=0, help="0: chosen by the OS")
    ap.add_argument("--preload", action="append", default=[], metavar="BUCKET[/PREFIX]=DIR")
    args = ap.parse_args(argv)
    for spec in args.preload:
        print(f"preloaded {preload(spec)} objects from {spec}", flush=True)
    server = make_server(args.host, args.port, S3Only(), threaded=True,
                         request_handler=QuietRequestHandler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"Running on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
