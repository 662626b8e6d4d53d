"""The HTTP server's own bounds: gunicorn as functions-framework runs it (issue 19 findings 9,
10 and 23; docs/api.md#protecting-the-function).

functions-framework starts gunicorn with `limit_request_line=0` (no bound on the request line)
and no way to pass another setting: `functions_framework/_cli.py` calls
`create_server(app, debug)` with no options, and `GunicornApplication.__init__`
(`functions_framework/_http/gunicorn.py`) writes its own dict into gunicorn's configuration in
`load_config`. main.py is imported by `create_app` before `create_server` runs, so `install()`
reaches the server from inside the process: it wraps `load_config` to set capi's limits after
functions-framework's, and bounds the two waits gunicorn's gthread worker does not bound
itself. Each is a class or module attribute of gunicorn 27 (pinned in requirements.txt);
tests/test_hardening_http.py starts the real server and checks every one, so an upgrade that
moves them fails the suite instead of silently dropping a bound.

- request line: 4094 bytes (gunicorn's own default); a 16 MiB `GET /healthz?...` was read
  and kept (finding 9), now answered 414 (URI Too Long);
- header fields: 50, each at most 8190 bytes (past either: 431);
- the request line and every header within 5 s of the first read: a client dripping header
  bytes held a thread without bound (finding 10);
- a new connection's first byte: 0.5 s inside a thread (gunicorn: 5 s), then it waits in the
  poller without one; 40 idle connections held every thread for 5 s each (finding 10);
- `Expect: 100-continue`: answered when the function first reads the body, not before the
  key was checked (finding 23);
- what gunicorn refuses before the function sees the request (a request line or headers past
  the bounds, a malformed `Content-Length`, a bad request line): answered in JSON like every
  other answer of capi, not gunicorn's HTML page (finding 23, "JSON everywhere").
"""

from __future__ import annotations

import socket
import time
from typing import Any

import orjson

LIMITS = {
    "limit_request_line": 4094,  # capi's paths take no query; gunicorn's default, not functions-framework's 0
    "limit_request_fields": 50,  # sGTM and Cloud Run add about 20
    "limit_request_field_size": 8190,  # gunicorn's default: a header line of at most 8 KiB
    "keepalive": 2,  # seconds an idle kept-alive connection stays open (in the poller, no thread)
}
HEAD_SECONDS = 5.0  # the request line and every header within this many seconds of the first read
FIRST_BYTE_SECONDS = 0.5  # gthread's wait for a new connection's first byte inside a thread (was 5 s)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The `error` of gunicorn's own refusals; any other status it writes is a `bad_request`.
SERVER_ERRORS = {414: "request_line_too_long", 431: "headers_too_large", 500: "internal", 501: "not_implemented"}
MAX_SERVER_MESSAGE = 200  # gunicorn's message may quote the request line: cut, never the whole line


class _Deadline:
    """A socket whose `recv` gives up once `deadline` (time.monotonic) has passed, however
    slowly the bytes arrive: a per-read timeout would let one byte a second go on forever.

    Giving up reads as the client closing (b""): gunicorn then drops the connection as a
    premature disconnection (NoMoreData, logged at debug), not as a socket error with a trace.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def recv(self, size: int) -> bytes:
        left = self._deadline - time.monotonic()
        if left <= 0:
            return b""
        self._sock.settimeout(left)
        try:
            return self._sock.recv(size)
        except TimeoutError:
            return b""
        finally:
            self._sock.settimeout(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def write_json_error(sock: socket.socket, status: int, reason: str, message: str) -> None:
    """gunicorn's `util.write_error`, answering JSON: the refusals gunicorn makes itself (a
    request line or headers past their bounds, a malformed `Content-Length`) read as capi's."""
    from gunicorn import util

    text = f"{reason}: {message}" if message else reason
    if len(text) > MAX_SERVER_MESSAGE:
        text = text[:MAX_SERVER_MESSAGE] + "…"
    body = orjson.dumps({"error": SERVER_ERRORS.get(status, "bad_request"), "message": text})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install() -> None:
    """Apply the bounds to gunicorn (when it is installed: the tests' Flask client has no server)."""
    try:
        from functions_framework._http import gunicorn as framework
        from gunicorn import util
        from gunicorn.http import message
        from gunicorn.workers import gthread
    except ImportError:  # pragma: no cover - functions-framework always brings gunicorn on Linux
        return
    if getattr(framework.GunicornApplication, "_capi_bounded", False):
        return
    load_config = framework.GunicornApplication.load_config

    def bounded_load_config(self: Any) -> None:
        load_config(self)
        for key, value in LIMITS.items():
            self.cfg.set(key, value)

    framework.GunicornApplication.load_config = bounded_load_config
    framework.GunicornApplication._capi_bounded = True
    util.write_error = write_json_error  # read as `util.write_error` by the worker's handle_error
    gthread.DEFAULT_WORKER_DATA_TIMEOUT = FIRST_BYTE_SECONDS  # read by TConn's handler at each call
    # gunicorn writes `100 Continue` while it builds the WSGI environ, before any application
    # code runs; capi sends it itself once the key and the length passed (capi.http.CappedInput).
    message.Request._policy_expect_continue = False
    parse = message.Request.parse

    def parse_within_deadline(self: Any, unreader: Any) -> Any:
        sock = getattr(unreader, "sock", None)
        if not isinstance(sock, socket.socket):
            return parse(self, unreader)
        unreader.sock = _Deadline(sock, time.monotonic() + HEAD_SECONDS)
        try:
            return parse(self, unreader)
        finally:
            unreader.sock = sock

    message.Request.parse = parse_within_deadline
