"""Meta's own Conversions API request body: `{"data": [server events], "test_event_code"}`.

Meta's server events already are capi's internal form (Meta's names are accepted everywhere),
so a back end that called Meta directly switches to capi by changing the URL. The body's
`access_token` is never used or logged: capi sends with its own token.
"""

from __future__ import annotations

from typing import Any

from capi.consent import SIGNALS
from capi.inputs.common import Incoming

DIALECT = "meta"
# Consent signals beside `data` are not Meta's, but read (capi.consent): a denial is never ignored.
_REQUEST_KEYS = frozenset({"data", "test_event_code", *SIGNALS})
_NOT_USED = {
    "access_token": "ignored: capi sends with its own token",
    "partner_agent": "ignored: capi sends its own partner_agent",
    "appsecret_proof": "ignored: capi computes its own",
}


def read(payload: dict[str, Any], data: list[Any]) -> tuple[list[Incoming], list[dict[str, Any]], list[str]]:
    """The events, the notes on Meta's own request keys, and the request keys capi does not use."""
    messages: list[dict[str, Any]] = []
    other = []
    for key in payload:
        if key in _NOT_USED:
            messages.append({"field": key, "message": _NOT_USED[key]})
        elif key not in _REQUEST_KEYS:
            other.append(key)
    return [(event, DIALECT, ()) for event in data], messages, other
