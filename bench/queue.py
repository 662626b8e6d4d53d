"""DELIVERY=queue against direct delivery, in one run (`python -m bench queue`).

sGTM's shape: single-event requests from 8 concurrent callers, Meta (the fake Graph API, in
this process) answering in 300 ms.

- `/events` latency, p50 and p99, each caller sending one event per 300 ms at most (the same
  offered load on every side): capi direct, capi queued (publishing to the Pub/Sub emulator),
  and the trivial forwarder;
- capi_deliver under Pub/Sub push at 200 messages/s (the emulator pushes two at a time, so
  the pushes are sent here, one request per message as Pub/Sub sends them): Graph calls per
  10 000 events, freshness (push to Meta's answer, p99), CPU per event and peak memory;
- CPU per event of the whole queued path (/events + capi_deliver) against direct and against
  the trivial forwarder. Pub/Sub's own CPU is Google's, not the function's: not counted.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bench.__main__ import ROOT, Function, body_for, capi_env, peak_rss_mib, tree_cpu

META_LATENCY = 0.3
CALLERS = 8
PER_CALLER = int(os.environ.get("BENCH_QUEUE_PER_CALLER", "30"))
PUSH_RATE = 200.0
PUSH_EVENTS = int(os.environ.get("BENCH_QUEUE_EVENTS", "2000"))
WINDOW_MS = 500  # BATCH_WINDOW_MS's default (capi/config.py)
JSON = {"Content-Type": "application/json"}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _callers(url: str, bodies: list[bytes], interval: float = META_LATENCY) -> list[float]:
    """CALLERS threads, each posting its share of `bodies` one after the other, at most one per
    `interval`; latencies in s.

    The same offered load for every side: sGTM sends as its visitors browse, whatever capi's
    latency. Each caller starts a request every META_LATENCY (the pace direct delivery allows
    it), or at once when the last one took longer. Without the pace, callers answered in 20 ms
    would send 15 times direct's load, and the 2 shared CPUs would time queueing, not capi.
    """
    latencies: list[float] = []
    lock = threading.Lock()

    def caller(mine: list[bytes]) -> None:
        session = requests.Session()
        start = time.perf_counter()
        for n, body in enumerate(mine):
            pause = start + n * interval - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            started = time.perf_counter()
            response = session.post(url, data=body, headers=JSON)
            elapsed = time.perf_counter() - started
            assert response.status_code < 500, response.text[:300]
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=caller, args=(bodies[i::CALLERS],)) for i in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def _serve_events(function: Function, url: str, seed: int) -> tuple[list[float], float]:
    """Latencies of CALLERS x PER_CALLER single-event requests and the function's CPU per request."""
    _callers(url, [body_for(seed + 900_000 + n, 1) for n in range(2 * CALLERS)])  # warm: connections, code
    bodies = [body_for(seed + n, 1) for n in range(CALLERS * PER_CALLER)]
    before = tree_cpu(function.proc.pid)
    latencies = _callers(url, bodies)
    return latencies, (tree_cpu(function.proc.pid) - before) / len(bodies)


def _push_bodies(count: int) -> list[bytes]:
    """Pub/Sub push bodies of single-event messages, the finished events built by capi itself."""
    from capi.config import load_config
    from capi.delivery.publish import Queued
    from capi.service import EventService

    service = EventService(load_config({"META_PIXEL_ID": "1234567890", "DRY_RUN": "true"}), sender=None)
    events: list[dict[str, Any]] = []
    seed = 70_000
    while len(events) < count:
        events += service.validate(json.loads(body_for(seed, 1000))).body["payload"]["data"]
        seed += 1
    bodies = []
    for n, event in enumerate(events[:count]):
        message = Queued("default", [event], None, [()]).encode()
        message["messageId"] = str(n)
        bodies.append(json.dumps({"message": message, "subscription": "projects/p/subscriptions/s"}).encode())
    return bodies


def _push_at_rate(url: str, bodies: list[bytes]) -> list[float]:
    """Each body pushed at PUSH_RATE per second, as Pub/Sub pushes; the round trips (push to ack)."""
    local = threading.local()
    acks: list[float] = []
    lock = threading.Lock()

    def push(body: bytes) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        started = time.perf_counter()
        response = session.post(url, data=body, headers=JSON)
        assert response.status_code == 200, response.text[:300]
        with lock:
            acks.append(time.perf_counter() - started)

    with ThreadPoolExecutor(max_workers=int(PUSH_RATE * (WINDOW_MS / 1000 + META_LATENCY) * 2)) as pool:
        start = time.perf_counter()
        for n, body in enumerate(bodies):
            delay = start + n / PUSH_RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(push, body)
    return acks


