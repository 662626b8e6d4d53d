"""The dead-letter topic drained by `capi_replay` (DELIVERY=queue).

Messages Pub/Sub gave up on (after the subscription's max_delivery_attempts) wait in the
dead-letter topic's subscription. Each replay run pulls up to MAX_MESSAGES of them and
delivers them through the consumer's own path (`Consumer.deliver`: claim, bisection,
Meta's meanings), then acknowledges what is settled and gives the rest back at once for the
next run. Pub/Sub keeps an unacknowledged message for the subscription's retention (7 days,
Meta's own window for an event), so nothing is dropped by the drain itself.
"""

from __future__ import annotations

import logging
from typing import Any

from capi.delivery.consume import Consumer
from capi.delivery.publish import MAX_EVENTS, Queued, decode
from capi.delivery.pubsub import PubSubClient
from capi.errors import CapiError
from capi.log import log

MAX_MESSAGES = 1000  # Pub/Sub's own limit for one pull
CALL_SECONDS = 10.0


class DeadLetterDrain:
    def __init__(self, client: PubSubClient, subscription: str, consumer: Consumer) -> None:
        self._client = client
        self._subscription = subscription
        self._consumer = consumer

    def run(self) -> dict[str, int]:
        counts = {"pulled": 0, "settled": 0, "kept": 0, "unreadable": 0}
        received = self._client.pull(self._subscription, MAX_MESSAGES, seconds=CALL_SECONDS)
        counts["pulled"] = len(received)
        groups: dict[tuple[str, str | None], list[tuple[str, Queued]]] = {}
        keep: list[str] = []
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
        self._client.release(self._subscription, keep, seconds=CALL_SECONDS)
        counts["settled"] = len(done)
        counts["kept"] = len(keep)
        log(logging.WARNING if keep else logging.INFO, "dead-letter topic drained", **counts)
        return counts

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
