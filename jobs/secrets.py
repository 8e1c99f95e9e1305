"""Redaction: the one place that decides what a secret looks like (SPEC 4, issue 9 part 3).

Everything maskjob writes or prints that may carry user-supplied text goes through here:
the manifest (`input.storage_options`, the job config), log lines and exception text (a
`logging.Filter` the CLI installs on its handlers and on the workers'), error messages of the
CLI and the API, and hence the preview (it reads the redacted manifest).

What is a secret:
- URL userinfo: `s3://user:pass@bucket`, `http://u:p@host` -> `s3://***@bucket`; anywhere in a
  string, so an endpoint_url with userinfo or an exception quoting a URL is covered; also
  without the scheme (`"user:pass@bucket"`, as botocore quotes an invalid bucket name).
- query-string and `name=value` credentials whose name names a credential (below):
  `X-Amz-Signature=...`, `X-Amz-Credential=...`, `token=...`, `sig=...`, `AccountKey=...` in a
  connection string -> `name=***`.
- headers and quoted mappings in text: `Authorization: Bearer x`, `Cookie: a=b`,
  `'aws_secret_access_key': 'x'`, `passwd: 'x'` (YAML style, quoted value) -> value `***`.
- in mappings (storage options, config), the value of any key naming a credential, at any
  depth, whatever its type.

A name names a credential when one of its words (split at `_ - .` and camelCase) is one of
CREDENTIAL_WORDS (secret, token, password, passwd, auth, credential, signature, session, cookie,
...), or has the word `key` after another word (`access_key`, `aws_access_key_id`, `AccountKey`,
`X-Api-Key`), or it names a connection string (`connection_string`, `ConnectionString`, `dsn`).

Decision on a bare `key`: in a mapping, and as a quoted pair of a printed mapping (`'key': 'x'`),
it is a credential (s3fs's `key=` is the access key id, so `--storage-option key=...` is
redacted); in free text `key=` / `key:` is kept, because maskjob's own messages name object keys
that way ("missing: key"). Manifest lines are never passed through here: their `outputs[].key`
are object keys, not credentials.
Redaction only ever replaces values; names and structure are kept so a reader still sees which
option was set. Redaction is applied to what is shown, never to what is used: the job runs with
the real options.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
CREDENTIAL_WORDS = frozenset({
    "secret", "secrets", "token", "tokens", "password", "passwords", "passwd", "pwd", "pass",
    "passphrase", "auth", "authorization", "authentication", "credential", "credentials",
    "signature", "sig", "session", "cookie", "cookies", "apikey", "dsn", "sas", "bearer",
    "privatekey", "accesskey", "secretkey", "accountkey", "connectionstring", "connstr",
})


def _words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def is_credential_name(name: object, *, bare_key: bool = True) -> bool:
    """True if a mapping key / parameter name names a credential (see the module doc).
    `bare_key`: whether the name `key` alone counts (mappings: yes; free text: no)."""
    words = _words(str(name))
    if not words:
        return False
    if any(w in CREDENTIAL_WORDS for w in words) or "".join(words) in CREDENTIAL_WORDS:
        return True
    if "connection" in words or "conn" in words:
        return True
    if any(w in ("key", "keys") for w in words[1:]):  # access_key, aws_access_key_id, X-Api-Key
        return True
    if words == ["key"]:
        return bare_key
    return False


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/\s@'\"<>]+)@")
# userinfo without a scheme, as a client quotes a bucket or host name: "user:pass@bucket"
_BARE_USERINFO = re.compile(r"""(^|[\s'"(\[=,])([^\s/@'"():,\[\]]+:[^\s/@'"]+)@(?=[\w\[])""")
_QUOTED_PAIR = re.compile(
    r"""(?P<q>['"])(?P<name>[^'"\s]{1,80})(?P=q)(?P<sep>\s*:\s*)"""
    r"""(?P<val>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s,{}\[\]'"]+)""")
_COLON_QUOTED = re.compile(r"""(?P<name>[A-Za-z_][\w.\-]{0,80})(?P<sep>\s*:\s*)"""
                          r"""(?P<val>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
_ASSIGN = re.compile(r"(?P<name>[A-Za-z_][\w.\-]{0,80})(?P<sep>\s*=\s*)(?P<val>[^\s&;,'\"<>)}\]]+)")
_HEADER = re.compile(r"(?im)(?P<name>\b(?:proxy-)?authorization|\bset-cookie|\bcookie"
                     r"|\bx-[\w-]*(?:key|token|signature|credential|auth)[\w-]*)"
                     r"(?P<sep>\s*:\s*)(?P<val>[^\r\n'\",}]+)")


# Text no pattern below can match: an optional lowercase-letter scheme ("s3://") and then no
# '@' (userinfo), '=' (pairs), ':' (headers, quoted pairs) or quotes - most object URLs.
_PLAIN = re.compile(r"(?:(?!(?:authorization|cookie)://)[a-z][a-z0-9]*://)?[^@=:'\"]*")


def redact_text(text: object) -> str:
    """`text` with every secret it carries replaced by '***' (URL userinfo, credential
    `name=value` pairs, headers, quoted credential pairs of a printed mapping)."""
    s = str(text)
    if _PLAIN.fullmatch(s):  # one C scan instead of six substitutions (an URL per output)
        return s
    return _redact_patterns(s)


def _redact_patterns(s: str) -> str:
    s = _USERINFO.sub(lambda m: f"{m[1]}{MASK}@", s)
    s = _BARE_USERINFO.sub(lambda m: f"{m[1]}{MASK}@", s)

    def pair(m: re.Match[str], bare_key: bool = False) -> str:
        if not is_credential_name(m["name"], bare_key=bare_key) or \
                m["val"].strip("'\"") == MASK:
            return m[0]
        val = m["val"]
        quote = val[0] if val[:1] in ("'", '"') else ""
        return m[0][: m.start("val") - m.start()] + f"{quote}{MASK}{quote}"

    s = _QUOTED_PAIR.sub(lambda m: pair(m, bare_key=True), s)
    s = _COLON_QUOTED.sub(pair, s)
    s = _ASSIGN.sub(pair, s)
    return _HEADER.sub(lambda m: f"{m['name']}{m['sep']}{MASK}", s)


def redact(value: Any) -> Any:
    """A copy of `value` (mappings, lists, strings, scalars) safe to print or record: values of
    credential-named keys become '***' at any depth, every string is passed to redact_text."""
    if isinstance(value, Mapping):
        return {k: (MASK if is_credential_name(k) and value[k] not in (None, "")
                    else redact(value[k])) for k in value}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(repr(value))


_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(32), 127)} | {
    0x85: "\\x85", 0x2028: "\\u2028", 0x2029: "\\u2029"}


class RedactFilter(logging.Filter):
    """A handler filter: the record's message and exception text are redacted before any
    formatter sees them (the record is rendered once here, then passed on as plain text), and
    the message's control characters are escaped (`\\x0a`): an item named with a newline
    cannot forge a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: show it raw, still redacted
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact_text(message).translate(_CONTROLS), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install_log_filter(*logger_names: str) -> None:
    """Add one RedactFilter to every handler of the named loggers ('' = root); idempotent."""
    for name in logger_names or ("",):
        for handler in logging.getLogger(name or None).handlers:
            if not any(isinstance(f, RedactFilter) for f in handler.filters):
                handler.addFilter(RedactFilter())


def worker_plugin() -> Any:
    """A Dask WorkerPlugin installing RedactFilter on each worker's log handlers (a worker
    logs a failed task with its arguments: roots and their storage options)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class RedactWorkerLogs(WorkerPlugin):
        def setup(self, worker: Any) -> None:
            install_log_filter("", "distributed")

    return RedactWorkerLogs()
