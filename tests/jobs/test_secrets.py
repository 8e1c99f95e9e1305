"""Secrets are never written or printed (SPEC 4, issue 9 part 3).

A distinct secret is planted in every carrier — storage options (S3 key/secret), URL userinfo
of INPUT and OUTPUT, an endpoint from the environment and one from --storage-option, HTTP
headers in client_kwargs, a connection string, a config value (images_url) — and every output
object, stdout and stderr (driver and LocalCluster workers) of real `maskjob export` runs is
grepped for them: runs that succeed (COCO over HTTP with userinfo and headers, S3 on moto with
credentials in storage options), runs refused up front, and a run whose remote reads fail
mid-job with an exception quoting the URL. Unit tests pin the redaction rules.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.secrets import MASK, RedactFilter, is_credential_name, redact, redact_text
from tests.conftest import rect

ROOT = Path(__file__).resolve().parents[2]
COCO = ROOT / "tests" / "data" / "coco_small"


# --- the rules ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "kept", "gone"), [
    ("s3://user:PW1@bucket/x", "s3://***@bucket/x", "PW1"),
    ("see http://u:PW2@127.0.0.1:9000/a?b=1", "http://***@127.0.0.1:9000/a?b=1", "PW2"),
    ('Invalid bucket name "u:PW3@bkt": must match', '"***@bkt"', "PW3"),
    ("https://h/o?X-Amz-Signature=SIG4&X-Amz-Credential=AK%2F4&x=1", "&x=1", "SIG4"),
    ("https://h/o?X-Amz-Credential=CRED5&X-Amz-Security-Token=TOK5", "X-Amz-Credential=***",
     "CRED5"),
    ("https://acct.blob/c?sv=2024&sig=SIG6&se=1", "sv=2024", "SIG6"),
    ("GET /x?token=TOK7 HTTP/1.1", "token=***", "TOK7"),
    ("DefaultEndpointsProtocol=https;AccountName=acc;AccountKey=KEY8;EndpointSuffix=x",
     "AccountName=acc", "KEY8"),
    ("Authorization: Bearer TOK9 more", "Authorization: ***", "TOK9"),
    ("Cookie: sid=COOK10", "Cookie: ***", "COOK10"),
    ("X-Api-Key: KEY11", "X-Api-Key: ***", "KEY11"),
    ("{'aws_secret_access_key': 'SEC12', 'region_name': 'eu'}", "'region_name': 'eu'", "SEC12"),
    ('{"key": "KEY13", "secret": "SEC13b"}', '"key": "***"', "KEY13"),
    ("{'headers': {'Authorization': 'Basic AUTH14'}}", "'Authorization': '***'", "AUTH14"),
    ("AWS_SECRET_ACCESS_KEY=SEC15 other", "other", "SEC15"),
    ("password=PW16&user=bob", "user=bob", "PW16"),
    ("passwd: 'PW17'", "passwd", "PW17"),  # quoted value after a credential name
])
def test_redact_text_removes_each_kind_of_secret(text, kept, gone):
    out = redact_text(text)
    assert gone not in out and kept in out, out


@pytest.mark.parametrize("text", [
    "missing: supervisely/ds/masks_machine/a.png",
    "config key 'supervisely.thickness': Expected an integer. Got 'x' instead.",
    "annotations[0] (id 7): Expected a category_id declared in 'categories'. Got 99 instead.",
    "2026-01-01 10:20:30,123 maskjob INFO done: key=ds/a.png",  # a bare key in text is kept
    "mail me at a@b.c", "s3://bucket/path@v2/x",
])
def test_redact_text_keeps_ordinary_messages(text):
    assert redact_text(text) == text


def test_redact_mappings_at_any_depth_keeps_names_and_structure():
    opts = {"key": "K1", "secret": "S1", "token": None, "anon": False, "use_ssl": True,
            "endpoint_url": "http://u:P1@127.0.0.1:9000", "region_name": "eu",
            "client_kwargs": {"headers": {"Authorization": "A1", "X-Api-Key": "A2",
                                          "Accept": "image/png"},
                              "aws_session_token": "T1"},
            "config_kwargs": {"s3": {"addressing_style": "path"}},
            "connection_string": "AccountKey=C1", "sessionToken": "T2", "passwd": "P2",
            "credentials": {"nested": "C2"}, "list": [{"apiKey": "A3"}, "ok"]}
    out = redact(opts)
    text = json.dumps(out)
    for secret in ("K1", "S1", "P1", "A1", "A2", "T1", "C1", "T2", "P2", "C2", "A3"):
        assert secret not in text, secret
    assert out["endpoint_url"] == "http://***@127.0.0.1:9000"
    assert out["client_kwargs"]["headers"]["Accept"] == "image/png"
    assert out["config_kwargs"] == {"s3": {"addressing_style": "path"}}
    assert out["token"] is None and out["anon"] is False and out["region_name"] == "eu"
    assert out["list"][1] == "ok" and set(out) == set(opts)


@pytest.mark.parametrize(("name", "expected"), [
    ("key", True), ("aws_access_key_id", True), ("AccountKey", True), ("X-Api-Key", True),
    ("secret", True), ("Authorization", True), ("Cookie", True), ("session_token", True),
    ("ConnectionString", True), ("signature", True), ("X-Amz-Credential", True),
    ("passwd", True), ("endpoint_url", False), ("region_name", False), ("thickness", False),
    ("keypoints", False), ("monkey", False), ("masks_machine", False),
])
def test_which_names_name_a_credential(name, expected):
    assert is_credential_name(name) is expected


def test_the_log_filter_redacts_messages_arguments_and_tracebacks():
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    handler.addFilter(RedactFilter())
    logger = logging.getLogger("maskjob.test-secrets")
    logger.addHandler(handler)
    try:
        logger.warning("reading %s", "s3://u:LOGPW@b/k")
        try:
            raise OSError("cannot reach http://u:EXCPW@127.0.0.1:1/x?X-Amz-Signature=EXCSIG")
        except OSError:
            logger.exception("failed with %r", {"secret": "ARGSEC"})
    finally:
        logger.removeHandler(handler)
    text = "\n".join(records)
    assert "OSError" in text and "Traceback" in text and "maskjob.test-secrets" in text
    for secret in ("LOGPW", "EXCPW", "EXCSIG", "ARGSEC"):
        assert secret not in text


def test_the_log_filter_keeps_one_record_on_one_line():
    """An item named with a newline (or U+2028) cannot forge a log line."""
    record = logging.LogRecord("maskjob", logging.WARNING, __file__, 1, "failed: %s: %s",
                               ("ds/a\nmaskjob INFO done: 0 failed\u2028x.png", "bad\r\n"), None)
    assert RedactFilter().filter(record)
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message and "\u2028" not in message
    assert message == ("failed: ds/a\\x0amaskjob INFO done: 0 failed\\u2028x.png: "
                       "bad\\x0d\\x0a")


# --- real runs ----------------------------------------------------------------------------------

class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; under /broken/ every image read fails with a 500 (a remote read that
    fails mid-job, after listing). Requests are not logged."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/broken/images/") and self.path.endswith(".png"):
            self.send_error(500, "storage backend down")
            return
        super().do_GET()

    def translate_path(self, path: str) -> str:
        # /broken/ serves /ok/'s files; URLs (directory redirects, listing links) keep /broken/
        if path.startswith("/broken/"):
            path = "/ok/" + path[len("/broken/"):]
        return super().translate_path(path)


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """http://127.0.0.1:PORT serving the COCO fixture under /ok/ (and /broken/)."""
    base = tmp_path_factory.mktemp("www")
    shutil.copytree(COCO, base / "ok")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(base)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def maskjob(*args: str, env: dict[str, str] | None = None, timeout: float = 240
            ) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full.pop("DASK_SCHEDULER_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], env=full,
                          capture_output=True, text=True, timeout=timeout)


