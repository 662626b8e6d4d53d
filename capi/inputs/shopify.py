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

from capi.inputs.common import Incoming, Skipped, attribute, first_text, origin

DIALECT = "shopify"
ORDER_GID = "gid://shopify/Order/"
REFUND_GID = "gid://shopify/Refund/"
# Cart attributes the checkout snippet sets (docs/orders.md); Shopify hands cart attributes
# on as the order's note_attributes. A leading underscore hides them from the buyer.
FBP_NAMES = ("_fbp", "fbp")
FBC_NAMES = ("_fbc", "fbc")


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
    address = {
        "first_name": entry.get("first_name"),
        "last_name": entry.get("last_name"),
        "city": entry.get("city"),
        "region": entry.get("province_code") or entry.get("province"),
        "postal_code": entry.get("zip"),
        "country": entry.get("country_code") or entry.get("country"),
    }
    found = {key: value for key, value in address.items() if isinstance(value, str) and value.strip()}
    return found or None


def _items(lines: Any) -> list[dict[str, Any]]:
    items = []
    for line in lines if isinstance(lines, list) else []:
        if not isinstance(line, dict):
            continue
        item_id = first_text(line.get("variant_id"), line.get("product_id"), line.get("sku"), line.get("id"))
        if item_id is None:
            continue
        item: dict[str, Any] = {"item_id": item_id, "quantity": line.get("quantity", 1)}
        if line.get("price") is not None:
            item["price"] = line["price"]
        items.append(item)
    return items


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
    user: dict[str, Any] = {}
    emails = [e for e in (order.get("email"), order.get("contact_email"), customer.get("email")) if e]
    phones = [p for p in (order.get("phone"), billing.get("phone"), shipping.get("phone"), customer.get("phone")) if p]
    addresses = [a for a in (_address(billing), _address(shipping)) if a]
    if emails:
        user["email_address"] = emails
    if phones:
        user["phone_number"] = phones
    if addresses:
        user["address"] = addresses
    customer_id = first_text(customer.get("id"))
    if customer_id:
        user["external_id"] = customer_id
    user_agent = client.get("user_agent")
    event: dict[str, Any] = {
        "event_name": "Purchase",
        "event_id": order_id,
        "transaction_id": order_id,
        "value": order.get("total_price"),
        "currency": order.get("currency"),
        "items": _items(order.get("line_items")),
        "user_data": user,
        # A web order carries its buyer's browser; a POS sale or a draft order does not.
        "action_source": "physical_store"
        if order.get("source_name") == "pos"
        else ("website" if user_agent else "other"),
    }
    url = _landing_url(order)
    if url:
        event["page_location"] = url
    ip = client.get("browser_ip") or order.get("browser_ip")
    if ip:
        event["ip_override"] = ip
    if user_agent:
        event["user_agent"] = user_agent
    attributes = order.get("note_attributes")
    fbp, fbc = attribute(attributes, FBP_NAMES), attribute(attributes, FBC_NAMES)
    if fbp:
        event["fbp"] = fbp
    if fbc:
        event["fbc"] = fbc
    return event


def read(order: dict[str, Any]) -> Incoming:
    """One Shopify order body -> a Purchase, or a Skipped with its reason.

    The order's other fields (there are about a hundred) are not listed as ignored: capi reads
    what identifies the buyer and the sale, and the rest is the shop's business.
    """
    reason = skip_reason(order)
    if reason is not None:
        return Skipped(reason, first_text(order.get("id"))), DIALECT, ()
    return to_event(order), DIALECT, ()