def _publish_alone(host: str, topic: str) -> dict[str, float]:
    """Publishing one message to the emulator at the callers' pace, without capi: the floor of
    a queued /events' latency here (the emulator is a Java process on the same shared CPUs)."""
    from capi.delivery.publish import Queued
    from capi.delivery.pubsub import PubSubClient

    client = PubSubClient(emulator_host=host)
    message = Queued("default", [{"event_name": "Purchase", "event_id": "x"}], None, [()]).encode()
    latencies: list[float] = []
    lock = threading.Lock()

    def caller() -> None:
        start = time.perf_counter()
        for n in range(PER_CALLER):
            pause = start + n * META_LATENCY - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            started = time.perf_counter()
            client.publish(topic, [message], seconds=2)
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "pubsub_publish_p50_ms": statistics.median(latencies) * 1000,
        "pubsub_publish_p99_ms": percentile(latencies, 99) * 1000,
    }


def _pull_cpu(host: str, graph_url: str, bodies: list[bytes]) -> float:
    """CPU per event of a pull consumer, in this process: capi_replay's dead-letter drain (pull
    up to 1000 messages, deliver them through `Consumer.deliver`, acknowledge) run on a
    subscription holding `bodies`' messages. It also counts the in-process fake Graph API's
    share (one call per batch), so it errs high."""
    from capi.app import Application
    from capi.config import load_config
    from capi.delivery.pubsub import PubSubClient
    from tests.fakes.pubsub import PubSubAdmin

    admin = PubSubAdmin(host)
    topic = admin.topic("bench-pull")
    subscription = admin.pull_subscription(topic)
    messages = [json.loads(body)["message"] for body in bodies]
    for start in range(0, len(messages), 500):
        admin.publish(
            topic, [{"data": m["data"], "attributes": m["attributes"]} for m in messages[start : start + 500]]
        )
    env = capi_env(
        DRY_RUN="false",
        META_ACCESS_TOKEN="test-token",
        META_API_BASE_URL=graph_url,
        GOOGLE_CLOUD_PROJECT="demo-capi-test",
        DELIVERY="queue",
        PUBSUB_TOPIC=topic,
        PUBSUB_DEADLETTER_SUBSCRIPTION=subscription,
    )
    drain = Application(load_config(env), pubsub_client=PubSubClient(emulator_host=host)).drain
    assert drain is not None
    drain.run()  # warm
    settled, cpu = 0, 0.0
    for _ in range(5):
        started = time.process_time()
        settled += drain.run()["settled"]
        cpu += time.process_time() - started
    return cpu / max(settled, 1)


