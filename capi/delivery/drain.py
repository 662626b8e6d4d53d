"""The dead-letter topic drained by `capi_replay` (DELIVERY=queue).

Messages Pub/Sub gave up on (after the subscription's max_delivery_attempts) wait in the
dead-letter topic's subscription. Each replay run pulls them MAX_MESSAGES at a time and
delivers them through the consumer's own path (`Consumer.deliver`: claim, bisection,
Meta's meanings), acknowledging what each pull settled, and pulls again while the last pull
settled something and DRAIN_SECONDS last: after a long outage the topic holds far more than
one pull (a 15-minute schedule draining 1000 messages a run would not empty a few hours of
sGTM traffic within the 7-day retention). What is not settled stays leased until the run
ends (so a later pull of the same run does not take it again), then is given back at once
for the next run. Pub/Sub keeps an unacknowledged message for the subscription's retention
(7 days, Meta's own window for an event), so nothing is dropped by the drain itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from capi.delivery.consume import Consumer
from capi.delivery.publish import MAX_EVENTS, Queued, decode
from capi.delivery.pubsub import PubSubClient
from capi.errors import CapiError
from capi.log import log

MAX_MESSAGES = 1000  # Pub/Sub's own limit for one pull
CALL_SECONDS = 10.0
# Pulls start only within this time, under the dead-letter subscription's 120 s ack deadline (the
# kept messages stay leased until released) and within capi_replay's 540 s after Firestore's replay.
DRAIN_SECONDS = 90.0
MAX_PULLS = 100


class DeadLetterDrain:
    def __init__(
        self,
        client: PubSubClient,
        subscription: str,
        consumer: Consumer,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._subscription = subscription
        self._consumer = consumer
        self._clock = clock

    def run(self) -> dict[str, int]:
        counts = {"pulled": 0, "settled": 0, "kept": 0, "unreadable": 0}
        keep: list[str] = []
        started = self._clock()
        try:
            for _ in range(MAX_PULLS):
                if not self._pull_once(counts, keep) or self._clock() - started > DRAIN_SECONDS:
                    break  # the next run goes on
        finally:
            self._client.release(self._subscription, keep, seconds=CALL_SECONDS)
        counts["kept"] = len(keep)
        log(logging.WARNING if keep else logging.INFO, "dead-letter topic drained", **counts)
        return counts

    def _pull_once(self, counts: dict[str, int], keep: list[str]) -> bool:
        """One pull, delivered; acknowledges what it settled and adds the ack ids of the rest to
        `keep`. Whether to pull again: it got messages, and Meta took some of those sent to it
        (when it took none, Meta is down or refusing capi's configuration: the next run retries)."""
        received = self._client.pull(self._subscription, MAX_MESSAGES, seconds=CALL_SECONDS)
        counts["pulled"] += len(received)
        groups: dict[tuple[str, str | None], list[tuple[str, Queued]]] = {}
        for entry in received:
            ack_id = entry.get("ackId") if isinstance(entry, dict) else None
            if not isinstance(ack_id, str):
                continue
            try:
                queued = decode(entry.get("message"))
            except CapiError as exc:
                counts["unreadable"] += 1
                log(logging.ERROR, "dead-letter message unreadable; left in the topic", detail=exc.message)
                keep.append(ack_id)
                continue
            if queued.destination not in self._consumer.targets:
                keep.append(ack_id)
                continue
            groups.setdefault((queued.destination, queued.test_event_code), []).append((ack_id, queued))
        done: list[str] = []
        for key, group in groups.items():
            answers = self._deliver(key, [queued for _, queued in group])
            for (ack_id, _), (status, _) in zip(group, answers, strict=True):
                (done if status == 200 else keep).append(ack_id)
        self._client.acknowledge(self._subscription, done, seconds=CALL_SECONDS)
        counts["settled"] += len(done)
        return bool(received) and (bool(done) or not groups)

    def _deliver(self, key: tuple[str, str | None], messages: list[Queued]) -> list[tuple[int, dict[str, Any]]]:
        """Deliver in batches of at most 1000 events, as the consumer would gather them."""
        answers: list[tuple[int, dict[str, Any]]] = []
        batch: list[Queued] = []
        size = 0
        for message in messages:
            if batch and size + len(message.events) > MAX_EVENTS:
                answers += self._consumer.deliver(key, batch)
                batch, size = [], 0
            batch.append(message)
            size += len(message.events)
        if batch:
            answers += self._consumer.deliver(key, batch)
        return answers
