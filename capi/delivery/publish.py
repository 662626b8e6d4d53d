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
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson

from capi.errors import QueueUnavailable, RequestError

if TYPE_CHECKING:  # the pure core imports this module's Queued: no HTTP library for it
    from capi.delivery.pubsub import PubSubClient

PUBLISH_SECONDS = 2.0  # one publish call, connect to answer; /events waits at most two (Publisher)
MAX_BATCH_MESSAGES = 1000  # per publish call: Pub/Sub's own limit
MAX_BATCH_BYTES = 8 * 1024 * 1024  # of message data per call, under Pub/Sub's 10 MB request limit
MAX_EVENTS = 1000  # per message: a request holds at most 1000 events
MAX_TEST_EVENT_CODE_CHARS = 100  # as /events takes it (capi.inputs)
# capi_deliver reads a push body of at most 1 MiB (capi.http.MAX_BODY_BYTES): its concurrency
# (250 pushes) times that is what its memory holds. Finished events are larger than their
# input (each hashed value is 64 hex digits; base64 adds a third): 1000 checkouts in a 0.4 MB
# request made a 1.3 MB message, refused 413 at every push. A message's data stays under this
# bound (the push's JSON around it is small); a larger message is split by events.
PUSH_BODY_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = PUSH_BODY_BYTES - 64 * 1024


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


def encode_within(message: Queued) -> list[dict[str, Any]]:
    """The message encoded, split in halves by events until each part's data is at most
    MAX_MESSAGE_BYTES. Raises QueueUnavailable when one event alone is larger: the caller
    delivers the request directly."""
    encoded = message.encode()
    if len(encoded["data"]) <= MAX_MESSAGE_BYTES:
        return [encoded]
    if len(message.events) == 1:
        raise QueueUnavailable("an event is too large for a queued message")
    half = len(message.events) // 2
    parts = [
        replace(message, events=message.events[part], from_profile=message.from_profile[part])
        for part in (slice(None, half), slice(half, None))
    ]
    return [encoded for part in parts for encoded in encode_within(part)]


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
    if code is not None and (not isinstance(code, str) or len(code) > MAX_TEST_EVENT_CODE_CHARS):
        # /events refuses such a code; dropping it here would send test events to live data.
        raise RequestError(
            f"the test_event_code attribute is not a string of at most {MAX_TEST_EVENT_CODE_CHARS} characters",
            field="message.attributes.test_event_code",
        )
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


@dataclass(eq=False)  # compared by identity: each is one request
class _Waiting:
    """One request's encoded messages, waiting for a publish call to carry them."""

    messages: list[dict[str, Any]]
    size: int
    wake: threading.Event = field(default_factory=threading.Event)  # done, or its turn to lead
    lead: bool = False
    ids: list[str] | None = None
    error: QueueUnavailable | None = None


class Publisher:
    """Publishes each request's messages to one topic; concurrent requests share calls.

    Group commit: while a publish call is in flight, the requests that arrive wait, and the
    first of them then publishes them all in one call (at most MAX_BATCH_MESSAGES messages and
    MAX_BATCH_BYTES). One request alone is published at once: nothing waits for a window. Under
    sGTM's concurrency this spends one call, not eight, on eight events: less CPU per event
    and less queueing at Pub/Sub. Every call is bounded by `seconds`, so a request waits at most
    two calls (the one in flight, then its own): 2 x PUBLISH_SECONDS.
    """

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
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._busy = False  # a call is in flight, or about to be

    def publish(self, messages: Sequence[Queued]) -> list[str]:
        """The message ids (a message too large for a push is published in parts: an id each).
        Raises QueueUnavailable: none of this request's messages were published (Pub/Sub
        takes a call's messages all or none), so the caller delivers them another way."""
        now = self._clock()
        for message in messages:
            message.queued_at = now
        encoded = [part for m in messages for part in encode_within(m)]
        me = _Waiting(encoded, sum(len(m["data"]) for m in encoded))
        with self._lock:
            self._waiting.append(me)
            if not self._busy:
                self._busy = me.lead = True
        # Woken when a call carried it, or when it is first in line to lead the next call. Calls
        # are bounded, so the wait ends in time; past it, leave the line (never promoted then).
        if not me.lead and not me.wake.wait(2 * self._seconds + 1):
            with self._lock:
                if not me.lead and me in self._waiting:
                    self._waiting.remove(me)
        if me.lead:
            self._publish_next()
        if me.ids is None:
            raise me.error or QueueUnavailable("Pub/Sub did not confirm the messages in time")
        return me.ids

    def _publish_next(self) -> None:
        """Publish the waiting requests (the leader's first) in one call, then hand over."""
        with self._lock:
            group, size, count = [], 0, 0
            for waiting in self._waiting:
                if group and (
                    count + len(waiting.messages) > MAX_BATCH_MESSAGES or size + waiting.size > MAX_BATCH_BYTES
                ):
                    break
                group.append(waiting)
                size += waiting.size
                count += len(waiting.messages)
            del self._waiting[: len(group)]
        try:
            ids = self.client.publish(self.topic, [m for w in group for m in w.messages], seconds=self._seconds)
        except QueueUnavailable as exc:
            for waiting in group:
                waiting.error = exc
        else:
            start = 0
            for waiting in group:
                waiting.ids = ids[start : start + len(waiting.messages)]
                start += len(waiting.messages)
        finally:
            with self._lock:
                following = self._waiting[0] if self._waiting else None
                if following is not None:
                    following.lead = True  # the next call is its to make
                else:
                    self._busy = False
            for waiting in group:
                waiting.wake.set()
            if following is not None:
                following.wake.set()
