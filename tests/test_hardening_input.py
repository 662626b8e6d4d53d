"""Issue 19, second attack, the input side: each finding as it was reproduced, and what capi
does now. Findings 1-4, 11, 12, 22 and issue 20's consent skip run through the real pipeline
(`/validate` and `/events` on the fake Graph API); the HTTP-level ones (9, 10, 16, 23) are in
tests/test_hardening_http.py."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import orjson
import pytest

from capi import consent
from capi.events import MAX_IGNORED_NAMED, MAX_NOTES_PER_EVENT
from capi.service import MAX_EVENT_NOTES
from tests.conftest import NOW, base_env, log_lines, make_service

UA = "Mozilla/5.0"
PARAMS = {
    "page_location": "https://shop.example.com/",
    "user_agent": UA,
    "value": 1,
    "currency": "USD",
    "user_data": {"em": "a@b.co"},
}


def mp(*events: dict[str, Any], **request: Any) -> dict[str, Any]:
    """A Measurement Protocol body (developers.google.com/analytics/devguides/collection/protocol/ga4/reference)."""
    return {"client_id": "1.2", **request, "events": list(events)}


def mp_event(event_id: str, **params: Any) -> dict[str, Any]:
    return {"name": "purchase", "params": {**PARAMS, "event_id": event_id, **params}}


def validate(payload: Any, **env: str) -> dict[str, Any]:
    return make_service(FORWARD_EVENTS="*", **env).validate(payload).body


@pytest.fixture
def client(graph: Any, make_client: Any) -> Any:
    graph.fake.now = time.time
    return make_client(base_env(graph, FORWARD_EVENTS="*"))


# -- finding 1: digits beyond Python's int limit ------------------------------------------


@pytest.mark.parametrize("path", ["/events", "/validate"])
@pytest.mark.parametrize("level", ["event", "request"])
def test_timestamp_micros_of_4301_digits_rejects_its_event_only(client: Any, graph: Any, path: str, level: str) -> None:
    # Was: 500 internal (ValueError from int()), the good event beside it neither sent nor stored.
    digits = "1" * 4301
    good = mp_event("good", event_time=int(time.time()))
    if level == "event":
        body = mp(good, {**mp_event("bad"), "timestamp_micros": digits})
        expected = [(1, "timestamp_micros")]
    else:  # the request's time applies to every event without its own
        body = mp(good, mp_event("bad"), timestamp_micros=digits)
        expected = [(1, "timestamp_micros")]
    response = client.post(path, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == expected
    assert answer["rejected"][0]["message"] == "must be a whole number of microseconds since 1970"
    assert answer["event_ids"] == ["good"]
    if path == "/events":
        assert graph.fake.delivered[("Purchase", "good")] == 1


@pytest.mark.parametrize(
    ("micros", "message"),
    [
        ("1" * 20, "must be a whole number of microseconds since 1970"),
        ("１２３", "must be a whole number of microseconds since 1970"),  # full-width digits: not ASCII
        (True, "must be a whole number of microseconds since 1970"),
        ((NOW - 8 * 86400) * 1_000_000, "older than 7 days: Meta does not accept it"),
    ],
)
def test_timestamp_micros_problems_name_timestamp_micros(micros: Any, message: str) -> None:
    body = validate(mp({**mp_event("e"), "timestamp_micros": micros}))
    assert [(r["field"], r["message"]) for r in body["rejected"]] == [("timestamp_micros", message)]


def test_timestamp_micros_as_json_float_is_read() -> None:
    body = validate(mp(mp_event("e"), timestamp_micros=float(NOW * 1_000_000)))
    assert body["payload"]["data"][0]["event_time"] == NOW


# -- finding 2: lone surrogates -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/events", "/validate"])
@pytest.mark.parametrize(
    "contents",
    [
        '[{"id": "\\ud800", "quantity": 1}]',  # the finding's string
        '[{"id": "a\\udfff", "quantity": 1}]',  # a lone low surrogate
        '[{"id": "A", "quantity": 1, "x": NaN}]',  # NaN: the standard parser took it too
        '[{"id": "A", "quantity": ' + "9" * 5000 + "}]",  # beyond the int limit
    ],
    ids=["high", "low", "nan", "digits"],
)
def test_meta_tag_contents_json_that_orjson_cannot_write_rejects_its_event(
    client: Any, graph: Any, path: str, contents: str
) -> None:
    # Was: 500 (json.loads accepted "\ud800"; orjson could not encode the Graph body).
    good = {"event_name": "purchase", "event_id": "good", **PARAMS}
    bad = {**good, "event_id": "bad", "x-fb-cd-contents": contents}
    response = client.post(path, json={"events": [good, bad]})
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [(1, "custom_data.contents")]
    assert answer["event_ids"] == ["good"]
    assert graph.fake.requests == graph.fake.accepted_requests


UNPAIRED = "holds an unpaired UTF-16 surrogate escape (such as \\ud800): not valid Unicode text"
GOOD_TEXT = (
    '{"event_name": "purchase", "event_id": "%s", "page_location": "https://x.example/", "user_agent": "UA",'
    ' "value": 1, "currency": "USD", "user_data": {"em": "a@b.co"}%s}'
)


@pytest.mark.parametrize("path", ["/events", "/validate"])
@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (', "event_name": "purchase\\ud800"', "event_name"),
        (', "items": [{"item_id": "a\\udc00"}]', "items[0].item_id"),
        (', "user_data": {"em": "\\ud800@x.co"}', "user_data.em"),
        (', "custom_data": {"k": ["x", "\\ud800"]}', "custom_data.k[1]"),
        (', "\\ud800": 1', "\\ud800"),
    ],
    ids=["name", "item-id", "user-data", "custom-data", "key"],
)
@pytest.mark.parametrize("shape", ["events", "data", "array", "measurement_protocol"])
def test_a_lone_surrogate_escape_rejects_its_event_only(
    client: Any, graph: Any, path: str, extra: str, field: str, shape: str
) -> None:
    # Was: orjson refused the whole body (400), or, inside a JSON string, 500.
    good, bad = GOOD_TEXT % ("good", ""), GOOD_TEXT % ("bad", extra)
    if shape == "measurement_protocol":
        raw = '{"client_id": "1", "events": [{"name": "purchase", "params": %s}, {"name": "purchase", "params": %s}]}'
        raw %= (good, bad)
        field = f"params.{field}"
    else:
        raw = {"events": '{"events": [%s, %s]}', "data": '{"data": [%s, %s]}', "array": "[%s, %s]"}[shape] % (good, bad)
    response = client.post(path, data=raw.encode(), content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert [(r["index"], r["event_id"], r["field"], r["message"]) for r in answer["rejected"]] == [
        (1, "bad", field, UNPAIRED)
    ]
    assert answer["event_ids"] == ["good"]
    if path == "/events":
        assert graph.fake.delivered[("Purchase", "good")] == 1


def test_a_single_event_with_a_lone_surrogate_is_rejected(client: Any) -> None:
    raw = (GOOD_TEXT % ("solo", ', "search_term": "\\udfff"')).encode()
    answer = client.post("/validate", data=raw, content_type="application/json").get_json()
    assert [(r["event_id"], r["field"]) for r in answer["rejected"]] == [("solo", "search_term")]


def test_a_single_event_with_a_list_named_data_is_still_one_event(client: Any) -> None:
    raw = (GOOD_TEXT % ("solo", ', "data": [1, "\\ud800"], "events": [2]')).encode()
    answer = client.post("/validate", data=raw, content_type="application/json").get_json()
    assert [(r["event_id"], r["field"]) for r in answer["rejected"]] == [("solo", "data[1]")]


def test_a_lone_surrogate_outside_the_events_is_a_400_naming_it(client: Any) -> None:
    raw = '{"client_id": "1", "user_data": {"em": "\\ud800"}, "events": [{"name": "purchase", "params": %s}]}'
    response = client.post("/events", data=(raw % (GOOD_TEXT % ("g", ""))).encode(), content_type="application/json")
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "bad_request",
        "message": f"user_data.em {UNPAIRED}",
        "field": "user_data.em",
    }


@pytest.mark.parametrize("number", ["9" * 5000, "1e400", "NaN"])
def test_the_lenient_reading_keeps_orjsons_rules_on_numbers(client: Any, number: str) -> None:
    raw = '{"events": [%s]}' % (GOOD_TEXT % ("g", f', "x": "\\ud800", "n": {number}'))
    response = client.post("/events", data=raw.encode(), content_type="application/json")
    assert response.status_code == 400 and response.get_json()["message"] == "the body is not valid JSON"


# -- finding 3: quadratic ignored-key tracking --------------------------------------------


def test_unknown_address_keys_cost_linear_time_and_name_a_bounded_few() -> None:
    # Was: 40k keys 14.8 s, 80k keys 51 s (`not in` on a list).
    event = {"event_name": "purchase", "event_id": "e", **PARAMS}
    event["user_data"] = {"em": "a@b.co", "address": {f"k{n}": 1 for n in range(80_000)}}
    started = time.process_time()
    body = validate(event)
    assert time.process_time() - started < 2.0
    (note,) = [m for m in body["messages"] if "ignored" in m]
    assert note["ignored"] == [f"user_data.address.k{n}" for n in range(MAX_IGNORED_NAMED)]
    assert note["ignored_count"] == 80_000
    assert body["event_ids"] == ["e"]


def test_repeated_unknown_keys_across_addresses_are_named_once() -> None:
    event = {"event_name": "purchase", "event_id": "e", **PARAMS}
    event["user_data"] = {"em": "a@b.co", "address": [{"street": "a", "city": "x"}, {"street": "b"}]}
    (note,) = [m for m in validate(event)["messages"] if "ignored" in m]
    assert note == {"index": 0, "ignored": ["user_data.address.street"], "message": "input keys capi does not use"}


def test_a_long_unknown_key_is_named_cut() -> None:
    event = {"event_name": "purchase", "event_id": "e", **PARAMS, "k" * 5000: 1}
    (note,) = [m for m in validate(event)["messages"] if "ignored" in m]
    assert note["ignored"] == ["k" * 100 + "…"]


# -- finding 4: amplification through request-level fields --------------------------------


def test_request_level_unknown_keys_are_reported_once_and_the_answer_stays_small() -> None:
    # Was: 1000 events and 20,000 unknown request-level user_data keys (409 KB) -> a 369 MB
    # answer, RSS 323 -> 1,917 MiB. The request's keys were copied into every event.
    user_data = {"sha256_email_address": "a" * 64, **{f"u{n}": 1 for n in range(20_000)}}
    user_data["address"] = {"city": "x", **{f"a{n}": 1 for n in range(2_000)}}
    body = mp(*(mp_event(f"e{n}") for n in range(1000)), user_data=user_data, extra=1)
    request = orjson.dumps(body)
    tracemalloc.start()
    started = time.process_time()
    answer = validate(orjson.loads(request))
    cpu = time.process_time() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    size = len(orjson.dumps(answer))
    request_notes = [m for m in answer["messages"] if "index" not in m]
    assert request_notes == [
        {
            "ignored": ["client_id", "extra", *(f"user_data.u{n}" for n in range(MAX_IGNORED_NAMED - 2))],
            "message": "request keys capi does not use",
            "ignored_count": 2 + 20_000 + 2_000,
        }
    ]
    assert not any("user_data.u" in name for m in answer["messages"] if "index" in m for name in m.get("ignored", []))
    assert len(answer["event_ids"]) == 1000
    assert size < 2 * len(request)  # the payload echoes each event once: never a multiple of the keys
    assert peak < 100 * 2**20  # traced allocations at the peak, within the 100 MiB
    assert cpu < 10


def test_notes_per_event_and_per_request_are_bounded() -> None:
    # Every user_data key with a value capi cannot use: each would be one note.
    user_data = {name: [{"x": 1}] for name in ("em", "ph", "fn", "ln", "ct", "st", "zp", "country", "db", "ge")}
    user_data.update({f"sha256_{n}": [[1]] for n in ("email_address", "phone_number")})
    user_data.update({n: [[1]] for n in ("email", "phone", "first_name", "last_name", "city", "state", "zip")})
    user_data.update({n: [[1]] for n in ("region", "postal_code", "date_of_birth", "gender", "external_id")})
    event = {"event_name": "purchase", **PARAMS, "user_data": {**user_data, "fbp": "fb.1.1700000000000.1"}}
    one = validate({**event, "event_id": "e"})
    notes = [m for m in one["messages"] if m.get("index") == 0]
    assert len(notes) == MAX_NOTES_PER_EVENT + 1
    assert notes[-1]["message"] == "more notes on this event, not shown" and notes[-1]["omitted"] > 0
    many = validate({"events": [{**event, "event_id": f"e{n}"} for n in range(100)]})
    assert len(many["messages"]) == MAX_EVENT_NOTES + 1
    assert many["messages"][-1]["message"] == "more notes on events, not shown"
    assert many["messages"][-1]["omitted"] == 100 * (MAX_NOTES_PER_EVENT + 1) - MAX_EVENT_NOTES


def test_a_list_of_unusable_values_is_noted_once() -> None:
    event = {"event_name": "purchase", "event_id": "e", **PARAMS, "user_data": {"em": [{"x": 1}] * 5000 + ["a@b.co"]}}
    body = validate(event)
    assert [m["field"] for m in body["messages"] if m.get("field")] == ["user_data.em"]


# -- finding 11: consent fails open in the Measurement Protocol ----------------------------


@pytest.mark.parametrize("own", [{}, {"ad_user_data": "GRANTED"}, {"ad_storage": "GRANTED"}, {"other": 1}])
def test_mp_request_denial_is_not_replaced_by_an_events_own_consent(own: dict[str, Any]) -> None:
    # Was: request-level consent DENIED with params.consent present (even {}) -> sent.
    body = validate(mp(mp_event("e", consent=own), consent={"ad_user_data": "DENIED"}))
    assert body["payload"]["data"] == []
    assert body["skipped"] == [{"index": 0, "event_id": "e", "reason": "consent", "consent_signal": "consent"}]


def test_an_events_denial_wins_over_a_request_grant() -> None:
    granted = {"ad_user_data": "GRANTED", "ad_storage": "GRANTED"}
    body = validate(mp(mp_event("e", consent={"ad_storage": "DENIED"}), mp_event("f"), consent=granted))
    assert [s["event_id"] for s in body["skipped"]] == ["e"]
    assert body["event_ids"] == ["f"]


@pytest.mark.parametrize(
    "signal",
    [
        {"consent": {"ad_user_data": "denied"}},
        {"x-ga-gcs": "G100"},
        {"x-ga-gcd": "13p3p3p3p5l1"},
        {"consent_state": {"ad_storage": False}},
    ],
)
@pytest.mark.parametrize("dialect", ["ga4_events", "meta_data", "measurement_protocol"])
def test_a_request_level_denial_applies_to_every_event_in_every_dialect(signal: dict[str, Any], dialect: str) -> None:
    event = {"event_name": "purchase", "event_id": "e", **PARAMS, "consent": {"ad_user_data": "granted"}}
    if dialect == "ga4_events":
        body = {"events": [event], **signal}
    elif dialect == "meta_data":
        body = {"data": [event], **signal}
    else:
        body = mp(mp_event("e", consent={"ad_user_data": "GRANTED"}), **signal)
    answer = validate(body)
    assert answer["event_ids"] == []
    assert answer["skipped"][0]["consent_signal"] == next(iter(signal))
    ignored = [name for m in answer["messages"] for name in m.get("ignored", [])]
    assert next(iter(signal)) not in ignored  # read, not named as unused


def test_every_signal_of_an_event_is_read() -> None:
    granted = {"consent": {"ad_user_data": "granted", "ad_storage": "granted"}, "x-ga-gcs": "G111"}
    assert consent.decide({**granted, "consent_state": {"ad_user_data": False}}, False) == (False, "consent_state")
    assert consent.decide(granted, False, {"x-ga-gcd": "13p3p3p3p5l1"}) == (False, "x-ga-gcd")
    assert consent.decide(granted, False, {"consent": {}}) == (True, "consent")


# -- finding 12: malformed x-ga-gcd ---------------------------------------------------------


@pytest.mark.parametrize(
    "gcd",
    ["zzrzzzr", "r" * 100_000, "13r3r3r3r", "x3r3r3r3r5l1", "13r3r3r3r5l1" + "l1" * 20, "13r3r3r3r5l1 ", ""],
    ids=["finding", "100k-r", "short", "bad-prefix", "too-long", "trailing-space", "empty"],
)
def test_a_malformed_gcd_counts_as_denied(gcd: str) -> None:
    assert consent.decide({"x-ga-gcd": gcd}, False) == (False, "x-ga-gcd")


@pytest.mark.parametrize("gcd", ["13r3r3r3r5l1", "11t1t1t1t5", "13v3v3v3v5l1"])
def test_a_well_formed_granted_gcd_is_granted(gcd: str) -> None:
    assert consent.decide({"x-ga-gcd": gcd}, False) == (True, "x-ga-gcd")


# -- issue 20 item 4: a consent skip keeps the order id ------------------------------------


@pytest.mark.parametrize("where", ["top", "ecommerce"])
@pytest.mark.parametrize(
    ("extra", "reason"), [({"x-ga-gcs": "G100"}, "consent"), ({"event_name": "purchase"}, "not in FORWARD_EVENTS")]
)
def test_a_skipped_purchase_without_event_id_is_listed_by_its_order_id(
    where: str, extra: dict[str, Any], reason: str
) -> None:
    # Was: {"event_id": null}: the order the skip concerned could not be told.
    order = {"transaction_id": " T-1 "} if where == "top" else {"ecommerce": {"transaction_id": "T-1"}}
    event = {"event_name": "purchase", **PARAMS, **order, **extra}
    env = {"FORWARD_EVENTS": "Lead"} if reason != "consent" else {}
    body = make_service(**({"FORWARD_EVENTS": "*"} | env)).validate(event).body
    assert body["skipped"][0]["event_id"] == "T-1" and body["skipped"][0]["reason"] == reason


def test_a_skipped_non_purchase_keeps_a_null_id() -> None:
    event = {"event_name": "add_to_cart", **PARAMS, "transaction_id": "T-1", "x-ga-gcs": "G100"}
    assert validate(event)["skipped"][0]["event_id"] is None


# -- finding 22: per-event-name log lines and metric label values ---------------------------


def test_a_thousand_distinct_event_names_make_a_bounded_number_of_lines(client: Any, graph: Any, capsys: Any) -> None:
    # Was: 1000 distinct names in a 108 KB request -> 1,001 log lines and 1,000 new
    # `event_name` label values (sGTM's "All events" trigger lets any browser do it).
    events = [{"event_name": f"custom_{n}", "event_id": f"c{n}", **PARAMS} for n in range(999)]
    events.append({"event_name": "purchase", "event_id": "p", **PARAMS})
    capsys.readouterr()
    response = client.post("/events", json={"events": events})
    assert response.status_code == 200 and response.get_json()["forwarded"] == 1000
    out = capsys.readouterr().out
    (processed,) = log_lines(out, "events processed")
    assert processed["by_event"] == {
        "Purchase": {"forwarded": 1, "rejected": 0, "skipped": 0, "stored": 0, "failed": 0},
        "other": {"forwarded": 999, "rejected": 0, "skipped": 0, "stored": 0, "failed": 0},
    }
    by_name = log_lines(out, "events by name")
    assert [(line["event_name"], line["count"]) for line in by_name] == [("Purchase", 1), ("other", 999)]
    assert by_name[1]["match_keys"] == {"client_user_agent": 999, "em": 999}


def test_a_configured_custom_name_is_logged_as_itself(graph: Any, make_client: Any, capsys: Any) -> None:
    graph.fake.now = time.time
    client = make_client(base_env(graph, FORWARD_EVENTS="purchase,trial_booked"))
    events = [{"event_name": n, "event_id": n, **PARAMS} for n in ("trial_booked", "purchase")]
    capsys.readouterr()
    assert client.post("/events", json={"events": events}).status_code == 200
    names = [line["event_name"] for line in log_lines(capsys.readouterr().out, "events by name")]
    assert names == ["Purchase", "trial_booked"]
