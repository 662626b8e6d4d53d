"""The queue's messages (DELIVERY=queue): what `/events` publishes and `capi_deliver` reads.

One message per destination and request. Its data is JSON: the finished Meta events
(normalized and hashed: only what would be sent to Meta, as a dead letter keeps it; no raw
personal data), which of each event's match keys came from a Firestore profile (key names,
for the logs' `from_profile`) and when it was queued (freshness). Its attributes carry the
destination, the test event code and the event count, so a subscription can filter on them
and an operator can read them without decoding the data.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from capi.errors import RequestError

if TYPE_CHECKING:  # the pure core imports this module's Queued: no HTTP library for it
    from capi.delivery.pubsub import PubSubClient

PUBLISH_SECONDS = 2.0  # the whole publish call: /events never waits longer on Pub/Sub, then falls back
MAX_EVENTS = 1000  # per message: a request holds at most 1000 events


@dataclass
class Queued:
    """One message: a destination's events from one request."""

    destination: str
    events: list[dict[str, Any]]
    test_event_code: str | None = None
    from_profile: list[tuple[str, ...]] = field(default_factory=list)  # per event
    queued_at: float | None = None
    message_id: str = ""
    attempt: int | None = None  # Pub/Sub's deliveryAttempt, with a dead-letter policy

    def encode(self) -> dict[str, Any]:
        """The message as Pub/Sub's publish call takes it."""
        data = {"events": self.events, "from_profile": [list(keys) for keys in self.from_profile]}
        if self.queued_at is not None:
            data["queued_at"] = self.queued_at
        attributes = {"destination": self.destination, "events": str(len(self.events))}
        if self.test_event_code:
            attributes["test_event_code"] = self.test_event_code
        return {"data": base64.b64encode(orjson.dumps(data)).decode("ascii"), "attributes": attributes}


def decode(message: Any, attempt: Any = None) -> Queued:
    """A message as Pub/Sub delivers it (push body's `message`, or a pulled one's).

    Raises:
        RequestError: not a message capi published (names the field).
    """
    if not isinstance(message, dict):
        raise RequestError("the push body has no message", field="message")
    attributes = message.get("attributes") or {}
    destination = attributes.get("destination") if isinstance(attributes, dict) else None
    if not isinstance(destination, str) or not destination:
        raise RequestError("the message has no destination attribute", field="message.attributes.destination")
    try:
        data = orjson.loads(base64.b64decode(message.get("data") or "", validate=True))
    except (binascii.Error, ValueError, TypeError):
        raise RequestError("the message data is not base64 JSON", field="message.data") from None
    events = data.get("events") if isinstance(data, dict) else None
    if (
        not isinstance(events, list)
        or not 1 <= len(events) <= MAX_EVENTS
        or not all(
            isinstance(e, dict) and isinstance(e.get("event_name"), str) and isinstance(e.get("event_id"), str)
            for e in events
        )
    ):
        raise RequestError("the message holds no events capi published", field="message.data.events")
    profile = data.get("from_profile")
    if not (isinstance(profile, list) and len(profile) == len(events)):
        profile = [[] for _ in events]
    code = attributes.get("test_event_code")
    queued_at = data.get("queued_at")
    return Queued(
        destination=destination,
        events=events,
        test_event_code=code if isinstance(code, str) and code else None,
        from_profile=[
            tuple(k for k in keys if isinstance(k, str)) if isinstance(keys, list) else () for keys in profile
        ],
        queued_at=float(queued_at) if isinstance(queued_at, int | float) else None,
        message_id=str(message.get("messageId") or message.get("message_id") or ""),
        attempt=attempt if isinstance(attempt, int) else None,
    )


class Publisher:
    """Publishes a request's messages to one topic, in one call bounded by PUBLISH_SECONDS."""

    def __init__(
        self,
        client: PubSubClient,
        topic: str,
        *,
        seconds: float = PUBLISH_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.topic = topic
        self._seconds = seconds
        self._clock = clock

    def publish(self, messages: Sequence[Queued]) -> list[str]:
        """Raises QueueUnavailable: nothing was published (Pub/Sub takes a call's messages
        all or none), so the caller delivers them another way."""
        now = self._clock()
        for message in messages:
            message.queued_at = now
        return self.client.publish(self.topic, [m.encode() for m in messages], seconds=self._seconds)
