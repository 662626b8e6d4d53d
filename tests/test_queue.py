"""DELIVERY=queue: /events publishes to Pub/Sub, capi_deliver delivers in batches.

The parts without an emulator first (the consumer answering pushes built here, the batcher,
throttling, the publish fallback); then the real Pub/Sub emulator end to end: /events ->
emulator -> push (through `PushRouter`) -> capi_deliver -> the fake Graph API, with the
Firestore emulator holding the idempotency guard.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import pytest

from capi.app import Application
from capi.config import load_config
from capi.delivery.batcher import Batcher
from capi.delivery.deadletter import load_event
from capi.delivery.publish import Queued, decode
from capi.delivery.pubsub import PubSubClient
from capi.delivery.throttle import THROTTLE_CODES, regain_seconds
from capi.errors import RequestError
from tests.conftest import PIXEL_ID, TOKEN, at_once, base_env, log_lines, purchase, serve
from tests.fakes.emulator import free_port
from tests.fakes.function import running_function
from tests.fakes.graph import GraphServer
from tests.fakes.pubsub import PubSubAdmin, PushRouter, serving, wait_until

IDEMPOTENCY = "capi_idempotency"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def meta_event(event_id: str) -> dict[str, Any]:
    """A finished Meta event, as /events publishes it (hashed email, website source)."""
    return {
        "event_name": "Purchase",
        "event_id": event_id,
        "event_time": int(time.time()) - 5,
        "action_source": "website",
        "event_source_url": "https://shop.example.com/ok",
        "user_data": {"em": [sha(f"{event_id.lower()}@example.com")], "client_user_agent": "Mozilla/5.0"},
        "custom_data": {"value": 5, "currency": "USD"},
    }


def push_body(*event_ids: str, message_id: str = "m-1", code: str | None = None) -> dict[str, Any]:
    message = Queued("default", [meta_event(e) for e in event_ids], code, [() for _ in event_ids]).encode()
    return {"message": {**message, "messageId": message_id}, "subscription": "projects/p/subscriptions/s"}


def build(
    graph: GraphServer | None, pubsub: PubSubClient | None = None, firestore: Any = None, **env: str
) -> Application:
    config = load_config(base_env(graph, **env))
    return Application(
        config,
        firestore_client=None if firestore is None else lambda: firestore,
        sleep=lambda seconds: None,
        rng=lambda: 0.5,
        pubsub_client=pubsub,
    )


def deliver_client(application: Application) -> Any:
    app = flask.Flask("capi-deliver")

    @app.route("/", methods=["GET", "POST"])
    def deliver() -> Any:
        return application.deliver(flask.request)

    return app.test_client()


# -- the consumer, pushed to directly ----------------------------------------------------------


def test_a_push_is_delivered_and_acked_with_the_direct_paths_log_lines(graph: GraphServer, capsys: Any) -> None:
    client = deliver_client(build(graph, DELIVERY="queue", PUBSUB_TOPIC="capi-events", BATCH_WINDOW_MS="0"))
    response = client.post("/", json=push_body("Q-1", "Q-2", code="TEST1"))
    assert response.status_code == 200
    assert response.get_json() == {"message_id": "m-1", "forwarded": 2, "failed": 0, "duplicate": 0, "unsent": 0}
    assert graph.fake.delivered == {("Purchase", "Q-1"): 1, ("Purchase", "Q-2"): 1}
    assert graph.fake.bodies[0]["test_event_code"] == "TEST1"
    out = capsys.readouterr().out
    [line] = log_lines(out, "events processed")
    assert (line["status"], line["forwarded"], line["delivery"], line["messages"]) == (200, 2, "queue", 1)
    assert line["match_keys"] == {"em": 2, "client_user_agent": 2}
    [by_name] = log_lines(out, "events by name")
    assert (by_name["event_name"], by_name["outcome"], by_name["count"]) == ("Purchase", "forwarded", 2)


def test_meta_unavailable_nacks_and_a_refused_event_alone_is_acked(graph: GraphServer, capsys: Any) -> None:
    client = deliver_client(build(graph, DELIVERY="queue", PUBSUB_TOPIC="capi-events", BATCH_WINDOW_MS="0"))
    graph.fake.down = "503"
    response = client.post("/", json=push_body("Q-1"))
    assert response.status_code == 503 and response.get_json()["error"] == "meta_unavailable"
    assert graph.fake.requests == 4  # META_MAX_ATTEMPTS, then Pub/Sub's backoff takes over
    graph.fake.down = None
    graph.fake.poison = {"Q-2"}
    response = client.post("/", json=push_body("Q-1", "Q-2", "Q-3"))
    assert response.status_code == 200
    assert response.get_json()["forwarded"] == 2 and response.get_json()["failed"] == 1
    assert set(graph.fake.delivered) == {("Purchase", "Q-1"), ("Purchase", "Q-3")}
    [refused] = log_lines(capsys.readouterr().out, "queued event refused by Meta")
    assert (refused["event_id"], refused["meta_code"], refused["meta_subcode"]) == ("Q-2", 100, 2804003)


def test_meta_config_refusal_is_held_with_its_error_line(graph: GraphServer, capsys: Any) -> None:
    client = deliver_client(build(graph, DELIVERY="queue", PUBSUB_TOPIC="capi-events", BATCH_WINDOW_MS="0"))
    graph.fake.token = "another-token"  # Meta says the token is invalid: code 190
    response = client.post("/", json=push_body("Q-1"))
    assert response.status_code == 503 and response.get_json()["error"] == "meta_config"
    [line] = log_lines(capsys.readouterr().out, "Meta refused capi's configuration")
    assert (line["severity"], line["error"], line["meta_code"]) == ("ERROR", "meta_config", 190)
    assert graph.fake.delivered == {}
    graph.fake.token = TOKEN  # the token is fixed: Pub/Sub's next push of the held message
    response = client.post("/", json=push_body("Q-1"))
    assert response.status_code == 200 and response.get_json()["forwarded"] == 1
    assert graph.fake.delivered == {("Purchase", "Q-1"): 1}


def test_throttling_pauses_the_pixel_for_metas_time_without_spending_retries(graph: GraphServer, capsys: Any) -> None:
    # Meta's usage header: estimated_time_to_regain_access is in minutes (Graph API rate limiting docs).
    usage = json.dumps({"1234": [{"type": "ads_management", "call_count": 100, "estimated_time_to_regain_access": 2}]})
    application = build(graph, DELIVERY="queue", PUBSUB_TOPIC="capi-events", BATCH_WINDOW_MS="0")
    client = deliver_client(application)
    graph.fake.fail_next("code:80004", usage=usage)
    response = client.post("/", json=push_body("Q-1"))
    assert response.status_code == 429
    assert graph.fake.requests == 1  # not retried in place
    assert 119 < application.consumer.pauses.remaining(PIXEL_ID) <= 120
    response = client.post("/", json=push_body("Q-2", message_id="m-2"))
    assert response.status_code == 429 and response.get_json()["error"] == "throttled"
    assert graph.fake.requests == 1  # paused: Meta is not called
    # Both nacks write the line the metrics count (status, error, Meta's code), the paused one too.
    lines = log_lines(capsys.readouterr().out, "events processed")
    assert [(line["status"], line["unsent"], line["forwarded"], line["meta_code"]) for line in lines] == [
        (429, 1, 0, 80004),
        (429, 1, 0, 80004),
    ]
    assert all(line["severity"] == "WARNING" and line["delivery"] == "queue" for line in lines)


@pytest.mark.parametrize("code", sorted(THROTTLE_CODES))
def test_every_throttle_code_is_transient_never_a_refusal_to_split(code: int) -> None:
    from capi.delivery.graph import classify

    error = classify(400, {"error": {"code": code, "message": "limit"}})
    assert error.kind == "transient"


def test_usage_header_reading() -> None:
    assert (
        regain_seconds('{"1": [{"estimated_time_to_regain_access": 3}, {"estimated_time_to_regain_access": 0}]}') == 180
    )
    assert regain_seconds('{"1": [{"estimated_time_to_regain_access": 0}]}') is None
    assert regain_seconds("not json") is None and regain_seconds(None) is None
    assert regain_seconds('{"1": [{"estimated_time_to_regain_access": true}]}') is None


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (None, "message"),
        ({"data": "e30="}, "message.attributes.destination"),
        ({"data": "%%%", "attributes": {"destination": "default"}}, "message.data"),
        (
            {"data": base64.b64encode(b'{"events": []}').decode(), "attributes": {"destination": "d"}},
            "message.data.events",
        ),
    ],
)
def test_a_message_capi_did_not_publish_is_named(message: Any, field: str) -> None:
    with pytest.raises(RequestError) as info:
        decode(message)
    assert info.value.field == field


def test_an_unreadable_push_is_a_400_nack_never_a_500(graph: GraphServer) -> None:
    client = deliver_client(build(graph, DELIVERY="queue", PUBSUB_TOPIC="capi-events"))
    response = client.post("/", json={"message": {"data": "e30="}})
    assert response.status_code == 400 and response.get_json()["field"] == "message.attributes.destination"
    assert client.get("/").status_code == 405 and graph.fake.requests == 0


def test_the_batcher_gathers_concurrent_items_and_splits_at_its_bound() -> None:
    calls: list[tuple[Any, list[int]]] = []

    def deliver(key: Any, items: list[int]) -> list[int]:
        calls.append((key, list(items)))
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(deliver, window=0.3, max_size=5, size=lambda item: item)
    results: dict[int, int] = {}
    at_once(*[lambda i=i: results.__setitem__(i, batcher.submit("pixel", i)) for i in (1, 1, 2)])
    assert results == {1: 10, 2: 20} and len(calls) == 1 and sorted(calls[0][1]) == [1, 1, 2]
    calls.clear()
    at_once(*[lambda i=i: batcher.submit("pixel", i) for i in (3, 3)])  # 6 > 5: two batches
    assert sorted(len(items) for _, items in calls) == [1, 1]


# -- publishing: the fallback when Pub/Sub does not take the events ----------------------------


def test_pubsub_unreachable_falls_back_to_direct_delivery(graph: GraphServer, capsys: Any) -> None:
    dead = PubSubClient(emulator_host=f"127.0.0.1:{free_port()}")
    client = serve(build(graph, dead, DELIVERY="queue", PUBSUB_TOPIC="capi-events"))
    response = client.post("/events", json=purchase("F-1"))
    body = response.get_json()
    assert response.status_code == 200
    assert (body["queued"], body["delivery"], body["forwarded"]) == (0, "direct", 1)
    assert "went to Meta directly" in body["messages"][0]["message"]
    assert graph.fake.delivered == {("Purchase", "F-1"): 1}
    out = capsys.readouterr().out
    [line] = log_lines(out, "events not queued; delivered directly")
    assert line["error"] == "queue_unavailable"
    [processed] = log_lines(out, "events processed")
    assert (processed["delivery"], processed["queued"], processed["forwarded"]) == ("direct", 0, 1)


def test_a_silent_pubsub_holds_events_at_most_the_publish_bound(graph: GraphServer) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = serve(
            build(
                graph,
                PubSubClient(emulator_host=f"127.0.0.1:{silent.getsockname()[1]}"),
                DELIVERY="queue",
                PUBSUB_TOPIC="capi-events",
            )
        )
        started = time.monotonic()
        response = client.post("/events", json=purchase("F-2"))
        elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.get_json()["delivery"] == "direct"
    assert 1.9 < elapsed < 3.0  # PUBLISH_SECONDS, then the direct call
    assert graph.fake.delivered == {("Purchase", "F-2"): 1}


# -- on the Pub/Sub emulator -------------------------------------------------------------------


@pytest.fixture
def queue(pubsub_emulator: str, firestore_db: Any, graph: GraphServer) -> Iterator[dict[str, Any]]:
    """A topic, an /events app publishing to it, and `consumer()` to build capi_deliver apps."""
    admin = PubSubAdmin(pubsub_emulator)
    topic = admin.topic()
    env = {
        "DELIVERY": "queue",
        "PUBSUB_TOPIC": topic,
        "IDEMPOTENCY_COLLECTION": IDEMPOTENCY,
        "BATCH_WINDOW_MS": "300",
    }

    def consumer() -> Application:
        return build(graph, firestore=firestore_db, **env)

    events = build(graph, PubSubClient(emulator_host=pubsub_emulator), firestore_db, **env)
    made: list[str] = [topic]
    yield {"admin": admin, "topic": topic, "events": serve(events), "consumer": consumer, "env": env, "made": made}
    for name in reversed(made):
        admin.delete(name)


def subscribe(queue: dict[str, Any], endpoint: str) -> str:
    name = queue["admin"].push_subscription(queue["topic"], endpoint)
    queue["made"].append(name)
    return name


@pytest.mark.emulator
def test_end_to_end_events_queued_then_delivered_once_in_batches(
    queue: dict[str, Any], graph: GraphServer, capsys: Any
) -> None:
    admin = queue["admin"]
    tap = admin.pull_subscription(queue["topic"])  # what Pub/Sub holds, read as an operator would
    queue["made"].append(tap)
    with serving(queue["consumer"]()) as url, PushRouter(url) as router:
        subscribe(queue, router.url)
        answers: list[Any] = []
        ids = [f"E-{n}" for n in range(4)]
        at_once(*[lambda i=i: answers.append(queue["events"].post("/events", json=purchase(i))) for i in ids])
        for response in answers:
            body = response.get_json()
            assert response.status_code == 202
            assert (body["queued"], body["delivery"], body["forwarded"]) == (1, "queue", 0)
        wait_until(lambda: len(graph.fake.delivered) == 4)
        wait_until(lambda: len(router.statuses) == 4)
    assert router.statuses == [200] * 4
    assert graph.fake.delivered == {("Purchase", i): 1 for i in ids}
    assert graph.fake.requests < 4  # the emulator pushes two at a time: gathered in pairs
    sent = {e["event_id"]: e for body in graph.fake.bodies for e in body["data"]}
    assert sent["E-0"]["user_data"]["em"] == [sha("e-0@example.com")]
    held = admin.pull(tap)
    assert len(held) == 4
    for entry in held:
        data = base64.b64decode(entry["message"]["data"]).decode()
        assert 'example.com"' not in data and "@" not in data  # hashed only: no raw email in Pub/Sub
        assert entry["message"]["attributes"]["destination"] == "default"
    lines = [line for line in log_lines(capsys.readouterr().out, "events processed") if line["delivery"] == "queue"]
    assert sum(line.get("queued") or 0 for line in lines) == 4  # the /events lines
    assert sum(line["forwarded"] for line in lines) == 4  # capi_deliver's lines


@pytest.mark.emulator
def test_meta_down_for_a_while_then_back_every_event_once(queue: dict[str, Any], graph: GraphServer) -> None:
    graph.fake.down = "503"
    ids = [f"D-{n}" for n in range(3)]
    with serving(queue["consumer"]()) as url, PushRouter(url) as router:
        subscribe(queue, router.url)
        for event_id in ids:
            assert queue["events"].post("/events", json=purchase(event_id)).status_code == 202
        wait_until(lambda: router.statuses.count(503) >= 3)  # nacked, redelivered by Pub/Sub
        graph.fake.down = None
        wait_until(lambda: len(graph.fake.delivered) == 3)
        time.sleep(1.5)  # room for a stray redelivery to show up
    assert graph.fake.delivered == {("Purchase", i): 1 for i in ids}
    assert router.statuses[-1] == 200


@pytest.mark.emulator
def test_one_event_meta_refuses_inside_a_batch_the_others_delivered_all_acked(
    queue: dict[str, Any], graph: GraphServer, capsys: Any
) -> None:
    graph.fake.poison = {"B-2"}  # Meta refuses the whole request for it (code 100): bisected
    with serving(queue["consumer"]()) as url, PushRouter(url) as router:
        subscribe(queue, router.url)
        at_once(
            lambda: queue["events"].post("/events", json=[purchase("B-1"), purchase("B-2"), purchase("B-3")]),
            lambda: queue["events"].post("/events", json=purchase("B-4")),
        )
        wait_until(lambda: len(router.statuses) == 2)
        time.sleep(1.5)  # a nacked message would be pushed again by now
    assert router.statuses == [200, 200]  # a refusal is final: acked, never redelivered
    assert graph.fake.delivered == {("Purchase", i): 1 for i in ("B-1", "B-3", "B-4")}
    assert graph.fake.refused_requests >= 1
    out = capsys.readouterr().out
    [refused] = log_lines(out, "queued event refused by Meta")
    assert (refused["event_id"], refused["destination"]) == ("B-2", "default")
    delivered = [line for line in log_lines(out, "events processed") if line.get("messages")]
    assert sum(line["forwarded"] for line in delivered) == 3 and sum(line["failed"] for line in delivered) == 1


@pytest.mark.emulator
def test_the_202_answer_carries_rejections_and_skips_beside_queued(queue: dict[str, Any]) -> None:
    response = queue["events"].post(
        "/events",
        json=[purchase("A-1"), purchase("A-2", currency="dollars"), purchase("A-3", consent={"ad_storage": "denied"})],
    )
    body = response.get_json()
    assert response.status_code == 202
    assert (body["queued"], body["delivery"], body["forwarded"]) == (1, "queue", 0)
    assert body["event_ids"] == ["A-1"]
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [(1, "currency")]
    assert body["skipped"] == [{"index": 2, "event_id": "A-3", "reason": "consent", "consent_signal": "consent"}]


@pytest.mark.emulator
def test_pubsub_refusing_the_publish_falls_back_direct_or_to_a_dead_letter(
    pubsub_emulator: str, graph: GraphServer, firestore_db: Any
) -> None:
    """The emulator is up but the topic does not exist (404, as before the publisher role has
    propagated): delivered directly; with Meta down as well, stored as a Firestore dead letter.
    Either way the answer says `"delivery": "direct"`, and nothing is lost."""
    app = build(
        graph,
        PubSubClient(emulator_host=pubsub_emulator),
        firestore_db,
        DELIVERY="queue",
        PUBSUB_TOPIC="no-such-topic",
    )
    client = serve(app)
    response = client.post("/events", json=purchase("G-1"))
    assert response.status_code == 200
    assert (response.get_json()["delivery"], response.get_json()["forwarded"]) == ("direct", 1)
    assert "Pub/Sub answered HTTP 404" in response.get_json()["messages"][0]["message"]
    assert graph.fake.delivered == {("Purchase", "G-1"): 1}
    graph.fake.down = "503"
    response = client.post("/events", json=purchase("G-2"))
    body = response.get_json()
    assert response.status_code == 202
    assert (body["delivery"], body["queued"], body["stored"]) == ("direct", 0, 1)
    stored = [d.to_dict() for d in firestore_db.collection("capi_deadletter").stream()]
    assert [load_event(d)["event_id"] for d in stored] == ["G-2"]  # replay sends it when Meta is back


def test_a_dry_run_with_delivery_queue_publishes_nothing(graph: GraphServer) -> None:
    """DRY_RUN sends nothing anywhere (docs/queue.md): /events does not even try Pub/Sub."""
    dead = PubSubClient(emulator_host=f"127.0.0.1:{free_port()}")  # a publish would fail and say so
    response = serve(build(graph, dead, DELIVERY="queue", PUBSUB_TOPIC="capi-events", DRY_RUN="true")).post(
        "/events", json=purchase("Y-2")
    )
    body = response.get_json()
    assert response.status_code == 200 and body["forwarded"] == 1
    assert [m["message"] for m in body["messages"]] == ["DRY_RUN: nothing was sent to Meta"]
    assert "queued" not in body and graph.fake.requests == 0


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its descendants (functions-framework's gunicorn worker), children first."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        kill_tree(int(child))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.emulator
def test_a_consumer_killed_mid_batch_is_redelivered_once(
    queue: dict[str, Any], graph: GraphServer, firestore_emulator: str
) -> None:
    env = {
        **base_env(graph, **queue["env"]),
        "BATCH_WINDOW_MS": "5000",  # it is killed while it gathers
        "FIRESTORE_EMULATOR_HOST": firestore_emulator,
    }
    with (
        running_function(env, target="capi_deliver") as (port, process),
        PushRouter(f"http://127.0.0.1:{port}/") as router,
    ):
        subscribe(queue, router.url)
        assert queue["events"].post("/events", json=purchase("K-1")).status_code == 202
        wait_until(lambda: router.arrived >= 1)
        time.sleep(0.2)
        kill_tree(process.pid)
        process.wait(timeout=10)
        with serving(queue["consumer"]()) as url:
            router.backends = [url]
            wait_until(lambda: graph.fake.delivered)
            wait_until(lambda: 200 in router.statuses)
    assert router.statuses[0] == 502  # the dead instance: a nack
    assert graph.fake.delivered == {("Purchase", "K-1"): 1}


@pytest.mark.emulator
def test_two_consumers_at_once_never_send_an_event_twice(queue: dict[str, Any], graph: GraphServer) -> None:
    graph.fake.latency = 0.3  # both consumers hold the same events at the same time
    ids = ["T-1", "T-2"]
    with (
        serving(queue["consumer"]()) as first,
        serving(queue["consumer"]()) as second,
        PushRouter(first, second) as router,
    ):
        subscribe(queue, router.url)
        # The same events in two messages (Pub/Sub delivers at least once; a caller retried).
        payload = [purchase(i) for i in ids]
        at_once(*[lambda: queue["events"].post("/events", json=payload) for _ in range(2)])
        wait_until(lambda: len(graph.fake.delivered) == 2)
        wait_until(lambda: router.statuses.count(200) == 2)
        time.sleep(1.0)
    assert graph.fake.delivered == {("Purchase", i): 1 for i in ids}
    # One consumer found the other's claim (in flight): nacked, then acked as a duplicate.
    assert sorted(router.statuses) == [200, 200, 503], router.statuses


@pytest.mark.emulator
def test_capi_replay_drains_the_dead_letter_topic(pubsub_emulator: str, graph: GraphServer, firestore_db: Any) -> None:
    admin = PubSubAdmin(pubsub_emulator)
    topic = admin.topic("capi-deadletter")
    subscription = admin.pull_subscription(topic)
    try:
        good = Queued("default", [meta_event("R-1"), meta_event("R-2")], None, [(), ()]).encode()
        admin.publish(topic, [good, {"data": "e30=", "attributes": {"destination": "default"}}])
        application = build(
            graph,
            PubSubClient(emulator_host=pubsub_emulator),
            firestore_db,  # capi_replay replays the Firestore dead letters first (none here)
            DELIVERY="queue",
            PUBSUB_TOPIC="capi-events",
            PUBSUB_DEADLETTER_SUBSCRIPTION=subscription,
        )
        app = flask.Flask("replay")
        app.add_url_rule("/", "replay", lambda: application.replay(flask.request), methods=["POST"])
        counts = app.test_client().post("/").get_json()["queue"]
        assert counts == {"pulled": 2, "settled": 1, "kept": 1, "unreadable": 1}
        assert graph.fake.delivered == {("Purchase", "R-1"): 1, ("Purchase", "R-2"): 1}
        wait_until(lambda: len(admin.pull(subscription)) == 1)  # only the unreadable one is left
    finally:
        admin.delete(subscription)
        admin.delete(topic)


@pytest.mark.emulator
def test_capi_replay_drains_more_than_one_pull_and_stops_while_meta_is_down(
    pubsub_emulator: str, graph: GraphServer, firestore_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a long outage the dead-letter topic holds many pulls' worth: one run pulls again
    while Meta takes what it is sent (here one message a pull), and stops at once while Meta is
    down rather than spend the run on it."""
    monkeypatch.setattr("capi.delivery.drain.MAX_MESSAGES", 1)
    admin = PubSubAdmin(pubsub_emulator)
    topic = admin.topic("capi-deadletter")
    subscription = admin.pull_subscription(topic)
    try:
        ids = ["L-1", "L-2", "L-3"]
        admin.publish(topic, [Queued("default", [meta_event(i)], None, [()]).encode() for i in ids])
        application = build(
            graph,
            PubSubClient(emulator_host=pubsub_emulator),
            firestore_db,
            DELIVERY="queue",
            PUBSUB_TOPIC="capi-events",
            PUBSUB_DEADLETTER_SUBSCRIPTION=subscription,
        )
        graph.fake.down = "503"
        assert application.drain.run() == {"pulled": 1, "settled": 0, "kept": 1, "unreadable": 0}
        graph.fake.down = None
        admin.publish(topic, [{"data": "e30=", "attributes": {"destination": "default"}}])
        assert application.drain.run() == {"pulled": 4, "settled": 3, "kept": 1, "unreadable": 1}
        assert graph.fake.delivered == {("Purchase", i): 1 for i in ids}
    finally:
        admin.delete(subscription)
        admin.delete(topic)


