"""Property-based hardening: whatever arrives, the answer is JSON, never a 5xx, and nothing
invalid reaches Meta (the fake Graph API validates every body as Meta does)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import base_env

FIELDS = [
    "event_name",
    "event_id",
    "event_time",
    "page_location",
    "event_source_url",
    "page_referrer",
    "ip_override",
    "client_ip_address",
    "user_agent",
    "x-fb-ck-fbp",
    "x-fb-ck-fbc",
    "fbc",
    "fbp",
    "user_id",
    "external_id",
    "value",
    "currency",
    "transaction_id",
    "items",
    "search_term",
    "custom_data",
    "action_source",
    "consent",
    "data_processing_options",
    "data_processing_options_country",
    "data_processing_options_state",
    "opt_out",
    "ecommerce",
    "user_data",
]
USER_FIELDS = [
    "email_address",
    "em",
    "email",
    "phone_number",
    "ph",
    "phone",
    "sha256_email_address",
    "sha256_phone_number",
    "address",
    "fn",
    "ln",
    "ct",
    "st",
    "zp",
    "country",
    "db",
    "date_of_birth",
    "ge",
    "gender",
    "external_id",
    "client_ip_address",
]
ADDRESS_FIELDS = ["first_name", "last_name", "city", "region", "postal_code", "country", "sha256_first_name"]

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)


def plausible_text(field: str) -> st.SearchStrategy[Any]:
    samples = {
        "event_name": st.sampled_from(["purchase", "add_to_cart", "generate_lead", "Purchase", "page_view", "x"]),
        "page_location": st.sampled_from(["https://x.example/?fbclid=AbC", "http://a.b/", "ftp://x", "not a url"]),
        "user_agent": st.sampled_from(["Mozilla/5.0", "", "curl/8"]),
        "currency": st.sampled_from(["USD", "eur", "XYZ", "dollars", ""]),
        "action_source": st.sampled_from(["website", "app", "system_generated", "fax"]),
        "event_time": st.one_of(
            st.integers(1_700_000_000, 1_900_000_000), st.sampled_from(["2026-11-26T10:00:00Z", "yesterday"])
        ),
    }
    return samples.get(field, json_value)


address = st.fixed_dictionaries({}, optional={f: json_value for f in ADDRESS_FIELDS})
user_data = st.fixed_dictionaries(
    {},
    optional={
        **{f: st.one_of(json_value, st.text(max_size=30)) for f in USER_FIELDS},
        "address": st.one_of(address, json_value),
    },
)
event = st.fixed_dictionaries(
    {"event_name": plausible_text("event_name")},
    optional={
        **{f: plausible_text(f) for f in FIELDS if f not in ("event_name", "user_data")},
        "user_data": st.one_of(user_data, json_value),
    },
)
bodies = st.one_of(
    json_value,
    event,
    st.fixed_dictionaries(
        {"events": st.lists(st.one_of(event, json_value), max_size=6)}, optional={"test_event_code": json_value}
    ),
)

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def check(response: Any, graph: Any) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    json.loads(response.get_data(as_text=True))
    # Every request that reached the fake was accepted: capi sent nothing Meta would refuse.
    assert graph.fake.requests == graph.fake.accepted_requests


@pytest.fixture
def fuzz_client(graph: Any, make_client: Any) -> Any:
    graph.fake.now = time.time
    return make_client(base_env(graph, FORWARD_EVENTS="*", DEFAULT_COUNTRY="US"))


@SETTINGS
@given(body=bodies)
def test_arbitrary_json_bodies(fuzz_client: Any, graph: Any, body: Any) -> None:
    check(fuzz_client.post("/events", json=body), graph)


@SETTINGS
@given(body=st.lists(event, min_size=1, max_size=5))
def test_event_batches_validate_and_forward_agree(fuzz_client: Any, graph: Any, body: list[Any]) -> None:
    validated = fuzz_client.post("/validate", json={"events": body})
    check(validated, graph)
    forwarded = fuzz_client.post("/events", json={"events": body})
    check(forwarded, graph)
    v, f = validated.get_json(), forwarded.get_json()
    assert len(v["payload"]["data"]) == f["forwarded"]
    assert v["rejected"] == f["rejected"]
    assert v["received"] == len(v["event_ids"]) + len(v["skipped"]) + len(v["rejected"])
    assert len(f["skipped"]) + len(f["rejected"]) + f["forwarded"] == f["received"]


@SETTINGS
@given(
    raw=st.binary(max_size=200),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/json; charset=latin-1",
            "text/plain",
            "",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/ld+json",
            "application/json; charset=utf-8",
        ]
    ),
)
def test_arbitrary_bytes_and_content_types(fuzz_client: Any, graph: Any, raw: bytes, content_type: str) -> None:
    check(fuzz_client.post("/events", data=raw, content_type=content_type or None), graph)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event_name": "' + b"a" * 900_000 + b'"}',
        b"[" * 50_000 + b"]" * 50_000,
        b'{"events": [' + b'{"event_name": "purchase", "user_data": ' * 3000 + b"1" + b"}" * 3000 + b"]}",
        b'{"event_name": "purchase", "event_id": "\xed\xa0\x80"}',
        b'{"event_name": "purchase", "event_id": "\\ud800"}',
        json.dumps({"events": [{"event_name": "purchase", "user_data": {"em": ["a@b.co"] * 50_000}}]}).encode(),
    ],
    ids=["huge-string", "deep-list", "deep-objects", "invalid-utf8", "lone-surrogate", "many-values"],
)
def test_huge_deep_and_invalid_unicode_inputs(fuzz_client: Any, graph: Any, raw: bytes) -> None:
    check(fuzz_client.post("/events", data=raw, content_type="application/json"), graph)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(
    "value",
    [None, True, 0, -1.5, "", "x" * 5000, [], [1, "a"], {}, {"k": {"k": []}}],
    ids=["null", "true", "zero", "float", "empty", "huge", "list0", "list2", "obj0", "nested"],
)
def test_wrong_types_in_every_field(fuzz_client: Any, graph: Any, field: str, value: Any) -> None:
    good = {
        "event_name": "purchase",
        "event_id": "ok",
        "page_location": "https://x.example/",
        "user_agent": "UA",
        "value": 1,
        "currency": "USD",
        "user_data": {"em": "a@b.co"},
    }
    bad = {**good, "event_id": "bad", field: value}
    response = fuzz_client.post("/events", json={"events": [good, bad]})
    check(response, graph)
    body = response.get_json()
    assert "ok" in body["event_ids"]  # the good event never sinks with the bad one
