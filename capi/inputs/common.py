"""What every dialect adapter returns, and small readers the shop-order dialects share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# (the internal event, or the raw item when it is not an object; the dialect's name; the input
# keys the adapter did not carry over, named as the caller wrote them). A plain tuple: most
# requests are one event, and this is built for each.
Incoming = tuple[Any, str, tuple[str, ...]]


@dataclass(frozen=True)
class Skipped:
    """An input its dialect recognised and decided not to send, such as an unpaid order: it is
    answered as skipped with `reason` (the Incoming's first element in place of an event)."""

    reason: str
    event_id: str | None
    event_name: str = "Purchase"


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
