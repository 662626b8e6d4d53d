"""Firestore profile enrichment against the real Firestore emulator."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from typing import Any

import pytest

from capi.app import Application
from capi.config import load_config
from tests.conftest import CountingFirestore, at_once, base_env, log_lines, make_app, serve
from tests.fakes.emulator import firestore_client_at

pytestmark = pytest.mark.emulator
UA = "Mozilla/5.0"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def lead(user_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_name": "generate_lead",
        "event_id": f"L-{user_id}",
        "user_id": user_id,
        "page_location": "https://x.example/",
        "user_agent": UA,
        **extra,
    }


def test_profile_fills_what_the_event_lacks_and_event_wins(firestore_db: Any, graph: Any) -> None:
    firestore_db.collection("users").document("u1").set(
        {
            "email": ["Jane@Example.com", "jane.doe@work.example"],
            "phone": "020 7946 0958",
            "first_name": "Jane",
            "city": "London",
            "country": "United Kingdom",
            "zip": "SW1A 1AA",
            "gender": "female",
            "date_of_birth": "1990-05-17",
        }
    )
    client = serve(make_app(graph, firestore=firestore_db, PROFILE_COLLECTION="users", DEFAULT_COUNTRY="US"))
    event = lead("u1", user_data={"address": {"first_name": "Janet"}})
    assert client.post("/events", json=event).status_code == 200
    user = graph.fake.bodies[0]["data"][0]["user_data"]
    assert user == {
        "em": [sha("jane@example.com"), sha("jane.doe@work.example")],
        "ph": [sha("442079460958")],  # the profile's country completes the national number, not DEFAULT_COUNTRY
        "fn": [sha("janet")],  # the event's value wins
        "ge": [sha("f")],
        "db": [sha("19900517")],
        "ct": [sha("london")],
        "zp": [sha("sw1a1aa")],
        "country": [sha("gb")],
        "external_id": [sha("u1")],
        "client_user_agent": UA,
    }
    body = client.post("/validate", json=event).get_json()
    assert body["match_keys"] == [
        {
            "index": 0,
            "event_id": "L-u1",
            "from_event": ["external_id", "fn", "client_user_agent"],
            "from_profile": ["em", "ph", "ge", "db", "ct", "zp", "country"],
            "dialect": "ga4",
        }
    ]
    assert "jane" not in str(body["match_keys"]).lower()


def test_event_value_dropped_lets_profile_fill(firestore_db: Any, graph: Any) -> None:
    firestore_db.collection("users").document("u2").set({"email": "good@example.com"})
    client = serve(make_app(graph, firestore=firestore_db, PROFILE_COLLECTION="users"))
    assert client.post("/events", json=lead("u2", user_data={"email_address": "broken"})).status_code == 200
    assert graph.fake.bodies[0]["data"][0]["user_data"]["em"] == [sha("good@example.com")]


def test_validate_never_shows_a_value_from_a_profile(firestore_db: Any) -> None:
    # Issue 10 finding 10: any key holder could read each profile's digests through /validate
    # with {"user_id": N, "user_data": {}} and recover phone numbers by enumeration.
    firestore_db.collection("users").document("42").set(
        {"email": "victim@example.com", "phone": "+16505550123", "first_name": "Vic", "last_name": "Tim"}
    )
    client = serve(make_app(firestore=firestore_db, PROFILE_COLLECTION="users"))
    probe = lead("42", user_data={})
    body = client.post("/validate", json=probe).get_json()
    user = body["payload"]["data"][0]["user_data"]
    placeholder = "(from the Firestore profile: not shown)"
    assert user == {
        "external_id": [sha("42")],  # the caller's own user_id
        "client_user_agent": UA,
        "em": [placeholder],
        "ph": [placeholder],
        "fn": [placeholder],
        "ln": [placeholder],
    }
    assert body["match_keys"][0]["from_profile"] == ["em", "ph", "fn", "ln"]
    assert {
        "message": "values filled from Firestore profiles are not shown (placeholder instead);"
        " match_keys.from_profile names their keys"
    } in body["messages"]
    text = client.post("/validate", json=probe).get_data(as_text=True)
    for secret in ("victim@example.com", "16505550123", "vic", "tim"):
        assert sha(secret) not in text


def test_unknown_user_is_sent_with_what_it_has(firestore_db: Any) -> None:
    client = serve(make_app(firestore=firestore_db, PROFILE_COLLECTION="users"))
    body = client.post("/validate", json=lead("nobody", user_data={"em": "a@b.co"})).get_json()
    assert body["payload"]["data"][0]["user_data"]["em"] == [sha("a@b.co")]
    assert body["match_keys"][0]["from_profile"] == []


def test_thousand_distinct_users_one_batched_read(firestore_db: Any, graph: Any) -> None:
    batch = firestore_db.batch()
    for n in range(1000):
        batch.set(firestore_db.collection("users").document(f"user-{n}"), {"email": f"user{n}@example.com"})
        if n % 500 == 499:
            batch.commit()
            batch = firestore_db.batch()
    counting = CountingFirestore(firestore_db)
    client = serve(make_app(graph, firestore=counting, PROFILE_COLLECTION="users"))
    response = client.post("/events", json={"events": [lead(f"user-{n}") for n in range(1000)]})
    assert response.status_code == 200
    assert response.get_json()["events_received"] == 1000
    assert counting.get_all_calls == 1 and counting.documents_read == 1000
    sent = graph.fake.bodies[0]["data"]
    assert sent[999]["user_data"]["em"] == [sha("user999@example.com")]
    assert graph.fake.requests == 1


def test_repeated_user_read_once(firestore_db: Any) -> None:
    firestore_db.collection("users").document("u").set({"email": "x@y.co"})
    counting = CountingFirestore(firestore_db)
    client = serve(make_app(firestore=counting, PROFILE_COLLECTION="users"))
    events = [lead("u", event_id=f"e{n}") for n in range(5)]
    assert client.post("/validate", json={"events": events}).status_code == 200
    assert counting.get_all_calls == 1 and counting.documents_read == 1


@pytest.mark.parametrize("mode", ["refused", "silent"])
def test_firestore_down_or_slow_never_blocks_forwarding(
    firestore_emulator: str, graph: Any, capsys: Any, mode: str
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if mode == "silent":
        listener.listen(16)  # accepts connections, never answers: a hung Firestore
    else:
        listener.close()  # nothing listens: connection refused
    try:
        firestore = firestore_client_at(f"127.0.0.1:{port}")
        client = serve(make_app(graph, firestore=firestore, PROFILE_COLLECTION="users", FIRESTORE_TIMEOUT_SECONDS="1"))
        started = time.monotonic()
        response = client.post("/events", json=lead("u9", user_data={"em": "a@b.co"}))
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    assert response.status_code == 200
    body = response.get_json()
    assert body["forwarded"] == 1 and graph.fake.accepted_requests == 1
    assert {"message": "profile lookup failed; events sent without enrichment"} in body["messages"]
    assert elapsed < 3.5
    [warning] = log_lines(capsys.readouterr().out, "profile lookup failed; events sent without enrichment")
    assert warning["severity"] == "WARNING"


def test_client_created_lazily_once(firestore_db: Any) -> None:
    created: list[int] = []
    lock = threading.Lock()

    def factory() -> Any:
        with lock:
            created.append(1)
        return firestore_db

    from capi.lazy import Lazy

    holder = Lazy(factory)
    # The constructor itself is under test: built here, with make_app's dry-run environment.
    app = Application(load_config(base_env(DRY_RUN="true", PROFILE_COLLECTION="users")), firestore_client=holder)
    assert created == []  # nothing created at start-up
    client = serve(app)
    at_once(*[lambda: client.post("/validate", json=lead("u"))] * 8)
    assert created == [1]


def test_enrichment_off_with_empty_collection(firestore_db: Any) -> None:
    firestore_db.collection("users").document("u").set({"email": "x@y.co"})
    counting = CountingFirestore(firestore_db)
    client = serve(make_app(firestore=counting, PROFILE_COLLECTION=""))
    body = client.post("/validate", json=lead("u")).get_json()
    assert "em" not in body["payload"]["data"][0]["user_data"]
    assert counting.get_all_calls == 0
