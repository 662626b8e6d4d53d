"""No token, key or raw personal data in any log line, response or stored dead letter."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from capi.app import Application
from tests.conftest import make_app, serve
from tests.fakes.emulator import dead_firestore

pytestmark = pytest.mark.emulator

TOKEN = "EAAB-token-SECRET-7731"
APP_SECRET = "app-secret-SECRET-1188"
INGEST_KEY = "ingest-key-SECRET-4242"
PII = [
    "pii.person@example.com",
    "6505550199",
    "Zebulon",
    "Quixotic-Lastname",
    "Xanadu City",
    "1987-03-14",
    "profile.only@example.org",
    "user-raw-id-991",
]


def event(event_id: str) -> dict[str, Any]:
    return {
        "event_name": "purchase",
        "event_id": event_id,
        "value": 3,
        "currency": "USD",
        "page_location": "https://shop.example.com/ok",
        "user_agent": "Mozilla/5.0",
        "user_id": "user-raw-id-991",
        "user_data": {
            "email_address": "pii.person@example.com",
            "phone_number": "+1 650 555 0199",
            "address": {"first_name": "Zebulon", "last_name": "Quixotic-Lastname", "city": "Xanadu City"},
            "db": "1987-03-14",
        },
    }


def build(graph: Any, firestore: Any, **env: str) -> Application:
    """Every secret set, profiles on, DEBUG logs: the most a log line could carry."""
    return make_app(
        graph,
        firestore=firestore,
        META_ACCESS_TOKEN=TOKEN,
        META_APP_SECRET=APP_SECRET,
        INGEST_API_KEY=INGEST_KEY,
        PROFILE_COLLECTION="users",
        LOG_LEVEL="DEBUG",
        **env,
    )


def test_nothing_secret_or_personal_leaks(firestore_db: Any, graph: Any, capfd: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    graph.fake.token = TOKEN
    graph.fake.app_secret = APP_SECRET
    firestore_db.collection("users").document("user-raw-id-991").set({"email": "profile.only@example.org"})
    app = build(graph, firestore_db)
    client = serve(app)
    auth = {"X-Api-Key": INGEST_KEY}
    outputs: list[str] = []

    def call(path: str, **kwargs: Any) -> Any:
        response = client.post(path, **kwargs)
        outputs.append(response.get_data(as_text=True))
        return response

    # success, validation, bad input, wrong key
    assert call("/events", json=event("A"), headers=auth).status_code == 200
    assert call("/validate", json=event("B"), headers=auth).status_code == 200
    assert (
        call("/events", json={"events": [event("C"), {"event_name": 5, "user_data": PII}]}, headers=auth).status_code
        == 200
    )
    assert (
        call(
            "/events", data="not json pii.person@example.com", content_type="application/json", headers=auth
        ).status_code
        == 400
    )
    assert call("/events", json=event("D"), headers={"X-Api-Key": "wrong"}).status_code == 401
    # Meta down -> dead letter; Meta back -> replay
    graph.fake.down = "503"
    assert call("/events", json=event("E"), headers=auth).status_code == 202
    graph.fake.down = None
    assert client.post("/replay").status_code == 200
    # permanent refusal and token rejected
    graph.fake.fail_next("code:100")
    assert call("/events", json=event("F"), headers=auth).status_code == 502
    graph.fake.token = "another-token"
    assert call("/events", json=event("G"), headers=auth).status_code == 202  # meta_config: stored
    graph.fake.token = TOKEN
    # Firestore down: profile lookup and dead-letter write both fail
    down_client = serve(build(graph, dead_firestore(), FIRESTORE_TIMEOUT_SECONDS="0.5"))
    assert down_client.post("/events", json=event("H"), headers=auth).status_code == 200
    graph.fake.down = "503"
    response = down_client.post("/events", json=event("I"), headers=auth)
    outputs.append(response.get_data(as_text=True))
    assert response.status_code == 503

    stored = json.dumps([d.to_dict() for d in firestore_db.collection("capi_deadletter").stream()])
    captured = capfd.readouterr()
    everything = "\n".join([*outputs, captured.out, captured.err, caplog.text, stored])
    assert '"severity"' in captured.out  # the logs were captured, and are JSON
    for secret in [TOKEN, APP_SECRET, INGEST_KEY, *PII, "zebulon", "16505550199", "xanaducity", "19870314"]:
        assert secret.lower() not in everything.lower(), secret
