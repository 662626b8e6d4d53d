"""The HTTP edge: what is refused before any work (job routing, early 401/413, bounded reads)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capi.auth import Authenticator
from capi.http import MAX_BODY_BYTES, CappedInput, EarlyRefusal
from tests.conftest import base_env, make_app, serve
from tests.fakes.function import running_function

NO_TOKEN_DRY_RUN = {"DRY_RUN": "true", "META_ACCESS_TOKEN": ""}


def test_replay_runs_on_post_to_its_url(make_client: Any) -> None:
    client = make_client(base_env(**NO_TOKEN_DRY_RUN), target="capi_replay")
    for path in ("/", "/replay"):
        response = client.post(path)
        assert response.status_code == 200, path
        assert response.get_json() == {"message": "DRY_RUN (or no token): nothing is replayed"}


def test_a_dry_run_replays_nothing_even_with_a_token(graph: Any) -> None:
    # DRY_RUN promises nothing reaches Meta: dead letters included.
    app = make_app(graph, DRY_RUN="true")
    assert app.replayer is None
    response = serve(app).post("/replay")
    assert response.status_code == 200
    assert response.get_json() == {"message": "DRY_RUN (or no token): nothing is replayed"}
    assert graph.fake.requests == 0


def test_healthz_405_allows_get_and_head(make_client: Any) -> None:
    response = make_client(base_env(DRY_RUN="true")).post("/healthz")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert response.get_json() == {"error": "method_not_allowed", "message": "use GET /healthz"}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_replay_refuses_other_methods_with_405_and_allow(make_client: Any, method: str) -> None:
    client = make_client(base_env(**NO_TOKEN_DRY_RUN), target="capi_replay")
    response = client.open("/", method=method, data=b"anything")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.get_json() == {"error": "method_not_allowed", "message": "use POST to run the replay job"}


@pytest.mark.parametrize("path", ["/events", "/replay/now", "/healthz", "/wp-login.php"])
def test_replay_refuses_other_paths_with_404_json(make_client: Any, path: str) -> None:
    client = make_client(base_env(**NO_TOKEN_DRY_RUN), target="capi_replay")
    for method in ("POST", "GET"):
        response = client.open(path, method=method)
        assert response.status_code == 404, (method, path)
        assert response.get_json() == {
            "error": "not_found",
            "message": "unknown path: the replay job answers POST / only",
            "field": "path",
        }


def test_replay_checks_no_ingest_key_but_bounds_the_body(make_client: Any) -> None:
    client = make_client(base_env(**NO_TOKEN_DRY_RUN, INGEST_API_KEY="k"), target="capi_replay")
    assert client.post("/", data=b"{}", content_type="application/json").status_code == 200
    response = client.post("/", data=b"x" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert response.get_json()["error"] == "payload_too_large"


def test_events_refuse_a_body_without_key_before_the_view(make_client: Any) -> None:
    client = make_client(base_env(**NO_TOKEN_DRY_RUN, INGEST_API_KEY="k", ALLOW_UNAUTHENTICATED="false"))
    response = client.post("/events", data=b"not even json")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="capi"'
    assert response.get_json()["message"] == "missing ingest key: send Authorization: Bearer KEY or X-Api-Key: KEY"
    # Without a body the view answers as before: the route first, then the key.
    assert client.get("/events").status_code == 405
    assert client.get("/healthz").status_code == 200
    # With one, the guard answers first: the view would have said 405 here.
    assert isinstance(client.application.wsgi_app, EarlyRefusal)
    assert client.post("/healthz").status_code == 405
    assert client.post("/healthz", data=b"{}").status_code == 401


def test_early_refusal_answers_an_unexpected_failure_as_json(mocker: Any) -> None:
    def broken(headers: Any) -> None:
        raise RuntimeError("secret-looking detail")

    start_response = mocker.Mock()
    answer = EarlyRefusal(mocker.Mock(), check_key=broken)(
        _environ(io.BytesIO(b"{}"), **{"Content-Length": "2"}), start_response
    )
    assert start_response.call_args.args[0] == "500 INTERNAL SERVER ERROR"
    assert json.loads(b"".join(answer)) == {"error": "internal", "message": "unexpected error; it was logged"}


class _Trickle:
    """A body stream that hands out at most `step` bytes per read, as a socket does."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step = data, step

    def read(self, size: int = -1) -> bytes:
        size = self.step if size < 0 else min(size, self.step)
        out, self.data = self.data[:size], self.data[size:]
        return out

    def readline(self, size: int = -1) -> bytes:
        end = self.data.find(b"\n") + 1 or len(self.data)
        end = end if size < 0 else min(end, size)
        out, self.data = self.data[:end], self.data[end:]
        return out


