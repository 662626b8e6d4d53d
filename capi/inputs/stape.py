"""Stape's Data Client / Data Tag event shape (stape-io/data-client, data-client-protocol.md).

Customer values sit flat at the event's top level (`email`, `phone`, `firstName`/`first_name`,
`lastName`/`last_name`, `city`, `state`, `zip`, `country`), cookies in `common_cookie`
(`_fbp`, `_fbc`), consent in `consent_state` (read by capi.consent).
"""

from __future__ import annotations

from typing import Any

DIALECT = "stape"

# flat key -> the internal user_data key.
USER_KEYS = {
    "email": "email",
    "phone": "phone",
    "firstName": "first_name",
    "first_name": "first_name",
    "lastName": "last_name",
    "last_name": "last_name",
    "city": "city",
    "state": "state",
    "zip": "zip",
    "country": "country",
}
COOKIES = {"_fbp": "fbp", "_fbc": "fbc"}
KEYS = frozenset({*USER_KEYS, "common_cookie"})


def translate(event: dict[str, Any]) -> tuple[str, ...]:
    """Move the flat keys into user_data and the cookies to fbp/fbc, in place (`event` is a copy)."""
    from capi.inputs.ga4 import merge_user  # ga4 imports this module

    ignored: list[str] = []
    for key in [k for k in event if k in USER_KEYS]:
        value = event.pop(key)
        if value not in (None, ""):
            merge_user(event, USER_KEYS[key], value)
    cookies = event.pop("common_cookie", None)
    if isinstance(cookies, dict):
        for name, value in cookies.items():
            target = COOKIES.get(name)
            if target is not None and event.get(target) in (None, "") and value:
                event[target] = value
            else:
                ignored.append(f"common_cookie.{name}")
    elif cookies is not None:
        ignored.append("common_cookie")
    return tuple(ignored)
