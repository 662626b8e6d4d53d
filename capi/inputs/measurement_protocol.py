"""Google Analytics 4 Measurement Protocol bodies
(developers.google.com/analytics/devguides/collection/protocol/ga4/reference):
`{"client_id" or "user_id", "timestamp_micros", "consent", "user_data", "events": [{"name", "params"}]}`.

Each event becomes one internal event: its `params` flattened, its `name` as `event_name`, and
the request's `user_id`, `user_data` and time applied to it. The request's `consent` is not
copied into the events: it is read beside each event's own signals (capi.consent.decide), so an
event's `params.consent` can never replace a denial the request made. An MP hit carries no page
URL or user agent unless the sender put them in `params` (`page_location`, `user_agent`): a
website event without them is rejected naming both.

Request-level keys are checked once per request, not once per event: keys capi does not use
(at the top, in `user_data` and its `address`) are named once in the request's messages and
never copied into the events (a body of 1000 events and 20,000 unknown `user_data` keys must not
cost 1000 times those keys, issue 19 finding 4).
"""

from __future__ import annotations

from typing import Any

from capi.consent import SIGNALS
from capi.events import ADDRESS_KEYS, MAX_VALUES_PER_KEY, USER_DATA_KEYS
from capi.inputs.common import Incoming

DIALECT = "measurement_protocol"
# Request keys applied to every event (when the event's params do not set them itself).
_APPLIED = ("user_id", "user_data", "ip_override", "user_agent")
_USED_REQUEST_KEYS = frozenset({*_APPLIED, "events", "timestamp_micros", "test_event_code", *SIGNALS})
_USED_EVENT_KEYS = frozenset({"name", "params", "timestamp_micros"})


def recognises(payload: dict[str, Any]) -> bool:
    """An MP body: a client/app id at the top, or events written as {name, params}."""
    if "client_id" in payload or "app_instance_id" in payload:
        return True
    events = payload.get("events")
    return isinstance(events, list) and any(
        isinstance(e, dict) and "name" in e and "event_name" not in e for e in events
    )


def _user_data(value: Any, ignored: list[str]) -> Any:
    """The request's user_data with only the keys capi reads (the others named in `ignored`,
    each once); anything but an object is handed on for prepare to reject in each event."""
    if not isinstance(value, dict):
        return value
    kept: dict[str, Any] = {}
    for name, item in value.items():
        if name == "address":
            kept[name] = _addresses(item, ignored)
        elif name in USER_DATA_KEYS:
            kept[name] = item
        else:
            ignored.append(f"user_data.{name}")
    return kept


def _addresses(value: Any, ignored: list[str]) -> Any:
    seen: set[str] = set()

    def known(entry: Any) -> Any:
        if not isinstance(entry, dict):
            return entry
        for name in entry:
            if name not in ADDRESS_KEYS and name not in seen:
                seen.add(name)
                ignored.append(f"user_data.address.{name}")
        return {name: item for name, item in entry.items() if name in ADDRESS_KEYS}

    if isinstance(value, list):
        return [known(entry) for entry in value[: MAX_VALUES_PER_KEY + 1]]  # prepare reads 16 and says so
    return known(value)


def read(payload: dict[str, Any], events: list[Any]) -> tuple[list[Incoming], list[str]]:
    """The events in the internal form, and the request keys capi does not use (named once)."""
    request_ignored = [key for key in payload if key not in _USED_REQUEST_KEYS]
    shared = {key: payload[key] for key in _APPLIED if key in payload}
    if "user_data" in shared:
        shared["user_data"] = _user_data(shared["user_data"], request_ignored)
    micros = payload.get("timestamp_micros")
    out: list[Incoming] = []
    for item in events:
        if not isinstance(item, dict):
            out.append((item, DIALECT, ()))
            continue
        params = item.get("params")
        event: dict[str, Any] = dict(params) if isinstance(params, dict) else {}
        ignored = []
        if params is not None and not isinstance(params, dict):
            ignored.append("params")
        ignored.extend(key for key in item if key not in _USED_EVENT_KEYS)
        event["event_name"] = item.get("name")
        own = item.get("timestamp_micros", micros)
        if own is not None and "event_time" not in event:
            event["timestamp_micros"] = own  # converted and checked by prepare, which names it
        for key, value in shared.items():
            if key not in event:
                event[key] = value
        out.append((event, DIALECT, tuple(ignored)))
    return out, request_ignored
