"""Meta's official sGTM tag keys in event data (facebookincubator/ConversionsAPI-Tag-for-
GoogleTagManager, template.tpl): what containers built for that tag carry.

`x-fb-ud-*` are customer values (Meta's tag assumes them hashed; capi hashes plain values and
passes digests through), `x-fb-cd-*` custom data (`contents` may be a JSON string), and
`x-fb-event_id` an alias of `event_id` (Meta's guide names it; its tag reads `event_id`).
"""

from __future__ import annotations

import json
from typing import Any

DIALECT = "meta_tag"

# x-fb-ud-<name> -> the internal user_data key.
USER_KEYS = {
    **{f"x-fb-ud-{key}": key for key in ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country")},
    "x-fb-ud-external_id": "external_id",
    "x-fb-ud-subscription_id": "subscription_id",
    "x-fb-ud-fb-login-id": "fb_login_id",
    "x-fb-ud-fb_login_id": "fb_login_id",
}
# x-fb-cd-<name> -> custom_data.<name>; custom_properties is an object merged into custom_data.
CUSTOM_KEYS = frozenset(
    {"content_category", "content_name", "content_type", "contents", "content_ids", "num_items",
     "predicted_ltv", "status", "delivery_category", "value", "currency", "order_id", "search_string",
     "net_revenue", "customer_segmentation"}
)  # fmt: skip
EVENT_ID = "x-fb-event_id"
# Every key this module translates. Any other x-fb-* key is left in the event, where prepare
# names it as ignored.
KEYS = frozenset({*USER_KEYS, EVENT_ID, *(f"x-fb-cd-{name}" for name in (*CUSTOM_KEYS, "custom_properties"))})


def _refuse(constant: str) -> Any:
    raise ValueError(constant)


def _json_list(text: str) -> Any:
    """Meta's tag accepts `contents` as a JSON string; one that does not parse stays a string,
    and prepare names custom_data.contents as not a list."""
    try:
        return json.loads(text, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return text


def owns(key: str) -> bool:
    return key in KEYS


def translate(event: dict[str, Any]) -> tuple[str, ...]:
    """Move Meta's tag keys into user_data / custom_data / event_id, in place (`event` is a copy)."""
    from capi.inputs.ga4 import merge_user  # ga4 imports this module

    ignored: list[str] = []
    custom: dict[str, Any] | None = None
    for key in [k for k in event if owns(k)]:
        value = event.pop(key)
        if key == EVENT_ID:
            if event.get("event_id") in (None, ""):
                event["event_id"] = value
            else:
                ignored.append(key)  # event_id wins, as in Meta's tag
        elif key in USER_KEYS:
            if value not in (None, ""):
                merge_user(event, USER_KEYS[key], value)
        else:
            name = key[len("x-fb-cd-") :]
            if custom is None:
                existing = event.get("custom_data")
                custom = dict(existing) if isinstance(existing, dict) else {}
            if name == "contents" and isinstance(value, str):
                value = _json_list(value)
            if value is None or value == "":
                # Unset, as in Meta's tag (`x-fb-cd-contents` || items): the GA4 items, value, ... stay.
                continue
            if name == "custom_properties" and isinstance(value, dict):
                for prop, prop_value in value.items():
                    custom.setdefault(prop, prop_value)
            elif name in CUSTOM_KEYS:
                custom[name] = value
            else:  # custom_properties that is not an object
                ignored.append(key)
    if custom is not None and (isinstance(event.get("custom_data"), dict) or "custom_data" not in event):
        event["custom_data"] = custom  # a custom_data that is not an object stays, for prepare to reject
    return tuple(ignored)
