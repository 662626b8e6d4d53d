"""Issue 19, second attack, the HTTP side: main.py served as production serves it
(functions-framework's CLI: gunicorn, a gthread worker; tests/fakes/function.py) and spoken to
over raw sockets, so that what gunicorn does before any capi code runs is what is tested.
Findings 9 (request line and headers), 10 (slow headers, idle connections), 16 (malformed
chunked encoding) and 23 (JSON 404s, no `100 Continue` before auth, bodies to the jobs)."""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capi import server
from tests.conftest import PIXEL_ID
from tests.fakes.function import running_function

KEY = "test-ingest-key"
THREADS = 2  # gunicorn's threads in the served function: two slow clients would hold them all
ENV = {
    "META_PIXEL_ID": PIXEL_ID,
    "DRY_RUN": "true",
    "INGEST_API_KEY": KEY,
    "PROFILE_COLLECTION": "",
    "GOOGLE_CLOUD_PROJECT": "demo-capi",
    "THREADS": str(THREADS),
}
EVENT = (
    b'{"event_name": "purchase", "event_id": "H-1", "page_location": "https://shop.example.com/",'
    b' "user_agent": "Mozilla/5.0", "value": 5, "currency": "USD", "user_data": {"em": "a@b.co"}}'
)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[int, int]]:
    """The function's port and its gunicorn worker's pid."""
    with running_function(ENV) as (served_port, process):
        children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True, check=True)
        yield served_port, int(children.stdout.split()[0])


@pytest.fixture(scope="module")
def port(served: tuple[int, int]) -> int:
    return served[0]


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=15)


