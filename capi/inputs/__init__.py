"""Input dialects: every body shape real clients send, read into capi's one internal event.

Pure: no I/O. `read(payload)` recognises the dialect from the body (docs/dialects.md)
and returns an `Envelope`: the events, each already in the internal form that
`capi.events.prepare` maps (the GA4 / sGTM event model with Meta's names also accepted), with
the dialect it was read from and the input keys its adapter left out. The mapping, normalization
and delivery never look at the dialect. Adding a dialect is one module here and one branch in
`read`.

| dialect | module | recognised by |
| --- | --- | --- |
| `ga4` | `ga4` | an object with `event_name`, or `{"events": [...]}` |
| `meta_tag` | `ga4` (Meta's sGTM tag keys: `meta_tag`) | `x-fb-ud-*`, `x-fb-cd-*`, `x-fb-event_id` in an event |
| `stape` | `ga4` (flat keys: `stape`) | `email`, `firstName`, ..., `common_cookie` in an event |
| `meta` | `meta` | `{"data": [...]}` |
| `measurement_protocol` | `measurement_protocol` | `{"client_id" / "user_id", "events": [{"name", "params"}]}` |
| `shopify` | `shopify` | a Shopify order (`admin_graphql_api_id` gid://shopify/Order/..., or `financial_status`) |
| `woocommerce` | `woocommerce` | a WooCommerce REST order (`order_key` + `line_items`) |

A shop order that is not a paid purchase comes back as `Skipped` (its reason) instead of an event.

A bare JSON array of events is read like `{"events": [...]}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from capi.consent import SIGNALS
from capi.errors import RequestError
from capi.events import Unreadable, ignored_message
from capi.inputs import ga4, measurement_protocol, meta, shopify, woocommerce
from capi.inputs.common import Incoming, Skipped
from capi.inputs.lenient import UNPAIRED, Lenient, unpaired
from capi.payload import MAX_EVENTS_PER_REQUEST

__all__ = ["Envelope", "Incoming", "Lenient", "Skipped", "read"]

ACCEPTED = (
    'one event with event_name, {"events": [...]}, a JSON array of events, Meta\'s {"data": [...]},'
    ' a Measurement Protocol body {"client_id", "events": [{"name", "params"}]},'
    " or a Shopify or WooCommerce order"
)


@dataclass
class Envelope:
    """One request's events in the internal form, in input order."""

    events: list[Incoming]
    test_event_code: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)  # request-level notes
    # Consent signals the request carried beside its events (capi.consent.SIGNALS): read for
    # every event as well as the event's own, any denial winning (capi.consent.decide).
    consent: dict[str, Any] = field(default_factory=dict)

    @property
    def dialects(self) -> list[str]:
        return [incoming[1] for incoming in self.events]


_GA4_REQUEST_KEYS = frozenset({"events", "test_event_code", *SIGNALS})


def _test_event_code(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > 100):
        raise RequestError("test_event_code must be a string of at most 100 characters", field="test_event_code")
    return value or None


def _checked(events: Any, name: str) -> list[Any]:
    if not isinstance(events, list):
        raise RequestError(f"{name} must be a list of event objects", field=name)
    if not events:
        raise RequestError(f"{name} is empty", field=name)
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise RequestError(f"at most {MAX_EVENTS_PER_REQUEST} events per request, got {len(events)}", field=name)
    return events


def _request_consent(payload: dict[str, Any]) -> dict[str, Any]:
    return {name: payload[name] for name in SIGNALS if payload.get(name) is not None}


def _ignored(envelope: Envelope, names: list[str]) -> Envelope:
    """Name the request keys capi does not use, once for the request (bounded)."""
    if names:
        envelope.messages.append(ignored_message(names, "request keys capi does not use"))
    return envelope


def read(payload: Any) -> Envelope:
    """The request's events in the internal form; a body no dialect reads is a 400 for the whole request."""
    if isinstance(payload, Lenient):
        return _read_lenient(payload.value)
    return _read(payload)


