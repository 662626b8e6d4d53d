"""capi benchmarks: `make bench` (or `.venv/bin/python -m bench [profile]`).

Every figure is a ratio of two sides measured in the same run, because these machines are
shared and noisy: CPU per event against Meta's SDK and against a floor, outbound calls,
instance throughput against its latency bound and a trivial forwarder, cold start against a
hello-world function, and resident memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench.data import customers, ga4_event

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RUNS = int(os.environ.get("BENCH_RUNS", "11"))


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            pids.extend(tree(int(child)))
    return pids


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process tree, every thread, in nanoseconds (schedstat), not 10 ms ticks."""
    total = 0
    for p in tree(pid):
        for task in Path(f"/proc/{p}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Function:
    """A function served as Cloud Functions serves it: functions-framework with gunicorn."""

    def __init__(self, source: Path, target: str, env: dict[str, str], probe: str = "/healthz") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": str(ROOT), **env}
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                str(BIN / "functions-framework"),
                f"--target={target}",
                f"--source={source}",
                "--host=127.0.0.1",
                f"--port={self.port}",
            ],
            env=full_env,
            cwd=source.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.ready_after = self._wait(probe)

    def _wait(self, probe: str) -> float:
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            try:
                if requests.get(self.url + probe, timeout=0.5).status_code < 500:
                    return time.perf_counter() - self.started
            except requests.RequestException:
                time.sleep(0.005)
        raise RuntimeError(f"{self.url} did not start")

    def worker_pid(self) -> int:
        pids = tree(self.proc.pid)
        return pids[-1]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def capi_env(**extra: str) -> dict[str, str]:
    return {
        "META_PIXEL_ID": "1234567890",
        "ALLOW_UNAUTHENTICATED": "true",
        "PROFILE_COLLECTION": "",
        "DRY_RUN": "true",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def body_for(seed: int, n: int = 1000) -> bytes:
    return json.dumps({"events": [ga4_event(c) for c in customers(n, seed)]}).encode()


# -- 1. CPU per event -------------------------------------------------------------------------


def bench_cpu() -> dict[str, Any]:
    """capi serving /validate vs the SDK building the same events, runs interleaved."""
    function = Function(ROOT / "main.py", "capi_events", capi_env(DEFAULT_COUNTRY="US"))
    sdk_proc = subprocess.Popen(
        [sys.executable, "-m", "bench.sdk"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    session = requests.Session()
    capi: list[float] = []
    sdk: list[float] = []
    payloads: list[dict[str, Any]] = []
    headers = {"Content-Type": "application/json"}
    try:
        # One untimed full-size run on each side first: both processes start with their memory
        # arenas grown and their code warm, as an instance serving traffic is.
        session.post(function.url + "/validate", data=body_for(999), headers=headers)
        sdk_proc.stdin.write("1999\n")
        sdk_proc.stdin.flush()
        sdk_proc.stdout.readline()
        for run in range(RUNS):
            body = body_for(1000 + run)  # new customers every run: no cache answers from the last
            before = tree_cpu(function.proc.pid)
            response = session.post(function.url + "/validate", data=body, headers=headers)
            capi.append(tree_cpu(function.proc.pid) - before)
            assert response.status_code == 200 and len(response.json()["payload"]["data"]) == 1000, response.text[:300]
            payloads.append(response.json()["payload"])
            sdk_proc.stdin.write(f"{2000 + run}\n")
            sdk_proc.stdin.flush()
            sdk.append(json.loads(sdk_proc.stdout.readline())["cpu"])
        memory = rss_mib(function.worker_pid())
    finally:
        function.stop()
        sdk_proc.stdin.close()
        sdk_proc.wait(timeout=30)

    floor = []
    for run in range(RUNS):
        people = customers(1000, 3000 + run)
        started = time.process_time()
        for c in people:
            for value in (
                c["email"],
                c["phone"],
                c["first"],
                c["last"],
                c["city"],
                c["state"],
                c["zip"],
                c["country"],
                c["uid"],
            ):
                hashlib.sha256(value.lower().encode()).hexdigest()
        json.dumps(payloads[run % len(payloads)])
        floor.append(time.process_time() - started)
    best = min(capi)
    return {
        "capi_ms_per_1000": best * 1000,
        "sdk_ms_per_1000": min(sdk) * 1000,
        "floor_ms_per_1000": min(floor) * 1000,
        "capi_vs_sdk": best / min(sdk),
        "capi_vs_floor": best / min(floor),
        "rss_mib_after_1000": memory,
        "capi_runs_ms": [round(c * 1000, 1) for c in capi],
        "sdk_runs_ms": [round(s * 1000, 1) for s in sdk],
    }


_CAPI_REQUESTS = """
import os, sys
os.environ.update({"META_PIXEL_ID": "1", "DRY_RUN": "true", "DEFAULT_COUNTRY": "US", "LOG_LEVEL": "WARNING",
                   "ALLOW_UNAUTHENTICATED": "true", "PROFILE_COLLECTION": ""})
import functions_framework
from bench.__main__ import body_for
client = functions_framework.create_app("capi_events", "main.py").test_client()
bodies = [body_for(9000 + i, 500) for i in range(2)]
for body in bodies[: int(sys.argv[1])]:
    assert client.post("/validate", data=body, content_type="application/json").status_code == 200
"""


def _instructions(command: list[str]) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        check=True,
    )
    return int(out.stderr.split("Collected :")[1].split()[0])


def bench_instructions() -> dict[str, Any]:
    """Instructions per 1000 events under callgrind: repeatable whatever the machine is doing.

    Each side is the difference of two runs that differ only in the work measured, so imports
    and input generation cancel out. capi's side is the whole request path in-process
    (functions-framework's WSGI app: parse, pipeline, encode the answer), without gunicorn.
    """
    capi = _instructions([sys.executable, "-c", _CAPI_REQUESTS, "2"]) - _instructions(
        [sys.executable, "-c", _CAPI_REQUESTS, "0"]
    )
    sdk = _instructions([sys.executable, "-m", "bench.sdk", "9100"]) - _instructions(
        [sys.executable, "-m", "bench.sdk", "9100", "--no-build"]
    )
    return {"capi_minstr_per_1000": capi / 1e6, "sdk_minstr_per_1000": sdk / 1e6, "instr_ratio": capi / sdk}


# -- 2. outbound efficiency, 3. throughput -----------------------------------------------------


def bench_outbound_and_throughput(duration: float = 5.0) -> dict[str, Any]:
    from tests.fakes.graph import GraphServer

    results: dict[str, Any] = {}
    with GraphServer() as graph:
        env = capi_env(DRY_RUN="false", META_ACCESS_TOKEN=graph.fake.token, META_API_BASE_URL=graph.base_url)
        function = Function(ROOT / "main.py", "capi_events", env)
        try:
            session = requests.Session()
            for n in range(30):
                response = session.post(
                    function.url + "/events", data=body_for(5000 + n, 1), headers={"Content-Type": "application/json"}
                )
                assert response.json()["events_received"] == 1, response.text[:300]
            results["connections_for_30_sequential"] = graph.fake.connections
            before = graph.fake.requests
            response = session.post(
                function.url + "/events", data=body_for(4000), headers={"Content-Type": "application/json"}
            )
            assert response.json()["events_received"] == 1000, response.text[:300]
            results["posts_per_1000_event_request"] = graph.fake.requests - before
            results["rss_mib_after_1000_forwarded"] = rss_mib(function.worker_pid())
        finally:
            function.stop()

    # Throughput: the fake Graph API in a process of its own, answering in 100 ms.
    port = free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.graph", f"--port={port}", "--latency=0.1"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        base = f"http://127.0.0.1:{port}"
        function = Function(
            ROOT / "main.py",
            "capi_events",
            capi_env(DRY_RUN="false", META_ACCESS_TOKEN="test-token", META_API_BASE_URL=base, THREADS="8"),
        )
        try:
            results["capi_rps"] = _load(function.url + "/events", duration)
        finally:
            function.stop()
        forwarder = Function(
            ROOT / "bench" / "functions" / "main.py",
            "forwarder",
            {"GRAPH_URL": base + "/v26.0/1234567890/events", "THREADS": "8", "TOKEN": "test-token"},
            probe="/",
        )
        try:
            results["forwarder_rps"] = _load(forwarder.url + "/", duration)
        finally:
            forwarder.stop()
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    bound = 8 / 0.1
    results["capi_pct_of_bound"] = 100 * results["capi_rps"] / bound
    results["forwarder_pct_of_bound"] = 100 * results["forwarder_rps"] / bound
    return results


def _load(url: str, duration: float) -> float:
    bodies = [body_for(6000 + n, 1) for n in range(8)]
    stop = time.perf_counter() + duration
    counts = [0] * 8

    def caller(index: int) -> None:
        session = requests.Session()
        while time.perf_counter() < stop:
            response = session.post(url, data=bodies[index], headers={"Content-Type": "application/json"})
            if response.status_code < 500:  # the forwarder's raw GA4 body is refused: it still did the round trip
                counts[index] += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


# -- 4. cold start -----------------------------------------------------------------------------


def bench_cold_start() -> dict[str, Any]:
    capi, hello = [], []
    for _ in range(RUNS):
        f = Function(ROOT / "main.py", "capi_events", capi_env())
        capi.append(f.ready_after)
        f.stop()
        h = Function(ROOT / "bench" / "functions" / "main.py", "hello", {}, probe="/")
        hello.append(h.ready_after)
        h.stop()
    return {
        "capi_cold_s": statistics.median(capi),
        "hello_cold_s": statistics.median(hello),
        "cold_ratio": statistics.median(capi) / statistics.median(hello),
    }


# -- Firestore: reads per request and the latency enrichment adds -------------------------------


def bench_firestore() -> dict[str, Any]:
    from google.cloud import firestore

    from capi.app import Application
    from capi.config import load_config
    from tests.conftest import CountingFirestore, serve
    from tests.fakes.emulator import running_emulator

    with running_emulator():
        db = firestore.Client(project="demo-capi-bench")
        people = customers(1000, 7000)
        batch = db.batch()
        for n, c in enumerate(people):
            batch.set(db.collection("users").document(c["uid"]), {"email": c["email"], "phone": c["phone"]})
            if n % 500 == 499:
                batch.commit()
                batch = db.batch()
        events = []
        for c in people:
            event = ga4_event(c)
            event["user_data"] = {"address": {"country": "US"}}  # the profile supplies email and phone
            events.append(event)
        counting = CountingFirestore(db)

        def client(collection: str) -> Any:
            config = load_config(
                {
                    "META_PIXEL_ID": "1",
                    "DRY_RUN": "true",
                    "ALLOW_UNAUTHENTICATED": "true",
                    "PROFILE_COLLECTION": collection,
                    "LOG_LEVEL": "WARNING",
                }
            )
            return serve(Application(config, firestore_client=lambda: counting))

        with_profiles, without = client("users"), client("")
        with_profiles.post("/validate", json={"events": events[:5]})
        timings: dict[str, list[float]] = {"with": [], "without": []}
        reads_before, documents_before = counting.get_all_calls, counting.documents_read
        for _ in range(RUNS):
            for name, c in (("with", with_profiles), ("without", without)):
                started = time.perf_counter()
                response = c.post("/validate", json={"events": events})
                timings[name].append(time.perf_counter() - started)
                assert response.status_code == 200
                enriched = "em" in response.get_json()["payload"]["data"][0]["user_data"]
                assert enriched is (name == "with")
        reads = counting.get_all_calls - reads_before
        return {
            "firestore_batched_reads_per_1000_user_request": reads / RUNS,
            "documents_per_read": (counting.documents_read - documents_before) / max(reads, 1),
            "enriched_ms": min(timings["with"]) * 1000,
            "unenriched_ms": min(timings["without"]) * 1000,
            "enrichment_latency_ratio": min(timings["with"]) / min(timings["without"]),
        }


# -- 6. one event per request, as sGTM sends -----------------------------------------------------

SINGLE_REQUESTS = int(os.environ.get("BENCH_SINGLE_REQUESTS", "300"))
INGEST_KEY = "bench-ingest-key"


def single_event_capi(graph: Any) -> Function:
    """capi as production runs it for sGTM traffic: ingest key, INFO logs, sending to `graph`."""
    return Function(
        ROOT / "main.py",
        "capi_events",
        capi_env(
            DRY_RUN="false",
            META_ACCESS_TOKEN=graph.fake.token,
            META_API_BASE_URL=graph.base_url,
            INGEST_API_KEY=INGEST_KEY,
            ALLOW_UNAUTHENTICATED="false",
            DEFAULT_COUNTRY="US",
            LOG_LEVEL="INFO",
        ),
    )


def single_event_forwarder(graph: Any) -> Function:
    """The trivial forwarder: parse the body, post it unchanged to `graph`, return the answer."""
    return Function(
        ROOT / "bench" / "functions" / "main.py",
        "forwarder",
        {"GRAPH_URL": graph.base_url + "/v26.0/1234567890/events", "TOKEN": graph.fake.token},
        probe="/",
    )


def _cpu_per_request(function: Function, url: str, bodies: list[bytes], headers: dict[str, str]) -> float:
    session = requests.Session()
    before = tree_cpu(function.proc.pid)
    for body in bodies:
        response = session.post(url, data=body, headers=headers)
        assert response.status_code < 500, response.text[:300]
    return (tree_cpu(function.proc.pid) - before) / len(bodies)


def bench_single_event() -> dict[str, Any]:
    """CPU per single-event request, forwarded to a zero-latency fake, vs a trivial forwarder.

    capi does all its work (ingest-key check, validation, mapping, normalization, hashing,
    the INFO log line); the forwarder parses the body and posts it unchanged with requests.
    Both run under functions-framework + gunicorn; runs interleaved, least disturbed kept.
    """
    from tests.fakes.graph import GraphServer

    bodies = [body_for(20_000 + n, 1) for n in range(SINGLE_REQUESTS)]
    with GraphServer() as graph:
        capi, forwarder = single_event_capi(graph), single_event_forwarder(graph)
        capi_headers = {"Content-Type": "application/json", "X-Api-Key": INGEST_KEY}
        plain = {"Content-Type": "application/json"}
        try:
            for _ in range(2):  # warm both up: connections open, code and arenas warm
                _cpu_per_request(capi, capi.url + "/events", bodies[:50], capi_headers)
                _cpu_per_request(forwarder, forwarder.url + "/", bodies[:50], plain)
            accepted = graph.fake.accepted_requests
            capi_runs, forwarder_runs = [], []
            for _ in range(max(3, RUNS // 2)):
                capi_runs.append(_cpu_per_request(capi, capi.url + "/events", bodies, capi_headers))
                forwarder_runs.append(_cpu_per_request(forwarder, forwarder.url + "/", bodies, plain))
            assert graph.fake.accepted_requests > accepted, "capi's events did not reach the fake"
        finally:
            capi.stop()
            forwarder.stop()
    return {
        "single_capi_ms": min(capi_runs) * 1000,
        "single_forwarder_ms": min(forwarder_runs) * 1000,
        "single_ratio": min(capi_runs) / min(forwarder_runs),
        "single_capi_runs_ms": [round(c * 1000, 3) for c in capi_runs],
        "single_forwarder_runs_ms": [round(c * 1000, 3) for c in forwarder_runs],
    }


_SINGLE_REQUESTS_SCRIPT = """
import os, sys
target, source, path, graph, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
os.environ.update({"META_PIXEL_ID": "1234567890", "META_ACCESS_TOKEN": "test-token", "META_API_BASE_URL": graph,
                   "INGEST_API_KEY": "bench-ingest-key", "DEFAULT_COUNTRY": "US", "LOG_LEVEL": "INFO",
                   "PROFILE_COLLECTION": "", "GRAPH_URL": graph + "/v26.0/1234567890/events", "TOKEN": "test-token"})
import functions_framework
from bench.__main__ import body_for
client = functions_framework.create_app(target, source).test_client()
bodies = [body_for(20_000 + n, 1) for n in range(100)]  # made in every run: only the requests differ
headers = {"X-Api-Key": "bench-ingest-key"}
for body in bodies[:count]:
    response = client.post(path, data=body, content_type="application/json", headers=headers)
    # The fake refuses the forwarder's raw GA4 events (400): it still made the round trip.
    assert response.status_code == 200 or target == "forwarder" and response.status_code < 500, response.data[:300]
"""


def bench_single_instructions(count: int = 100) -> dict[str, Any]:
    """Instructions per single-event request under callgrind, capi vs the trivial forwarder.

    Each side is the difference of a run with `count` requests and one with none, in-process
    (functions-framework's WSGI app, no gunicorn), forwarding to the fake Graph API in a process
    of its own, so only the function's own work is counted: deterministic, unlike CPU time on
    a shared machine, which is what each change in docs/performance.md is measured by.
    """
    port = free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.graph", f"--port={port}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    graph = f"http://127.0.0.1:{port}"
    try:
        time.sleep(0.5)
        sides = {}
        for name, target, source, path in (
            ("capi", "capi_events", "main.py", "/events"),
            ("forwarder", "forwarder", "bench/functions/main.py", "/"),
        ):
            runs = [
                _instructions([sys.executable, "-c", _SINGLE_REQUESTS_SCRIPT, target, source, path, graph, str(n)])
                for n in (count, 0)
            ]
            sides[name] = (runs[0] - runs[1]) / count
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    return {
        "single_capi_kinstr": sides["capi"] / 1e3,
        "single_forwarder_kinstr": sides["forwarder"] / 1e3,
        "single_instr_ratio": sides["capi"] / sides["forwarder"],
    }


# -- 7. adversarial bodies and memory under concurrency ----------------------------------------

MIB = 1024 * 1024


def _fill(make: Any, limit: int = MIB - 1024) -> bytes:
    """The largest body `make(n)` builds that fits in `limit` bytes (binary search on n).

    `make` must grow with n: a batch of normal events cannot (1000 events, capi's bound, are
    0.89 MiB), which is why `bench_adversarial` compares CPU per byte.
    """
    low, high = 1, 1
    while len(make(high)) <= limit:
        low, high = high, high * 2
        assert high < 10**7, "the body does not grow with n"
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if len(make(middle)) <= limit else (low, middle)
    return make(low)


def adversarial_bodies() -> dict[str, bytes]:
    """1 MiB requests built to cost the most: long lists, long values, many items, deep objects."""
    import random

    rng = random.Random(7)
    base = ga4_event(customers(1, 31)[0])

    def one(**changes: Any) -> bytes:
        return json.dumps({**base, **changes}).encode()

    def letters(n: int) -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))

    long_names = [letters(1000) for _ in range(1000)]
    return {
        "many_emails": _fill(
            lambda n: one(user_data={"email_address": [f"user{i}.{i * 7919}@example.com" for i in range(n)]})
        ),
        "many_national_phones": _fill(
            lambda n: one(user_data={"phone_number": [f"0{i:010d}" for i in range(n)], "address": {"country": "GB"}})
        ),
        "long_values": _fill(
            lambda n: json.dumps(
                {"events": [{**base, "user_data": {"address": {"first_name": long_names[i % 1000]}}} for i in range(n)]}
            ).encode()
        ),
        "many_items": _fill(lambda n: one(items=[{"item_id": f"S{i}", "quantity": 1, "price": 1.5} for i in range(n)])),
        "deep_custom_data": _fill(
            lambda n: json.dumps({"events": [{**base, "custom_data": _nest(200)} for _ in range(n)]}).encode()
        ),
    }


def _nest(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        node = {"k": node, "pad": "x" * 40}
    return node


def bench_adversarial() -> dict[str, Any]:
    """CPU of each 1 MiB adversarial body vs a batch of normal events (both /validate), per byte.

    The largest normal request is 1000 events (capi's bound), 0.89 MiB: its CPU is scaled to
    1 MiB by size, so each ratio is CPU per byte of the adversarial body over that of normal events.
    """
    normal = body_for(41)
    bodies = adversarial_bodies()
    function = Function(ROOT / "main.py", "capi_events", capi_env(DEFAULT_COUNTRY="US"))
    headers = {"Content-Type": "application/json"}
    results: dict[str, Any] = {}
    try:
        session = requests.Session()

        def cpu(body: bytes) -> float:
            before = tree_cpu(function.proc.pid)
            response = session.post(function.url + "/validate", data=body, headers=headers)
            assert response.status_code < 500, response.text[:300]
            return tree_cpu(function.proc.pid) - before

        cpu(normal)
        normal_cpu = min(cpu(normal) for _ in range(3)) * MIB / len(normal)  # scaled to 1 MiB
        results["normal_1mib_ms"] = normal_cpu * 1000
        worst = 0.0
        for name, body in bodies.items():
            spent = min(cpu(body) for _ in range(3)) * MIB / len(body)
            results[f"adversarial_{name}_ms"] = spent * 1000
            worst = max(worst, spent / normal_cpu)
        results["adversarial_worst_ratio"] = worst
        results["rss_mib_after_adversarial"] = rss_mib(function.worker_pid())
    finally:
        function.stop()
    return results


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_concurrent_memory(callers: int = 8, rounds: int = 3) -> dict[str, Any]:
    """Peak resident memory of the worker while 8 callers each post a 1000-event request."""
    bodies = [body_for(50_000 + n) for n in range(callers)]
    function = Function(ROOT / "main.py", "capi_events", capi_env(DEFAULT_COUNTRY="US", THREADS=str(callers)))
    try:
        baseline = rss_mib(function.worker_pid())

        def caller(body: bytes) -> None:
            session = requests.Session()
            for _ in range(rounds):
                response = session.post(
                    function.url + "/events", data=body, headers={"Content-Type": "application/json"}
                )
                assert response.status_code == 200, response.text[:300]

        threads = [threading.Thread(target=caller, args=(body,)) for body in bodies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = peak_rss_mib(function.worker_pid())
    finally:
        function.stop()
    return {"rss_mib_idle": baseline, "rss_mib_peak_8_concurrent": peak}


# -- profile ---------------------------------------------------------------------------------------


def profile() -> None:
    from pyinstrument import Profiler

    from capi.config import load_config
    from capi.service import EventService

    service = EventService(load_config({"META_PIXEL_ID": "1", "DRY_RUN": "true", "DEFAULT_COUNTRY": "US"}), sender=None)
    body = json.loads(body_for(8000))
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for run in range(3):
        service.validate(json.loads(body_for(8001 + run)) if run else body)
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False))


# Components of a single-event request, by the first frame found in a py-spy stack (checked in
# this order): docs/performance.md, "One event per request".
SPY_COMPONENTS = (
    ("body read, JSON in", ("read_json", "get_json")),
    ("outbound call to Meta", ("GraphClient.send", "send_split", "forwarder (")),
    ("log lines", ("log_by_name", "log (capi/log.py", "log_summary")),
    ("pipeline", ("EventService.forward",)),
    ("answer, JSON out", ("json_response", "Outcome.body")),
    ("ingest key", ("Authenticator.check",)),
    ("the view, other", ("Application._events", "guarded")),
    ("flask, werkzeug, functions-framework", ("Flask.__call__",)),
)


def spy_single(seconds: int = 15) -> None:
    """py-spy (bench/requirements.txt) on the served worker of capi, then of the forwarder, while
    single-event requests run: µs per request holding the GIL, by component (1 kHz samples)."""
    from tests.fakes.graph import GraphServer

    bodies = [body_for(20_000 + n, 1) for n in range(300)]
    with GraphServer() as graph:
        sides = {
            "capi": (
                single_event_capi(graph),
                "/events",
                {"Content-Type": "application/json", "X-Api-Key": INGEST_KEY},
            ),
            "forwarder": (
                single_event_forwarder(graph),
                "/",
                {"Content-Type": "application/json"},
            ),
        }
        for name, (function, path, headers) in sides.items():
            try:
                _spy(name, function, function.url + path, headers, bodies, seconds)
            finally:
                function.stop()


def _spy(name: str, function: Function, url: str, headers: dict[str, str], bodies: list[bytes], seconds: int) -> None:
    import tempfile

    session = requests.Session()
    for body in bodies[:100]:
        session.post(url, data=body, headers=headers)
    with tempfile.NamedTemporaryFile(suffix=".txt") as out:
        command = ["record", "--gil", "--nonblocking", "-r", "1000", "-f", "raw", "-o", out.name, "-d", str(seconds)]
        spy = subprocess.Popen(
            [str(BIN / "py-spy"), *command, "-p", str(function.worker_pid())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sent = 0
        while spy.poll() is None:
            session.post(url, data=bodies[sent % len(bodies)], headers=headers)
            sent += 1
        samples: dict[str, int] = {}
        for line in Path(out.name).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            component = next(
                (c for c, frames in SPY_COMPONENTS if any(f in stack for f in frames)), "gunicorn, worker threads"
            )
            samples[component] = samples.get(component, 0) + int(count)
    print(f"{name}: {sent} requests, µs per request holding the GIL (1 kHz samples, about ±10 µs each)")
    for component, count in sorted(samples.items(), key=lambda item: -item[1]):
        print(f"  {count * 1000 / sent:6.0f}  {component}")
    print(f"  {sum(samples.values()) * 1000 / sent:6.0f}  total")


BENCHES = {
    "single": bench_single_event,
    "single_instructions": bench_single_instructions,
    "cpu": bench_cpu,
    "adversarial": bench_adversarial,
    "memory": bench_concurrent_memory,
    "cold": bench_cold_start,
    "instructions": bench_instructions,
    "outbound": bench_outbound_and_throughput,
    "firestore": bench_firestore,
    "queue": lambda: _queue().bench_queue(),  # DELIVERY=queue vs direct (bench/queue.py)
}


def _queue() -> Any:
    import bench.queue  # imports this module's helpers: loaded when its bench runs

    return bench.queue


# (figures a line needs, the line): printed when its bench ran.
REPORT = (
    (
        ("single_ratio",),
        lambda f: f"1. CPU per single-event request (forwarded to a zero-latency fake): capi"
        f" {f['single_capi_ms']:.2f} ms, trivial forwarder {f['single_forwarder_ms']:.2f} ms"
        f" -> {f['single_ratio']:.2f}x (target <= 1.0, accept <= 1.1)",
    ),
    (
        ("single_instr_ratio",),
        lambda f: f"   instructions per single-event request (callgrind, in-process, no gunicorn): capi"
        f" {f['single_capi_kinstr']:.0f} k, trivial forwarder {f['single_forwarder_kinstr']:.0f} k"
        f" -> {f['single_instr_ratio']:.2f}x",
    ),
    (
        ("capi_vs_sdk",),
        lambda f: f"2. CPU, 1000 full events (/validate): capi {f['capi_ms_per_1000']:.0f} ms, SDK"
        f" {f['sdk_ms_per_1000']:.0f} ms -> {f['capi_vs_sdk']:.2f}x the SDK (target <= 0.4, accept <= 0.5);"
        f" {f['capi_vs_floor']:.1f}x the sha256+json floor",
    ),
    (
        ("instr_ratio",),
        lambda f: f"   instructions (callgrind, deterministic): capi {f['capi_minstr_per_1000']:.0f} M,"
        f" SDK {f['sdk_minstr_per_1000']:.0f} M -> {f['instr_ratio']:.2f}x",
    ),
    (
        ("adversarial_worst_ratio",),
        lambda f: "3. CPU of a 1 MiB adversarial request vs normal events, per MiB"
        f" (1000 normal events, scaled to 1 MiB: {f['normal_1mib_ms']:.0f} ms): "
        + ", ".join(
            f"{k[len('adversarial_') : -3]} {v / f['normal_1mib_ms']:.2f}x"
            for k, v in f.items()
            if k.startswith("adversarial_") and k.endswith("_ms")
        )
        + f"; worst {f['adversarial_worst_ratio']:.2f}x (target <= 2)",
    ),
    (
        ("rss_mib_peak_8_concurrent",),
        lambda f: f"4. peak resident memory, 8 concurrent 1000-event requests:"
        f" {f['rss_mib_peak_8_concurrent']:.0f} MiB (idle {f['rss_mib_idle']:.0f} MiB) (target < 256)",
    ),
    (
        ("cold_ratio",),
        lambda f: f"5. cold start: capi {f['capi_cold_s'] * 1000:.0f} ms, hello world {f['hello_cold_s'] * 1000:.0f} ms"
        f" -> {f['cold_ratio']:.2f}x (target <= 1.3)",
    ),
    (
        ("posts_per_1000_event_request",),
        lambda f: f"6. Graph POSTs per 1000-event request: {f['posts_per_1000_event_request']} (target 1);"
        f" connections for 30 sequential requests: {f['connections_for_30_sequential']} (target 1);"
        f" throughput, 8 callers, Meta at 100 ms: capi {f['capi_rps']:.1f} rps"
        f" = {f['capi_pct_of_bound']:.0f}% of the 80 rps bound (target >= 85%);"
        f" trivial forwarder {f['forwarder_pct_of_bound']:.0f}%",
    ),
    (
        ("rss_mib_after_1000",),
        lambda f: f"   memory after a 1000-event request: {f['rss_mib_after_1000']:.0f} MiB (validate)",
    ),
    (
        ("enrichment_latency_ratio",),
        lambda f: f"7. Firestore batched reads per 1000-user request:"
        f" {f['firestore_batched_reads_per_1000_user_request']:.0f} (target 1); enrichment on the emulator:"
        f" {f['enriched_ms']:.0f} ms vs {f['unenriched_ms']:.0f} ms -> {f['enrichment_latency_ratio']:.2f}x",
    ),
)


def main() -> None:
    """`python -m bench [NAME ...]` runs the named benches (all by default); `profile` profiles the
    pipeline, `spy` the served single-event path."""
    names = sys.argv[1:]
    if names == ["profile"]:
        profile()
        return
    if names == ["spy"]:
        spy_single()
        return
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown bench {unknown}: choose from {', '.join(BENCHES)}, profile or spy")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; runs={RUNS}")
    figures: dict[str, Any] = {}
    for name in names or BENCHES:
        started = time.perf_counter()
        figures.update(BENCHES[name]())
        print(f"  ({name} took {time.perf_counter() - started:.1f} s)", file=sys.stderr)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}, indent=1))
    print()
    for needed, line in (*REPORT, *(_queue().REPORT if "queue_vs_direct_p50" in figures else ())):
        if all(k in figures for k in needed):
            print(line(figures))


if __name__ == "__main__":
    main()