def test_threads_do_not_leak_from_the_batcher() -> None:
    before = threading.active_count()
    batcher: Batcher[int, int] = Batcher(lambda key, items: items, window=0.0, max_size=10)
    assert batcher.submit("k", 7) == 7
    assert threading.active_count() == before


def test_capi_delivers_lines_feed_the_same_metrics_and_alerts(graph: GraphServer, capsys: Any) -> None:
    from tests.logquery import matches
    from tests.test_alerts import FILTERS, captured, metric_filter, only

    client = deliver_client(build(graph, DELIVERY="queue", PUBSUB_TOPIC="capi-events", BATCH_WINDOW_MS="0"))
    assert client.post("/", json=push_body("A-1")).status_code == 200
    graph.fake.token = "another-token"
    assert client.post("/", json=push_body("A-2", message_id="m-2")).status_code == 503
    records = captured(capsys, "capi-deliver")
    delivered = only(records, "events processed", status=200)
    assert matches(metric_filter("requests"), delivered)
    assert matches(metric_filter("forwarding_requests"), delivered)
    forwarded = only(records, "events by name", outcome="forwarded")
    assert matches(metric_filter("events"), forwarded)
    assert matches(metric_filter("match_keys", "em"), forwarded)
    assert matches(FILTERS["meta_config"], only(records, "Meta refused capi's configuration"))
    failed = [r for r in records if r["jsonPayload"]["message"] == "Meta call failed"]
    assert failed and all(matches(metric_filter("meta_errors"), r) for r in failed)
    held = only(records, "events processed", status=503)
    assert not matches(metric_filter("forwarding_requests"), held)


