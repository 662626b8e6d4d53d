"""HTTP adapter: flask request -> service call -> JSON response.

The only place where errors become HTTP statuses. Every answer is JSON, whatever the input.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import flask
import orjson
from werkzeug.datastructures import EnvironHeaders

from capi import __version__
from capi.errors import (
    CapiError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
)
from capi.inputs.lenient import parse as parse_lenient
from capi.log import log, set_trace
from capi.server import CONTINUE
from capi.webhooks import refuse_early, shop_of

if TYPE_CHECKING:
    from capi.service import Outcome

MAX_BODY_BYTES = 1024 * 1024
TOO_LARGE = "the body is over 1 MiB: send at most 1000 events per request"
# The jobs (capi_replay, capi_quality) read no body: Cloud Scheduler posts an empty or tiny one.
MAX_JOB_BODY_BYTES = 16 * 1024
JOB_TOO_LARGE = "the body is over 16 KiB: the scheduled jobs take no body"
UNREADABLE = "the body could not be read: malformed chunked encoding, or the connection broke"
# Paths functions-framework answers itself with an HTML 404 (its `error` endpoint).
FRAMEWORK_PATHS = ("/robots.txt", "/favicon.ico")


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> flask.Response:
    response = flask.Response(orjson.dumps(body), status=status, mimetype="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def error_response(exc: CapiError) -> flask.Response:
    headers = {"Allow": exc.allow} if isinstance(exc, MethodNotAllowed) else None
    if exc.status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="capi"'}
    return json_response(exc.status, exc.to_body(), headers)


def read_json(request: flask.Request) -> Any:
    """The body as JSON: 415 for another content type, 413 over 1 MiB, 400 when not JSON.

    orjson is strict where the standard library is lenient: it refuses invalid UTF-8, NaN and
    Infinity, unpaired surrogate escapes and nesting deeper than 1024, all of which would
    otherwise fail later, when the payload is encoded again. A body refused only for an
    unpaired surrogate escape is read again by the standard library with orjson's rules on
    numbers (capi.inputs.lenient.parse), so that the events holding one are rejected one by one
    and the others go (issue 19 finding 2).
    """
    mimetype = (request.mimetype or "").lower()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType("send Content-Type: application/json", field="Content-Type")
    data = read_body(request)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        problem = "not valid UTF-8" if "UTF-8" in str(exc) else "not valid JSON"
        if "surrogate" in str(exc):
            try:
                return parse_lenient(data.decode("utf-8"))
            except (ValueError, RecursionError):
                pass
        raise RequestError(f"the body is {problem}", field="body") from None


def read_body(request: flask.Request) -> bytes:
    """The raw body, at most 1 MiB (413 beyond): what a webhook's signature is computed on."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLarge(TOO_LARGE, field="body")
    data = request.stream.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise PayloadTooLarge(TOO_LARGE, field="body")
    return data


Handler = Callable[[flask.Request], flask.Response]


def guarded(handler: Handler) -> Handler:
    """Run a handler so that every failure is a JSON answer, never a 500 page or a stack trace."""

    def run(request: flask.Request) -> flask.Response:
        try:
            return handler(request)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            return failure_response(exc)

    return run


def failure_response(exc: Exception) -> flask.Response:
    """The JSON answer for any failure; server-side ones are logged (the type only, if unexpected)."""
    if isinstance(exc, CapiError):
        if exc.status >= 500:
            log(logging.ERROR, "request failed", status=exc.status, error=exc.code, detail=exc.message)
        return error_response(exc)
    log(logging.ERROR, "unexpected error", error=type(exc).__name__)
    return json_response(500, {"error": "internal", "message": "unexpected error; it was logged"})


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class EarlyRefusal:
    """WSGI middleware: refuse before the body is read, and never let a read exceed the limit.

    functions-framework reads every request body whole after the function answered (its
    `read_request` hook calls `request.get_data()`, functions_framework/__init__.py), so a
    refusal from the function itself still buffered a 400 MiB upload. This wraps the Flask app
    functions-framework built and answers first:

    - 404 (JSON) for `/robots.txt` and `/favicon.ico`, which functions-framework would answer
      with an HTML page;
    - 413 when `Content-Length` is over `max_bytes`;
    - 401 when the request carries a body and `check_key` refuses its headers (`capi_events`;
      the jobs are IAM-only and pass None); on a shop's webhook path the shop's signature
      stands in for the key, and a request without one is refused (`capi.webhooks.refuse_early`).

    None reads a byte of the body; the server then discards at most what it bounds itself
    (docs/api.md#protecting-the-function). Every other request goes on with `wsgi.input` capped at
    `max_bytes + 1` bytes, so a chunked body without a length is cut there too. With
    `read_first` (the jobs, whose bound is small) a chunked body is read here and refused when
    over the bound, so a job never runs on one. `Expect: 100-continue` is answered only now,
    once the key and the length passed (capi.server keeps gunicorn from answering it earlier).
    """

    def __init__(
        self,
        app: WsgiApp,
        *,
        check_key: Callable[[Mapping[str, str]], None] | None,
        project: str | None = None,
        max_bytes: int = MAX_BODY_BYTES,
        read_first: bool = False,
    ) -> None:
        self.app = app
        self.check_key = check_key
        self.project = project
        self.max_bytes = max_bytes
        self.read_first = read_first
        self.too_large = TOO_LARGE if max_bytes == MAX_BODY_BYTES else JOB_TOO_LARGE

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = EnvironHeaders(environ)
        try:
            length = int(headers.get("Content-Length") or 0)
        except ValueError:
            length = 0  # werkzeug answers a malformed length itself
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        try:
            if environ.get("PATH_INFO") in FRAMEWORK_PATHS:
                raise NotFound("unknown path", field="path")
            if length > self.max_bytes:
                raise PayloadTooLarge(self.too_large, field="body")
            if self.check_key is not None and (length > 0 or chunked):
                path = environ.get("PATH_INFO", "")
                if shop_of(path) is not None:
                    refuse_early(path, headers, length if not chunked else self.max_bytes)
                else:
                    self.check_key(headers)
            # gunicorn's own socket, to answer `Expect: 100-continue` on the first read (an
            # HTTP/1.0 request's expectation is ignored, RFC 9110 §10.1.1).
            expecting = headers.get("Expect", "").lower() == "100-continue"
            http11 = environ.get("SERVER_PROTOCOL") != "HTTP/1.0"
            waiting = environ.get("gunicorn.socket") if expecting and http11 else None
            body = CappedInput(environ["wsgi.input"], self.max_bytes + 1, waiting)
            if self.read_first and chunked:
                data = body.read()
                if len(data) > self.max_bytes:
                    raise PayloadTooLarge(self.too_large, field="body")
                body = CappedInput(io.BytesIO(data), self.max_bytes + 1)
        except Exception as exc:  # noqa: BLE001 - answered as JSON, as the view would
            set_trace(headers.get("X-Cloud-Trace-Context"), self.project)
            return failure_response(exc)(environ, start_response)
        environ["wsgi.input"] = body
        return self.app(environ, start_response)


