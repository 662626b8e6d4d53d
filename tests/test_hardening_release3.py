"""Hardening, release 3: the attack on release 3's new surfaces (shop webhooks, the queue's push
endpoint, the tag's set_cookies answer, make deploy), one regression test per finding that failed
before its fix. On loopback: the fake Graph API, the Flask test client, the recording cloud fake.

The shop payloads are Shopify's and WooCommerce's published examples (tests/payloads/README.md
names the sources), with the one field each attack changes.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from capi.browsers import TTL_FIELD, document_id
from capi.inputs.common import Skipped
from tests.conftest import make_app, purchase, serve
from tests.fakes.graph import GraphServer
from tests.test_browsers import ENV, funnel_event
from tests.test_deploy import Cloud
from tests.test_queue import build, deliver_client, meta_event
from tests.test_shop_orders import ORDER_ID, deliver, shop_app, shopify_paid, woo_checkout

FBP = "fb.1.1790000000000.123456789"

# -- shop webhooks ------------------------------------------------------------------------------


@pytest.mark.parametrize("order_id", [None, "", "  ", [1], {"id": 1}, 1.5, True])
@pytest.mark.parametrize("shop", ["shopify", "woocommerce"])
def test_a_paid_order_without_a_usable_id_is_rejected_never_sent_with_a_minted_id(
    graph: GraphServer, shop: str, order_id: Any
) -> None:
    """Before: sent to Meta with a minted event_id, so every retry of the webhook (the shops retry
    for hours) would count the sale again: no order key, nothing Meta could deduplicate."""
    client = shop_app(graph)
    order = shopify_paid() if shop == "shopify" else woo_checkout()
    order["id"] = order_id
    topic = "orders/paid" if shop == "shopify" else "order.updated"
    answer = deliver(client, shop, order, topic)
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["forwarded"], body["event_ids"], body["skipped"]) == (0, [], [])
    [rejected] = body["rejected"]
    assert (rejected["index"], rejected["event_id"], rejected["field"]) == (0, None, "id")
    assert "a paid order needs its id" in rejected["message"]
    assert graph.fake.bodies == []
    # An order without an id that is not paid is still just skipped.
    order["financial_status" if shop == "shopify" else "status"] = "pending"
    skipped = deliver(client, shop, order, topic).get_json()
    assert skipped["skipped"] == [{"index": 0, "event_id": None, "reason": "unpaid"}]


def test_a_paid_order_with_an_integer_id_still_goes() -> None:
    """The fix's other side: Shopify's ids are JSON integers (its published example)."""
    with GraphServer() as graph:
        answer = deliver(shop_app(graph), "shopify", shopify_paid(), "orders/paid").get_json()
    assert (answer["forwarded"], answer["event_ids"]) == (1, [ORDER_ID])


def test_a_skipped_orders_overlong_id_is_not_echoed(graph: GraphServer) -> None:
    """Before: a refund's 100,000-character order_id came back whole in the answer (and a
    WooCommerce deletion's id likewise)."""
    client = shop_app(graph)
    refund = deliver(client, "shopify", {"order_id": "9" * 100_000}, "refunds/create")
    deleted = deliver(client, "woocommerce", {"id": "7" * 100_000}, "order.deleted")
    assert refund.get_json()["skipped"] == [{"index": 0, "event_id": None, "reason": "refund"}]
    assert deleted.get_json()["skipped"] == [{"index": 0, "event_id": None, "reason": "cancelled"}]
    assert len(refund.get_data()) < 1000 and len(deleted.get_data()) < 1000
    # An id within Meta's 512 characters is kept, as the caller needs it to tell orders apart.
    assert Skipped("refund", "9" * 512).event_id == "9" * 512
    assert graph.fake.bodies == []


# -- the queue's push endpoint ------------------------------------------------------------------


def push(events: list[dict[str, Any]], **attributes: str) -> dict[str, Any]:
    data = base64.b64encode(orjson.dumps({"events": events})).decode()
    attrs = {"destination": "default", "events": str(len(events)), **attributes}
    return {"message": {"data": data, "attributes": attrs, "messageId": "m-1"}}


def test_a_push_with_an_overlong_test_event_code_is_refused_and_nothing_sent(graph: GraphServer) -> None:
    """Before: a 100,000-character test_event_code attribute went to Meta in the Graph body
    (/events refuses one over 100 characters); dropping it instead would send test events live."""
    client = deliver_client(build(graph, DELIVERY="queue", PUBSUB_TOPIC="capi-events", BATCH_WINDOW_MS="0"))
    refused = client.post("/", json=push([meta_event("Q-1")], test_event_code="T" * 100_000))
    assert refused.status_code == 400
    assert refused.get_json()["field"] == "message.attributes.test_event_code"
    assert len(refused.get_data()) < 500
    assert graph.fake.bodies == []
    taken = client.post("/", json=push([meta_event("Q-2")], test_event_code="T" * 100))
    assert taken.status_code == 200
    assert [b["test_event_code"] for b in graph.fake.bodies] == ["T" * 100]


