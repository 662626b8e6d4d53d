"""Replay: dead letters sent again, each to its own destination (`capi_replay`)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from capi.delivery.deadletter import load_event
from capi.delivery.split import Sender, Unresolved, log_config_refusal, send_split
from capi.destinations import DEFAULT
from capi.events import MAX_AGE_SECONDS
from capi.firestore import chunks, write_in_batches
from capi.log import log
from capi.orders import keys_of

# The cost of one run, whatever is stored: Graph calls (a chunk already started may add up
# to MAX_SPLIT_CALLS), and the time after which no new chunk is started. A chunk takes at
# most SPLIT_SECONDS plus one call's retry budget and two 30 s Firestore writes, so the run
# ends inside the claims' 300 s lease and capi_replay's 540 s timeout.
MAX_REPLAY_CALLS = 300
REPLAY_SECONDS = 200.0


class PixelSender(Sender, Protocol):
    pixel_id: str


class Guard(Protocol):
    def release(self, keys: list[tuple[str, str]]) -> None: ...


class Replayer:
    """Re-sends dead-lettered events, each to its own destination; claims each document with
    a lease before sending.

    Only dead letters of this configuration's pixels are read (one equality query per pixel,
    so those of other pixels, another deployment's or a removed destination's, never crowd
    them out); the others are left in place and counted (`unrouted`). A dead letter goes to
    its own destination, or, when that is not configured (written before several pixels, or
    renamed), to the first destination with its pixel.

    Two replays at once cannot both send an event: a claim is an update conditioned on the
    document's update time, so only one of two concurrent claims succeeds. Meta's answers
    are handled as on the live path (`send_split`): a batch Meta refuses for one event is
    split, the others are delivered, and the refused one is dropped with an ERROR line
    (`rejected`) and its idempotency claim released, so a corrected resend goes through.

    An attempt is counted only against what Meta said about the event: a batch whose
    splitting stopped at its bound is kept as a group (`split_group`) without counting one,
    and the next run splits that group further; so a good event is never dropped because its
    neighbours are bad. Each run makes at most MAX_REPLAY_CALLS Graph calls and starts no
    group after REPLAY_SECONDS; what it did not reach is released for the next run.
    """

    def __init__(
        self,
        client: Callable[[], Any],
        collection: str,
        senders: PixelSender | Mapping[str, PixelSender],
        *,
        guards: Mapping[str, Guard | None] | None = None,
        max_attempts: int = 20,
        lease: float = 300.0,
        batch_size: int = 1000,
        clock: Callable[[], float] = time.time,
        max_calls: int = MAX_REPLAY_CALLS,
        seconds: float = REPLAY_SECONDS,
    ) -> None:
        self._client = client
        self._collection = collection
        self._senders: Mapping[str, PixelSender] = senders if isinstance(senders, Mapping) else {DEFAULT: senders}
        self._guards = guards or {}
        self._max_attempts = max_attempts
        self._lease = lease
        self._batch_size = batch_size
        self._clock = clock
        self._max_calls = max_calls
        self._seconds = seconds
        # The destinations of each pixel, in configuration order.
        self._by_pixel: dict[str, list[str]] = {}
        for name, sender in self._senders.items():
            self._by_pixel.setdefault(sender.pixel_id, []).append(name)

    def _destination(self, data: Mapping[str, Any], pixel: str) -> str:
        names = self._by_pixel[pixel]
        name = data.get("destination")
        return name if name in names else names[0]

    def run(self, limit: int = 5000) -> dict[str, int]:
        from google.api_core import exceptions as gexc
        from google.cloud.firestore_v1.base_query import FieldFilter

        started = time.monotonic()
        client = self._client()
        collection = client.collection(self._collection)
        counts = {
            "found": 0,
            "claimed": 0,
            "delivered": 0,
            "failed": 0,
            "expired": 0,
            "gave_up": 0,
            "busy": 0,
            "rejected": 0,
        }
        now = self._clock()
        owner = str(uuid.uuid4())
        claimed: list[tuple[Any, dict[str, Any]]] = []
        each = max(1, limit // len(self._by_pixel))
        for pixel in self._by_pixel:
            query = collection.where(filter=FieldFilter("pixel_id", "==", pixel)).limit(each)
            for snap in query.stream(timeout=30):
                counts["found"] += 1
                data = snap.to_dict() or {}
                if float(data.get("lease_until", 0)) >= now:
                    counts["busy"] += 1  # another replay holds it
                    continue
                destination = self._destination(data, pixel)
                if data.get("event_time", 0) < now - MAX_AGE_SECONDS + 60:
                    snap.reference.delete()
                    counts["expired"] += 1
                    log(
                        logging.WARNING,
                        "dead letter dropped: outside Meta's 7-day window",
                        event_id=data.get("event_id"),
                        event_name=data.get("event_name"),
                    )
                    continue
                if int(data.get("attempts", 0)) >= self._max_attempts:
                    snap.reference.delete()
                    self._release(destination, [load_event(data)])
                    counts["gave_up"] += 1
                    log(
                        logging.ERROR,
                        "dead letter dropped: too many attempts",
                        event_id=data.get("event_id"),
                        event_name=data.get("event_name"),
                        attempts=data.get("attempts"),
                    )
                    continue
                try:
                    snap.reference.update(
                        {"lease_until": now + self._lease, "lease_owner": owner},
                        option=client.write_option(last_update_time=snap.update_time),
                    )
                except (gexc.FailedPrecondition, gexc.NotFound, gexc.Aborted, gexc.Conflict):
                    counts["busy"] += 1  # another replay claimed it first
                    continue
                claimed.append((snap.reference, {**data, "destination": destination}))
        counts["claimed"] = len(claimed)
        unrouted = self._unrouted(collection)
        if unrouted:
            counts["unrouted"] = unrouted  # only named when some dead letter is not this configuration's
        # A group left by an earlier run's split goes on alone, so its splitting carries on.
        groups: dict[tuple[str, str | None, str | None], list[tuple[Any, dict[str, Any]]]] = {}
        for ref, data in claimed:
            key = (data["destination"], data.get("test_event_code"), data.get("split_group"))
            groups.setdefault(key, []).append((ref, data))
        calls = 0
        left: list[tuple[Any, dict[str, Any]]] = []
        for (destination, code, _), group in groups.items():
            for chunk in chunks(group, self._batch_size):
                if calls >= self._max_calls or time.monotonic() - started > self._seconds:
                    left.extend(chunk)  # this run's bound: the next run takes them
                    continue
                calls += self._replay_chunk(client, chunk, destination, code, counts)
        if left:
            counts["deferred"] = len(left)
            write_in_batches(client, left, lambda batch, doc: batch.update(doc[0], {"lease_until": 0.0}), budget=30.0)
        level = (
            logging.WARNING
            if counts["failed"] or counts["expired"] or counts["gave_up"] or counts["rejected"] or unrouted
            else logging.INFO
        )
        log(level, "replay finished", calls=calls, **counts)
        return counts

    def _unrouted(self, collection: Any) -> int:
        """How many dead letters in the collection are for pixels this configuration does not
        send to (left in place): two count aggregations, no document read."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        try:
            total = collection.count().get(timeout=30)[0][0].value
            ours = (
                collection.where(filter=FieldFilter("pixel_id", "in", list(self._by_pixel)))
                .count()
                .get(timeout=30)[0][0]
                .value
            )
        except Exception as exc:  # noqa: BLE001 - a count is information, never a reason to fail the run
            log(logging.WARNING, "could not count the dead letters of other pixels", error=type(exc).__name__)
            return 0
        return max(0, int(total) - int(ours))

    def _release(self, destination: str, events: list[dict[str, Any]]) -> None:
        """Forget the idempotency claims of dropped dead letters (the event's pair and its
        order's key): the guard said `stored`, and a corrected resend must not be skipped."""
        guard = self._guards.get(destination)
        if guard is None or not events:
            return
        try:
            guard.release([key for event in events for key in keys_of(event)])
        except Exception as exc:  # noqa: BLE001 - the drop stands; the claim lapses after 48 h
            log(logging.WARNING, "could not release idempotency claims", error=type(exc).__name__)

    def _replay_chunk(
        self,
        client: Any,
        chunk: list[tuple[Any, dict[str, Any]]],
        destination: str,
        code: str | None,
        counts: dict[str, int],
    ) -> int:
        """Send one chunk (split as needed) and settle its documents; returns the calls made."""
        events = [load_event(d) for _, d in chunk]
        sent = send_split(self._senders[destination], events, code)
        done = [chunk[i] for i in sent.delivered]
        for position, error in sent.refused:
            data = chunk[position][1]
            log(
                logging.ERROR,
                "dead letter dropped: refused by Meta",
                destination=destination,
                event_id=data.get("event_id"),
                event_name=data.get("event_name"),
                meta_code=error.meta_code,
                meta_subcode=error.meta_subcode,
                error=error.message[:200],
            )
        done += [chunk[i] for i, _ in sent.refused]
        write_in_batches(client, done, lambda batch, doc: batch.delete(doc[0]), budget=30.0)
        self._release(destination, [events[i] for i, _ in sent.refused])
        counts["delivered"] += len(sent.delivered)
        counts["rejected"] += len(sent.refused)
        for positions, error in sent.kept:
            counts["failed"] += len(positions)
            log_config_refusal(error, len(positions), destination)
            failed: dict[str, Any] = {
                "last_attempt": self._clock(),
                "last_error": error.message[:500],
                "error": error.code,
                "lease_until": 0.0,
            }
            # Meta said nothing about these events alone: no attempt counted, and the group
            # is split further next run. Otherwise Meta's answer was about each of them.
            unresolved = isinstance(error, Unresolved)
            failed["split_group"] = uuid.uuid4().hex if unresolved else None

            def update(
                batch: Any,
                doc: tuple[Any, dict[str, Any]],
                failed: dict[str, Any] = failed,
                counted: int = 1 - unresolved,
            ) -> None:
                attempts = int(doc[1].get("attempts", 0)) + counted
                batch.update(doc[0], {**failed, "attempts": attempts})

            write_in_batches(client, [chunk[i] for i in positions], update, budget=30.0)
        return sent.calls