class CappedInput:
    """A request body stream that ends after `limit` bytes, however much the client sends.

    A body the server cannot decode (gunicorn's InvalidChunkSize, ChunkMissingTerminator,
    InvalidChunkExtension, a connection broken mid-body) raises one RequestError (400, field
    `body`), and the stream has ended for every later read: functions-framework reads the rest
    after the view answered (`read_request`), which must not turn the 400 into a 500 page.
    `waiting`: the client's socket, when it sent `Expect: 100-continue` and the request passed
    the early checks; `100 Continue` is sent on the first read (PEP 3333 lets a server wait
    for the application to read).
    """

    CHUNK = 64 * 1024

    def __init__(self, stream: Any, limit: int, waiting: Any = None) -> None:
        self._stream = stream
        self._left = limit
        self._waiting = waiting

    def _read(self, size: int, line: bool = False) -> bytes:
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            with contextlib.suppress(OSError):  # the client went away: the read below ends the body
                waiting.sendall(CONTINUE)
        try:
            return self._stream.readline(size) if line else self._stream.read(size)
        except Exception:  # noqa: BLE001 - the server's own decoding errors have no common base
            self._left = 0
            raise RequestError(UNREADABLE, field="body") from None

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (all that is left when negative), fewer only at the end or the limit."""
        want = self._left if size is None or size < 0 else min(size, self._left)
        parts = []
        while want > 0:
            data = self._read(min(want, self.CHUNK))
            if not data:
                break
            parts.append(data)
            want -= len(data)
            self._left -= len(data)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        limit = self._left if size is None or size < 0 else min(size, self._left)
        data = self._read(limit, line=True) if limit > 0 else b""
        self._left -= len(data)
        return data

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


def route(request: flask.Request) -> str:
    """The endpoint for the request's path and method: forward, validate, webhook or health."""
    path = request.path.rstrip("/") or "/"
    if path == "/healthz":
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed("use GET /healthz", allow="GET, HEAD")
        return "health"
    if path in ("/", "/events", "/validate"):
        if request.method != "POST":
            raise MethodNotAllowed(f"use POST {path}")
        return "validate" if path == "/validate" else "forward"
    if shop_of(path) is not None:
        if request.method != "POST":
            raise MethodNotAllowed(f"use POST {path}")
        return "webhook"
    raise NotFound(
        "unknown path: use POST /events, POST /validate, POST /webhooks/shopify, POST /webhooks/woocommerce"
        " or GET /healthz",
        field="path",
    )


# The status of each destination's result (capi.service.RESULTS, the mildest first).
STATUS_BY_RESULT = {"delivered": 200, "stored": 202, "refused": 502, "unsent": 503}


def outcome_status(outcome: Outcome) -> int:
    """The HTTP status of a request's outcome (docs/api.md#response: statuses): the worst of its
    destinations'. 503 when an event could be neither delivered nor stored (or is in flight
    elsewhere) and the caller must retry; 502 when Meta refused a destination's events and
    nothing was kept for it; 202 when events were stored for replay; 200 otherwise."""
    if not outcome.deliveries and outcome.extra.get("delivery") == "queue":
        return 202  # DELIVERY=queue: accepted, Meta's answer comes later (in capi_deliver's logs)
    return max((STATUS_BY_RESULT[d.result] for d in outcome.deliveries), default=200)


def route_job(request: flask.Request, name: str) -> None:
    """Admit only `POST /` (or `POST /{name}`) to a scheduled job such as `capi_replay`.

    Cloud Scheduler posts to the function's URL; anything else (a GET from a crawler, another
    path) is refused before the job touches Firestore or Meta: 404 for a path, 405 for a method.
    """
    path = request.path.rstrip("/") or "/"
    if path not in ("/", f"/{name}"):
        raise NotFound(f"unknown path: the {name} job answers POST / only", field="path")
    if request.method != "POST":
        raise MethodNotAllowed(f"use POST to run the {name} job")


def health() -> flask.Response:
    return json_response(200, {"status": "ok", "version": __version__})
