"""Shopify orders: the Order object of Shopify's order webhooks (`orders/paid`, `orders/create`,
`orders/updated`; shopify.dev/docs/api/webhooks, the REST Admin API Order resource), posted
by Shopify to `POST /webhooks/shopify` or by anyone to `/events` and `/validate`.

A paid order becomes one Purchase: `event_id` and `transaction_id` = the order id (the Pixel
side sends `eventID` = the same id, docs/orders.md), value and currency of the order, contents
from its line items, customer data from the order, its customer and both addresses, the
customer id as `external_id`, and the browser context Shopify kept (`client_details`, the
landing page, `_fbp` / `_fbc` captured as cart attributes). Anything else is skipped with its
reason; a refund object is never a purchase.
"""

from __future__ import annotations

from typing import Any

from capi.inputs import shop
from capi.inputs.common import Incoming, Skipped
from capi.inputs.shop import attribute, first_text, origin

DIALECT = "shopify"
ORDER_GID = "gid://shopify/Order/"
REFUND_GID = "gid://shopify/Refund/"


def recognises(payload: dict[str, Any]) -> bool:
    """A Shopify order (or refund) body: its GraphQL id says so, or an order's own fields."""
    gid = payload.get("admin_graphql_api_id")
    if isinstance(gid, str) and gid.startswith((ORDER_GID, REFUND_GID)):
        return True
    return "financial_status" in payload and "line_items" in payload


def skip_reason(order: dict[str, Any]) -> str | None:
    """Why this order is not a Purchase (test orders first: Shopify's sample is a test), or None."""
    gid = order.get("admin_graphql_api_id")
    if isinstance(gid, str) and gid.startswith(REFUND_GID):
        return "refund"
    if order.get("test") is True:
        return "test_order"
    if order.get("cancelled_at"):
        return "cancelled"
    status = order.get("financial_status")
    if status == "paid":
        return None
    if status == "voided":
        return "voided"
    if status in ("refunded", "partially_refunded"):
        return "refunded"  # its Purchase was counted when it was paid
    return "unpaid"  # pending, authorized, partially_paid, expired, or missing


def _address(entry: Any) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        return None
    return shop.address(
        {
            "first_name": entry.get("first_name"),
            "last_name": entry.get("last_name"),
            "city": entry.get("city"),
            "region": entry.get("province_code") or entry.get("province"),
            "postal_code": entry.get("zip"),
            "country": entry.get("country_code") or entry.get("country"),
        }
    )


def _item_id(line: dict[str, Any]) -> str | None:
    return first_text(line.get("variant_id"), line.get("product_id"), line.get("sku"), line.get("id"))


def _landing_url(order: dict[str, Any]) -> str | None:
    """The page the buyer landed on, absolute: Shopify gives `landing_site` as a path on the
    shop (or a full URL); the shop's origin comes from the order's own status page URL."""
    landing = order.get("landing_site")
    if isinstance(landing, str) and origin(landing):
        return landing
    shop = origin(order.get("order_status_url"))
    if shop is None:
        return None
    if isinstance(landing, str) and landing.startswith("/"):
        return shop + landing
    return shop + "/"


def to_event(order: dict[str, Any]) -> dict[str, Any]:
    """A paid order as one internal (GA4 / sGTM model) Purchase event."""
    order_id = first_text(order.get("id"))
    customer = order.get("customer") if isinstance(order.get("customer"), dict) else {}
    billing = order.get("billing_address") if isinstance(order.get("billing_address"), dict) else {}
    shipping = order.get("shipping_address") if isinstance(order.get("shipping_address"), dict) else {}
    client = order.get("client_details") if isinstance(order.get("client_details"), dict) else {}
    emails = [e for e in (order.get("email"), order.get("contact_email"), customer.get("email")) if e]
    phones = [p for p in (order.get("phone"), billing.get("phone"), shipping.get("phone"), customer.get("phone")) if p]
    addresses = [a for a in (_address(billing), _address(shipping)) if a]
    user = shop.user_data(emails, phones, addresses, first_text(customer.get("id")))
    user_agent = client.get("user_agent")
    # _fbp / _fbc: the cart attributes the checkout snippet sets (docs/orders.md), which
    # Shopify hands on as the order's note_attributes.
    attributes = order.get("note_attributes")
    return shop.purchase(
        order_id,
        value=order.get("total_price"),
        currency=order.get("currency"),
        items=shop.items(order.get("line_items"), _item_id),
        user=user,
        # A web order carries its buyer's browser; a POS sale or a draft order does not.
        action_source="physical_store" if order.get("source_name") == "pos" else ("website" if user_agent else "other"),
        browser={
            "page_location": _landing_url(order),
            "ip_override": client.get("browser_ip") or order.get("browser_ip"),
            "user_agent": user_agent,
            "fbp": attribute(attributes, shop.FBP_NAMES),
            "fbc": attribute(attributes, shop.FBC_NAMES),
        },
    )


def read(order: dict[str, Any]) -> Incoming:
    """One Shopify order body -> a Purchase, or a Skipped with its reason.

    The order's other fields (there are about a hundred) are not listed as ignored: capi reads
    what identifies the buyer and the sale, and the rest is the shop's business.
    """
    reason = skip_reason(order)
    if reason is not None:
        return Skipped(reason, first_text(order.get("id"))), DIALECT, ()
    if first_text(order.get("id")) is None:
        return shop.no_order_id(), DIALECT, ()
    return to_event(order), DIALECT, ()