def test_capped_input_ends_at_its_limit_however_it_is_read() -> None:
    data = b"line one\n" + b"x" * 100
    assert CappedInput(_Trickle(data, 7), 50).read() == data[:50]
    assert CappedInput(_Trickle(data, 7), 500).read() == data
    capped = CappedInput(_Trickle(data, 7), 12)
    assert capped.read(5) == b"line "  # a sized read returns the size, over several underlying reads
    assert capped.readline() == b"one\n"
    assert capped.read(100) == b"xxx"
    assert capped.read() == b"" and capped.readline() == b""
    assert list(CappedInput(_Trickle(b"a\nb\nc", 1), 4)) == [b"a\n", b"b\n"]


# -- The function as production runs it: functions-framework's CLI, which serves it with
# gunicorn's gthread worker. Memory is the worker's resident set (VmRSS in /proc).

KEY = "edge-test-key"


class Served:
    def __init__(self, port: int, worker: int) -> None:
        self.port, self.worker = port, worker

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.worker}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]

    def connect(self, head: str) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        conn.sendall(head.encode())
        return conn

    def status_line(self, conn: socket.socket) -> str:
        data = b""
        while b"\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n")[0].decode()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    env = {
        "META_PIXEL_ID": "1",
        "DRY_RUN": "true",
        "INGEST_API_KEY": KEY,
        "PROFILE_COLLECTION": "",
        "THREADS": "8",
    }
    with running_function(env) as (port, server):
        children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True, check=True)
        yield Served(port, int(children.stdout.split()[0]))  # gunicorn's one worker


def _post(length: str, key: str | None = None) -> str:
    auth = f"X-Api-Key: {key}\r\n" if key else ""
    return f"POST /events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{auth}{length}\r\n"