def bench_queue() -> dict[str, Any]:
    from tests.fakes.graph import FakeGraph, GraphServer
    from tests.fakes.pubsub import PubSubAdmin, running_pubsub

    figures: dict[str, Any] = {}
    with GraphServer(FakeGraph(latency=META_LATENCY)) as graph, running_pubsub() as host:
        topic = PubSubAdmin(host).topic("bench-events")
        env = capi_env(
            DRY_RUN="false",
            META_ACCESS_TOKEN=graph.fake.token,
            META_API_BASE_URL=graph.base_url,
            THREADS=str(CALLERS),
            LOG_LEVEL="INFO",
            DEFAULT_COUNTRY="US",
            GOOGLE_CLOUD_PROJECT="demo-capi-test",
        )
        queued_env = {**env, "DELIVERY": "queue", "PUBSUB_TOPIC": topic, "PUBSUB_EMULATOR_HOST": host}
        figures.update(_publish_alone(host, topic))
        runs: dict[str, tuple[list[float], float]] = {}
        for name, source, target, function_env, path in (
            ("direct", ROOT / "main.py", "capi_events", env, "/events"),
            ("queue", ROOT / "main.py", "capi_events", queued_env, "/events"),
            (
                "forwarder",
                ROOT / "bench" / "functions" / "main.py",
                "forwarder",
                {"GRAPH_URL": graph.base_url + "/v26.0/1234567890/events", "TOKEN": graph.fake.token, "THREADS": "8"},
                "/",
            ),
        ):
            function = Function(source, target, function_env, probe="/healthz" if target == "capi_events" else "/")
            try:
                runs[name] = _serve_events(function, function.url + path, 100_000)
            finally:
                function.stop()
        for name, (latencies, cpu) in runs.items():
            figures[f"{name}_p50_ms"] = statistics.median(latencies) * 1000
            figures[f"{name}_p99_ms"] = percentile(latencies, 99) * 1000
            figures[f"{name}_cpu_ms_per_event"] = cpu * 1000
        figures["queue_vs_direct_p50"] = figures["queue_p50_ms"] / figures["direct_p50_ms"]
        figures["queue_vs_direct_p99"] = figures["queue_p99_ms"] / figures["direct_p99_ms"]

        deliver = Function(
            ROOT / "main.py",
            "capi_deliver",
            {**queued_env, "THREADS": "256", "BATCH_WINDOW_MS": str(WINDOW_MS), "LOG_LEVEL": "INFO"},
        )
        try:
            bodies = _push_bodies(PUSH_EVENTS)
            _push_at_rate(deliver.url + "/", bodies[:50])  # warm
            calls = graph.fake.requests
            before = tree_cpu(deliver.proc.pid)
            acks = _push_at_rate(deliver.url + "/", bodies)
            deliver_cpu = (tree_cpu(deliver.proc.pid) - before) / len(bodies)
            calls = graph.fake.requests - calls
            figures["deliver_peak_rss_mib"] = peak_rss_mib(deliver.worker_pid())
        finally:
            deliver.stop()
        # The floor of one inbound request per message: a hello-world function under the same pushes.
        hello = Function(ROOT / "bench" / "functions" / "main.py", "hello", {"THREADS": "256"}, probe="/")
        try:
            _push_at_rate(hello.url + "/", bodies[:50])
            before = tree_cpu(hello.proc.pid)
            _push_at_rate(hello.url + "/", bodies)
            figures["hello_cpu_ms_per_push"] = (tree_cpu(hello.proc.pid) - before) / len(bodies) * 1000
        finally:
            hello.stop()
        figures["pull_cpu_ms_per_event"] = _pull_cpu(host, graph.base_url, bodies) * 1000
    figures["graph_calls_per_10000_events"] = calls * 10_000 / len(bodies)
    figures["events_per_graph_call"] = len(bodies) / calls
    figures["freshness_p99_ms"] = percentile(acks, 99) * 1000
    figures["freshness_bound_ms"] = 2 * WINDOW_MS + META_LATENCY * 1000
    figures["deliver_cpu_ms_per_event"] = deliver_cpu * 1000
    whole = figures["queue_cpu_ms_per_event"] + figures["deliver_cpu_ms_per_event"]
    figures["queue_path_cpu_ms_per_event"] = whole
    figures["queue_path_vs_direct_cpu"] = whole / figures["direct_cpu_ms_per_event"]
    figures["queue_path_vs_forwarder_cpu"] = whole / figures["forwarder_cpu_ms_per_event"]
    return figures


REPORT = (
    (
        ("queue_vs_direct_p50",),
        lambda f: "8. /events latency, single events, 8 callers, Meta at 300 ms:"
        f" direct p50 {f['direct_p50_ms']:.0f} ms p99 {f['direct_p99_ms']:.0f} ms;"
        f" queued p50 {f['queue_p50_ms']:.1f} ms p99 {f['queue_p99_ms']:.1f} ms"
        f" -> p50 {f['queue_vs_direct_p50']:.3f}x (target <= 0.1),"
        f" p99 {f['queue_vs_direct_p99']:.3f}x (target <= 0.2); the emulator's publish alone, same pace:"
        f" p50 {f['pubsub_publish_p50_ms']:.1f} ms p99 {f['pubsub_publish_p99_ms']:.1f} ms",
    ),
    (
        ("graph_calls_per_10000_events",),
        lambda f: f"   capi_deliver at 200 pushes/s, BATCH_WINDOW_MS={WINDOW_MS}:"
        f" {f['graph_calls_per_10000_events']:.0f} Graph calls per 10 000 events"
        f" ({f['events_per_graph_call']:.0f} events per call; target <= 200);"
        f" freshness p99 {f['freshness_p99_ms']:.0f} ms (bound {f['freshness_bound_ms']:.0f} ms);"
        f" peak memory {f['deliver_peak_rss_mib']:.0f} MiB (target < 256)",
    ),
    (
        ("queue_path_vs_direct_cpu",),
        lambda f: f"   CPU per event: queued path {f['queue_path_cpu_ms_per_event']:.2f} ms (/events"
        f" {f['queue_cpu_ms_per_event']:.2f} + capi_deliver {f['deliver_cpu_ms_per_event']:.2f}), direct"
        f" {f['direct_cpu_ms_per_event']:.2f} ms, trivial forwarder {f['forwarder_cpu_ms_per_event']:.2f} ms"
        f" -> {f['queue_path_vs_direct_cpu']:.2f}x direct (target <= 0.5),"
        f" {f['queue_path_vs_forwarder_cpu']:.2f}x the forwarder (target <= 0.5); a hello-world function"
        f" under the same pushes: {f['hello_cpu_ms_per_push']:.2f} ms per request; a pull consumer (capi_replay's"
        f" drain, in-process): {f['pull_cpu_ms_per_event']:.2f} ms per event",
    ),
)
