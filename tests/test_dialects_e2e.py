"""Each input dialect through /events to the fake Graph API: the exact event Meta received,
built from public payloads (tests/payloads/, each naming its source)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests import dialects as d
from tests.conftest import TOKEN, base_env

CASES: list[tuple[str, Callable[[int], Any], Callable[[int], dict[str, Any]], str]] = [
    ("meta", d.meta_body, d.meta_expected, "meta"),
    ("meta_tag", d.meta_tag_event, d.meta_tag_expected, "meta_tag"),
    ("stape", d.stape_event, d.stape_expected, "stape"),
    ("measurement_protocol", lambda now: d.mp_body(now, website_ready=True), d.mp_expected, "measurement_protocol"),
    ("ga4", d.sgtm_event, d.sgtm_expected, "ga4"),
    ("bare_array", lambda now: [d.sgtm_event(now)], d.sgtm_expected, "ga4"),
]


@pytest.fixture
def client(graph: Any, make_client: Any) -> Any:
    return make_client(base_env(graph, FORWARD_EVENTS="*", DEFAULT_COUNTRY="US"))


@pytest.mark.parametrize(("name", "payload", "expected", "dialect"), CASES, ids=[c[0] for c in CASES])
def test_dialect_reaches_meta_exactly(
    client: Any,
    graph: Any,
    name: str,
    payload: Callable[[int], Any],
    expected: Callable[[int], dict[str, Any]],
    dialect: str,
) -> None:
    now = int(time.time()) - 5
    validated = client.post("/validate", json=payload(now)).get_json()
    assert validated["dialect"] == dialect
    assert [m["dialect"] for m in validated["match_keys"]] == [dialect]
    response = client.post("/events", json=payload(now))
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["forwarded"] == 1 and answer["rejected"] == [] and answer["skipped"] == []
    assert graph.fake.requests == graph.fake.accepted_requests == 1
    body = graph.fake.bodies[0]
    assert body["access_token"] == TOKEN  # capi's own token, never a body's
    want = expected(now)
    if want["event_id"].startswith("minted-"):  # a uuid4 minted once, returned in event_ids
        [minted] = answer["event_ids"]
        assert str(uuid.UUID(minted, version=4)) == minted
        want["event_id"] = minted  # and Meta received the id the caller was told
    else:
        assert answer["event_ids"] == [want["event_id"]]
    assert body["data"] == [want]


def test_meta_body_test_event_code_honoured_and_its_token_never_used(client: Any, graph: Any) -> None:
    payload = d.meta_body(int(time.time()) - 5)
    assert client.post("/events", json=payload).status_code == 200
    assert graph.fake.bodies[0]["test_event_code"] == "TEST12345"
    assert graph.fake.bodies[0]["access_token"] == TOKEN


def test_same_event_twice_in_one_request_is_sent_once(client: Any, graph: Any) -> None:
    now = int(time.time()) - 5
    event = d.sgtm_event(now)
    answer = client.post("/events", json=[event, dict(event)]).get_json()
    assert answer["forwarded"] == 1
    assert answer["skipped"] == [{"index": 1, "event_id": "ORDER-1001", "reason": "duplicate"}]
    assert graph.fake.delivered[("Purchase", "ORDER-1001")] == 1
    assert len(graph.fake.bodies[0]["data"]) == 1


def test_a_meta_bodys_access_token_is_never_used_logged_or_answered(
    client: Any, graph: Any, capfd: Any, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    payload = d.meta_body(int(time.time()) - 5)
    payload["access_token"] = "EAAB-caller-token-SECRET-5151"
    answers = [client.post(path, json=payload).get_data(as_text=True) for path in ("/validate", "/events")]
    captured = capfd.readouterr()
    everything = "\n".join([*answers, captured.out, captured.err, caplog.text, json.dumps(graph.fake.bodies)])
    assert "SECRET-5151" not in everything
    assert graph.fake.bodies[0]["access_token"] == TOKEN