def _event_list(payload: Any) -> tuple[str, list[Any]] | None:
    """Where a body keeps its events, as `_read` finds them: (the key, the list), or None for
    a single event or a body without a list of events."""
    if isinstance(payload, list):
        return "", payload
    if not isinstance(payload, dict) or "event_name" in payload:
        return None
    key = "data" if "data" in payload else "events"
    return (key, payload[key]) if isinstance(payload.get(key), list) else None


def _read_lenient(payload: Any) -> Envelope:
    """A body with unpaired surrogate escapes (capi.inputs.lenient.Lenient): each event holding
    one is rejected naming where; one outside the events is a 400 for the request."""
    found = _event_list(payload)
    if found is None:
        path = unpaired(payload)
        if path is None:
            return _read(payload)
        if isinstance(payload, dict) and "event_name" in payload:  # one event: rejected like any other
            return Envelope([(_unreadable(payload, path), ga4.DIALECT, ())])
        raise RequestError(f"{path.lstrip('.') or 'body'} {UNPAIRED}", field=path.lstrip(".") or "body")
    key, events = found
    rest = {k: v for k, v in payload.items() if k != key} if isinstance(payload, dict) else None
    path = unpaired(rest)
    if path is not None:
        raise RequestError(f"{path.lstrip('.')} {UNPAIRED}", field=path.lstrip("."))
    bad = {i: p for i, event in enumerate(events) if (p := unpaired(event)) is not None}
    clean = [{} if i in bad else event for i, event in enumerate(events)]  # a placeholder keeps the indexes
    envelope = _read({**payload, key: clean} if rest is not None else clean)
    for i, path in bad.items():
        envelope.events[i] = (_unreadable(events[i], path), envelope.events[i][1], ())
    return envelope


def _unreadable(event: Any, path: str) -> Unreadable:
    """The rejection of an event holding an unpaired surrogate, by its event_id when that is clean."""
    given = None
    if isinstance(event, dict):
        params = event.get("params")  # a Measurement Protocol event keeps its id in params
        given = event.get("event_id", params.get("event_id") if isinstance(params, dict) else None)
    event_id = given if isinstance(given, str) and unpaired(given) is None and len(given) <= 512 else None
    return Unreadable(path.lstrip("."), UNPAIRED, event_id)


def _read(payload: Any) -> Envelope:
    if type(payload) is dict and "event_name" in payload:  # the common case: one sGTM event
        return Envelope([ga4.adapt(payload)], _test_event_code(payload.get("test_event_code")))
    if isinstance(payload, list):
        return Envelope([ga4.adapt(item, in_list=True) for item in _checked(payload, "body")])
    if not isinstance(payload, dict):
        raise RequestError(f"the body must be {ACCEPTED}", field="body")
    if shopify.recognises(payload):
        return Envelope([shopify.read(payload)])
    if woocommerce.recognises(payload):
        return Envelope([woocommerce.read(payload)])
    if "data" in payload:
        code = _test_event_code(payload.get("test_event_code"))
        events, messages, ignored = meta.read(payload, _checked(payload["data"], "data"))
        return _ignored(Envelope(events, code, messages, _request_consent(payload)), ignored)
    if "events" in payload:
        events = _checked(payload["events"], "events")
        code = _test_event_code(payload.get("test_event_code"))
        if measurement_protocol.recognises(payload):
            adapted, ignored = measurement_protocol.read(payload, events)
            return _ignored(Envelope(adapted, code, consent=_request_consent(payload)), ignored)
        ignored = [key for key in payload if key not in _GA4_REQUEST_KEYS]
        envelope = Envelope([ga4.adapt(item, in_list=True) for item in events], code, consent=_request_consent(payload))
        return _ignored(envelope, ignored)
    raise RequestError(f"no events: send {ACCEPTED}", field="events")
