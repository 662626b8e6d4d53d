"""WooCommerce orders: the order of the REST API (`/wc/v3/orders/{id}`), which is exactly what
an `order.created` / `order.updated` webhook delivers (woocommerce/woocommerce
`WC_Webhook::build_payload`; woocommerce.github.io/woocommerce-rest-api-docs, "Orders"), posted
to `POST /webhooks/woocommerce` or by anyone to `/events` and `/validate`.

An order whose status is `processing` or `completed` (paid) becomes one Purchase: `event_id`
and `transaction_id` = the order id, value and currency, contents from its line items, the
billing (and shipping) customer data, the customer id as `external_id`, the order's
`customer_ip_address` and `customer_user_agent`, and `_fbp` / `_fbc` from the order's meta
data when the shop stored them at checkout (docs/orders.md). Any other status is skipped with
its reason.
"""

from __future__ import annotations

from typing import Any

from capi.inputs.common import Incoming, Skipped, attribute, first_text, origin

DIALECT = "woocommerce"
PAID = frozenset({"processing", "completed"})
SKIP_BY_STATUS = {"cancelled": "cancelled", "trash": "cancelled", "refunded": "refunded"}
FBP_NAMES = ("_fbp", "fbp")
FBC_NAMES = ("_fbc", "fbc")


def recognises(payload: dict[str, Any]) -> bool:
    """A WooCommerce order: its `order_key` (wc_order_...) next to line items and billing."""
    return "order_key" in payload and "line_items" in payload


def skip_reason(order: dict[str, Any]) -> str | None:
    status = order.get("status")
    if not isinstance(status, str):
        return "unpaid"
    if status in PAID:
        return None
    # pending (awaiting payment), on-hold (awaiting a transfer), failed, checkout-draft, ...
    return SKIP_BY_STATUS.get(status, "unpaid")


def _address(entry: Any) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        return None
    address = {
        "first_name": entry.get("first_name"),
        "last_name": entry.get("last_name"),
        "city": entry.get("city"),
        "region": entry.get("state"),
        "postal_code": entry.get("postcode"),
        "country": entry.get("country"),
    }
    found = {key: value for key, value in address.items() if isinstance(value, str) and value.strip()}
    return found or None


def _items(lines: Any) -> list[dict[str, Any]]:
    items = []
    for line in lines if isinstance(lines, list) else []:
        if not isinstance(line, dict):
            continue
        # A variation's own id when it is one (0 otherwise), else the product's.
        variation = line.get("variation_id")
        item_id = first_text(variation if variation else None, line.get("product_id"), line.get("sku"), line.get("id"))
        if item_id is None:
            continue
        item: dict[str, Any] = {"item_id": item_id, "quantity": line.get("quantity", 1)}
        if line.get("price") is not None:
            item["price"] = line["price"]
        items.append(item)
    return items


def _site(order: dict[str, Any]) -> str | None:
    """The shop's home page, from the order's own REST links (the webhook's X-WC-Webhook-Source
    header says it directly: capi.webhooks passes it as `site`)."""
    links = order.get("_links")
    selves = links.get("self") if isinstance(links, dict) else None
    first = selves[0] if isinstance(selves, list) and selves and isinstance(selves[0], dict) else {}
    found = origin(first.get("href"))
    return found + "/" if found else None


def to_event(order: dict[str, Any], site: str | None = None) -> dict[str, Any]:
    order_id = first_text(order.get("id"))
    billing = order.get("billing") if isinstance(order.get("billing"), dict) else {}
    shipping = order.get("shipping") if isinstance(order.get("shipping"), dict) else {}
    user: dict[str, Any] = {}
    email = billing.get("email")
    phones = [p for p in (billing.get("phone"), shipping.get("phone")) if p]
    addresses = [a for a in (_address(billing), _address(shipping)) if a]
    if email:
        user["email_address"] = email
    if phones:
        user["phone_number"] = phones
    if addresses:
        user["address"] = addresses
    customer = first_text(order.get("customer_id"))
    if customer and customer != "0":  # 0 for a guest
        user["external_id"] = customer
    user_agent = order.get("customer_user_agent")
    event: dict[str, Any] = {
        "event_name": "Purchase",
        "event_id": order_id,
        "transaction_id": order_id,
        "value": order.get("total"),
        "currency": order.get("currency"),
        "items": _items(order.get("line_items")),
        "user_data": user,
        # Checkout orders carry the buyer's browser; one entered in the admin or by the API does not.
        "action_source": "website" if user_agent else "other",
    }
    url = site if origin(site) else _site(order)
    if url:
        event["page_location"] = url
    if order.get("customer_ip_address"):
        event["ip_override"] = order["customer_ip_address"]
    if user_agent:
        event["user_agent"] = user_agent
    meta = order.get("meta_data")
    fbp, fbc = attribute(meta, FBP_NAMES, key="key"), attribute(meta, FBC_NAMES, key="key")
    if fbp:
        event["fbp"] = fbp
    if fbc:
        event["fbc"] = fbc
    return event


def read(order: dict[str, Any], site: str | None = None) -> Incoming:
    """One WooCommerce order body -> a Purchase, or a Skipped with its reason (its other fields
    are not listed as ignored, as for Shopify)."""
    reason = skip_reason(order)
    if reason is not None:
        return Skipped(reason, first_text(order.get("id"))), DIALECT, ()
    return to_event(order, site), DIALECT, ()
