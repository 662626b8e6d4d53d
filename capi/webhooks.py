"""Signed shop webhooks: `POST /webhooks/shopify` and `POST /webhooks/woocommerce`.

On these paths the shop's signature replaces the ingest key: an HMAC-SHA256 of the raw body
with the shop's signing key, base64-encoded, in `X-Shopify-Hmac-Sha256` (shopify.dev, "Verify
webhooks") or `X-WC-Webhook-Signature` (woocommerce/woocommerce `WC_Webhook::generate_signature`),
compared in constant time. A request without the header is refused before its body is read
(`refuse_early`, from `capi.http.EarlyRefusal`); a wrong one is refused before the body is parsed.

The verified body is read by the shop's dialect (`capi.inputs.shopify` / `woocommerce`) under
the same rules as on `/events`; the topic header only tells a refund or a deletion apart.
WooCommerce's ping when a webhook is saved (`webhook_id=N`, form-encoded, unsigned:
`WC_Webhook::deliver_ping`) is answered 200 and nothing else is done with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from capi.errors import RequestError, Unauthorized
from capi.inputs import Envelope, shopify, woocommerce
from capi.inputs.common import Skipped
from capi.inputs.shop import first_text

SHOPIFY = shopify.DIALECT
WOOCOMMERCE = woocommerce.DIALECT
SHOPS = (SHOPIFY, WOOCOMMERCE)
PREFIX = "/webhooks/"
SIGNATURE_HEADER = {SHOPIFY: "X-Shopify-Hmac-Sha256", WOOCOMMERCE: "X-WC-Webhook-Signature"}
TOPIC_HEADER = {SHOPIFY: "X-Shopify-Topic", WOOCOMMERCE: "X-WC-Webhook-Topic"}
KEY_VARIABLE = {SHOPIFY: "SHOPIFY_SIGNING_KEY_SECRET", WOOCOMMERCE: "WOOCOMMERCE_SIGNING_KEY_SECRET"}
MAX_PING_BYTES = 64  # "webhook_id=" and a post id: a longer unsigned body is no ping
_PING = re.compile(rb"webhook_id=[0-9]{1,20}")

Keys = Callable[[], Sequence[str]]


def shop_of(path: str) -> str | None:
    """The shop whose webhook path this is (`/webhooks/shopify`), else None."""
    path = path.rstrip("/")
    if not path.startswith(PREFIX):
        return None
    shop = path[len(PREFIX) :]
    return shop if shop in SHOPS else None


def sign(body: bytes, key: str) -> str:
    """The signature both shops send: base64 of HMAC-SHA256(body, key)."""
    return base64.b64encode(hmac.new(key.encode("utf-8"), body, hashlib.sha256).digest()).decode("ascii")


def refuse_early(path: str, headers: Mapping[str, str], length: int) -> None:
    """Before any byte of the body is read: 401 when a webhook carries no signature at all
    (except a body small enough to be WooCommerce's unsigned ping, read and checked later)."""
    shop = shop_of(path)
    if shop is None or headers.get(SIGNATURE_HEADER[shop]):
        return
    if shop == WOOCOMMERCE and 0 < length <= MAX_PING_BYTES:
        return
    raise Unauthorized(f"missing {SIGNATURE_HEADER[shop]}: this path takes signed {shop} webhooks only")


def is_ping(shop: str, headers: Mapping[str, str], body: bytes) -> bool:
    return shop == WOOCOMMERCE and not headers.get(SIGNATURE_HEADER[shop]) and _PING.fullmatch(body.strip()) is not None


class SignedWebhooks:
    """Verifies each shop's signature with its keys (literal or Secret Manager, several for a
    rotation) and reads the verified body into an Envelope."""

    def __init__(self, keys: Mapping[str, Keys | None]) -> None:
        self._keys = keys

    def verify(self, shop: str, headers: Mapping[str, str], body: bytes) -> None:
        """Raises Unauthorized unless the body is signed with one of the shop's keys."""
        header = SIGNATURE_HEADER[shop]
        keys = self._keys.get(shop)
        if keys is None:
            raise Unauthorized(f"{shop} webhooks are not configured: set {KEY_VARIABLE[shop]}")
        presented = (headers.get(header) or "").strip()
        if not presented:
            raise Unauthorized(f"missing {header}")
        ok = False
        for key in keys():
            # compare_digest on bytes takes the same time wherever the first difference is.
            ok |= hmac.compare_digest(sign(body, key).encode("ascii"), presented.encode("utf-8", "replace"))
        if not ok:
            raise Unauthorized(f"wrong {header}: the body is not signed with the configured {shop} signing key")


def parse(body: bytes) -> Any:
    """The verified body as JSON (400 otherwise)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError("the webhook body is not valid JSON", field="body") from None


def envelope(shop: str, headers: Mapping[str, str], payload: Any) -> Envelope:
    """The webhook's events: a paid order's Purchase, a skipped order or refund with its
    reason, or nothing (another topic, said in the answer's messages)."""
    topic = (headers.get(TOPIC_HEADER[shop]) or "").strip()[:100]
    if not isinstance(payload, dict):
        raise RequestError(f"a {shop} webhook body must be a JSON object", field="body")
    if shop == SHOPIFY:
        if topic.startswith("refunds/"):
            return Envelope([(Skipped("refund", first_text(payload.get("order_id"))), SHOPIFY, ())])
        if (not topic or topic.startswith("orders/")) and shopify.recognises(payload):
            return Envelope([shopify.read(payload)])
    else:
        if topic == "order.deleted":
            return Envelope([(Skipped("cancelled", first_text(payload.get("id"))), WOOCOMMERCE, ())])
        if (not topic or topic.startswith("order.")) and woocommerce.recognises(payload):
            return Envelope([woocommerce.read(payload, site=headers.get("X-WC-Webhook-Source"))])
    note = f"topic {topic or '(none)'} is not an order webhook capi reads: nothing was sent"
    return Envelope([], messages=[{"message": note}])
