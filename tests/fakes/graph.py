"""A loopback fake of Meta's Graph API /{version}/{pixel}/events edge.

A real HTTP/1.1 server (keep-alive) on 127.0.0.1 that validates request bodies the way
docs/meta-capi.md §2 says Meta does (one bad event rejects the whole request), counts requests,
connections and delivered events, and fails on demand.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakes.dataset_quality import FakeDatasetQuality

HEX64 = re.compile(r"[0-9a-f]{64}")
HASHED = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
ACTION_SOURCES = {"email", "website", "app", "phone_call", "chat", "physical_store", "system_generated",
                  "business_messaging", "other"}  # fmt: skip
FBC = re.compile(r"fb\.\d\.\d{10,13}\.\S+")


def meta_error(
    code: int, message: str, *, subcode: int | None = None, transient: bool | None = None, etype: str = "OAuthException"
) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": etype, "code": code, "fbtrace_id": f"TRACE{code}"}
    if subcode is not None:
        error["error_subcode"] = subcode
    if transient is not None:
        error["is_transient"] = transient
    return {"error": error}


def validate_event(event: Any, now: float) -> str | None:
    """Why Meta would reject this event (and with it the whole request), or None."""
    if not isinstance(event, dict):
        return "event is not an object"
    if not isinstance(event.get("event_name"), str) or not event["event_name"]:
        return "event_name missing"
    t = event.get("event_time")
    if not isinstance(t, int) or isinstance(t, bool):
        return "event_time must be an integer"
    if t < now - 7 * 86400:
        return "event_time older than 7 days"
    if t > now + 60:
        return "event_time in the future"
    source = event.get("action_source")
    if source not in ACTION_SOURCES:
        return "action_source invalid"
    user = event.get("user_data")
    if not isinstance(user, dict) or not user:
        return "user_data missing"
    for key in HASHED:
        if key in user:
            values = user[key] if isinstance(user[key], list) else [user[key]]
            if not values or not all(isinstance(v, str) and HEX64.fullmatch(v) for v in values):
                return f"user_data.{key} is not a lowercase SHA-256 hash"
    if "client_ip_address" in user:
        try:
            ipaddress.ip_address(user["client_ip_address"])
        except (ValueError, TypeError):
            return "client_ip_address invalid"
    if "fbc" in user and not (isinstance(user["fbc"], str) and FBC.fullmatch(user["fbc"])):
        return "fbc malformed"
    if source == "website":
        if not isinstance(event.get("event_source_url"), str) or not event["event_source_url"].startswith("http"):
            return "event_source_url required for website events"
        if not isinstance(user.get("client_user_agent"), str) or not user["client_user_agent"]:
            return "client_user_agent required for website events"
    custom = event.get("custom_data")
    if custom is not None:
        if not isinstance(custom, dict):
            return "custom_data must be an object"
        if "value" in custom and (isinstance(custom["value"], bool) or not isinstance(custom["value"], int | float)):
            return "custom_data.value must be a number"
        if "currency" in custom and not (isinstance(custom["currency"], str) and len(custom["currency"]) == 3):
            return "custom_data.currency invalid"
    if not isinstance(event.get("event_id", ""), str):
        return "event_id must be a string"
    return None


# Answers to a request Meta took (the events are counted as delivered) that capi cannot read.
UNREADABLE_ANSWERS: dict[str, tuple[str, bytes]] = {
    "garbage": ("application/json", b"\x00\xffnot json at all{"),
    "html200": ("text/html", b"<html><body>Welcome</body></html>"),
    "no_count": ("application/json", b'{"messages": [], "fbtrace_id": "AbCdEf123"}'),
}


# Meta's policy refusal of a messaging event (capi-spec.md §11, the message as Meta words it).
# Meta publishes no code for it: the fake answers with the hardest case for capi, 368 ("temporarily
# blocked for policy", which capi otherwise retries) marked transient, yet final for the event.
POLICY_REFUSAL = {
    "error": {
        "message": "Messaging Event Within Messaging Restrictive Region",
        "type": "OAuthException",
        "code": 368,
        "is_transient": True,
        "fbtrace_id": "PolicyTrace1",
    }
}


@dataclass
class Script:
    """One scripted answer: `kind` is ok, 500, 503, 429, code:<n>[:<subcode>], hang, drop, html
    (a 502 page); garbage, html200, no_count (Meta took the events, the 200 answer is unreadable);
    huge_trace (a 200 whose fbtrace_id is `huge_bytes` long), bad_trace (a short but malformed
    fbtrace_id); short_count (Meta took the events but answers `events_received: 0`)."""

    kind: str
    retry_after: str | None = None
    delay: float = 0.0
    usage: str | None = None  # an X-Business-Use-Case-Usage header (throttling)


@dataclass
class FakeGraph:
    token: str = "test-token"
    app_secret: str | None = None
    latency: float = 0.0
    now: Callable[[], float] = time.time
    requests: int = 0
    connections: int = 0
    accepted_requests: int = 0
    delivered: Counter = field(default_factory=Counter)  # (event_name, event_id) -> times accepted
    bodies: list[dict[str, Any]] = field(default_factory=list)
    script: list[Script] = field(default_factory=list)
    down: str | None = None  # when set, every request fails this way
    poison: set[str] = field(default_factory=set)  # event_ids Meta refuses (and with them the request)
    huge_bytes: int = 8 * 1024 * 1024
    drip: float = 0.0  # when set, every answer (status line, headers, body) is sent one byte per `drip` s
    refused_requests: int = 0  # requests refused for a poisoned event
    received: threading.Event = field(default_factory=threading.Event)  # set by the first request
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop_event: threading.Event = field(default_factory=threading.Event)
    quality: FakeDatasetQuality = field(default_factory=FakeDatasetQuality)  # GET /{version}/dataset_quality
    # Several pixels (datasets) on one server: each pixel's token (else `token`), failure mode
    # (as `down`) and latency, and what each pixel was sent.
    tokens: dict[str, str] = field(default_factory=dict)
    pixel_down: dict[str, str] = field(default_factory=dict)
    pixel_latency: dict[str, float] = field(default_factory=dict)
    requests_by_pixel: Counter = field(default_factory=Counter)
    delivered_by_pixel: dict[str, Counter] = field(default_factory=dict)  # pixel -> (event_name, event_id) -> n
    bodies_by_pixel: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Meta's X-Ad-Api-Version-Warning on every /events answer when set (a version being retired).
    version_warning: str | None = None
    # A final policy refusal for these event_ids (Meta's "Messaging Event Within Messaging
    # Restrictive Region", code 368 marked transient): the request is refused.
    policy_refused: set[str] = field(default_factory=set)
    # When set, every request Meta would take gets this answer instead: (HTTP status, a JSON
    # value, or a str sent as it is): any answer at all, for the property-based tests.
    answer: tuple[int, Any] | None = None

    def fail_next(
        self, *kinds: str, retry_after: str | None = None, delay: float = 0.0, usage: str | None = None
    ) -> None:
        with self.lock:
            self.script.extend(Script(k, retry_after, delay, usage) for k in kinds)

    def handle(self, path: str, raw: bytes) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        match = re.fullmatch(r"/v\d+\.\d+/(\d+)/events", path)
        pixel = match.group(1) if match else ""
        with self.lock:
            self.requests += 1
            self.requests_by_pixel[pixel] += 1
            step = self.script.pop(0) if self.script else None
        self.received.set()
        kind = self.down or self.pixel_down.get(pixel) or (step.kind if step else "ok")
        if step and step.delay:
            self.stop_event.wait(step.delay)
        if self.latency or pixel in self.pixel_latency:
            time.sleep(self.pixel_latency.get(pixel, self.latency))
        headers = {"Retry-After": step.retry_after} if step and step.retry_after else {}
        if step and step.usage:
            headers["X-Business-Use-Case-Usage"] = step.usage
        if kind == "hang":
            self.stop_event.wait(30)
            return 200, {"events_received": 0}, {}
        if kind == "drop":
            return -1, "", {}
        if kind == "html":
            return 502, "<html><body>Bad Gateway</body></html>", {}
        if kind in ("500", "503"):
            return int(kind), meta_error(2, "Service temporarily unavailable", transient=True), headers
        if kind == "429":
            return 429, meta_error(4, "Application request limit reached"), headers
        if kind.startswith("code:"):
            code, _, given = kind[5:].partition(":")
            subcode = int(given) if given else (2804003 if code == "100" else None)
            status = 500 if code in ("1", "2") else 400
            return status, meta_error(int(code), f"error code {code}", subcode=subcode), headers
        if not re.fullmatch(r"/v\d+\.\d+/\d+/events", path):
            return 400, meta_error(100, f"Unknown path {path}", subcode=33), {}
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, meta_error(100, "body is not JSON"), {}
        token = body.get("access_token") if isinstance(body, dict) else None
        if token != self.tokens.get(pixel, self.token):
            return 400, meta_error(190, "Invalid OAuth access token - Cannot parse access token"), {}
        if self.app_secret is not None:
            proof = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            if body.get("appsecret_proof") != proof:
                return 400, meta_error(100, "Invalid appsecret_proof provided in the API argument"), {}
        data = body.get("data")
        if not isinstance(data, list) or not 1 <= len(data) <= 1000:
            return 400, meta_error(100, "data must hold 1..1000 events", subcode=2804004), {}
        now = self.now()
        for position, event in enumerate(data):
            problem = validate_event(event, now)
            if problem is None and isinstance(event, dict) and event.get("event_id") in self.policy_refused:
                return 400, POLICY_REFUSAL, {}
            if problem is None and isinstance(event, dict) and event.get("event_id") in self.poison:
                problem = "poisoned by the test"
                with self.lock:
                    self.refused_requests += 1
            if problem:
                return (
                    400,
                    meta_error(
                        100, f"Invalid parameter: event {position}: {problem}", subcode=2804003, etype="OAuthException"
                    ),
                    {},
                )
        with self.lock:
            self.accepted_requests += 1
            self.bodies.append(body)
            self.bodies_by_pixel.setdefault(pixel, []).append(body)
            for event in data:
                self.delivered[(event["event_name"], event.get("event_id"))] += 1
                self.delivered_by_pixel.setdefault(pixel, Counter())[(event["event_name"], event.get("event_id"))] += 1
        if self.answer is not None:
            return self.answer[0], self.answer[1], {}
        if kind in UNREADABLE_ANSWERS:
            return 200, kind, {}
        trace = "AbCdEf123"
        if kind == "huge_trace":
            trace = "A" * self.huge_bytes
        elif kind == "bad_trace":
            trace = "<script>alert(1)</script>"
        received = 0 if kind == "short_count" else len(data)
        return 200, {"events_received": received, "messages": [], "fbtrace_id": trace}, {}

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.delivered.values() if n > 1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer, sent at once: headers and body in separate small writes would meet
    # Nagle's algorithm and the client's delayed ACK, adding 40 ms to every call.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.fake.lock:
            self.server.fake.connections += 1

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        status, payload, headers = self.server.fake.handle(self.path.split("?")[0], raw)
        if self.server.fake.version_warning:
            headers = {**headers, "X-Ad-Api-Version-Warning": self.server.fake.version_warning}
        if status == -1:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        content_type = "text/html" if isinstance(payload, str) else "application/json"
        if isinstance(payload, str) and payload in UNREADABLE_ANSWERS:
            content_type, data = UNREADABLE_ANSWERS[payload]
        else:
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        if self.server.fake.drip:
            return self._drip(status, content_type, data)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # capi stopped reading a huge answer
            self.close_connection = True

    def _drip(self, status: int, content_type: str, data: bytes) -> None:
        """The whole answer one byte at a time, headers included (a stalling peer or proxy)."""
        head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n\r\n"
        self.close_connection = True
        for byte in head.encode() + data:
            if self.server.fake.stop_event.wait(self.server.fake.drip):
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:  # capi cut the call
                return

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        status, payload = self.server.fake.quality.handle(path, query, self.headers, self.server.fake.stop_event)
        if callable(payload):  # writes its own answer (a body that stalls halfway)
            return payload(self)
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html" if isinstance(payload, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeGraph


class GraphServer:
    """Runs a FakeGraph on a free loopback port in a background thread."""

    def __init__(self, fake: FakeGraph | None = None) -> None:
        self.fake = fake or FakeGraph()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self.fake
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> GraphServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.fake.stop_event.set()
        self._server.shutdown()
        self._server.server_close()


def main() -> None:
    """`python -m tests.fakes.graph --port N --latency 0.1`: serve until killed (benchmarks)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    fake = FakeGraph(latency=args.latency)
    server = _Server(("127.0.0.1", args.port), _Handler)
    server.fake = fake
    server.serve_forever()


if __name__ == "__main__":
    main()
