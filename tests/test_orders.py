"""One Purchase per order (capi.orders and the idempotency guard), against the Firestore emulator
and the fake Graph API: a reloaded thank-you page with a fresh event_id reaches Meta once."""

from __future__ import annotations

import time
from typing import Any

import pytest

from capi.orders import DUPLICATE, DUPLICATE_ORDER, IN_FLIGHT, ORDER, keys_of, skip_reason, verdict
from tests.conftest import at_once, make_app, make_service, purchase, serve

GUARDED = {"IDEMPOTENCY_COLLECTION": "capi_sent"}


def records(firestore_db: Any) -> dict[tuple[str, str], dict[str, Any]]:
    found = (d.to_dict() for d in firestore_db.collection("capi_sent").stream())
    return {(r["event_name"], r["event_id"]): r for r in found}


def meta_purchase(event_id: str, order: str) -> dict[str, Any]:
    """The same order as Meta's own server event (custom_data.order_id), the Meta dialect."""
    return {
        "data": [
            {
                "event_name": "Purchase",
                "event_id": event_id,
                "event_time": int(time.time()),
                "action_source": "website",
                "event_source_url": "https://shop.example.com/thanks",
                "user_data": {"em": "a@example.com", "client_user_agent": "Mozilla/5.0"},
                "custom_data": {"value": 5, "currency": "USD", "order_id": order},
            }
        ]
    }


def test_keys_of_a_purchase_name_its_order_and_nothing_else_does() -> None:
    event = {"event_name": "Purchase", "event_id": "e1", "custom_data": {"order_id": "1001"}}
    assert keys_of(event) == [("Purchase", "e1"), (ORDER, "1001")]
    assert keys_of({**event, "event_name": "AddToCart"}) == [("AddToCart", "e1")]
    assert keys_of({"event_name": "Purchase", "event_id": "e1"}) == [("Purchase", "e1")]
    keys = keys_of(event)
    assert verdict(keys, set(), set()) is None
    assert verdict(keys, {("Purchase", "e1")}, set()) == DUPLICATE
    assert verdict(keys, {(ORDER, "1001")}, set()) == DUPLICATE_ORDER
    assert verdict(keys, set(), {(ORDER, "1001")}) == IN_FLIGHT
    assert skip_reason([DUPLICATE_ORDER, IN_FLIGHT]) == IN_FLIGHT
    assert skip_reason([DUPLICATE_ORDER, DUPLICATE_ORDER]) == DUPLICATE_ORDER
    assert skip_reason([DUPLICATE_ORDER, "forwarded"]) is None


def test_same_order_twice_in_one_request_is_sent_once() -> None:
    body = (
        make_service()
        .validate({"events": [purchase("A", transaction_id="1001"), purchase("B", transaction_id="1001")]})
        .body
    )
    assert [e["event_id"] for e in body["payload"]["data"]] == ["A"]
    assert body["skipped"] == [{"index": 1, "event_id": "B", "reason": "duplicate_order"}]


def test_reloaded_thank_you_page_reaches_meta_once(firestore_db: Any, graph: Any) -> None:
    client = serve(make_app(graph, firestore=firestore_db, **GUARDED))
    first = client.post("/events", json=purchase("pv-1", transaction_id="1001"))
    assert first.status_code == 200 and first.get_json()["forwarded"] == 1
    # the reload: the page mints a fresh event_id for the same order
    again = client.post("/events", json=purchase("pv-2", transaction_id="1001"))
    assert again.status_code == 200
    assert again.get_json()["skipped"] == [{"index": 0, "event_id": "pv-2", "reason": "duplicate_order"}]
    assert again.get_json()["forwarded"] == 0
    assert dict(graph.fake.delivered) == {("Purchase", "pv-1"): 1}
    # the held event leaves no claim behind: only the first event and its order are recorded
    assert set(records(firestore_db)) == {("Purchase", "pv-1"), (ORDER, "1001")}
    # another order still goes through
    assert client.post("/events", json=purchase("pv-3", transaction_id="1002")).get_json()["forwarded"] == 1


def test_order_key_spans_dialects(firestore_db: Any, graph: Any) -> None:
    client = serve(make_app(graph, firestore=firestore_db, **GUARDED))
    assert client.post("/events", json=purchase("web-1", transaction_id="77")).get_json()["forwarded"] == 1
    again = client.post("/events", json=meta_purchase("backend-1", "77")).get_json()
    assert again["skipped"] == [{"index": 0, "event_id": "backend-1", "reason": "duplicate_order"}]
    assert graph.fake.delivered == {("Purchase", "web-1"): 1}