def test_a_valid_request_goes_through_the_guard_and_gunicorn(served: Served) -> None:
    event = {
        "event_name": "generate_lead",
        "event_id": "EDGE-1",
        "page_location": "https://shop.example.com/",
        "user_agent": "Mozilla/5.0",
        "user_data": {"email_address": "a@b.co"},
    }
    events = [{**event, "event_id": f"EDGE-{n}"} for n in range(200)]  # distinct: repeats are sent once
    body = json.dumps({"events": events}).encode()  # about 30 KiB, read in several pieces
    request = urllib.request.Request(
        f"http://127.0.0.1:{served.port}/events",
        data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        result = json.loads(answer.read())
    assert (answer.status, result["received"], result["forwarded"], result["rejected"]) == (200, 200, 200, [])


def test_unauthenticated_400_mib_upload_is_answered_before_its_body(served: Served) -> None:
    before = served.rss_mib()
    started = time.monotonic()
    with served.connect(_post("Content-Length: 419430400\r\n")) as conn:
        with contextlib.suppress(OSError):  # the server closes once it has answered
            for _ in range(8):  # a slow client: 64 KiB every 50 ms
                conn.sendall(b"x" * 65536)
                time.sleep(0.05)
        assert served.status_line(conn) == "HTTP/1.1 413 REQUEST ENTITY TOO LARGE"
    assert time.monotonic() - started < 3
    assert served.rss_mib() - before < 4


def test_a_body_without_key_gets_401_before_a_byte_of_it_is_sent(served: Served) -> None:
    with served.connect(_post("Content-Length: 1000000\r\n")) as conn:
        assert served.status_line(conn) == "HTTP/1.1 401 UNAUTHORIZED"
    with served.connect(_post("Transfer-Encoding: chunked\r\n", key="wrong")) as conn:
        assert served.status_line(conn) == "HTTP/1.1 401 UNAUTHORIZED"


def test_a_body_over_1_mib_with_a_valid_key_is_refused_with_memory_bounded(served: Served) -> None:
    with served.connect(_post("Content-Length: 1048577\r\n", key=KEY)) as conn:
        assert served.status_line(conn) == "HTTP/1.1 413 REQUEST ENTITY TOO LARGE"
    before = served.rss_mib()
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    with served.connect(_post("Transfer-Encoding: chunked\r\n", key=KEY)) as conn:
        sent = 0
        with contextlib.suppress(OSError):  # the server stops reading after 1 MiB
            for _ in range(1024):  # 64 MiB, no length announced
                conn.sendall(chunk)
                sent += 1
        assert served.status_line(conn) == "HTTP/1.1 413 REQUEST ENTITY TOO LARGE"
    assert sent < 1024
    assert served.rss_mib() - before < 8


def test_healthz_answers_while_8_connections_without_key_hold_their_body(served: Served) -> None:
    idle = [served.connect(_post("Content-Length: 100000\r\n")) for _ in range(8)]
    try:
        assert [served.status_line(conn) for conn in idle] == ["HTTP/1.1 401 UNAUTHORIZED"] * 8
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/healthz", timeout=10) as answer:
            assert answer.status == 200
        # gunicorn drains what a refused request left unread for at most 5 s before it frees the
        # thread (docs/api.md "Protecting the function"); before the early refusal it waited forever.
        assert time.monotonic() - started < 6.5
    finally:
        for conn in idle:
            conn.close()


# -- EarlyRefusal alone, as a WSGI app: a mock body stream proves no byte of it is read.


def _environ(body: Any, **headers: str) -> dict[str, Any]:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/events", "wsgi.input": body}
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_LENGTH", "CONTENT_TYPE") else f"HTTP_{key}"] = value
    return environ


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Length": str(MAX_BODY_BYTES + 1), "X-Api-Key": "k"}, "413 REQUEST ENTITY TOO LARGE"),
        ({"Content-Length": "419430400"}, "413 REQUEST ENTITY TOO LARGE"),
        ({"Content-Length": "10"}, "401 UNAUTHORIZED"),
        ({"Transfer-Encoding": "chunked", "X-Api-Key": "wrong"}, "401 UNAUTHORIZED"),
    ],
)
def test_early_refusal_answers_without_touching_the_body(mocker: Any, headers: dict[str, str], status: str) -> None:
    body, inner, start_response = mocker.Mock(), mocker.Mock(), mocker.Mock()
    guard = EarlyRefusal(inner, check_key=Authenticator(lambda: ("k",), False).check)
    answer = b"".join(guard(_environ(body, **headers), start_response))
    assert start_response.call_args.args[0] == status
    assert json.loads(answer)["error"] in ("payload_too_large", "unauthorized")
    assert body.method_calls == [] and not inner.called


def test_early_refusal_passes_a_capped_body_on(mocker: Any) -> None:
    inner = mocker.Mock(return_value=[b"ok"])
    guard = EarlyRefusal(inner, check_key=Authenticator(lambda: ("k",), False).check)
    environ = _environ(io.BytesIO(b"x" * (MAX_BODY_BYTES + 10)), **{"Transfer-Encoding": "chunked", "X-Api-Key": "k"})
    assert guard(environ, mocker.Mock()) == [b"ok"]
    passed = inner.call_args.args[0]["wsgi.input"]
    assert isinstance(passed, CappedInput) and len(passed.read()) == MAX_BODY_BYTES + 1
    # The jobs check no key: a body without one goes on (IAM answered for the caller).
    open_guard = EarlyRefusal(inner, check_key=None)
    assert open_guard(_environ(io.BytesIO(b"{}"), **{"Content-Length": "2"}), mocker.Mock()) == [b"ok"]
