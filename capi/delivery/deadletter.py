"""The dead-letter store: events Meta could not take, kept in Firestore for `capi_replay`.

One document per event, sized within Firestore's 1 MiB document limit by construction: the
event is kept once (`event_json`), without the fields derivable from it (`content_ids`, the
ids of `contents`), and an event whose stored form is still over MAX_EVENT_BYTES is not
written: it is reported alone (`store` returns its position) and never sinks the write of
its neighbours. Each document carries its pixel (replay only takes its own pixels') and the
deployment that wrote it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from capi.destinations import DEFAULT
from capi.errors import MetaError, StoreUnavailable
from capi.firestore import doc_id, scope, write_in_batches
from capi.log import log

# Firestore's limit is 1,048,576 bytes per document (names and values); the other fields of
# a dead letter take under 2 KB (last_error at most 500 characters, ids at most 512).
MAX_EVENT_BYTES = 1_000_000


def stored_form(event: dict[str, Any]) -> tuple[bytes, bool]:
    """The event as kept: its JSON without `content_ids` when those are the ids of its
    `contents` in order (then True: `load_event` rebuilds them)."""
    custom = event.get("custom_data")
    if isinstance(custom, dict) and "content_ids" in custom:
        contents = custom.get("contents")
        if isinstance(contents, list) and custom["content_ids"] == [
            c.get("id") if isinstance(c, dict) else None for c in contents
        ]:
            compact = {**event, "custom_data": {k: v for k, v in custom.items() if k != "content_ids"}}
            return orjson.dumps(compact), True
    return orjson.dumps(event), False


def load_event(data: Mapping[str, Any]) -> dict[str, Any]:
    """The event a dead-letter document keeps, as it was sent (`content_ids` rebuilt)."""
    event: dict[str, Any] = orjson.loads(data["event_json"])
    if data.get("content_ids_from_contents"):
        custom = event["custom_data"]
        custom["content_ids"] = [c["id"] for c in custom["contents"]]
    return event


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
        deployment: str | None = None,
    ) -> None:
        self._client = client
        self._collection = collection
        self._pixel_id = pixel_id
        self._clock = clock
        self._destination = destination
        self._deployment = deployment

    def store(self, events: list[dict[str, Any]], error: MetaError, test_event_code: str | None) -> list[int]:
        """Keep the events for replay; returns the positions of those too large to keep
        (over MAX_EVENT_BYTES once compacted), which are not written. Raises StoreUnavailable."""
        now = self._clock()
        scoped = scope(self._destination, self._pixel_id)
        documents: list[tuple[dict[str, Any], str, bool]] = []
        too_large: list[int] = []
        for position, event in enumerate(events):
            form, derived = stored_form(event)
            if len(form) > MAX_EVENT_BYTES:
                too_large.append(position)
                log(
                    logging.ERROR,
                    "event too large to store for replay",
                    destination=self._destination,
                    event_id=str(event.get("event_id"))[:100],
                    event_name=event.get("event_name"),
                    bytes=len(form),
                    limit=MAX_EVENT_BYTES,
                )
                continue
            documents.append((event, form.decode("utf-8"), derived))
        try:
            client = self._client()
            collection = client.collection(self._collection)

            def write(batch: Any, document: tuple[dict[str, Any], str, bool]) -> None:
                event, form, derived = document
                # One document per (destination, event_name, event_id): the same event failing
                # again overwrites its dead letter instead of adding a second copy.
                ref = collection.document(doc_id(*scoped, event["event_name"], event["event_id"]))
                fields = {
                    "event_json": form,
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
                }
                if derived:
                    fields["content_ids_from_contents"] = True
                if self._deployment:
                    fields["deployment"] = self._deployment
                batch.set(ref, fields)

            if documents:
                write_in_batches(client, documents, write)
        except Exception as exc:  # noqa: BLE001 - any Firestore failure means "not stored"
            raise StoreUnavailable(f"dead-letter write failed ({type(exc).__name__})") from None
        if documents:
            log(
                logging.WARNING,
                "events stored for replay",
                destination=self._destination,
                stored=len(documents),
                error=error.code,
                detail=error.message[:200],
            )
        return too_large