class SlowPubSub:
    """Pub/Sub's publish call as the Publisher sees it, each call held until the test lets it go."""

    def __init__(self, fail_call: int | None = None) -> None:
        self.calls: list[int] = []  # messages per call
        self.release = threading.Semaphore(0)
        self.fail_call = fail_call
        self.lock = threading.Lock()

    def publish(self, topic: str, messages: list[dict[str, Any]], *, seconds: float) -> list[str]:
        from capi.errors import QueueUnavailable

        with self.lock:
            self.calls.append(len(messages))
            number = len(self.calls)
        self.release.acquire(timeout=5)
        if number == self.fail_call:
            raise QueueUnavailable("Pub/Sub answered HTTP 503")
        return [f"{number}-{n}" for n in range(len(messages))]


@pytest.mark.parametrize("fail_call", [None, 2])
def test_concurrent_requests_share_publish_calls_and_their_fate(fail_call: int | None) -> None:
    from capi.delivery.publish import Publisher
    from capi.errors import QueueUnavailable

    pubsub = SlowPubSub(fail_call)
    publisher = Publisher(pubsub, "projects/p/topics/t")  # type: ignore[arg-type]
    results: dict[str, Any] = {}

    def request(name: str, size: int) -> None:
        try:
            results[name] = publisher.publish([Queued("default", [meta_event(name)] * size, None, [()] * size)])
        except QueueUnavailable as exc:
            results[name] = exc.code

    first = threading.Thread(target=request, args=("first", 1))
    first.start()
    wait_until(lambda: pubsub.calls == [1])  # in flight: the next requests wait for it
    others = [threading.Thread(target=request, args=(f"r{n}", 2)) for n in range(3)]
    for thread in others:
        thread.start()
    time.sleep(0.2)
    pubsub.release.release(2)  # the first call, then the one carrying the three others
    for thread in [first, *others]:
        thread.join(timeout=10)
    assert pubsub.calls == [1, 3]  # one message per request
    assert results["first"] == ["1-0"]
    if fail_call is None:
        assert sorted(id_ for n in range(3) for id_ in results[f"r{n}"]) == ["2-0", "2-1", "2-2"]
    else:
        assert [results[f"r{n}"] for n in range(3)] == ["queue_unavailable"] * 3
    pubsub.release.release(1)
    assert publisher.publish([Queued("default", [meta_event("later")], None, [()])]) == ["3-0"]  # not stuck