def basic_auth(userinfo: str) -> str:
    """The Authorization header value a client derives from URL userinfo (base64): a leaked
    header would not show the plain secret."""
    return base64.b64encode(userinfo.encode()).decode()


def assert_nowhere(secrets: list[str], proc: subprocess.CompletedProcess[str],
                   out: Path | None = None) -> None:
    """No secret in stdout, stderr, or any object under `out` (names and bytes)."""
    for s in secrets:
        assert s not in proc.stdout and s not in proc.stderr, (s, proc.stderr[-3000:])
    if out is not None and out.exists():
        files = [p for p in out.rglob("*") if p.is_file()]
        assert files
        for p in files:
            data = p.read_bytes()
            for s in secrets:
                assert s.encode() not in data and s not in str(p), (s, p)


@pytest.mark.cluster
def test_coco_over_http_with_userinfo_headers_and_a_config_url(http_root, tmp_path):
    secrets = ["SECRET-IN-USERINFO", "SECRET-HEADER-APIKEY", "SECRET-COOKIE",
               "SECRET-CONFIG-USERINFO", basic_auth("inuser:SECRET-IN-USERINFO"),
               basic_auth("cfguser:SECRET-CONFIG-USERINFO")]
    cfg = tmp_path / "job.yaml"
    cfg.write_text(f"images_url: http://cfguser:SECRET-CONFIG-USERINFO@{http_root}/ok/images\n")
    out = tmp_path / "out"
    proc = maskjob("export", f"http://inuser:SECRET-IN-USERINFO@{http_root}/ok/", str(out),
                   "--config", str(cfg), "--format", "supervisely", "--format", "clearml",
                   "--format", "zarr", "--workers", "1",
                   "--storage-option", "client_kwargs.headers.X-Api-Key=SECRET-HEADER-APIKEY",
                   "--storage-option", "client_kwargs.headers.Cookie=sid=SECRET-COOKIE")
    assert proc.returncode == 1, proc.stderr  # the fixture's bad items; the good ones exported
    summary = json.loads((out / "manifest.json").read_text())
    assert summary["summary"]["ok"] >= 3
    assert summary["input"]["storage_options"]["client_kwargs"]["headers"] == {
        "X-Api-Key": MASK, "Cookie": MASK}
    assert MASK in summary["input"]["url"] and MASK in summary["config"]["images_url"]
    assert (out / "preview.html").exists()
    assert_nowhere(secrets, proc, out)


