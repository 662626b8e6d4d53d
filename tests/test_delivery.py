"""Never lose a conversion: dead letters, replay, idempotency and faults.

Real peers only: the loopback fake Graph API and the Firestore emulator.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from capi.delivery.deadletter import FirestoreDeadLetter
from capi.delivery.replay import Replayer
from tests.conftest import PIXEL_ID, at_once, make_app, purchase, serve
from tests.fakes.emulator import dead_firestore

pytestmark = pytest.mark.emulator
EMAIL = "pii.person@example.com"


def dead_letters(db: Any) -> list[dict[str, Any]]:
    return [d.to_dict() for d in db.collection("capi_deadletter").stream()]


def test_meta_down_stores_then_replay_delivers_exactly_once(firestore_db: Any, graph: Any) -> None:
    # GIVEN Meta is down for the whole request
    graph.fake.down = "503"
    app = make_app(graph, firestore=firestore_db, META_TEST_EVENT_CODE="TEST42")
    client = serve(app)
    response = client.post(
        "/events",
        json={
            "events": [purchase(f"O-{n}", user_data={"email_address": EMAIL}) for n in range(3)] + [{"event_name": 1}]
        },
    )
    # THEN the caller gets 202 with the count stored, and nothing raw is kept
    assert response.status_code == 202
    body = response.get_json()
    assert (body["stored"], body["forwarded"], body["error"]) == (3, 0, "meta_unavailable")
    assert body["event_ids"] == ["O-0", "O-1", "O-2"] and len(body["rejected"]) == 1
    assert graph.fake.requests == 4  # one call and three retries
    stored = dead_letters(firestore_db)
    assert sorted(d["event_id"] for d in stored) == ["O-0", "O-1", "O-2"]
    assert all(d["attempts"] == 1 and d["test_event_code"] == "TEST42" for d in stored)
    assert EMAIL not in json.dumps(stored)
    original = {d["event_id"]: json.loads(d["event_json"]) for d in stored}
    # WHEN Meta is back and the replay runs
    graph.fake.down = None
    replay = client.post("/replay")
    assert replay.status_code == 200
    assert replay.get_json() == {
        "found": 3,
        "claimed": 3,
        "delivered": 3,
        "failed": 0,
        "expired": 0,
        "gave_up": 0,
        "busy": 0,
        "rejected": 0,
    }
    # THEN every stored event reached Meta once, with its original event_id and event_time
    assert dead_letters(firestore_db) == []
    assert graph.fake.delivered == {("Purchase", f"O-{n}"): 1 for n in range(3)}
    sent = {e["event_id"]: e for e in graph.fake.bodies[-1]["data"]}
    assert sent == original
    assert graph.fake.bodies[-1]["test_event_code"] == "TEST42"
    # AND a second replay finds nothing
    assert client.post("/replay").get_json()["found"] == 0


def test_meta_failing_midway_is_retried_within_the_request(firestore_db: Any, graph: Any) -> None:
    graph.fake.fail_next("500", "drop", "code:2")
    client = serve(make_app(graph, firestore=firestore_db))
    response = client.post("/events", json={"events": [purchase("A"), purchase("B")]})
    assert response.status_code == 200 and response.get_json()["forwarded"] == 2
    assert graph.fake.requests == 4 and graph.fake.duplicates == 0
    assert dead_letters(firestore_db) == []


def test_replay_failing_midway_keeps_the_rest_for_next_time(firestore_db: Any, graph: Any) -> None:
    graph.fake.down = "503"
    app = make_app(graph, firestore=firestore_db)
    client = serve(app)
    assert client.post("/events", json={"events": [purchase(f"O-{n}") for n in range(6)]}).status_code == 202
    graph.fake.down = None
    graph.fake.fail_next(*["code:2"] * 4)  # the first batch meets Meta down; the others go through
    first = Replayer(lambda: firestore_db, "capi_deadletter", app.graph, batch_size=2).run()
    assert (first["delivered"], first["failed"]) == (4, 2)
    left = dead_letters(firestore_db)
    assert len(left) == 2 and all(d["attempts"] == 2 and d["lease_until"] == 0 for d in left)
    second = client.post("/replay").get_json()
    assert (second["delivered"], second["failed"]) == (2, 0)
    assert sum(graph.fake.delivered.values()) == 6 and graph.fake.duplicates == 0


def test_replay_drops_expired_and_exhausted(firestore_db: Any, graph: Any) -> None:
    from capi.errors import MetaError

    store = FirestoreDeadLetter(lambda: firestore_db, "capi_deadletter", PIXEL_ID)
    now = int(time.time())
    old = {
        "event_name": "Purchase",
        "event_id": "old",
        "event_time": now - 7 * 86400 + 30,
        "action_source": "app",
        "user_data": {"em": ["a" * 64]},
    }
    fresh = {**old, "event_id": "fresh", "event_time": now - 60}
    tired = {**old, "event_id": "tired", "event_time": now - 60}
    store.store([old, fresh, tired], MetaError("down", transient=True), None)
    for snap in firestore_db.collection("capi_deadletter").stream():
        if snap.to_dict()["event_id"] == "tired":
            snap.reference.update({"attempts": 3})
    app = make_app(graph, firestore=firestore_db, REPLAY_MAX_ATTEMPTS="3")
    counts = serve(app).post("/replay").get_json()
    assert (counts["expired"], counts["gave_up"], counts["delivered"]) == (1, 1, 1)
    assert list(graph.fake.delivered) == [("Purchase", "fresh")]
    assert dead_letters(firestore_db) == []


def test_two_concurrent_replays_send_each_event_once(firestore_db: Any, graph: Any) -> None:
    graph.fake.down = "503"
    app_a = make_app(graph, firestore=firestore_db)
    client = serve(app_a)
    for start in range(0, 200, 50):
        events = [purchase(f"O-{n}") for n in range(start, start + 50)]
        assert client.post("/events", json={"events": events}).status_code == 202
    graph.fake.down = None
    graph.fake.latency = 0.05
    app_b = make_app(graph, firestore=firestore_db)
    results: list[dict[str, int]] = []
    at_once(lambda: results.append(app_a.replayer.run()), lambda: results.append(app_b.replayer.run()))
    assert sum(r["delivered"] for r in results) == 200
    assert len(graph.fake.delivered) == 200 and graph.fake.duplicates == 0
    assert dead_letters(firestore_db) == []


def test_firestore_down_during_dead_letter_write_is_503(firestore_emulator: str, graph: Any) -> None:
    graph.fake.down = "503"
    client = serve(make_app(graph, firestore=dead_firestore()))
    started = time.monotonic()
    response = client.post("/events", json=purchase("O-1"))
    assert time.monotonic() - started < 10  # bounded: Firestore's default retry would hold the caller a minute
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"] == "store_unavailable" and body["stored"] == 0 and "retry" in body["message"]
    assert body["event_ids"] == []


def test_concurrent_requests_on_one_instance_deliver_every_event_once(firestore_db: Any, graph: Any) -> None:
    graph.fake.latency = 0.02
    graph.fake.fail_next("503", "drop", "429")  # some requests meet transient failures along the way
    # Eight requests released together on two shared cores: an answer read past the call's
    # timeout counts as unreadable (stored, 202), which is not what this test is about.
    app = make_app(graph, firestore=firestore_db, META_TIMEOUT_SECONDS="5")
    client_lock = threading.Lock()
    statuses: list[int] = []

    def caller(worker: int) -> None:
        client = serve(app)
        for n in range(10):
            response = client.post("/events", json={"events": [purchase(f"W{worker}-{n}-{k}") for k in range(5)]})
            with client_lock:
                statuses.append(response.status_code)

    at_once(*[lambda w=w: caller(w) for w in range(8)])
    assert statuses == [200] * 80
    assert len(graph.fake.delivered) == 400 and graph.fake.duplicates == 0
    assert graph.fake.connections <= 16  # pooled keep-alive connections, not one per request


def test_idempotency_guard_skips_a_repeat(firestore_db: Any, graph: Any) -> None:
    client = serve(make_app(graph, firestore=firestore_db, IDEMPOTENCY_COLLECTION="capi_sent"))
    first = client.post("/events", json={"events": [purchase("O-1"), purchase("O-2")]}).get_json()
    assert first["forwarded"] == 2
    again = client.post("/events", json={"events": [purchase("O-1"), purchase("O-3")]}).get_json()
    assert again["forwarded"] == 1 and again["event_ids"] == ["O-3"]
    assert again["skipped"] == [{"index": 0, "event_id": "O-1", "reason": "duplicate"}]
    assert graph.fake.delivered[("Purchase", "O-1")] == 1
    records = {d.to_dict()["event_id"]: d.to_dict() for d in firestore_db.collection("capi_sent").stream()}
    assert {r["status"] for r in records.values()} == {"delivered"}
    assert all(r["expires"] > time.time() + 47 * 3600 for r in records.values())


def test_idempotency_claim_released_when_delivery_fails(firestore_db: Any, graph: Any) -> None:
    client = serve(make_app(graph, firestore=firestore_db, IDEMPOTENCY_COLLECTION="capi_sent"))
    graph.fake.fail_next("code:100")
    assert client.post("/events", json=purchase("O-1")).status_code == 502
    assert client.post("/events", json=purchase("O-1")).get_json()["forwarded"] == 1
    assert graph.fake.delivered[("Purchase", "O-1")] == 1


def test_idempotency_concurrent_same_event_sent_once(firestore_db: Any, graph: Any) -> None:
    graph.fake.latency = 0.05
    app = make_app(graph, firestore=firestore_db, IDEMPOTENCY_COLLECTION="capi_sent")
    bodies: list[dict[str, Any]] = []
    statuses: list[int] = []

    def caller() -> None:
        response = serve(app).post("/events", json=purchase("SAME"))
        statuses.append(response.status_code)
        bodies.append(response.get_json())

    at_once(*[caller] * 6)
    assert graph.fake.delivered[("Purchase", "SAME")] == 1
    assert sorted(b["forwarded"] for b in bodies) == [0, 0, 0, 0, 0, 1]
    # the others were told "in flight, retry" (503) while it was being delivered, or
    # "duplicate" (200) once it was: never dropped as a duplicate before Meta had it
    for status, body in zip(statuses, bodies, strict=True):
        if body["forwarded"] == 0:
            [skip] = body["skipped"]
            assert (status, skip["reason"]) in ((503, "in flight"), (200, "duplicate"))


def test_expired_idempotency_record_is_taken_over(firestore_db: Any, graph: Any) -> None:
    app = make_app(graph, firestore=firestore_db, IDEMPOTENCY_COLLECTION="capi_sent")
    client = serve(app)
    assert client.post("/events", json=purchase("O-1")).get_json()["forwarded"] == 1
    for snap in firestore_db.collection("capi_sent").stream():
        snap.reference.update({"expires": time.time() - 1})
    assert client.post("/events", json=purchase("O-1")).get_json()["forwarded"] == 1
    assert graph.fake.delivered[("Purchase", "O-1")] == 2  # past 48 h the guard no longer applies