def test_an_unreadable_answer_from_meta_is_redelivered(graph: GraphServer) -> None:
    client = deliver_client(build(graph, DELIVERY="queue", PUBSUB_TOPIC="capi-events", BATCH_WINDOW_MS="0"))
    graph.fake.fail_next("garbage")  # Meta took the events, its answer cannot be read
    response = client.post("/", json=push_body("U-1"))
    assert response.status_code == 503 and response.get_json()["error"] == "meta_unreadable"
    assert client.post("/", json=push_body("U-1")).status_code == 200  # Pub/Sub pushes it again
    assert graph.fake.delivered == {("Purchase", "U-1"): 2}  # Meta deduplicates the copy by event_id


@pytest.mark.emulator
def test_one_message_per_destination_with_its_attributes(pubsub_emulator: str, graph: GraphServer, capsys: Any) -> None:
    admin = PubSubAdmin(pubsub_emulator)
    topic = admin.topic()
    tap = admin.pull_subscription(topic)
    destinations = [
        {"name": "shop", "pixel_id": "111", "access_token": "tok-a"},
        {"name": "brand", "pixel_id": "222", "access_token": "tok-b", "test_event_code": "TEST9"},
    ]
    graph.fake.tokens.update({"111": "tok-a", "222": "tok-b"})
    env = {
        "META_DESTINATIONS": json.dumps(destinations),
        "GOOGLE_CLOUD_PROJECT": "demo-capi-test",
        "ALLOW_UNAUTHENTICATED": "true",
        "PROFILE_COLLECTION": "",
        "META_API_BASE_URL": graph.base_url,
        "DELIVERY": "queue",
        "PUBSUB_TOPIC": topic,
        "BATCH_WINDOW_MS": "0",
    }

    def application(pubsub: PubSubClient | None) -> Application:
        return Application(load_config(env), pubsub_client=pubsub, sleep=lambda seconds: None)

    try:
        response = serve(application(PubSubClient(emulator_host=pubsub_emulator))).post(
            "/events", json=[purchase("M-1"), purchase("M-2")]
        )
        assert response.status_code == 202
        assert (response.get_json()["queued"], response.get_json()["delivery"]) == (4, "queue")
        pulled = admin.pull(tap)
        attributes = sorted((m["message"]["attributes"] for m in pulled), key=lambda a: a["destination"])
        assert attributes == [
            {"destination": "brand", "events": "2", "test_event_code": "TEST9"},
            {"destination": "shop", "events": "2"},
        ]
        consumer = deliver_client(application(None))
        for entry in pulled:
            assert consumer.post("/", json={"message": entry["message"]}).status_code == 200
        assert {pixel: sorted(c) for pixel, c in graph.fake.delivered_by_pixel.items()} == {
            "111": [("Purchase", "M-1"), ("Purchase", "M-2")],
            "222": [("Purchase", "M-1"), ("Purchase", "M-2")],
        }
        assert graph.fake.bodies_by_pixel["222"][0]["test_event_code"] == "TEST9"
        # capi_deliver's lines name their destination, as the direct path's do with several pixels.
        batches = [line for line in log_lines(capsys.readouterr().out, "events processed") if "messages" in line]
        assert sorted((list(line["destinations"]), line["forwarded"]) for line in batches) == [
            (["brand"], 2),
            (["shop"], 2),
        ]
    finally:
        admin.delete(tap)
        admin.delete(topic)


