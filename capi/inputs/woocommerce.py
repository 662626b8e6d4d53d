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

from capi.inputs import shop
from capi.inputs.common import Incoming, Skipped
from capi.inputs.shop import attribute, first_text, origin

DIALECT = "woocommerce"
PAID = frozenset({"processing", "completed"})
SKIP_BY_STATUS = {"cancelled": "cancelled", "trash": "cancelled", "refunded": "refunded"}


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
    return shop.address(
        {
            "first_name": entry.get("first_name"),
            "last_name": entry.get("last_name"),
            "city": entry.get("city"),
            "region": entry.get("state"),
            "postal_code": entry.get("postcode"),
            "country": entry.get("country"),
        }
    )


def _item_id(line: dict[str, Any]) -> str | None:
    # A variation's own id when it is one (0 otherwise), else the product's.
    variation = line.get("variation_id")
    return first_text(variation if variation else None, line.get("product_id"), line.get("sku"), line.get("id"))


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
    phones = [p for p in (billing.get("phone"), shipping.get("phone")) if p]
    addresses = [a for a in (_address(billing), _address(shipping)) if a]
    customer = first_text(order.get("customer_id"))
    # customer_id 0 is a guest.
    user = shop.user_data(billing.get("email"), phones, addresses, customer if customer != "0" else None)
    user_agent = order.get("customer_user_agent")
    meta = order.get("meta_data")
    return shop.purchase(
        order_id,
        value=order.get("total"),
        currency=order.get("currency"),
        items=shop.items(order.get("line_items"), _item_id),
        user=user,
        # Checkout orders carry the buyer's browser; one entered in the admin or by the API does not.
        action_source="website" if user_agent else "other",
        browser={
            "page_location": site if origin(site) else _site(order),
            "ip_override": order.get("customer_ip_address"),
            "user_agent": user_agent,
            "fbp": attribute(meta, shop.FBP_NAMES, key="key"),
            "fbc": attribute(meta, shop.FBC_NAMES, key="key"),
        },
    )


def read(order: dict[str, Any], site: str | None = None) -> Incoming:
    """One WooCommerce order body -> a Purchase, or a Skipped with its reason (its other fields
    are not listed as ignored, as for Shopify)."""
    reason = skip_reason(order)
    if reason is not None:
        return Skipped(reason, first_text(order.get("id"))), DIALECT, ()
    if first_text(order.get("id")) is None:
        return shop.no_order_id(), DIALECT, ()
    return to_event(order, site), DIALECT, ()
