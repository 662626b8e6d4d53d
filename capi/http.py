"""HTTP adapter: flask request -> service call -> JSON response.

The only place where errors become HTTP statuses. Every answer is JSON, whatever the input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import flask
import orjson

from capi import __version__
from capi.errors import (
    CapiError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
)
from capi.log import log

MAX_BODY_BYTES = 1024 * 1024


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> flask.Response:
    response = flask.Response(orjson.dumps(body), status=status, mimetype="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def error_response(exc: CapiError) -> flask.Response:
    headers = {"Allow": "POST"} if isinstance(exc, MethodNotAllowed) else None
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
        raise PayloadTooLarge("the body is over 1 MiB: send at most 1000 events per request", field="body")
    data = request.stream.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise PayloadTooLarge("the body is over 1 MiB: send at most 1000 events per request", field="body")
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
        except CapiError as exc:
            if exc.status >= 500:
                log(logging.ERROR, "request failed", status=exc.status, error=exc.code, detail=exc.message)
            return error_response(exc)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            log(logging.ERROR, "unexpected error", error=type(exc).__name__)
            return json_response(500, {"error": "internal", "message": "unexpected error; it was logged"})

    return run


def route(request: flask.Request) -> str:
    """The endpoint for the request's path and method: forward, validate or health."""
    path = request.path.rstrip("/") or "/"
    if path == "/healthz":
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed("use GET /healthz")
        return "health"
    if path in ("/", "/events", "/validate"):
        if request.method != "POST":
            raise MethodNotAllowed(f"use POST {path}")
        return "validate" if path == "/validate" else "forward"
    raise NotFound("unknown path: use POST /events, POST /validate or GET /healthz", field="path")


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
