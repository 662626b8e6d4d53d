"""Replay: dead letters sent again, each to its own destination (`capi_replay`)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from capi.delivery.split import Sender, log_config_refusal, send_split
from capi.destinations import DEFAULT
from capi.events import MAX_AGE_SECONDS
from capi.firestore import _chunks, _write_in_batches
from capi.log import log


class Replayer:
    """Re-sends dead-lettered events, each to its own destination; claims each document with
    a lease before sending.

    Two replays at once cannot both send an event: a claim is an update conditioned on the
    document's update time, so only one of two concurrent claims succeeds. Meta's answers
    are handled as on the live path (`capi.delivery.send_split`): a batch Meta refuses for
    one event is split, the others are delivered, and the refused one is dropped with an
    ERROR line (`rejected`); what is kept gets one more attempt.

    `senders` maps destination names to their Graph clients (a single sender is the
    `default` destination). A document written before several pixels existed carries no
    destination: it goes to `default`, or to the only destination. One whose destination is
    no longer configured is left in place (`unrouted`) until it is configured again or expires.
    """

    def __init__(
        self,
        client: Callable[[], Any],
        collection: str,
        senders: Sender | Mapping[str, Sender],
        *,
        max_attempts: int = 20,
        lease: float = 300.0,
        batch_size: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._collection = collection
        self._senders: Mapping[str, Sender] = senders if isinstance(senders, Mapping) else {DEFAULT: senders}
        self._max_attempts = max_attempts
        self._lease = lease
        self._batch_size = batch_size
        self._clock = clock

    def _destination(self, data: Mapping[str, Any]) -> str | None:
        name = data.get("destination")
        if name is None:
            name = DEFAULT if DEFAULT in self._senders or len(self._senders) != 1 else next(iter(self._senders))
        return name if name in self._senders else None

    def run(self, limit: int = 5000) -> dict[str, int]:
        from google.api_core import exceptions as gexc
        from google.cloud.firestore_v1.base_query import FieldFilter

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
            "unrouted": 0,
        }
        now = self._clock()
        owner = str(uuid.uuid4())
        claimed: list[tuple[Any, dict[str, Any]]] = []
        for snap in collection.where(filter=FieldFilter("lease_until", "<", now)).limit(limit).stream(timeout=30):
            counts["found"] += 1
            data = snap.to_dict() or {}
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
            if self._destination(data) is None:
                counts["unrouted"] += 1
                log(
                    logging.WARNING,
                    "dead letter kept: its destination is not configured",
                    destination=str(data.get("destination"))[:64],
                    event_id=data.get("event_id"),
                    event_name=data.get("event_name"),
                )
                continue
            if int(data.get("attempts", 0)) >= self._max_attempts:
                snap.reference.delete()
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
            claimed.append((snap.reference, data))
        counts["claimed"] = len(claimed)
        groups: dict[tuple[str, str | None], list[tuple[Any, dict[str, Any]]]] = {}
        for ref, data in claimed:
            key = (self._destination(data) or DEFAULT, data.get("test_event_code"))
            groups.setdefault(key, []).append((ref, data))
        for (destination, code), group in groups.items():
            for chunk in _chunks(group, self._batch_size):
                self._replay_chunk(client, chunk, destination, code, counts)
        level = (
            logging.WARNING
            if counts["failed"] or counts["expired"] or counts["gave_up"] or counts["rejected"] or counts["unrouted"]
            else logging.INFO
        )
        if not counts["unrouted"]:
            del counts["unrouted"]  # only named when some dead letter had nowhere to go
        log(level, "replay finished", **counts)
        return counts

    def _replay_chunk(
        self,
        client: Any,
        chunk: list[tuple[Any, dict[str, Any]]],
        destination: str,
        code: str | None,
        counts: dict[str, int],
    ) -> None:
        events = [orjson.loads(d["event_json"]) for _, d in chunk]
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
        _write_in_batches(client, done, lambda batch, doc: batch.delete(doc[0]), budget=30.0)
        counts["delivered"] += len(sent.delivered)
        counts["rejected"] += len(sent.refused)
        for positions, error in sent.kept:
            counts["failed"] += len(positions)
            log_config_refusal(error, len(positions), destination)
            failed = {
                "last_attempt": self._clock(),
                "last_error": error.message[:500],
                "error": error.code,
                "lease_until": 0.0,
            }
            _write_in_batches(
                client,
                [chunk[i] for i in positions],
                lambda batch, doc, failed=failed: batch.update(
                    doc[0], {**failed, "attempts": int(doc[1].get("attempts", 0)) + 1}
                ),
                budget=30.0,
            )