@pytest.mark.parametrize(
    ("env", "field", "message"),
    [
        ({"DELIVERY": "later"}, "DELIVERY", "DELIVERY must be one of direct, queue, got 'later'"),
        ({"DELIVERY": "queue"}, "PUBSUB_TOPIC", "PUBSUB_TOPIC is required with DELIVERY=queue"),
        (
            {"DELIVERY": "queue", "PUBSUB_TOPIC": "capi-events", "GOOGLE_CLOUD_PROJECT": ""},
            "PUBSUB_TOPIC",
            "PUBSUB_TOPIC is a short name, so GOOGLE_CLOUD_PROJECT must be set",
        ),
        ({"PUBSUB_TOPIC": "projects/p/subscriptions/s"}, "PUBSUB_TOPIC", None),
        ({"PUBSUB_TOPIC": "ab"}, "PUBSUB_TOPIC", None),
        ({"BATCH_WINDOW_MS": "20000"}, "BATCH_WINDOW_MS", None),
        ({"PUBSUB_DEADLETTER_SUBSCRIPTION": "projects/p/topics/t"}, "PUBSUB_DEADLETTER_SUBSCRIPTION", None),
    ],
)
def test_queue_settings_fail_with_one_line_naming_the_variable(
    env: dict[str, str], field: str, message: str | None
) -> None:
    from capi.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(base_env(None, **env))
    assert info.value.field == field and "\n" not in info.value.message
    if message is not None:
        assert info.value.message == message


