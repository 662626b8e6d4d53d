"""What the shop dialects (capi.inputs.shopify, capi.inputs.woocommerce) share: small readers
of an order's fields, and the parts of a paid order's one Purchase event that do not depend on
the shop's field names (capi.webhooks reads order ids with `first_text` too).

Each dialect reads its own fields and passes them here, so a rule about the event (which keys
it carries, when a browser field is left out) is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from capi.events import Unreadable

# The browser cookies a shop's checkout stores with the order (docs/orders.md): the names its
# snippet uses, with or without the underscore that hides them from the buyer.
FBP_NAMES = ("_fbp", "fbp")
FBC_NAMES = ("_fbc", "fbc")


def first_text(*values: Any) -> str | None:
    """The first value that is a non-empty string or an integer, as text (shop ids are JSON numbers)."""
    for value in values:
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def no_order_id() -> Unreadable:
    """A paid order whose id is missing or not a string or integer: rejected, never sent with a
    minted event_id, which neither the order key nor Meta could match to a retried webhook
    (Shopify and WooCommerce retry for hours: each retry would count the sale again)."""
    return Unreadable("id", "a paid order needs its id (a string or an integer): its Purchase is keyed by it")


def attribute(pairs: Any, names: tuple[str, ...], key: str = "name") -> str | None:
    """The value of the first `{key: name, "value": ...}` entry named one of `names` (Shopify's
    note_attributes, WooCommerce's meta_data), when it is a non-empty string."""
    if not isinstance(pairs, list):
        return None
    for name in names:
        for pair in pairs:
            if isinstance(pair, dict) and pair.get(key) == name:
                value = pair.get("value")
                if isinstance(value, str) and value.strip():
                    return value.strip()
    return None


def origin(url: Any) -> str | None:
    """`https://host` of an absolute http(s) URL (the shop's site), else None."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def address(fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """The address fields (internal names) that hold text, or None when none does."""
    found = {key: value for key, value in fields.items() if isinstance(value, str) and value.strip()}
    return found or None


def items(lines: Any, item_id: Callable[[dict[str, Any]], str | None]) -> list[dict[str, Any]]:
    """GA4-style items of an order's line items; a line without an id (`item_id(line)`) is left out."""
    found = []
    for line in lines if isinstance(lines, list) else []:
        if not isinstance(line, dict):
            continue
        identifier = item_id(line)
        if identifier is None:
            continue
        item: dict[str, Any] = {"item_id": identifier, "quantity": line.get("quantity", 1)}
        if line.get("price") is not None:
            item["price"] = line["price"]
        found.append(item)
    return found


def user_data(
    emails: Any, phones: list[Any], addresses: list[dict[str, Any]], external_id: str | None
) -> dict[str, Any]:
    """The buyer's user_data (GA4 names): only what the order holds."""
    user: dict[str, Any] = {}
    if emails:
        user["email_address"] = emails
    if phones:
        user["phone_number"] = phones
    if addresses:
        user["address"] = addresses
    if external_id:
        user["external_id"] = external_id
    return user


def purchase(
    order_id: str | None,
    *,
    value: Any,
    currency: Any,
    items: list[dict[str, Any]],
    user: dict[str, Any],
    action_source: str,
    browser: Mapping[str, Any],
) -> dict[str, Any]:
    """The order's Purchase: `event_id` and `transaction_id` are the order id (the Pixel sends the
    same id as eventID, docs/orders.md). `browser` holds page_location, ip_override,
    user_agent, fbp and fbc as the order kept them; an empty one is left out."""
    event: dict[str, Any] = {
        "event_name": "Purchase",
        "event_id": order_id,
        "transaction_id": order_id,
        "value": value,
        "currency": currency,
        "items": items,
        "user_data": user,
        "action_source": action_source,
    }
    event.update({key: found for key, found in browser.items() if found})
    return event
