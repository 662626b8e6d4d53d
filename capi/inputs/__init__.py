"""Input dialects: every body shape real clients send, read into capi's one internal event.

Pure: no I/O. `read(payload)` recognises the dialect from the body (README "What capi accepts")
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

from capi.errors import RequestError
from capi.inputs import ga4, measurement_protocol, meta, shopify, woocommerce
from capi.inputs.common import Incoming, Skipped
from capi.payload import MAX_EVENTS_PER_REQUEST

__all__ = ["Envelope", "Incoming", "Skipped", "read"]

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

    @property
    def dialects(self) -> list[str]:
        return [incoming[1] for incoming in self.events]


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


def read(payload: Any) -> Envelope:
    """The request's events in the internal form; a body no dialect reads is a 400 for the whole request."""
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
        events, messages = meta.read(payload, _checked(payload["data"], "data"))
        return Envelope(events, code, messages)
    if "events" in payload:
        events = _checked(payload["events"], "events")
        if measurement_protocol.recognises(payload):
            code = _test_event_code(payload.get("test_event_code"))
            return Envelope(measurement_protocol.read(payload, events), code)
        code = _test_event_code(payload.get("test_event_code"))
        ignored = [key for key in payload if key not in ("events", "test_event_code")]
        envelope = Envelope([ga4.adapt(item, in_list=True) for item in events], code)
        if ignored:
            envelope.messages.append({"ignored": ignored, "message": "request keys capi does not use"})
        return envelope
    raise RequestError(f"no events: send {ACCEPTED}", field="events")
