"""HTTP adapter: flask request -> service call -> JSON response.

The only place where errors become HTTP statuses. Every answer is JSON, whatever the input.
"""

from __future__ import annotations

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
from capi.log import log, set_trace

if TYPE_CHECKING:
    from capi.service import Outcome

MAX_BODY_BYTES = 1024 * 1024
TOO_LARGE = "the body is over 1 MiB: send at most 1000 events per request"


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
    otherwise fail later, when the payload is encoded again.
    """
    mimetype = (request.mimetype or "").lower()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType("send Content-Type: application/json", field="Content-Type")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLarge(TOO_LARGE, field="body")
    data = request.stream.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise PayloadTooLarge(TOO_LARGE, field="body")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        problem = "not valid UTF-8" if "UTF-8" in str(exc) else "not valid JSON"
        raise RequestError(f"the body is {problem}", field="body") from None


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

    - 413 when `Content-Length` is over `max_bytes`;
    - 401 when the request carries a body and `check_key` refuses its headers (`capi_events`;
      the jobs are IAM-only and pass None).

    Neither reads a byte of the body; the server then discards at most what it bounds itself
    (README "Protecting the function"). Every other request goes on with `wsgi.input` capped at
    `max_bytes + 1` bytes, so a chunked body without a length is cut there too.
    """

    def __init__(
        self,
        app: WsgiApp,
        *,
        check_key: Callable[[Mapping[str, str]], None] | None,
        project: str | None = None,
        max_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.check_key = check_key
        self.project = project
        self.max_bytes = max_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = EnvironHeaders(environ)
        try:
            length = int(headers.get("Content-Length") or 0)
        except ValueError:
            length = 0  # werkzeug answers a malformed length itself
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        try:
            if length > self.max_bytes:
                raise PayloadTooLarge(TOO_LARGE, field="body")
            if self.check_key is not None and (length > 0 or chunked):
                self.check_key(headers)
        except Exception as exc:  # noqa: BLE001 - answered as JSON, as the view would
            set_trace(headers.get("X-Cloud-Trace-Context"), self.project)
            return failure_response(exc)(environ, start_response)
        environ["wsgi.input"] = CappedInput(environ["wsgi.input"], self.max_bytes + 1)
        return self.app(environ, start_response)


class CappedInput:
    """A request body stream that ends after `limit` bytes, however much the client sends."""

    CHUNK = 64 * 1024

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream = stream
        self._left = limit

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (all that is left when negative), fewer only at the end or the limit."""
        want = self._left if size is None or size < 0 else min(size, self._left)
        parts = []
        while want > 0:
            data = self._stream.read(min(want, self.CHUNK))
            if not data:
                break
            parts.append(data)
            want -= len(data)
            self._left -= len(data)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        limit = self._left if size is None or size < 0 else min(size, self._left)
        data = self._stream.readline(limit) if limit > 0 else b""
        self._left -= len(data)
        return data

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


def route(request: flask.Request) -> str:
    """The endpoint for the request's path and method: forward, validate or health."""
    path = request.path.rstrip("/") or "/"
    if path == "/healthz":
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed("use GET /healthz", allow="GET, HEAD")
        return "health"
    if path in ("/", "/events", "/validate"):
        if request.method != "POST":
            raise MethodNotAllowed(f"use POST {path}")
        return "validate" if path == "/validate" else "forward"
    raise NotFound("unknown path: use POST /events, POST /validate or GET /healthz", field="path")


# The status of each destination's result (capi.service.RESULTS, the mildest first).
STATUS_BY_RESULT = {"delivered": 200, "stored": 202, "refused": 502, "unsent": 503}


def outcome_status(outcome: Outcome) -> int:
    """The HTTP status of a request's outcome (README "Response": statuses): the worst of its
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