def test_queue_settings_defaults_and_full_names() -> None:
    from capi.delivery.pubsub import full_name

    config = load_config(base_env(None))
    assert (config.delivery, config.pubsub_topic, config.batch_window_ms) == ("direct", None, 500)
    config = load_config(base_env(None, DELIVERY="Queue", PUBSUB_TOPIC="capi-events"))
    assert config.delivery == "queue"
    assert full_name(config.pubsub_topic, "topics", config.project) == "projects/demo-capi-test/topics/capi-events"
    assert full_name("projects/x/topics/t", "topics", "p") == "projects/x/topics/t"


@pytest.mark.emulator
def test_replay_still_answers_when_the_dead_letter_topic_cannot_be_reached(
    graph: GraphServer, firestore_db: Any, capsys: Any
) -> None:
    application = build(
        graph,
        PubSubClient(emulator_host=f"127.0.0.1:{free_port()}"),  # nothing listens
        firestore_db,
        DELIVERY="queue",
        PUBSUB_TOPIC="capi-events",
        PUBSUB_DEADLETTER_SUBSCRIPTION="capi-deadletter",
    )
    app = flask.Flask("replay")
    app.add_url_rule("/", "replay", lambda: application.replay(flask.request), methods=["POST"])
    response = app.test_client().post("/")
    assert response.status_code == 200
    body = response.get_json()
    assert body["found"] == 0 and body["queue"] == {"error": "queue_unavailable"}  # Firestore's replay ran
    [line] = log_lines(capsys.readouterr().out, "dead-letter topic not drained")
    assert line["severity"] == "ERROR"