def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw`, read the answer until the server closes or its body is complete."""
    with connect(port) as sock:
        sock.sendall(raw)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def healthz_seconds(port: int) -> float:
    started = time.monotonic()
    status, _, _ = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200
    return time.monotonic() - started


def post(path: str, body: bytes, *headers: str, key: str | None = KEY) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json", "Connection: close", *headers]
    if key:
        lines.append(f"X-Api-Key: {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- finding 9: the request line and headers ------------------------------------------------


def test_a_long_request_line_is_refused_by_the_server(port: int) -> None:
    # Was: functions-framework's limit_request_line=0: a 16 MiB `GET /healthz?...` was read,
    # cost 31 s of CPU and kept 725 MiB. 64 KiB shows the bound without the cost.
    started = time.monotonic()
    status, headers, body = exchange(port, b"GET /healthz?" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414  # URI Too Long, gunicorn's answer, in JSON as every other answer
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["error"] == "request_line_too_long" and answer["message"].startswith("URI Too Long: ")
    assert time.monotonic() - started < 5
    line = b"GET /healthz?" + b"a" * (server.LIMITS["limit_request_line"] - 30) + b" HTTP/1.1"
    assert exchange(port, line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 200  # within the bound


@pytest.mark.parametrize(
    "headers",
    [
        [f"X-H{n}: v" for n in range(server.LIMITS["limit_request_fields"] + 1)],
        ["X-Big: " + "v" * (server.LIMITS["limit_request_field_size"] + 1)],
    ],
    ids=["too-many-fields", "field-too-long"],
)
def test_headers_past_their_bounds_are_refused(port: int, headers: list[str]) -> None:
    raw = "\r\n".join(["GET /healthz HTTP/1.1", "Host: x", *headers]) + "\r\n\r\n"
    status, answered, body = exchange(port, raw.encode())
    assert status == 431  # Request Header Fields Too Large
    assert answered["content-type"] == "application/json" and json.loads(body)["error"] == "headers_too_large"


@pytest.mark.parametrize("length", ["1" * 5000, "-1", "1e3", "0x10"], ids=["5000-digits", "negative", "float", "hex"])
def test_a_malformed_content_length_is_a_json_400(port: int, length: str) -> None:
    # gunicorn refuses these before the function runs; it used to answer its own HTML page.
    status, headers, body = exchange(port, post("/events", EVENT, f"Content-Length: {length}"))
    assert (status, headers["content-type"]) == (400, "application/json")
    answer = json.loads(body)
    assert answer["error"] == "bad_request" and "CONTENT-LENGTH" in answer["message"]
    assert len(answer["message"]) <= server.MAX_SERVER_MESSAGE + 1


def test_a_bad_request_line_is_answered_in_json_and_cut(port: int) -> None:
    status, headers, body = exchange(port, b"GET /" + b"x" * 1000 + b" HTTP/1.1 extra\r\nHost: x\r\n\r\n")
    assert (status, headers["content-type"]) == (400, "application/json")
    assert len(json.loads(body)["message"]) <= server.MAX_SERVER_MESSAGE + 1


# -- finding 4, measured where it was: the worker's memory ---------------------------------


def test_request_level_amplification_leaves_the_workers_memory_where_it_was(served: tuple[int, int]) -> None:
    # Was: 1000 events and 20,000 unknown request-level user_data keys (409 KB) -> a 369 MB
    # answer, worker RSS 323 -> 1,917 MiB at the peak and 691 MiB kept.
    port, worker = served
    params = {"page_location": "https://x.example/"}
    events = [{"name": "purchase", "params": {**params, "event_id": f"e{n}"}} for n in range(1000)]
    user_data = {"sha256_email_address": "a" * 64, **{f"u{n}": 1 for n in range(20_000)}}
    body = {"client_id": "1", "user_agent": "Mozilla/5.0", "user_data": user_data, "events": events}
    raw = json.dumps(body).encode()
    before = rss_mib(worker)
    answers = []
    for _ in range(3):
        status, _, answer = exchange(port, post("/validate", raw, f"Content-Length: {len(raw)}"))
        assert status == 200
        answers.append(len(answer))
    after = rss_mib(worker)
    assert max(answers) < 2 * len(raw)  # was 903 times the body
    assert after - before < 100, (before, after)


# -- finding 10: slow headers and idle connections -----------------------------------------


def _drip(port: int, closed: list[float]) -> None:
    """Send a request's head one byte every 0.5 s until the server closes the connection (or
    15 s have passed: then it never did)."""
    started = time.monotonic()
    with connect(port) as sock:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
            if time.monotonic() - started > 15:
                return
            try:
                sock.sendall(bytes([byte]))
                sock.settimeout(0.5)  # the pace of the drip, and a look for the hang-up
                if not sock.recv(1024):  # the server hung up
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        closed.append(time.monotonic() - started)


def test_clients_dripping_their_headers_hold_no_thread_past_the_deadline(port: int) -> None:
    # Was: eight connections sending a header byte every 2 s kept /healthz silent for over 60 s.
    closed: list[float] = []
    drips = [threading.Thread(target=_drip, args=(port, closed)) for _ in range(THREADS)]
    for drip in drips:
        drip.start()
    time.sleep(0.5)  # every thread of the server now reads a dripping head
    waited = healthz_seconds(port)
    for drip in drips:
        drip.join(timeout=20)
    assert waited < server.HEAD_SECONDS + 2
    assert len(closed) == THREADS and max(closed) < server.HEAD_SECONDS + 2  # the server hung up on each


def test_idle_connections_delay_healthz_by_a_bounded_wait(port: int) -> None:
    # Was: 40 idle TCP connections delayed /healthz 24.8 s (each held a thread for 5 s).
    idle = [connect(port) for _ in range(4 * THREADS)]
    try:
        time.sleep(0.2)
        waited = healthz_seconds(port)
        # Each idle connection holds a thread for FIRST_BYTE_SECONDS at most, then waits in the poller.
        assert waited < 4 * server.FIRST_BYTE_SECONDS + 2, waited  # gunicorn alone: 4 x 5 s
    finally:
        for sock in idle:
            sock.close()


# -- finding 16: malformed chunked encoding -------------------------------------------------


@pytest.mark.parametrize(
    "chunks",
    [b"zz\r\n{}\r\n0\r\n\r\n", b"0" * 100_000 + b"2\r\n{}\r\n0\r\n\r\n", b"2;a=\rb\r\n{}\r\n0\r\n\r\n"],
    ids=["size-zz", "100k-leading-zeros", "bare-cr-in-extension"],
)
def test_malformed_chunked_encoding_with_a_valid_key_is_a_400(port: int, chunks: bytes) -> None:
    # Was: 500 and an "unexpected error" log line.
    status, headers, body = exchange(port, post("/events", chunks, "Transfer-Encoding: chunked"))
    assert status == 400
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["field"] == "body" and answer["error"] == "bad_request"
    assert healthz_seconds(port) < 2


def test_a_well_formed_chunked_body_still_goes(port: int) -> None:
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(EVENT), EVENT)
    status, _, body = exchange(port, post("/validate", chunked, "Transfer-Encoding: chunked"))
    assert status == 200 and json.loads(body)["event_ids"] == ["H-1"]


# -- finding 23: JSON everywhere, no 100 before auth ---------------------------------------


@pytest.mark.parametrize("path", ["/robots.txt", "/favicon.ico"])
def test_framework_paths_answer_json_404(port: int, path: str) -> None:
    # Was: functions-framework's HTML 404.
    status, headers, body = exchange(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert status == 404 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "not_found"


def test_expect_100_continue_without_a_key_gets_the_401_and_no_100(port: int) -> None:
    # Was: `100 Continue` (gunicorn's, before any capi code ran), then the 401.
    raw = post("/events", b"", f"Content-Length: {len(EVENT)}", "Expect: 100-continue", key=None)
    with connect(port) as sock:
        sock.sendall(raw)
        status, _, body = read_answer(sock)
    assert status == 401 and json.loads(body)["error"] == "unauthorized"


def test_expect_100_continue_with_a_key_gets_the_100_then_the_answer(port: int) -> None:
    raw = post("/validate", b"", f"Content-Length: {len(EVENT)}", "Expect: 100-continue")
    with connect(port) as sock:
        sock.sendall(raw)
        assert sock.recv(25) == server.CONTINUE  # sent when capi first reads the body
        sock.sendall(EVENT)
        status, _, body = read_answer(sock)
    assert status == 200 and json.loads(body)["event_ids"] == ["H-1"]


@pytest.fixture
def replay(make_client: Any) -> Any:
    """capi_replay as functions-framework builds it from main.py (a dry run: nothing to replay)."""
    return make_client({**ENV, "ALLOW_UNAUTHENTICATED": "true"}, target="capi_replay")


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_job_refuses_a_body_past_its_small_bound(replay: Any, chunked: bool) -> None:
    # Was: capi_replay given a 2 MiB chunked body ran and answered 200.
    body = b"x" * (2 * 1024 * 1024)
    if chunked:  # no length: the body is read (up to the bound) before the job may run
        response = replay.post("/", input_stream=io.BytesIO(body), headers={"Transfer-Encoding": "chunked"})
    else:
        response = replay.post("/", data=body)
    assert response.status_code == 413
    assert response.get_json() == {
        "error": "payload_too_large",
        "message": "the body is over 16 KiB: the scheduled jobs take no body",
        "field": "body",
    }


@pytest.mark.parametrize("body", [b"", b"{}"])
def test_a_job_still_runs_with_an_empty_or_small_body(replay: Any, body: bytes) -> None:
    for headers in ({}, {"Transfer-Encoding": "chunked"}):
        response = replay.post("/", input_stream=io.BytesIO(body), headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json() == {"message": "DRY_RUN (or no token): nothing is replayed"}


def test_the_bounds_reach_gunicorns_configuration() -> None:
    # main.py installs them (capi.server); this process imported it through the module fixture's peers.
    from functions_framework._http.gunicorn import GunicornApplication

    server.install()
    application = GunicornApplication(object(), "127.0.0.1", 0, False)
    assert {key: application.cfg.settings[key].get() for key in server.LIMITS} == server.LIMITS
    del application  # nothing was bound or started: `run()` was never called
