"""`capi_deliver`: the queue's consumer, a Pub/Sub push endpoint (DELIVERY=queue).

Each push request carries one message (a destination's events from one `/events` request).
The instance gathers the pushes that arrive within BATCH_WINDOW_MS into one Graph call per
destination and test event code (at most 1000 events: `capi.delivery.batcher`), delivers
them as the direct path does (`EventService.deliver_queued`: the idempotency claim, bisection
of a refused batch, Meta's release-2 meanings) and answers each push:

- 2xx (Pub/Sub acks) when every event of the message was delivered, refused by Meta on its
  own (logged, as the direct path reports it), or was a duplicate the guard had already;
- 503 (nack: Pub/Sub redelivers with the subscription's backoff, then the dead-letter topic)
  when Meta was unavailable, refused capi's configuration (held until it is fixed), answered
  unreadably, or another instance holds a claim on an event;
- 429 while Meta throttles the pixel: the pixel is paused for the time Meta gave
  (`capi.delivery.throttle`), and pushes for it are nacked without calling Meta;
- 400 for a message capi did not publish (nacked too: the dead-letter topic keeps it).

Every batch writes the direct path's log lines ("events processed", "events by name"),
so the metrics and alerts of terraform/monitoring.tf count queued events as well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from capi.delivery.batcher import Batcher
from capi.delivery.graph import RetryPolicy
from capi.delivery.publish import MAX_EVENTS, Queued, decode
from capi.delivery.throttle import Pauses, is_throttle
from capi.errors import MetaError, RequestError
from capi.events import Finished
from capi.log import log
from capi.orders import DUPLICATE, DUPLICATE_ORDER
from capi.report import log_by_name
from capi.service import Delivery, EventService

# An event's states that end its message: sent, finally refused, or already counted (the same
# event, or another event for the same order: capi.orders). "in flight" is not: it is redelivered.
ACKED = frozenset({"forwarded", "failed", DUPLICATE, DUPLICATE_ORDER})


@dataclass(frozen=True)
class ThrottleAwarePolicy(RetryPolicy):
    """The Graph retry policy of the queued path: a throttled call is not retried in place
    (the pixel is paused and Pub/Sub redelivers later); everything else as `RetryPolicy`."""

    def after(self, error: MetaError, **kwargs: Any) -> RetryPolicy | None:  # type: ignore[override]
        if is_throttle(error):
            return None
        return super().after(error, **kwargs)


Answer = tuple[int, dict[str, Any]]


class Consumer:
    """Answers push requests: `push(body)` returns the HTTP status and JSON body."""

    def __init__(
        self,
        service: EventService,
        *,
        window: float,
        pauses: Pauses | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.targets = {t.destination.name: t for t in service.targets}
        self.pauses = pauses or Pauses()
        self._clock = clock
        self._batcher: Batcher[Queued, Answer] = Batcher(
            self.deliver, window=window, max_size=MAX_EVENTS, size=lambda q: len(q.events)
        )

    def push(self, body: Any) -> Answer:
        """One push request (Pub/Sub's JSON: `message`, `subscription`, `deliveryAttempt`)."""
        if not isinstance(body, dict):
            raise RequestError("the push body is not a JSON object", field="body")
        queued = decode(body.get("message"), body.get("deliveryAttempt"))
        target = self.targets.get(queued.destination)
        if target is None:
            log(
                logging.ERROR,
                "queued events for a destination that is not configured; left in the queue",
                destination=queued.destination[:64],
                message_id=queued.message_id,
            )
            return 503, {"error": "unknown_destination", "message": "no such destination is configured"}
        paused = self.pauses.remaining(target.destination.pixel_id)
        if paused:
            answer = 429, {"error": "throttled", "message": f"Meta throttles this pixel for {paused:.0f} s more"}
            self._log_paused(queued, answer)
            return answer
        return self._batcher.submit((queued.destination, queued.test_event_code), queued)

    def deliver(self, key: Hashable, messages: list[Queued]) -> list[Answer]:
        """One Graph call (split if Meta refuses an event) for gathered messages of one key
        (destination, test event code); one answer per message."""
        destination, code = key  # type: ignore[misc]
        target = self.targets[destination]
        finished: list[Finished] = []
        owner: list[int] = []  # the message of each finished event
        repeats: list[tuple[int, int]] = []  # (message, index of the first copy): Pub/Sub redelivered one
        first: dict[tuple[str, str], int] = {}
        for m, message in enumerate(messages):
            for event, keys in zip(message.events, message.from_profile, strict=True):
                pair = (event["event_name"], event["event_id"])
                if pair in first:
                    repeats.append((m, first[pair]))
                    continue
                first[pair] = len(finished)
                finished.append(Finished(len(finished), event, keys))
                owner.append(m)
        delivery = self.service.deliver_queued(target, finished, code)
        throttled = is_throttle(delivery.error)
        if throttled:
            seconds = self.pauses.pause(target.destination.pixel_id, delivery.error)  # type: ignore[arg-type]
            log(logging.WARNING, "destination paused: Meta throttles it", destination=destination, seconds=seconds)
        for failure in delivery.failed:  # the caller of /events had its answer long ago: the log tells
            log(
                logging.WARNING,
                "queued event refused by Meta",
                destination=destination,
                event_id=failure.event_id[:100],
                event_name=finished[failure.index].event["event_name"][:100],
                meta_code=failure.meta_code,
                meta_subcode=failure.meta_subcode,
                error=failure.message[:200],
            )
        states: list[list[str]] = [[] for _ in messages]
        for f in finished:
            states[owner[f.index]].append(delivery.states.get(f.index, "unsent"))
        for m, index in repeats:
            states[m].append(delivery.states.get(index, "unsent"))
        answers: list[Answer] = []
        for message, found in zip(messages, states, strict=True):
            ok = all(state in ACKED for state in found)
            status = 200 if ok else (429 if throttled else 503)
            answers.append((status, self._summary(message, found, delivery.error if not ok else None)))
        self._log(finished, delivery, answers, messages)
        return answers

    def _log_paused(self, message: Queued, answer: Answer) -> None:
        """A push nacked while its pixel is paused writes the lines a nacked batch writes (its
        events `unsent`, Meta's throttling code), so the metrics see every nack."""
        target = self.targets[message.destination]
        finished = [
            Finished(i, event, keys)
            for i, (event, keys) in enumerate(zip(message.events, message.from_profile, strict=True))
        ]
        delivery = Delivery(name=target.destination.name, pixel_id=target.destination.pixel_id)
        delivery.states.update((f.index, "unsent") for f in finished)
        delivery.error = self.pauses.cause(target.destination.pixel_id)
        self._log(finished, delivery, [answer], [message])

    @staticmethod
    def _summary(message: Queued, states: list[str], error: Exception | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "message_id": message.message_id,
            "forwarded": states.count("forwarded"),
            "failed": states.count("failed"),
            "duplicate": states.count(DUPLICATE),
            "unsent": len(states) - sum(states.count(s) for s in ACKED),
        }
        if DUPLICATE_ORDER in states:  # another event for an order already counted
            body["duplicate_order"] = states.count(DUPLICATE_ORDER)
        if error is not None:
            body["error"] = getattr(error, "code", "unavailable")
        return body

    def _log(self, finished: list[Finished], delivery: Any, answers: list[Answer], messages: list[Queued]) -> None:
        """The direct path's lines for this batch, plus how long its events waited in the queue."""
        outcome = self.service.outcome_of(finished, delivery)
        fields, keys_by_name = outcome.log_summary()
        status = max(status for status, _ in answers)
        queued = [m.queued_at for m in messages if m.queued_at is not None]
        attempts = [m.attempt for m in messages if m.attempt is not None]  # with a dead-letter policy
        severity = logging.INFO if status == 200 else logging.WARNING
        log(
            severity,
            "events processed",
            status=status,
            delivery="queue",
            messages=len(messages),
            queued_seconds=round(self._clock() - min(queued), 3) if queued else None,
            delivery_attempt=max(attempts) if attempts else None,
            **fields,
        )
        log_by_name(fields["by_event"], keys_by_name)