def test_order_record_lasts_order_dedup_hours(firestore_db: Any, graph: Any) -> None:
    client = serve(make_app(graph, firestore=firestore_db, ORDER_DEDUP_HOURS="72", **GUARDED))
    before = time.time()
    assert client.post("/events", json=purchase("A", transaction_id="9")).get_json()["forwarded"] == 1
    found = records(firestore_db)
    assert found[(ORDER, "9")]["status"] == "delivered"
    assert before + 72 * 3600 <= found[(ORDER, "9")]["expires"] <= time.time() + 72 * 3600
    assert found[("Purchase", "A")]["expires"] <= time.time() + 48 * 3600  # the pair keeps its 48 h
    # past the window the order counts again
    for snap in firestore_db.collection("capi_sent").stream():
        snap.reference.update({"expires": time.time() - 1})
    assert client.post("/events", json=purchase("B", transaction_id="9")).get_json()["forwarded"] == 1


@pytest.mark.parametrize("value", ["0", "673", "x"])
def test_order_dedup_hours_is_bounded(value: str) -> None:
    from capi.config import load_config
    from capi.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_config({"META_PIXEL_ID": "1", "DRY_RUN": "true", "ORDER_DEDUP_HOURS": value})
    assert caught.value.field == "ORDER_DEDUP_HOURS"


def test_refused_purchase_does_not_hold_its_order(firestore_db: Any, graph: Any) -> None:
    # Release 2's guarantee, for orders: a claim neither delivered nor stored never makes a retry a duplicate.
    client = serve(make_app(graph, firestore=firestore_db, **GUARDED))
    graph.fake.fail_next("code:100")
    assert client.post("/events", json=purchase("A", transaction_id="5")).status_code == 502
    assert records(firestore_db) == {}
    retry = client.post("/events", json=purchase("B", transaction_id="5")).get_json()
    assert retry["forwarded"] == 1 and graph.fake.delivered == {("Purchase", "B"): 1}


def test_unsent_purchase_never_makes_its_order_a_duplicate(firestore_db: Any, graph: Any) -> None:
    # The claims are written, Meta answers 503, then Firestore fails: neither the dead letter nor
    # the release is written (503). A retry with a fresh event_id is "in flight", never a 200
    # duplicate_order for a Purchase Meta never got; once the lease ends it goes through, once.
    from tests.test_firestore_faults import FailingCommits

    failing = FailingCommits(firestore_db, allowed=1)
    client = serve(make_app(graph, firestore=failing, **GUARDED))
    graph.fake.down = "503"
    assert client.post("/events", json=purchase("A", transaction_id="6")).status_code == 503
    failing.allowed = None
    graph.fake.down = None
    retry = client.post("/events", json=purchase("B", transaction_id="6"))
    assert retry.status_code == 503
    assert retry.get_json()["skipped"] == [{"index": 0, "event_id": "B", "reason": "in flight"}]
    assert {r["status"] for r in records(firestore_db).values()} == {"pending"}
    for snap in firestore_db.collection("capi_sent").stream():
        snap.reference.update({"expires": time.time() - 1})
    assert client.post("/events", json=purchase("B", transaction_id="6")).get_json()["forwarded"] == 1
    assert graph.fake.delivered == {("Purchase", "B"): 1}


def test_stored_purchase_holds_its_order_and_replay_sends_it_once(firestore_db: Any, graph: Any) -> None:
    client = serve(make_app(graph, firestore=firestore_db, **GUARDED))
    graph.fake.down = "503"
    assert client.post("/events", json=purchase("A", transaction_id="8")).status_code == 202
    graph.fake.down = None
    reload = client.post("/events", json=purchase("B", transaction_id="8")).get_json()
    assert reload["skipped"] == [{"index": 0, "event_id": "B", "reason": "duplicate_order"}]
    assert client.post("/replay").get_json()["delivered"] == 1
    assert graph.fake.delivered == {("Purchase", "A"): 1}


def test_two_requests_for_the_same_order_at_once_reach_meta_once(firestore_db: Any, graph: Any) -> None:
    graph.fake.latency = 0.05
    app = make_app(graph, firestore=firestore_db, **GUARDED)
    answers: list[tuple[int, dict[str, Any]]] = []

    def caller(event_id: str) -> None:
        response = serve(app).post("/events", json=purchase(event_id, transaction_id="4242"))
        answers.append((response.status_code, response.get_json()))

    at_once(*[lambda n=n: caller(f"page-{n}") for n in range(6)])
    assert sum(graph.fake.delivered.values()) == 1
    assert sorted(body["forwarded"] for _, body in answers) == [0, 0, 0, 0, 0, 1]
    for status, body in answers:
        if body["forwarded"] == 0:
            [skip] = body["skipped"]
            # told to retry while the first was in flight, or skipped once it was delivered
            assert (status, skip["reason"]) in ((503, "in flight"), (200, "duplicate_order"))
    # nothing left pending: every loser's claims were released
    assert {r["status"] for r in records(firestore_db).values()} == {"delivered"}
    assert len(records(firestore_db)) == 2
