"""Shop orders: the `shopify` and `woocommerce` dialects on /validate and /events, and their
signed webhooks (POST /webhooks/shopify, POST /webhooks/woocommerce) end to end against the fake
Graph API and the Firestore emulator.

Built on the platforms' published payloads (tests/payloads/README.md names each source):
- `shopify_orders_paid_example.json`: Shopify's orders/paid webhook example (a test order);
- `woocommerce_order.json`: the WooCommerce REST API's order example, which is what an
  order.created / order.updated webhook delivers (class-wc-webhook.php, build_payload).
Where a test needs a paid web order, it changes the named fields of the published one and says so.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from capi.auth import Authenticator
from capi.http import EarlyRefusal
from capi.webhooks import SIGNATURE_HEADER, TOPIC_HEADER, sign
from tests.conftest import log_lines, make_app, make_service, purchase, serve
from tests.fakes.emulator import PROJECT as EMULATOR_PROJECT

PAYLOADS = Path(__file__).parent / "payloads"
SHOPIFY_KEY = "shpss_test_signing_key"
WOO_KEY = "woo secret & more"
ORDER_ID = "820982911946154508"
UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36"


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def published(name: str) -> dict[str, Any]:
    body = json.loads((PAYLOADS / name).read_text())
    body.pop("_source")
    return body


def shopify_paid() -> dict[str, Any]:
    """Shopify's published example made a paid web order: not a test, not voided or cancelled,
    with the browser context a storefront checkout records (`client_details`, Shopify's REST
    Order resource shape), a landing page with a click id, and `_fbp` captured as a cart attribute."""
    return {
        **published("shopify_orders_paid_example.json"),
        "financial_status": "paid",
        "test": False,
        "cancelled_at": None,
        "cancel_reason": None,
        "browser_ip": "203.0.113.7",
        "client_details": {
            "accept_language": "en-US",
            "browser_height": None,
            "browser_ip": "203.0.113.7",
            "browser_width": None,
            "session_hash": None,
            "user_agent": UA,
        },
        "landing_site": "/products/aviator?fbclid=IwAR2abc",
        "note_attributes": [
            {"name": "_fbp", "value": "fb.1.1790000000000.123456789"},
            {"name": "colour", "value": "green"},
        ],
    }


def woo_checkout() -> dict[str, Any]:
    """WooCommerce's published order as a storefront checkout records it: the buyer's IP and
    user agent, and `_fbp` / `_fbc` stored as order meta by the checkout snippet."""
    order = published("woocommerce_order.json")
    return {
        **order,
        "customer_ip_address": "198.51.100.4",
        "customer_user_agent": UA,
        "meta_data": [
            *order["meta_data"],
            {"id": 13107, "key": "_fbp", "value": "fb.1.1790000000000.987654321"},
            {"id": 13108, "key": "_fbc", "value": "fb.1.1790000000000.IwAR2xyz"},
        ],
    }


# The Meta event the paid Shopify order becomes (every hash computed here from the order's values,
# normalized by Meta's rules: trimmed, lower-cased, phone in E.164 digits, state and country codes).
SHOPIFY_USER_DATA = {
    "em": [h("jon@example.com"), h("john@example.com")],  # the order's email, then the customer's
    "ph": [h("15555557447")],  # "555-555-SHIP" on both addresses: letters dial as digits, US
    "external_id": [h("115310627314723954")],  # the Shopify customer id
    "fn": [h("steve")],
    "ln": [h("shipper")],
    "ct": [h("shippington")],
    "st": [h("ky")],
    "zp": [h("40003")],
    "country": [h("us")],
    "client_ip_address": "203.0.113.7",
    "client_user_agent": UA,
    "fbp": "fb.1.1790000000000.123456789",
}
SHOPIFY_CUSTOM_DATA = {
    "value": 404.95,
    "currency": "usd",
    "order_id": ORDER_ID,
    "contents": [
        {"id": "788032119674292922", "quantity": 1, "item_price": 89.99},
        {"id": "LENS-PROTECT-2YR", "quantity": 1, "item_price": 19.99},  # no product: its SKU
        {"id": "CASE-LEATHER-PREM", "quantity": 1, "item_price": 24.99},
        {"id": "788032119674292922", "quantity": 1, "item_price": 159.99},
        {"id": "788032119674292922", "quantity": 1, "item_price": 119.99},
    ],
    "content_ids": [
        "788032119674292922",
        "LENS-PROTECT-2YR",
        "CASE-LEATHER-PREM",
        "788032119674292922",
        "788032119674292922",
    ],
    "content_type": "product",
    "num_items": 5,
}


def shopify_event(event_time: int) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_time": event_time,
        "event_id": ORDER_ID,
        "action_source": "website",
        # landing_site is a path: the shop's origin is taken from the order's status page URL
        "event_source_url": "https://jsmith.myshopify.com/products/aviator?fbclid=IwAR2abc",
        "user_data": {**SHOPIFY_USER_DATA, "fbc": f"fb.1.{event_time * 1000}.IwAR2abc"},
        "custom_data": SHOPIFY_CUSTOM_DATA,
    }


# -- the dialects, as /validate reads them --------------------------------------------------


def test_shopify_paid_order_becomes_the_exact_purchase() -> None:
    body = make_service().validate(shopify_paid()).body
    assert body["dialect"] == "shopify" and body["rejected"] == [] and body["skipped"] == []
    assert body["payload"]["data"] == [shopify_event(1_790_000_000)]


def test_shopify_published_example_is_a_test_order_and_is_skipped() -> None:
    body = make_service().validate(published("shopify_orders_paid_example.json")).body
    assert body["skipped"] == [{"index": 0, "event_id": ORDER_ID, "reason": "test_order"}]
    assert body["payload"]["data"] == [] and body["dialect"] == "shopify"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"financial_status": "pending"}, "unpaid"),  # orders/create before payment
        ({"financial_status": "authorized"}, "unpaid"),
        ({"financial_status": "partially_paid"}, "unpaid"),
        ({"financial_status": "voided"}, "voided"),
        ({"cancelled_at": "2021-12-31T19:00:00-05:00"}, "cancelled"),
        ({"financial_status": "refunded"}, "refunded"),
        ({"financial_status": "partially_refunded"}, "refunded"),
        ({"test": True}, "test_order"),
        ({"admin_graphql_api_id": "gid://shopify/Refund/509562969", "id": 509562969}, "refund"),
    ],
)
def test_shopify_orders_that_are_no_purchase_are_skipped_with_their_reason(
    changes: dict[str, Any], reason: str
) -> None:
    order = {**shopify_paid(), **changes}
    body = make_service().validate(order).body
    assert body["skipped"] == [{"index": 0, "event_id": str(order["id"]), "reason": reason}]
    assert body["payload"]["data"] == []


def test_shopify_order_without_browser_is_not_a_website_event() -> None:
    pos = make_service().validate({**shopify_paid(), "client_details": None, "source_name": "pos"}).body
    [event] = pos["payload"]["data"]
    assert event["action_source"] == "physical_store" and "client_user_agent" not in event["user_data"]
    draft = make_service().validate({**shopify_paid(), "client_details": None, "source_name": "shopify_draft_order"})
    assert draft.body["payload"]["data"][0]["action_source"] == "other"


WOO_USER_DATA = {
    "em": [h("john.doe@example.com")],
    "ph": [h("15555555555")],  # "(555) 555-5555", billing country US
    "fn": [h("john")],
    "ln": [h("doe")],
    "ct": [h("sanfrancisco")],
    "st": [h("ca")],
    "zp": [h("94103")],
    "country": [h("us")],
}
WOO_CUSTOM_DATA = {
    "value": 29.35,
    "currency": "usd",
    "order_id": "727",
    # a variation's own id (23) when the line is one, else the product's (93)
    "contents": [{"id": "93", "quantity": 2, "item_price": 3}, {"id": "23", "quantity": 1, "item_price": 12}],
    "content_ids": ["93", "23"],
    "content_type": "product",
    "num_items": 3,
}


def test_woocommerce_published_order_becomes_the_exact_purchase() -> None:
    # The published order was created by the REST API: no browser, so not a website event.
    body = make_service().validate(published("woocommerce_order.json")).body
    assert body["dialect"] == "woocommerce" and body["rejected"] == []
    assert body["payload"]["data"] == [
        {
            "event_name": "Purchase",
            "event_time": 1_790_000_000,
            "event_id": "727",
            "action_source": "other",
            "event_source_url": "https://example.com/",  # the shop, from the order's own REST link
            "user_data": WOO_USER_DATA,
            "custom_data": WOO_CUSTOM_DATA,
        }
    ]


def test_woocommerce_checkout_order_carries_the_browser_and_cookies() -> None:
    [event] = make_service().validate(woo_checkout()).body["payload"]["data"]
    assert event["action_source"] == "website"
    assert event["user_data"] == {
        **WOO_USER_DATA,
        "client_ip_address": "198.51.100.4",
        "client_user_agent": UA,
        "fbc": "fb.1.1790000000000.IwAR2xyz",
        "fbp": "fb.1.1790000000000.987654321",
    }


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("pending", "unpaid"),
        ("on-hold", "unpaid"),
        ("failed", "unpaid"),
        ("checkout-draft", "unpaid"),
        ("cancelled", "cancelled"),
        ("refunded", "refunded"),
        ("completed", None),
        ("processing", None),
    ],
)
def test_woocommerce_status_decides(status: str, reason: str | None) -> None:
    body = make_service().validate({**published("woocommerce_order.json"), "status": status}).body
    if reason is None:
        assert [e["event_id"] for e in body["payload"]["data"]] == ["727"]
    else:
        assert body["skipped"] == [{"index": 0, "event_id": "727", "reason": reason}]


# -- the signature ----------------------------------------------------------------------------


def test_signature_is_base64_hmac_sha256_of_the_raw_body() -> None:
    # A known answer from outside capi: SQLPage's test "Shopify webhook HMAC validation with
    # base64 output" (sqlpage.hmac(body, 'test-webhook-secret', 'sha256-base64')).
    body = b'{"id":1234567890,"email":"customer@example.com","total_price":"123.45"}'
    assert sign(body, "test-webhook-secret") == "QNyObTlKbMx2qDlPF/ZOZcBqg5OgPg+2oky3zldc0Gw="


# -- the webhooks, end to end -----------------------------------------------------------------


def shop_app(graph: Any, firestore: Any = None, **env: str) -> Any:
    return serve(
        make_app(
            graph,
            firestore=firestore,
            ALLOW_UNAUTHENTICATED="false",
            INGEST_API_KEY="ingest-key",
            SHOPIFY_SIGNING_KEY=SHOPIFY_KEY,
            WOOCOMMERCE_SIGNING_KEY=WOO_KEY,
            **env,
        )
    )


def deliver(client: Any, shop: str, order: Any, topic: str, key: str | None = None, **headers: str) -> Any:
    """Post `order` as the shop does: compact JSON, signed with `key` (the configured one by default)."""
    raw = order if isinstance(order, bytes) else orjson.dumps(order)
    key = key if key is not None else (SHOPIFY_KEY if shop == "shopify" else WOO_KEY)
    sent = {SIGNATURE_HEADER[shop]: sign(raw, key), TOPIC_HEADER[shop]: topic, **headers}
    return client.post(f"/webhooks/{shop}", data=raw, headers=sent, content_type="application/json")


def test_shopify_orders_paid_webhook_reaches_meta_once(graph: Any, firestore_db: Any, capsys: Any) -> None:
    client = shop_app(graph, firestore_db, IDEMPOTENCY_COLLECTION="capi_sent")
    capsys.readouterr()
    before = int(time.time())
    answer = deliver(client, "shopify", shopify_paid(), "orders/paid")
    assert answer.status_code == 200, answer.get_json()
    assert (answer.get_json()["forwarded"], answer.get_json()["event_ids"]) == (1, [ORDER_ID])
    [sent] = graph.fake.bodies[-1]["data"]
    assert before <= sent["event_time"] <= time.time()
    assert sent == shopify_event(sent["event_time"])
    [line] = log_lines(capsys.readouterr().out, "events processed")
    assert line["source"] == "shopify" and line["forwarded"] == 1
    # Shopify retries the webhook, and orders/create arrives for the same paid order: the same event
    again = deliver(client, "shopify", shopify_paid(), "orders/paid").get_json()
    created = deliver(client, "shopify", shopify_paid(), "orders/create").get_json()
    assert again["skipped"] == created["skipped"] == [{"index": 0, "event_id": ORDER_ID, "reason": "duplicate"}]
    # the thank-you page reloaded, its Purchase with a fresh event_id and the order id: the order is counted
    page = client.post(
        "/events",
        json=purchase("reload-1", transaction_id=ORDER_ID),
        headers={"X-Api-Key": "ingest-key"},
    ).get_json()
    assert page["skipped"] == [{"index": 0, "event_id": "reload-1", "reason": "duplicate_order"}]
    assert graph.fake.delivered == {("Purchase", ORDER_ID): 1}


def test_shopify_webhook_signature_is_required_and_checked(graph: Any) -> None:
    client = shop_app(graph)
    order = shopify_paid()
    cases = {
        "wrong key": deliver(client, "shopify", order, "orders/paid", key="another key"),
        "no signature": client.post("/webhooks/shopify", data=orjson.dumps(order), content_type="application/json"),
        "ingest key instead": client.post("/webhooks/shopify", json=order, headers={"X-Api-Key": "ingest-key"}),
        "body changed after signing": client.post(
            "/webhooks/shopify",
            data=orjson.dumps({**order, "total_price": "1.00"}),
            headers={SIGNATURE_HEADER["shopify"]: sign(orjson.dumps(order), SHOPIFY_KEY)},
            content_type="application/json",
        ),
        # checked before the body is parsed: a body that is no JSON is 401, not 400, unless signed
        "not JSON, wrong signature": client.post(
            "/webhooks/shopify",
            data=b"{not json",
            headers={SIGNATURE_HEADER["shopify"]: sign(b"{not json", "another key")},
            content_type="application/json",
        ),
    }
    signed_garbage = deliver(client, "shopify", b"{not json", "orders/paid")
    assert signed_garbage.status_code == 400 and signed_garbage.get_json()["field"] == "body"
    for case, answer in cases.items():
        assert answer.status_code == 401, case
        assert answer.get_json()["error"] == "unauthorized", case
    assert graph.fake.requests == 0


def test_a_webhook_whose_key_is_not_configured_is_refused(graph: Any) -> None:
    client = serve(make_app(graph, INGEST_API_KEY="ingest-key", ALLOW_UNAUTHENTICATED="false"))
    answer = deliver(client, "shopify", shopify_paid(), "orders/paid")
    assert answer.status_code == 401 and "SHOPIFY_SIGNING_KEY_SECRET" in answer.get_json()["message"]


def test_shopify_test_notification_and_refunds_send_nothing(graph: Any, capsys: Any) -> None:
    client = shop_app(graph)
    capsys.readouterr()
    example = deliver(client, "shopify", published("shopify_orders_paid_example.json"), "orders/paid")
    assert example.status_code == 200
    assert example.get_json()["skipped"] == [{"index": 0, "event_id": ORDER_ID, "reason": "test_order"}]
    refund = {"id": 509562969, "order_id": 450789469, "admin_graphql_api_id": "gid://shopify/Refund/509562969"}
    refunded = deliver(client, "shopify", refund, "refunds/create")
    assert refunded.status_code == 200
    assert refunded.get_json()["skipped"] == [{"index": 0, "event_id": "450789469", "reason": "refund"}]
    other = deliver(client, "shopify", {"id": 1}, "customers/create")
    assert other.status_code == 200 and other.get_json()["received"] == 0
    assert "customers/create" in other.get_json()["messages"][0]["message"]
    assert graph.fake.requests == 0
    out = capsys.readouterr().out
    lines = log_lines(out, "events processed")
    assert [(line["source"], line.get("skip_reasons")) for line in lines] == [
        ("shopify", {"test_order": 1}),
        ("shopify", {"refund": 1}),
        ("shopify", None),
    ]
    # never the signing key, never raw personal data
    for secret in (SHOPIFY_KEY, "jon@example.com", "Shipper", "555-555-SHIP"):
        assert secret not in out


def test_woocommerce_order_webhook_and_ping(graph: Any, firestore_db: Any, capsys: Any) -> None:
    client = shop_app(graph, firestore_db, IDEMPOTENCY_COLLECTION="capi_sent")
    capsys.readouterr()
    # saving a webhook in WooCommerce posts an unsigned, form-encoded ping first (WC_Webhook::deliver_ping)
    ping = client.post("/webhooks/woocommerce", data=b"webhook_id=7", content_type="application/x-www-form-urlencoded")
    assert ping.status_code == 200 and ping.get_json() == {"ping": True, "source": "woocommerce"}
    [line] = log_lines(capsys.readouterr().out, "webhook ping answered")  # docs/orders.md, Operations
    assert line["source"] == "woocommerce" and line["severity"] == "INFO"
    site = {"X-WC-Webhook-Source": "https://shop.example.org/"}
    pending = deliver(client, "woocommerce", {**woo_checkout(), "status": "pending"}, "order.created", **site)
    assert pending.get_json()["skipped"] == [{"index": 0, "event_id": "727", "reason": "unpaid"}]
    paid = deliver(client, "woocommerce", woo_checkout(), "order.updated", **site)
    assert paid.status_code == 200 and paid.get_json()["forwarded"] == 1
    [sent] = graph.fake.bodies[-1]["data"]
    assert sent["event_source_url"] == "https://shop.example.org/"  # X-WC-Webhook-Source, the shop's home
    assert sent["user_data"]["fbp"] == "fb.1.1790000000000.987654321" and sent["custom_data"] == WOO_CUSTOM_DATA
    # completed later, then refunded: neither is a second purchase
    completed = deliver(client, "woocommerce", {**woo_checkout(), "status": "completed"}, "order.updated", **site)
    assert completed.get_json()["skipped"] == [{"index": 0, "event_id": "727", "reason": "duplicate"}]
    refunded = deliver(client, "woocommerce", {**woo_checkout(), "status": "refunded"}, "order.updated", **site)
    assert refunded.get_json()["skipped"] == [{"index": 0, "event_id": "727", "reason": "refunded"}]
    assert graph.fake.delivered == {("Purchase", "727"): 1}


def test_woocommerce_deleted_order_is_a_cancelled_skip(graph: Any) -> None:
    # A `deleted` topic carries only the resource id (WC_Webhook::build_payload: array( 'id' => $resource_id )).
    client = shop_app(graph)
    deleted = deliver(client, "woocommerce", {"id": 727}, "order.deleted")
    assert deleted.status_code == 200
    assert deleted.get_json()["skipped"] == [{"index": 0, "event_id": "727", "reason": "cancelled"}]
    assert graph.fake.requests == 0


def test_woocommerce_unsigned_order_is_refused(graph: Any) -> None:
    client = shop_app(graph)
    unsigned = client.post("/webhooks/woocommerce", json=woo_checkout())
    assert unsigned.status_code == 401
    wrong = deliver(client, "woocommerce", woo_checkout(), "order.created", key="woo secret &amp; more")
    assert wrong.status_code == 401  # the secret as typed, not HTML-escaped
    not_a_ping = client.post("/webhooks/woocommerce", data=b"webhook_id=7&x=1", content_type="text/plain")
    assert not_a_ping.status_code == 401
    assert graph.fake.requests == 0


def test_order_bodies_on_events_with_the_ingest_key(graph: Any, capsys: Any) -> None:
    client = shop_app(graph)
    key = {"X-Api-Key": "ingest-key"}
    capsys.readouterr()
    answer = client.post("/events", json=shopify_paid(), headers=key)
    assert answer.status_code == 200 and answer.get_json()["forwarded"] == 1
    [line] = log_lines(capsys.readouterr().out, "events processed")
    assert line["source"] == "shopify" and "skip_reasons" not in line
    unpaid = client.post("/events", json={**woo_checkout(), "status": "on-hold"}, headers=key).get_json()
    assert unpaid["skipped"] == [{"index": 0, "event_id": "727", "reason": "unpaid"}]
    assert client.post("/events", json=shopify_paid()).status_code == 401  # the ingest key is still required
    assert list(graph.fake.delivered) == [("Purchase", ORDER_ID)]


def test_signing_key_from_secret_manager(graph: Any, secret_manager: Any) -> None:
    secret_manager.fake.add_version(f"projects/{EMULATOR_PROJECT}/secrets/shopify-hmac", f"old-key,{SHOPIFY_KEY}")
    app = make_app(
        graph,
        secret_client=secret_manager.client(),
        ALLOW_UNAUTHENTICATED="false",
        INGEST_API_KEY="ingest-key",
        SHOPIFY_SIGNING_KEY_SECRET="shopify-hmac",
    )
    client = serve(app)
    assert deliver(client, "shopify", shopify_paid(), "orders/paid").get_json()["forwarded"] == 1
    assert deliver(client, "shopify", shopify_paid(), "orders/paid", key="old-key").status_code == 200  # rotation
    assert deliver(client, "shopify", shopify_paid(), "orders/paid", key="nope").status_code == 401


# -- refused before the body is read ------------------------------------------------------------


def _environ(body: Any, path: str, **headers: str) -> dict[str, Any]:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "wsgi.input": body}
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_LENGTH", "CONTENT_TYPE") else f"HTTP_{key}"] = value
    return environ


@pytest.mark.parametrize(
    ("path", "headers", "passes"),
    [
        ("/webhooks/shopify", {"Content-Length": "900"}, False),  # no signature: 401, body untouched
        ("/webhooks/shopify", {"Content-Length": "900", "X-Api-Key": "k"}, False),  # the ingest key is no signature
        ("/webhooks/shopify", {"Content-Length": "900", "X-Shopify-Hmac-Sha256": "c2ln"}, True),  # checked in the view
        ("/webhooks/woocommerce", {"Content-Length": "900"}, False),
        ("/webhooks/woocommerce", {"Transfer-Encoding": "chunked"}, False),
        ("/webhooks/woocommerce", {"Content-Length": "12"}, True),  # small enough to be the unsigned ping
        ("/webhooks/woocommerce", {"Content-Length": "900", "X-WC-Webhook-Signature": "c2ln"}, True),
        ("/events", {"Content-Length": "900", "X-Shopify-Hmac-Sha256": "c2ln"}, False),  # elsewhere: the ingest key
    ],
)
def test_webhook_paths_take_a_signature_instead_of_the_ingest_key(
    mocker: Any, path: str, headers: dict[str, str], passes: bool
) -> None:
    body, inner, start_response = mocker.Mock(), mocker.Mock(return_value=[b"ok"]), mocker.Mock()
    guard = EarlyRefusal(inner, check_key=Authenticator(lambda: ("k",), False).check)
    answer = b"".join(guard(_environ(body, path, **headers), start_response))
    assert inner.called is passes
    if not passes:
        assert start_response.call_args.args[0] == "401 UNAUTHORIZED"
        assert json.loads(answer)["error"] == "unauthorized"
    assert body.method_calls == []


def test_main_entry_point_routes_webhooks(make_client: Any, graph: Any) -> None:
    # The deployed entry point (main.py, functions-framework): the ingest key is set, the
    # shop presents only its signature.
    client = make_client(
        {
            "META_PIXEL_ID": "1234567890",
            "META_ACCESS_TOKEN": "test-token",
            "META_API_BASE_URL": graph.base_url,
            "INGEST_API_KEY": "ingest-key",
            "SHOPIFY_SIGNING_KEY": SHOPIFY_KEY,
            "PROFILE_COLLECTION": "",
        }
    )
    answer = deliver(client, "shopify", shopify_paid(), "orders/paid")
    assert answer.status_code == 200 and answer.get_json()["forwarded"] == 1
    refused = client.post("/webhooks/shopify", data=io.BytesIO(orjson.dumps(shopify_paid())))
    assert refused.status_code == 401
    assert client.get("/webhooks/shopify").status_code == 405
    assert graph.fake.delivered == {("Purchase", ORDER_ID): 1}
