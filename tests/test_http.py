"""The HTTP function as callers see it: functions-framework app, loopback fake Graph API."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest

from tests.conftest import PIXEL_ID, TOKEN, base_env, make_app

UA = "Mozilla/5.0"


def purchase(event_id: str = "ORDER-1", **extra: Any) -> dict[str, Any]:
    base = {
        "event_name": "purchase",
        "event_id": event_id,
        "page_location": "https://shop.example.com/ok",
        "user_agent": UA,
        "value": 10,
        "currency": "USD",
        "user_data": {"email_address": "a@b.co"},
    }
    base.update(extra)
    return base


def test_forward_one_event(graph: Any, make_client: Any) -> None:
    client = make_client(base_env(graph))
    response = client.post("/events", json=purchase())
    assert response.status_code == 200
    assert response.get_json() == {
        "received": 1,
        "forwarded": 1,
        "stored": 0,
        "failed": [],
        "skipped": [],
        "rejected": [],
        "event_ids": ["ORDER-1"],
        "events_received": 1,
        "fbtrace_id": "AbCdEf123",
        "messages": [],
    }
    body = graph.fake.bodies[0]
    assert body["access_token"] == TOKEN
    assert body["partner_agent"] == "capi-gcf-0.3.0"
    assert body["data"][0]["user_data"]["em"] == [hashlib.sha256(b"a@b.co").hexdigest()]
    assert "test_event_code" not in body


def test_root_path_forwards_too_and_test_event_code_from_request(graph: Any, make_client: Any) -> None:
    client = make_client(base_env(graph, META_TEST_EVENT_CODE="ENVCODE"))
    assert client.post("/", json={"events": [purchase()], "test_event_code": "REQCODE"}).status_code == 200
    assert client.post("/", json={"events": [purchase("O-2")]}).status_code == 200
    assert [b["test_event_code"] for b in graph.fake.bodies] == ["REQCODE", "ENVCODE"]


def test_validate_sends_nothing_and_returns_exact_body(graph: Any, make_client: Any) -> None:
    client = make_client(base_env(graph))
    response = client.post("/validate", json={"events": [purchase(), {"event_name": "page_view"}]})
    assert response.status_code == 200
    body = response.get_json()
    assert graph.fake.requests == 0
    assert body["payload"]["data"][0]["event_id"] == "ORDER-1"
    assert "access_token" not in json.dumps(body)
    assert body["match_keys"] == [
        {
            "index": 0,
            "event_id": "ORDER-1",
            "from_event": ["em", "client_user_agent"],
            "from_profile": [],
            "dialect": "ga4",
        }
    ]
    assert body["dialect"] == "ga4"
    assert body["skipped"] == [{"index": 1, "event_id": None, "reason": "not in FORWARD_EVENTS"}]


def test_bad_and_good_events_in_one_request(graph: Any, make_client: Any) -> None:
    client = make_client(base_env(graph))
    response = client.post(
        "/events",
        json={
            "events": [
                purchase("good-1"),
                purchase("bad", event_time=int(time.time()) - 9 * 86400),
                purchase("good-2"),
            ]
        },
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["forwarded"] == 2 and body["event_ids"] == ["good-1", "good-2"]
    assert body["rejected"] == [
        {
            "index": 1,
            "event_id": "bad",
            "field": "event_time",
            "message": "older than 7 days: Meta does not accept it",
            "problems": [{"field": "event_time", "message": "older than 7 days: Meta does not accept it"}],
        }
    ]
    assert graph.fake.requests == 1 and graph.fake.accepted_requests == 1


def test_healthz(make_client: Any) -> None:
    response = make_client(base_env(DRY_RUN="true")).get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "version": "0.3.0"}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "error"),
    [
        ("get", "/events", {}, 405, "method_not_allowed"),
        ("put", "/validate", {}, 405, "method_not_allowed"),
        ("post", "/nope", {"json": {}}, 404, "not_found"),
        ("post", "/events", {"data": "event_name=x"}, 415, "unsupported_media_type"),
        ("post", "/events", {"data": "{", "content_type": "application/json"}, 400, "bad_request"),
        ("post", "/events", {"data": b"\xff\xfe", "content_type": "application/json"}, 400, "bad_request"),
        ("post", "/events", {"data": '{"a": NaN}', "content_type": "application/json"}, 400, "bad_request"),
        (
            "post",
            "/events",
            {"data": "[" * 100000 + "]" * 100000, "content_type": "application/json"},
            400,
            "bad_request",
        ),
        ("post", "/events", {"json": []}, 400, "bad_request"),
        ("post", "/events", {"json": {"events": []}}, 400, "bad_request"),
        ("post", "/events", {"json": {"events": [{"event_name": "x"}] * 1001}}, 400, "bad_request"),
        (
            "post",
            "/events",
            {"data": "x" * (1024 * 1024 + 1), "content_type": "application/json"},
            413,
            "payload_too_large",
        ),
    ],
)
def test_request_errors_are_json(
    make_client: Any, method: str, path: str, kwargs: dict[str, Any], status: int, error: str
) -> None:
    client = make_client(base_env(DRY_RUN="true"))
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert response.get_json()["error"] == error


def test_permanent_meta_error_is_502_with_message_and_trace(graph: Any, make_client: Any) -> None:
    graph.fake.fail_next("code:100")
    response = make_client(base_env(graph)).post("/events", json=purchase())
    assert response.status_code == 502
    body = response.get_json()
    assert (body["error"], body["meta_code"], body["fbtrace_id"]) == ("meta_refused", 100, "TRACE100")
    assert body["message"] == "error code 100"
    assert body["forwarded"] == 0 and body["received"] == 1
    assert graph.fake.requests == 1  # never retried


def test_thirty_sequential_requests_use_one_connection(graph: Any, make_client: Any) -> None:
    client = make_client(base_env(graph))
    for n in range(30):
        assert client.post("/events", json=purchase(f"O-{n}")).status_code == 200
    assert graph.fake.requests == 30
    assert graph.fake.connections == 1


def test_thousand_events_one_post(graph: Any, make_client: Any) -> None:
    client = make_client(base_env(graph))
    events = [purchase(f"O-{n}") for n in range(1000)]
    response = client.post("/events", json={"events": events})
    assert response.status_code == 200
    assert response.get_json()["events_received"] == 1000
    assert graph.fake.requests == 1 and len(graph.fake.bodies[0]["data"]) == 1000


def test_url_has_version_and_pixel_and_no_token(graph: Any, make_client: Any) -> None:
    app = make_app(graph, META_API_VERSION="v25.0")
    assert app.graph.url == f"{graph.base_url}/v25.0/{PIXEL_ID}/events"
    assert TOKEN not in app.graph.url


def test_appsecret_proof_sent_when_configured(graph: Any, make_client: Any) -> None:
    graph.fake.app_secret = "app-secret"
    response = make_client(base_env(graph, META_APP_SECRET="app-secret")).post("/events", json=purchase())
    assert response.status_code == 200
    import hmac

    expected = hmac.new(b"app-secret", TOKEN.encode(), hashlib.sha256).hexdigest()
    assert graph.fake.bodies[0]["appsecret_proof"] == expected


def test_dry_run_sends_nothing(graph: Any, make_client: Any) -> None:
    response = make_client(base_env(graph, DRY_RUN="true")).post("/events", json=purchase())
    assert response.status_code == 200
    assert response.get_json()["dry_run"] is True
    assert graph.fake.requests == 0