def test_a_dry_run_consumer_sends_nothing_and_acks(graph: GraphServer, capsys: Any) -> None:
    client = deliver_client(build(graph, DRY_RUN="true", BATCH_WINDOW_MS="0", IDEMPOTENCY_COLLECTION="never-touched"))
    response = client.post("/", json=push_body("Y-1"))
    assert response.status_code == 200 and response.get_json()["forwarded"] == 1
    assert graph.fake.requests == 0  # nothing sent, and no Firestore claim was tried (none is reachable)
    [line] = log_lines(capsys.readouterr().out, "events processed")
    assert line["forwarded"] == 1


@pytest.mark.emulator
def test_queued_path_counts_an_order_once_and_answers_the_tags_cookies(
    queue: dict[str, Any], graph: GraphServer
) -> None:
    """The queued path keeps the direct path's promises: one Purchase per order (the order key is
    claimed by capi_deliver, whatever the event_id), and `set_cookies` for the events it took
    (queued), none for one skipped for consent."""
    fbp = "fb.1.1700000000000.1234567890"
    with serving(queue["consumer"]()) as url, PushRouter(url) as router:
        subscribe(queue, router.url)
        first = queue["events"].post(
            "/events",
            json=purchase("P-1", transaction_id="ORDER-9", **{"x-fb-ck-fbp": fbp}),
            headers={"X-Capi-Set-Cookies": "1"},
        )
        assert first.status_code == 202
        assert first.get_json()["set_cookies"] == [{"index": 0, "event_id": "P-1", "_fbp": fbp}]
        wait_until(lambda: len(graph.fake.delivered) == 1)
        # The thank-you page reloaded: a new event_id for the same order.
        again = queue["events"].post("/events", json=purchase("P-2", transaction_id="ORDER-9"))
        assert again.status_code == 202 and again.get_json()["queued"] == 1
        wait_until(lambda: len(router.statuses) == 2)
        denied = queue["events"].post(
            "/events",
            json=purchase("P-3", consent={"ad_storage": "DENIED"}, **{"x-fb-ck-fbp": fbp}),
            headers={"X-Capi-Set-Cookies": "1"},
        )
    assert denied.get_json()["set_cookies"] == []
    assert router.statuses == [200, 200]  # the repeat is acked: a duplicate order is final
    assert graph.fake.delivered == {("Purchase", "P-1"): 1}
