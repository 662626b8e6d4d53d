"""Property-based hardening: whatever arrives, the answer is JSON, never a 5xx, and nothing
invalid reaches Meta (the fake Graph API validates every body as Meta does)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import base_env
from tests.test_shop_orders import SHOPIFY_KEY, WOO_KEY, deliver, shopify_paid, woo_checkout

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
    # Release 2 dialects and passed-through objects
    "app_data",
    "original_event_data",
    "messaging_channel",
    "x-fb-ud-em",
    "x-fb-cd-contents",
    "x-fb-cd-num_items",
    "x-fb-event_id",
    "email",
    "firstName",
    "common_cookie",
    "consent_state",
    "x-ga-gcs",
    "x-ga-gcd",
    # Meta's 2026 fields (issue 21)
    "net_revenue",
    "predicted_ltv",
    "customer_segmentation",
    "delivery_category",
    "restricted_data_processing",
    "x-fb-cd-customer_segmentation",
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

# Numbers JSON can carry but Meta or orjson cannot (issue 10 finding 1): huge ints, huge floats,
# numeric strings beyond any bound.
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**15 - 1, 10**15, -(10**15), 0, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["1e30", "100000000000000000000000000000", "-0", "1e15", "2147483648", "NaN", "Infinity"]),
)
json_leaf = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=40))


def nest(depth: int, as_list: bool) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if as_list else {"k": value}
    return value


# Nesting beyond orjson's 254 levels and capi's 16 (issue 10 finding 1).
deep = st.builds(nest, st.integers(min_value=0, max_value=300), st.booleans())
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)


items = st.lists(
    st.fixed_dictionaries(
        {"item_id": st.text(min_size=1, max_size=8)}, optional={"quantity": numbers, "price": numbers, "x": deep}
    ),
    max_size=4,
)


def plausible_text(field: str) -> st.SearchStrategy[Any]:
    samples = {
        "value": numbers,
        "items": st.one_of(items, json_value),
        "custom_data": st.one_of(deep, st.fixed_dictionaries({}, optional={"value": numbers, "contents": items})),
        "app_data": deep,
        "original_event_data": deep,
        "x-ga-gcs": st.sampled_from(["G100", "G101", "G110", "G111", "G1", ""]),
        "x-ga-gcd": st.text(alphabet="13lpqtrmnuv5", max_size=12),
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
    st.lists(st.one_of(event, json_value), max_size=4),  # a bare array
    st.fixed_dictionaries(
        {"data": st.lists(st.one_of(event, json_value), max_size=4)},
        optional={"access_token": st.text(max_size=8), "test_event_code": json_value},
    ),  # Meta's body
    st.fixed_dictionaries(
        {
            "client_id": st.text(max_size=8),
            "events": st.lists(
                st.fixed_dictionaries(
                    {"name": plausible_text("event_name")}, optional={"params": st.one_of(event, json_value)}
                ),
                max_size=4,
            ),
        },
        optional={"user_data": user_data, "consent": json_value, "timestamp_micros": numbers},
    ),  # Measurement Protocol
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
    if response.status_code == 200:
        body = response.get_json()
        # Every event is accounted for, by index: sent, skipped or rejected.
        done = (body.get("forwarded", 0) if "payload" not in body else len(body["payload"]["data"])) + body["stored"]
        assert done + len(body["skipped"]) + len(body["rejected"]) + len(body.get("failed", [])) == body["received"]
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


GOOD = {
    "event_name": "purchase",
    "event_id": "good",
    "page_location": "https://x.example/",
    "user_agent": "UA",
    "value": 1,
    "currency": "USD",
    "user_data": {"em": "a@b.co"},
}


@pytest.mark.parametrize("path", ["/events", "/validate"])
@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"items": [{"item_id": "A", "quantity": "1e30"}]}, "items[0].quantity"),
        ({"items": [{"item_id": "A", "quantity": 2**64 - 1}]}, "items[0].quantity"),
        ({"value": "100000000000000000000000000000"}, "value"),
        ({"custom_data": nest(300, False)}, "custom_data" + ".k" * 16),
        ({"custom_data": {"deep": nest(300, True)}}, "custom_data.deep" + "[0]" * 15),
        ({"app_data": {"n": nest(300, False)}}, "app_data.n" + ".k" * 15),
    ],
    ids=["quantity-1e30", "quantity-2**64-1", "value-1e29", "custom_data-deep", "list-deep", "app_data-deep"],
)
def test_numbers_and_nesting_json_cannot_carry_over_http(
    fuzz_client: Any, graph: Any, path: str, bad: dict[str, Any], field: str
) -> None:
    # Issue 10 finding 1: each of these answered 500 {"error":"internal"} and the good event of
    # the same request was neither sent nor stored.
    response = fuzz_client.post(path, json={"events": [GOOD, {**GOOD, "event_id": "bad", **bad}]})
    check(response, graph)
    body = response.get_json()
    assert response.status_code == 200
    assert body["event_ids"] == ["good"]
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [(1, field)]
    if path == "/events":
        assert graph.fake.delivered[("Purchase", "good")] == 1


@settings(SETTINGS, max_examples=25)
@given(size=st.integers(min_value=0, max_value=3000), width=st.integers(min_value=1, max_value=300))
def test_long_lists_and_long_values(fuzz_client: Any, graph: Any, size: int, width: int) -> None:
    # Sizes: many values per key and long values are cut at their bounds, never a 5xx.
    values = [f"{'u' * width}{n}@example.com" for n in range(size)]
    event = {**GOOD, "user_data": {"em": values, "fn": ["N" * width] * 3, "ph": "1" * width}}
    check(fuzz_client.post("/events", json=event), graph)


# -- Issue 19: every dialect, request-level fields, and what the answer may cost -------------

# Digit strings past int64 and past Python's int limit (finding 1); JSON-within-JSON the
# standard parser takes and orjson cannot write (finding 2).
long_digits = st.sampled_from(["1" * 4301, "0" * 5000 + "1", "9" * 20, "1" * 19, "１２３", "-1", "1.5e15", ""])
json_in_json = st.sampled_from(
    [
        '[{"id": "\\ud800", "quantity": 1}]',
        '[{"id": "x\\udfff"}]',
        '[{"id": "A", "quantity": NaN}]',
        '[{"id": "A", "quantity": ' + "9" * 5000 + "}]",
        '[{"id": "A", "quantity": 1}]',
        "[" * 2000,
        "not json",
    ]
)
signal_values = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            k: st.sampled_from(["granted", "DENIED", "denied", "", 1, None]) for k in ("ad_user_data", "ad_storage")
        },
    ),
    json_value,
)
request_consent = st.fixed_dictionaries(
    {},
    optional={
        "consent": signal_values,
        "x-ga-gcd": st.one_of(st.text(alphabet="13lpqtrmnuvz5", max_size=40), st.just("r" * 5000)),
        "x-ga-gcs": st.sampled_from(["G100", "G111", "G1", "zz"]),
        "consent_state": st.one_of(st.fixed_dictionaries({}, optional={"ad_storage": st.booleans()}), json_value),
    },
)
stape_consent = st.fixed_dictionaries({}, optional={"ad_storage": st.booleans()})
unknown_keys = st.dictionaries(st.text(min_size=1, max_size=20), json_leaf, max_size=30)
mp_user_data = st.one_of(
    st.builds(lambda known, unknown: {**unknown, **known}, user_data, unknown_keys),
    st.builds(
        lambda unknown: {"address": [unknown, {"city": "x", **unknown}]},
        st.dictionaries(st.text(min_size=1, max_size=8), json_leaf, max_size=40),
    ),
    json_value,
)
# An event capi would send as it stands, with one dialect's keys or a signal of its own added:
# random events are nearly all rejected, which would hide what happens to the valid ones.
valid_event = st.builds(
    lambda extra, n: {**GOOD, "event_id": f"v{n}", **extra},
    st.fixed_dictionaries(
        {},
        optional={
            "x-fb-cd-contents": json_in_json,
            "x-fb-ud-em": st.text(max_size=20),
            "email": st.text(max_size=20),
            "common_cookie": st.fixed_dictionaries({"_fbp": st.sampled_from(["fb.1.1700000000000.1", "x"])}),
            "consent": signal_values,
            "consent_state": stape_consent,
            "x-ga-gcd": st.sampled_from(["13r3r3r3r5l1", "13p3p3p3p5l1", "zzrzzzr", "r" * 100]),
            "destinations": json_value,
        },
    ),
    st.integers(0, 10**6),
)
dialect_event = st.one_of(
    valid_event,
    valid_event,
    event,
    st.builds(lambda e, c: {**e, "x-fb-cd-contents": c}, event, json_in_json),  # Meta's sGTM tag keys
    st.builds(
        lambda e, flat: {**e, **flat},
        event,
        st.fixed_dictionaries(
            {},
            optional={
                "email": st.one_of(st.text(max_size=20), json_value),
                "firstName": json_value,
                "common_cookie": st.one_of(st.fixed_dictionaries({"_fbp": st.text(max_size=30)}), json_value),
                "consent_state": st.one_of(
                    st.fixed_dictionaries({}, optional={"ad_storage": st.booleans()}), json_value
                ),
            },
        ),
    ),  # Stape's flat keys
)
mp_bodies = st.builds(
    lambda base, consent, extra: {**extra, **consent, **base},
    st.fixed_dictionaries(
        {
            "client_id": st.text(max_size=8),
            "events": st.lists(
                st.fixed_dictionaries(
                    {"name": plausible_text("event_name")},
                    optional={
                        "params": st.one_of(dialect_event, json_value),
                        "timestamp_micros": st.one_of(long_digits, long_digits, numbers),
                    },
                ),
                min_size=1,
                max_size=4,
            ),
        },
        optional={
            "user_data": mp_user_data,
            "timestamp_micros": st.one_of(long_digits, long_digits, numbers),
            "user_id": json_value,
            "ip_override": st.one_of(st.text(max_size=40), json_value),
            "user_agent": st.one_of(st.text(max_size=40), json_value),
            "test_event_code": json_value,
        },
    ),
    request_consent,
    unknown_keys,
)
envelopes = st.one_of(
    mp_bodies,
    st.builds(
        lambda events, consent, extra: {**extra, **consent, "events": events},
        st.lists(dialect_event, min_size=1, max_size=4),
        request_consent,
        unknown_keys,
    ),  # GA4 / sGTM events beside request-level signals
    st.builds(
        lambda data, consent: {**consent, "data": data},
        st.lists(dialect_event, min_size=1, max_size=4),
        request_consent,
    ),  # Meta's body
    st.lists(dialect_event, min_size=1, max_size=4),  # a bare array
)


# The second attack's bodies (issue 19 findings 1, 2 and 4) as seeds: each is tried first.
_VALID = {**GOOD, "event_id": "seed"}


@settings(SETTINGS, max_examples=150)
@given(body=envelopes)
@example(body={"client_id": "1", "timestamp_micros": "1" * 4301, "events": [{"name": "purchase", "params": _VALID}]})
@example(body={"client_id": "1", "events": [{"name": "purchase", "params": _VALID, "timestamp_micros": "9" * 4400}]})
@example(body={"events": [{**_VALID, "x-fb-cd-contents": '[{"id": "\\ud800", "quantity": 1}]'}]})
@example(
    body={
        "client_id": "1",
        "user_data": {**{f"u{n}": 1 for n in range(2000)}, "address": {f"a{n}": 1 for n in range(500)}},
        "events": [{"name": "purchase", "params": {**_VALID, "event_id": f"e{n}"}} for n in range(100)],
    }
)
def test_every_dialect_with_request_level_fields(fuzz_client: Any, graph: Any, body: Any) -> None:
    for path in ("/validate", "/events"):
        raw = json.dumps(body).encode()
        response = fuzz_client.post(path, data=raw, content_type="application/json")
        check(response, graph)
        # Amplification (issue 19 finding 4): the answer may echo each event once, never a
        # multiple of what the request carried.
        assert len(response.get_data()) < 3 * len(raw) + 64 * 1024


denials = st.sampled_from(
    [{"consent": {"ad_user_data": "DENIED"}}, {"x-ga-gcs": "G100"}, {"x-ga-gcd": "zzrzzzr"}, {"consent": "yes"}]
)
denials = st.one_of(denials, st.just({"consent_state": {"ad_storage": False}}))


@settings(SETTINGS, max_examples=75)
@given(body=envelopes.filter(lambda b: isinstance(b, dict)), denial=denials)
def test_a_request_level_denial_lets_no_event_through(
    fuzz_client: Any, graph: Any, body: dict[str, Any], denial: dict[str, Any]
) -> None:
    # Finding 11: any denial, at any level, in any dialect, wins over every event's own signals.
    response = fuzz_client.post("/validate", json={**body, **denial})
    check(response, graph)
    if response.status_code == 200:
        assert response.get_json()["payload"]["data"] == []


@settings(SETTINGS, max_examples=60)
@given(
    events=st.lists(valid_event, min_size=1, max_size=5),
    poisoned=st.sets(st.integers(0, 4)),
    where=st.sampled_from(["search_term", "user_data", "key", "items"]),
    shape=st.sampled_from(["events", "data", "array", "measurement_protocol"]),
)
def test_a_lone_surrogate_costs_only_its_own_event(
    fuzz_client: Any, graph: Any, events: list[dict[str, Any]], poisoned: set[int], where: str, shape: str
) -> None:
    # Finding 2: wherever an unpaired surrogate escape appears in an event, that event is
    # rejected naming where, and every other event is read as if it were not there.
    poisoned = {i for i in poisoned if i < len(events)}
    events = [dict(e, event_id=f"e{i}") for i, e in enumerate(events)]
    for i in poisoned:
        if where == "search_term":
            events[i]["search_term"] = "POISON"
        elif where == "user_data":
            events[i]["user_data"] = {"em": ["a@b.co", "POISON"]}
        elif where == "key":
            events[i]["POISON"] = 1
        else:
            events[i]["items"] = [{"item_id": "POISON"}]
    if shape == "measurement_protocol":
        body: Any = {"client_id": "1", "events": [{"name": e["event_name"], "params": e} for e in events]}
    else:
        body = {"events": {"events": events}, "data": {"data": events}, "array": events}[shape]
    raw = json.dumps(body).replace("POISON", "\\ud800")
    response = fuzz_client.post("/validate", data=raw.encode(), content_type="application/json")
    check(response, graph)
    assert response.status_code == 200
    answer = response.get_json()
    unpaired = {r["index"] for r in answer["rejected"] if "unpaired UTF-16 surrogate" in r["message"]}
    assert unpaired == poisoned
    assert not poisoned & {m["index"] for m in answer["match_keys"]}


# -- Issue 19: the shop dialects (Shopify and WooCommerce orders) ---------------------------
# Their published orders (tests/payloads/README.md names each source), with any field at any
# depth replaced by any JSON value: read on /validate and /events as the dialects `shopify` /
# `woocommerce`, and on the signed webhook paths, never a 5xx, nothing Meta would refuse.

SHOP_ORDERS = {"shopify": shopify_paid(), "woocommerce": woo_checkout()}


def _paths(value: Any, prefix: tuple[Any, ...] = (), depth: int = 3) -> list[tuple[Any, ...]]:
    """Every key and list position of `value`, down to `depth` levels."""
    if depth == 0:
        return []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    found: list[tuple[Any, ...]] = []
    for key, child in children:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key), depth - 1))
    return found


SHOP_PATHS = {shop: _paths(order) for shop, order in SHOP_ORDERS.items()}
shop_values = st.one_of(json_value, long_digits, json_in_json, st.text(max_size=30), numbers)


def _replaced(order: Any, path: tuple[Any, ...], value: Any) -> Any:
    """`order` with the value at `path` replaced (a copy; a path a previous change removed is skipped)."""
    copy = json.loads(json.dumps(order))
    node = copy
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return copy
    if isinstance(node, dict) or (isinstance(node, list) and path[-1] < len(node)):
        node[path[-1]] = value
    return copy


@st.composite
def shop_orders(draw: st.DrawFn) -> tuple[str, Any]:
    shop = draw(st.sampled_from(sorted(SHOP_ORDERS)))
    order = SHOP_ORDERS[shop]
    for path in draw(st.lists(st.sampled_from(SHOP_PATHS[shop]), min_size=1, max_size=6)):
        order = _replaced(order, path, draw(shop_values))
    return shop, order


@settings(SETTINGS, max_examples=150)
@given(shop_order=shop_orders())
def test_shop_orders_with_any_field_changed(graph: Any, make_client: Any, shop_order: tuple[str, Any]) -> None:
    shop, order = shop_order
    graph.fake.now = time.time
    client = make_client(
        base_env(
            graph,
            FORWARD_EVENTS="*",
            DEFAULT_COUNTRY="US",
            SHOPIFY_SIGNING_KEY=SHOPIFY_KEY,
            WOOCOMMERCE_SIGNING_KEY=WOO_KEY,
        )
    )
    raw = json.dumps(order).encode()  # the standard encoder: integers past 64 bits included
    for path in ("/validate", "/events"):
        check(client.post(path, data=raw, content_type="application/json"), graph)
    response = deliver(client, shop, raw, "orders/paid" if shop == "shopify" else "order.updated")
    check(response, graph)
    assert response.status_code in (200, 202, 400), response.get_data(as_text=True)
