"""The dead-letter store: events Meta could not take, kept in Firestore for `capi_replay`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from capi.destinations import DEFAULT
from capi.errors import MetaError, StoreUnavailable
from capi.firestore import _doc_id, _scope, _write_in_batches
from capi.log import log


class FirestoreDeadLetter:
    """Events Meta could not take (already normalized and hashed), kept for `capi_replay`,
    which sends each back to its `destination`."""

    def __init__(
        self,
        client: Callable[[], Any],
        collection: str,
        pixel_id: str,
        clock: Callable[[], float] = time.time,
        *,
        destination: str = DEFAULT,
    ) -> None:
        self._client = client
        self._collection = collection
        self._pixel_id = pixel_id
        self._clock = clock
        self._destination = destination

    def store(self, events: list[dict[str, Any]], error: MetaError, test_event_code: str | None) -> int:
        now = self._clock()
        try:
            client = self._client()
            collection = client.collection(self._collection)

            def write(batch: Any, event: dict[str, Any]) -> None:
                # One document per (destination, event_name, event_id): the same event failing
                # again overwrites its dead letter instead of adding a second copy.
                scope = _scope(self._destination, self._pixel_id)
                ref = collection.document(_doc_id(*scope, event["event_name"], event["event_id"]))
                batch.set(
                    ref,
                    {
                        "event_json": orjson.dumps(event).decode("utf-8"),
                        "event_name": event["event_name"],
                        "event_id": event["event_id"],
                        "event_time": event["event_time"],
                        "pixel_id": self._pixel_id,
                        "destination": self._destination,
                        "test_event_code": test_event_code,
                        "attempts": 1,
                        "first_failure": now,
                        "last_attempt": now,
                        "last_error": error.message[:500],
                        "error": error.code,
                        "lease_until": 0.0,
                    },
                )

            _write_in_batches(client, events, write)
        except Exception as exc:  # noqa: BLE001 - any Firestore failure means "not stored"
            raise StoreUnavailable(f"dead-letter write failed ({type(exc).__name__})") from None
        log(
            logging.WARNING,
            "events stored for replay",
            destination=self._destination,
            stored=len(events),
            error=error.code,
            detail=error.message[:200],
        )
        return len(events)
