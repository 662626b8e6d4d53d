"""Google Analytics 4 Measurement Protocol bodies
(developers.google.com/analytics/devguides/collection/protocol/ga4/reference):
`{"client_id" or "user_id", "timestamp_micros", "consent", "user_data", "events": [{"name", "params"}]}`.

Each event becomes one internal event: its `params` flattened, its `name` as `event_name`, and
the request's `user_id`, `user_data`, `consent` and time applied to it. An MP hit carries no
page URL or user agent unless the sender put them in `params` (`page_location`,
`user_agent`): a website event without them is rejected naming both.
"""

from __future__ import annotations

from typing import Any

from capi.inputs.common import Incoming

DIALECT = "measurement_protocol"
# Request keys applied to every event (when the event's params do not set them itself).
_APPLIED = ("user_id", "user_data", "consent", "ip_override", "user_agent")
_USED_REQUEST_KEYS = frozenset({*_APPLIED, "events", "timestamp_micros", "test_event_code"})
_USED_EVENT_KEYS = frozenset({"name", "params", "timestamp_micros"})


def recognises(payload: dict[str, Any]) -> bool:
    """An MP body: a client/app id at the top, or events written as {name, params}."""
    if "client_id" in payload or "app_instance_id" in payload:
        return True
    events = payload.get("events")
    return isinstance(events, list) and any(
        isinstance(e, dict) and "name" in e and "event_name" not in e for e in events
    )


def _event_time(micros: Any) -> Any:
    """timestamp_micros -> unix seconds; anything else is handed on for prepare to reject."""
    if type(micros) is int:
        return micros // 1_000_000
    if isinstance(micros, str) and micros.isdigit() and micros.isascii():
        return int(micros) // 1_000_000
    return micros


def read(payload: dict[str, Any], events: list[Any]) -> list[Incoming]:
    request_ignored = tuple(key for key in payload if key not in _USED_REQUEST_KEYS)
    out: list[Incoming] = []
    for item in events:
        if not isinstance(item, dict):
            out.append((item, DIALECT, ()))
            continue
        params = item.get("params")
        event: dict[str, Any] = dict(params) if isinstance(params, dict) else {}
        ignored = list(request_ignored)
        if params is not None and not isinstance(params, dict):
            ignored.append("params")
        ignored.extend(key for key in item if key not in _USED_EVENT_KEYS)
        event["event_name"] = item.get("name")
        micros = item.get("timestamp_micros", payload.get("timestamp_micros"))
        if micros is not None and "event_time" not in event:
            event["event_time"] = _event_time(micros)
        for key in _APPLIED:
            if key in payload and key not in event:
                event[key] = payload[key]
        out.append((event, DIALECT, tuple(ignored)))
    return out