@pytest.mark.s3
@pytest.mark.cluster
def test_s3_with_credentials_in_storage_options(project, s3_bucket, tmp_path):
    from tests.e2e.helpers import new_fs

    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    p.add("ds", "b.png", [rect("zebra", 1, 1, 5, 5)])  # fails: its error goes to the manifest
    secrets = ["SECRET-SO-KEYID", "SECRET-SO-SECRET"]
    proc = maskjob("export", str(p.root), f"s3://{s3_bucket}/out", "--workers", "1",
                   "--format", "supervisely", "--format", "clearml", "-v",
                   "--storage-option", "key=SECRET-SO-KEYID",
                   "--storage-option", "secret=SECRET-SO-SECRET",
                   "--storage-option", "client_kwargs.region_name=us-east-1")
    assert proc.returncode == 1, proc.stderr
    local = tmp_path / "copy"
    new_fs().get(f"{s3_bucket}/out", str(local), recursive=True)
    summary = json.loads((local / "manifest.json").read_text())
    assert summary["input"]["storage_options"] == {
        "key": MASK, "secret": MASK, "client_kwargs": {"region_name": "us-east-1"}}
    assert_nowhere(secrets, proc, local)


@pytest.mark.s3
def test_runs_refused_up_front_print_no_secret(project, s3_bucket, moto_server, tmp_path):
    p = project()
    p.add("ds", "a.png", [rect("car", 1, 1, 5, 5)])
    port = moto_server.endpoint.rsplit(":", 1)[1]
    out = f"s3://{s3_bucket}/out"
    cases = [
        (["export", str(p.root), f"s3://outuser:SECRET-OUT-USERINFO@{s3_bucket}/o"], {}),
        (["export", f"s3://inuser:SECRET-IN-USERINFO@{s3_bucket}/in", str(tmp_path / "o")], {}),
        (["export", str(p.root), out],
         {"FSSPEC_S3_ENDPOINT_URL": f"http://envuser:SECRET-ENV-ENDPOINT@127.0.0.1:{port}"}),
        (["export", str(p.root), out, "--storage-option",
          "endpoint_url=http://souser:SECRET-SO-ENDPOINT@127.0.0.1:9"],
         {"AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}),
        (["export", str(p.root), out, "--storage-option",
          "connection_string=DefaultEndpointsProtocol=https;AccountName=a;"
          "AccountKey=SECRET-CONNSTR"], {}),
        (["export", str(p.root), out, "--storage-option",
          "client_kwargs.headers.Authorization=Bearer SECRET-S3-HEADER"], {}),
        (["validate", f"s3://inuser:SECRET-VALIDATE@{s3_bucket}/in"], {}),
    ]
    for argv, env in cases:
        proc = maskjob(*argv, "--workers", "0", env=env) if argv[0] == "export" else \
            maskjob(*argv, env=env)
        assert proc.returncode == 2, (argv, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
        secrets = [a.split("SECRET-", 1)[1].split("@")[0].split(";")[0]
                   for a in [*argv, *env.values()] if "SECRET-" in a]
        assert_nowhere([f"SECRET-{s}" for s in secrets], proc)


@pytest.mark.cluster
def test_remote_reads_failing_mid_job_quote_no_secret(http_root, tmp_path):
    """Every image read fails with an HTTP 500 whose exception quotes the URL: the job cannot
    finish (exit 3); driver and worker logs, stdout and OUTPUT hold no secret."""
    secrets = ["SECRET-BROKEN-USERINFO", "SECRET-BROKEN-HEADER",
               basic_auth("u:SECRET-BROKEN-USERINFO")]
    out = tmp_path / "out"
    proc = maskjob("export", f"http://u:SECRET-BROKEN-USERINFO@{http_root}/broken/", str(out),
                   "--workers", "1", "--format", "supervisely", "--set",
                   "supervisely.masks_human=true", "--storage-option",
                   "client_kwargs.headers.X-Auth-Token=SECRET-BROKEN-HEADER")
    assert proc.returncode in (1, 3), proc.stderr  # 3 today: a read error fails the partition
    lines = out / "manifest.jsonl"
    assert "500" in proc.stderr + (lines.read_text() if lines.exists() else ""), proc.stderr
    assert_nowhere(secrets, proc, out)


def test_the_plain_text_fast_path_never_skips_a_secret():
    """`redact_text` returns text with no '@', '=', ':' (beyond a plain scheme) or quote as is;
    on thousands of generated strings built from credential words, every such string is one
    the full set of patterns leaves unchanged too."""
    import random

    from jobs.secrets import _PLAIN, _redact_patterns

    rng = random.Random(7)
    words = ["token", "password", "secret", "cookie", "authorization", "x-api-key",
             "proxy-authorization", "set-cookie", "aws_secret_access_key", "key", "user",
             "s3", "bucket", "img", "é", "日本", "a.b", "x", "-", "_", " ", "\n", "\t", "/",
             "//", "%40", "%3D", "(", ")", "[", "]", ",", ";", "&", "?", "#", "~", "+", "*"]
    schemes = ["", "", "s3://", "gs://", "file://", "https://", "cookie://",
               "authorization://", "memory://"]
    plain = 0
    for _ in range(20000):
        s = rng.choice(schemes) + "".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
        if _PLAIN.fullmatch(s):
            plain += 1
            assert _redact_patterns(s) == s, s
        assert redact_text(s) == _redact_patterns(s), s
    assert plain > 5000
    for risky in ["cookie://a", "authorization://x", "s3://u:p@bucket/k", "s3://b/token=abc",
                  "s3://b/'password': 'x'", "x-api-key: abc"]:
        assert not _PLAIN.fullmatch(risky)
        assert redact_text(risky) != risky
