"""The gcloud Pub/Sub emulator on a free loopback port, its REST admin calls, and a push router.

The emulator pushes to loopback URLs (at most two requests at a time) and redelivers a
nacked message after a second or so. `PushRouter` stands between it and the consumers: it
forwards each push to one of its backends (round robin), counts what arrives, and answers
502 (a nack) when a backend is gone, as Pub/Sub sees a dead instance.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakes.emulator import PROJECT, gcloud_emulator


@contextmanager
def running_pubsub() -> Iterator[str]:
    """Start a Pub/Sub emulator we own; yield HOST:PORT; stop it and its java child."""
    with gcloud_emulator(("beta", "emulators", "pubsub", "start"), "Pub/Sub") as (host, _):
        yield host


class PubSubAdmin:
    """Topics and subscriptions on the emulator, by REST, each name unique to the test."""

    _ids = itertools.count()

    def __init__(self, host: str, project: str = PROJECT) -> None:
        self.host = host
        self.project = project

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://{self.host}/v1/{path}",
            data=json.dumps(body or {}).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")

    def name(self, kind: str, stem: str) -> str:
        return f"projects/{self.project}/{kind}/{stem}-{os.getpid()}-{next(self._ids)}"

    def topic(self, stem: str = "capi-events") -> str:
        name = self.name("topics", stem)
        self._call("PUT", name)
        return name

    def push_subscription(self, topic: str, endpoint: str, *, ack_deadline: int = 20) -> str:
        name = self.name("subscriptions", "capi-deliver")
        body = {"topic": topic, "pushConfig": {"pushEndpoint": endpoint}, "ackDeadlineSeconds": ack_deadline}
        self._call("PUT", name, body)
        return name

    def pull_subscription(self, topic: str) -> str:
        name = self.name("subscriptions", "capi-pull")
        self._call("PUT", name, {"topic": topic, "ackDeadlineSeconds": 10})
        return name

    def delete(self, name: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):
            self._call("DELETE", name)

    def publish(self, topic: str, messages: list[dict[str, Any]]) -> list[str]:
        return self._call("POST", f"{topic}:publish", {"messages": messages})["messageIds"]

    def pull(self, subscription: str, max_messages: int = 100) -> list[dict[str, Any]]:
        answer = self._call("POST", f"{subscription}:pull", {"maxMessages": max_messages, "returnImmediately": True})
        return answer.get("receivedMessages", [])


class PushRouter:
    """A loopback push endpoint that forwards each push to a backend URL, round robin."""

    def __init__(self, *backends: str) -> None:
        self.backends = list(backends)
        self.arrived = 0  # pushes received
        self.statuses: list[int] = []  # each forwarded push's answer (502: the backend was gone)
        self.lock = threading.Lock()
        self._turn = itertools.count()
        router = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with router.lock:
                    router.arrived += 1
                    backend = router.backends[next(router._turn) % len(router.backends)]
                status = router.forward(backend, body)
                with router.lock:
                    router.statuses.append(status)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @staticmethod
    def forward(backend: str, body: bytes) -> int:
        request = urllib.request.Request(backend, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 502

    def __enter__(self) -> PushRouter:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def serving(application: Any) -> Iterator[str]:
    """`application.deliver` (capi_deliver) on a threaded loopback WSGI server; yields its URL."""
    import flask
    from werkzeug.serving import make_server

    app = flask.Flask("capi-deliver-test")

    @app.route("/", methods=["GET", "POST"])
    def deliver() -> Any:
        return application.deliver(flask.request)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def wait_until(condition: Any, seconds: float = 20.0, step: float = 0.05) -> None:
    """Poll `condition()` until it is true; fail the test past `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(step)
    raise AssertionError(f"not reached within {seconds} s")