class RecordingPubSub:
    """Pub/Sub's publish call as the Publisher sees it: keeps each message, as the topic would."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def publish(self, topic: str, messages: list[dict[str, Any]], *, seconds: float) -> list[str]:
        self.messages.extend(messages)
        return [f"id-{n}" for n in range(len(self.messages) - len(messages), len(self.messages))]


def full_event(n: int) -> dict[str, Any]:
    """A finished Meta event as /events publishes it for a checkout with email, phone, name and
    address (nine hashed keys of 64 hex digits): about 1.1 KB, from about 400 bytes of input."""
    digest = hashlib.sha256(str(n).encode()).hexdigest()
    user_data = {key: [digest] for key in ("em", "ph", "fn", "ln", "ct", "st", "zp", "country", "external_id")}
    user_data |= {"client_user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15"}
    return {**meta_event(f"F-{n}"), "user_data": user_data}


def test_a_large_queued_message_is_published_in_parts_each_push_fits_capi_deliver(graph: GraphServer) -> None:
    """Before: 1000 such events (from a 0.42 MB request) made one message of 1.3 MB of base64 data,
    over capi_deliver's 1 MiB body bound: every push answered 413, Pub/Sub redelivered it until
    the dead-letter topic took it, and no event reached Meta from the queue."""
    from capi.delivery.publish import MAX_MESSAGE_BYTES, PUSH_BODY_BYTES, Publisher, Queued
    from capi.http import MAX_BODY_BYTES

    assert PUSH_BODY_BYTES == MAX_BODY_BYTES
    events = [full_event(n) for n in range(1000)]
    pubsub = RecordingPubSub()
    ids = Publisher(pubsub, "projects/p/topics/t").publish(  # type: ignore[arg-type]
        [Queued("default", events, "TEST1", [("em",)] * 1000)]
    )
    assert len(ids) == len(pubsub.messages) >= 2
    assert all(len(m["data"]) <= MAX_MESSAGE_BYTES for m in pubsub.messages)
    client = deliver_client(build(graph, DELIVERY="queue", PUBSUB_TOPIC="capi-events", BATCH_WINDOW_MS="0"))
    for n, message in enumerate(pubsub.messages):
        answer = client.post("/", json={"message": {**message, "messageId": f"m-{n}"}})
        assert answer.status_code == 200, answer.get_data()[:200]
    assert graph.fake.delivered == {("Purchase", f"F-{n}"): 1 for n in range(1000)}
    assert {b["test_event_code"] for b in graph.fake.bodies} == {"TEST1"}


def test_an_event_too_large_for_any_message_is_delivered_directly() -> None:
    from capi.delivery.publish import Publisher, Queued
    from capi.errors import QueueUnavailable

    event = {**meta_event("BIG"), "custom_data": {"contents": [{"id": "x" * 500, "quantity": 1}] * 1500}}
    pubsub = RecordingPubSub()
    with pytest.raises(QueueUnavailable, match="too large"):
        Publisher(pubsub, "projects/p/topics/t").publish([Queued("default", [event], None, [()])])  # type: ignore[arg-type]
    assert pubsub.messages == []


# -- the tag's set_cookies answer -----------------------------------------------------------------


@pytest.mark.parametrize(
    "fbp",
    [FBP + ";Domain=evil.example", FBP + ",x", FBP + '"', FBP + "\\x", FBP + "\x7f", "fb.1.1790000000000.\u00e9"],
)
def test_set_cookies_never_hands_back_a_value_a_cookie_cannot_hold(graph: GraphServer, fbp: str) -> None:
    """Before: an fbp whose random part held ';' (capi's fbp check only refuses whitespace and dots)
    was answered in set_cookies for the tag to set as _fbp. sGTM's setCookie URI-encodes it
    (the tag never passes noEncode), so no header was injected, but the browser was handed a
    cookie of the caller's text. Meta still gets the value (it matches the browser's own)."""
    client = shop_app(graph)
    answer = client.post(
        "/events",
        json=[purchase("C-1", **{"x-fb-ck-fbp": fbp}), purchase("C-2", **{"x-fb-ck-fbp": FBP})],
        headers={"X-Api-Key": "ingest-key", "X-Capi-Set-Cookies": "1"},
    ).get_json()
    assert answer["forwarded"] == 2
    assert answer["set_cookies"] == [{"index": 1, "event_id": "C-2", "_fbp": FBP}]
    assert [e["user_data"]["fbp"] for e in graph.fake.bodies[0]["data"]] == [fbp, FBP]


# -- make deploy ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"STATE_BUCKET": "bucket`touch /tmp/x`"}, "STATE_BUCKET"),
        ({"STATE_BUCKET": "b; rm -rf ~"}, "STATE_BUCKET"),
        ({"FIRESTORE_LOCATION": "eur3`id`"}, "FIRESTORE_LOCATION"),
        ({"ALERT_EMAIL": "ops`id`@example.com"}, "ALERT_EMAIL"),
        ({"BROWSER_COLLECTION": "capi_browsers;id"}, "BROWSER_COLLECTION"),
        ({"IDEMPOTENCY_COLLECTION": "a b"}, "IDEMPOTENCY_COLLECTION"),
        ({"BROWSER_TTL_DAYS": "30|id"}, "BROWSER_TTL_DAYS"),
    ],
)
def test_deploy_refuses_shell_metacharacters_before_any_command(
    tmp_path: Any, variables: dict[str, str], named: str
) -> None:
    """Before: STATE_BUCKET, FIRESTORE_LOCATION and the options' values went unchecked into
    gcloud and terraform arguments (and the commands printed to copy); ALERT_EMAIL took backquotes.
    (Make itself expands `$(...)` on its command line, so the values here use backquotes.)"""
    cloud = Cloud(tmp_path)
    failed = cloud.deploy(**variables)
    assert failed.returncode != 0 and named in failed.stderr
    assert cloud.calls() == []


# -- enhanced event coverage ----------------------------------------------------------------------


@pytest.mark.emulator
def test_malformed_browser_documents_never_500_nor_leak_and_non_hex_digests_are_not_sent(
    firestore_db: Any, graph: GraphServer
) -> None:
    """Browser documents written by hand or by another tool, of every wrong type: each event is
    sent with its own keys only. Before: a 64-character value that is not hex was sent as `em`."""
    client = serve(make_app(graph, firestore=firestore_db, **ENV))
    future = datetime.now(UTC) + timedelta(days=1)
    documents = [
        {"keys": ["em"], TTL_FIELD: future},
        {"keys": {"em": {"a": "b"}, "ph": [None, 5, True]}, TTL_FIELD: future},
        {"keys": {"em": ["z" * 64, "<script>" + "a" * 56]}, TTL_FIELD: future},
        {"keys": {"em": [hashlib.sha256(b"ok").hexdigest()]}, TTL_FIELD: "2999-01-01"},
        {"keys": "em", TTL_FIELD: 10**12},
        {"keys": None},
    ]
    for n, document in enumerate(documents):
        fbp = f"fb.1.1700000000000.{n}"
        firestore_db.collection("capi_browsers").document(document_id(fbp)).set(document)
        answer = client.post("/events", json=funnel_event("add_to_cart", n, fbp=fbp))
        assert answer.status_code == 200 and answer.get_json()["forwarded"] == 1, (n, answer.get_json())
    sent = {e["event_id"]: e["user_data"] for body in graph.fake.bodies for e in body["data"]}
    assert len(sent) == len(documents)
    for user_data in sent.values():
        assert not {"em", "ph"} & user_data.keys(), user_data


# -- the order key --------------------------------------------------------------------------------


@pytest.mark.emulator
def test_the_same_order_id_in_two_pixels_is_counted_once_in_each(firestore_db: Any, graph: GraphServer) -> None:
    """Two brands whose shops number orders alike (both have order 1001), in separate requests:
    each pixel gets its Purchase; a reload in either is a duplicate_order only in its own pixel."""
    from tests.test_destinations import BRAND_A, BRAND_B, application, delivered_ids
    from tests.test_destinations import purchase as routed_purchase

    client = serve(application(graph, [BRAND_A, BRAND_B], firestore_db, IDEMPOTENCY_COLLECTION="capi_r3_orders"))
    a = client.post("/events", json=routed_purchase("A-1", transaction_id=1001))
    b = client.post("/events", json=routed_purchase("B-1", "https://shop-b.example/checkout", transaction_id="1001"))
    assert (a.get_json()["forwarded"], b.get_json()["forwarded"]) == (1, 1)
    reload_b = client.post("/events", json=routed_purchase("B-2", "https://shop-b.example/done", transaction_id=1001))
    assert reload_b.get_json()["skipped"] == [{"index": 0, "event_id": "B-2", "reason": "duplicate_order"}]
    assert (delivered_ids(graph, "111"), delivered_ids(graph, "222")) == (["A-1"], ["B-1"])


# -- never log keys or PII ------------------------------------------------------------------------

SHOP_PII = ["webhook.buyer@example.com", "6505550142", "Ximena", "Quetzal-Buyer", "Zyzzyva Town", "203.0.113.99"]


@pytest.mark.emulator
def test_webhooks_never_log_or_answer_signing_keys_or_raw_personal_data(
    firestore_db: Any, graph: GraphServer, capfd: Any, caplog: Any
) -> None:
    import logging

    from tests.test_shop_orders import SHOPIFY_KEY, WOO_KEY

    caplog.set_level(logging.DEBUG)
    client = shop_app(graph, firestore_db, IDEMPOTENCY_COLLECTION="capi_r3_leaks", LOG_LEVEL="DEBUG")
    order = shopify_paid()
    order |= {"id": 555001, "email": SHOP_PII[0], "phone": "+1 650 555 0142", "browser_ip": SHOP_PII[5]}
    order["client_details"] = {**order["client_details"], "browser_ip": SHOP_PII[5]}
    order["billing_address"] = {**order["billing_address"], "first_name": "Ximena", "last_name": "Quetzal-Buyer"}
    order["billing_address"]["city"] = "Zyzzyva Town"
    outputs = []
    raw = orjson.dumps(order)
    cases = [
        (deliver(client, "shopify", order, "orders/paid"), 200),
        (deliver(client, "shopify", order, "orders/paid", key="a wrong key"), 401),
        (deliver(client, "shopify", {**order, "id": None}, "orders/paid"), 200),  # rejected: no id
        (deliver(client, "shopify", raw[:-5] + b"garbage " + SHOP_PII[0].encode(), "orders/paid"), 400),
        (deliver(client, "woocommerce", woo_checkout() | {"billing": {"email": SHOP_PII[0]}}, "order.created"), 200),
    ]
    graph.fake.down = "503"
    cases.append((deliver(client, "shopify", {**order, "id": 555002}, "orders/paid"), 202))  # stored for replay
    for answer, status in cases:
        assert answer.status_code == status, answer.get_data()[:200]
        outputs.append(answer.get_data(as_text=True))
    stored = str([d.to_dict() for d in firestore_db.collection("capi_deadletter").stream()])
    captured = capfd.readouterr()
    logs = "\n".join([*outputs, captured.out, captured.err, caplog.text]).lower()
    assert '"severity"' in captured.out and "555002" in stored
    for secret in [SHOPIFY_KEY, WOO_KEY, *SHOP_PII, "ximena", "16505550142", "zyzzyvatown"]:
        assert secret.lower() not in logs, secret
        # A dead letter holds what Meta would get: the address is sent as it is (Meta's rule), the rest hashed.
        assert secret == SHOP_PII[5] or secret.lower() not in stored.lower(), secret


@pytest.mark.emulator
def test_a_thousand_browsers_in_one_request_cost_one_read_and_one_write(firestore_db: Any, graph: GraphServer) -> None:
    """1000 distinct browsers (the most one request holds), each with an email: one batched read,
    one batched commit of 1000 documents, every event sent with its own keys; a second request
    for the same browsers teaches nothing and writes nothing."""
    from tests.conftest import CountingFirestore

    counting = CountingFirestore(firestore_db)
    client = serve(make_app(graph, firestore=counting, **ENV))
    events = [
        funnel_event("sign_up", n, fbp=f"fb.1.1700000000000.{n}", user_data={"email_address": f"b{n}@example.com"})
        for n in range(1000)
    ]
    answer = client.post("/events", json=events)
    assert answer.status_code == 200 and answer.get_json()["forwarded"] == 1000

    def stored() -> dict[str, Any]:
        return {d.id: d.update_time for d in firestore_db.collection("capi_browsers").stream()}

    before = stored()
    assert len(before) == 1000 and counting.get_all_calls == 1
    again = [funnel_event("page_view", n + 1000, fbp=f"fb.1.1700000000000.{n}") for n in range(1000)]
    assert client.post("/events", json=again).get_json()["forwarded"] == 1000
    assert counting.get_all_calls == 2 and stored() == before  # one read, no write
    sent = {e["event_id"]: e["user_data"] for body in graph.fake.bodies for e in body["data"]}
    assert sent["page_view-1007"]["em"] == [hashlib.sha256(b"b7@example.com").hexdigest()]
