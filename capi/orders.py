"""One Purchase per order: the keys the idempotency guard claims for an event, and what its
answer means for that event.

A Meta event is claimed under its (event_name, event_id) pair, as in release 2. A Purchase that
names its order (`custom_data.order_id`, which `transaction_id`, `ecommerce.transaction_id`,
Meta's own `custom_data.order_id` and the shop dialects all become) is claimed under its order
key as well, so a reloaded thank-you page or a shop webhook retried with a fresh `event_id` meets
the first copy's record and is skipped as `duplicate_order`. Every delivery path (direct, queued,
webhooks) asks this module; none of them reads order ids itself.

Pure: no I/O. The guard (`capi.firestore.FirestoreIdempotency`) scopes every key by pixel and
keeps an order key for ORDER_DEDUP_HOURS.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

Key = tuple[str, str]  # (event_name, event_id), or (ORDER, order id)

# The first part of an order key. Not a name capi sends: Meta's names are words, and an event
# named "#order" would only ever share a record with the order of the same id.
ORDER = "#order"

# What the guard's answer makes of an event (a destination's state for it, and the skip reason).
DUPLICATE = "duplicate"
DUPLICATE_ORDER = "duplicate_order"
IN_FLIGHT = "in flight"
HELD = frozenset({DUPLICATE, DUPLICATE_ORDER, IN_FLIGHT})


def order_id(event: Mapping[str, Any]) -> str | None:
    """The order a finished Meta event counts, or None: only a Purchase counts an order."""
    if event.get("event_name") != "Purchase":
        return None
    custom = event.get("custom_data")
    found = custom.get("order_id") if isinstance(custom, dict) else None
    return found if isinstance(found, str) and found else None


def order_key(event: Mapping[str, Any]) -> Key | None:
    found = order_id(event)
    return (ORDER, found) if found is not None else None


def is_order_key(key: Key) -> bool:
    return key[0] == ORDER


def keys_of(event: Mapping[str, Any]) -> list[Key]:
    """Every key to claim for one finished Meta event: its pair, then its order's key."""
    keys: list[Key] = [(event["event_name"], event["event_id"])]
    order = order_key(event)
    if order is not None:
        keys.append(order)
    return keys


def verdict(keys: list[Key], done: Collection[Key], busy: Collection[Key]) -> str | None:
    """None when the event is to be sent; else why not (one of HELD).

    The event's own pair first: a repeat of the same event is a plain `duplicate` (Meta would
    deduplicate it too); another event for an order already counted is `duplicate_order`. A key
    another request holds pending makes the event `in flight`: that request may still fail, so
    the caller retries rather than losing the Purchase.
    """
    if keys[0] in done:
        return DUPLICATE
    if any(key in done for key in keys[1:]):
        return DUPLICATE_ORDER
    if any(key in busy for key in keys):
        return IN_FLIGHT
    return None


def skip_reason(states: Collection[str]) -> str | None:
    """The skip reason of an event every destination held back (its states there), else None."""
    if not states or not HELD.issuperset(states):
        return None
    if IN_FLIGHT in states:
        return IN_FLIGHT
    return DUPLICATE if DUPLICATE in states else DUPLICATE_ORDER
