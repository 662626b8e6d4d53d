"""Firestore edges: user profiles, the dead-letter store and the idempotency guard.

One Firestore client per instance, created on first use through `capi.lazy.Lazy` (never at
import: cold starts stay fast and paths that need no Firestore never pay for it).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from capi.errors import MetaError, StoreUnavailable
from capi.events import MAX_AGE_SECONDS, PROFILE_FIELDS
from capi.log import log
from capi.payload import request_body

WRITE_CHUNK = 500  # writes per batch commit, Firestore's classic limit
WRITE_TIMEOUT = 3.0  # per attempt; the caller is waiting, and a caller can retry a 503


def _write_retry() -> Any:
    """A short, bounded retry for writes: Firestore's default keeps trying for a minute."""
    from google.api_core.retry import Retry, if_transient_error

    return Retry(predicate=if_transient_error, initial=0.1, maximum=1.0, multiplier=2.0, timeout=4.0)


def new_client(project: str | None, database: str) -> Any:
    """A Firestore client (wrap it in `capi.lazy.Lazy`: one per instance, on first use)."""
    from google.cloud import firestore

    return firestore.Client(project=project, database=database)


def _doc_id(*parts: str) -> str:
    """A stable document id: event ids may hold '/' or be longer than Firestore allows."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _write_in_batches(client: Any, items: list[Any], write: Callable[[Any, Any], None]) -> None:
    """Apply `write(batch, item)` to every item, committed WRITE_CHUNK writes at a time."""
    for chunk in _chunks(items, WRITE_CHUNK):
        batch = client.batch()
        for item in chunk:
            write(batch, item)
        batch.commit(retry=_write_retry(), timeout=WRITE_TIMEOUT)


class FirestoreProfileStore:
    """Profiles by user_id: document id = user_id in `collection`, read in one batch."""

    def __init__(self, client: Callable[[], Any], collection: str, timeout: float = 2.0) -> None:
        self._client = client
        self._collection = collection
        self._timeout = timeout

    def get_many(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        client = self._client()
        collection = client.collection(self._collection)
        refs = [collection.document(uid) for uid in user_ids if _valid_doc_id(uid)]
        if not refs:
            return {}
        deadline = time.monotonic() + self._timeout
        profiles: dict[str, dict[str, Any]] = {}
        # One BatchGetDocuments call for every user of the request; no retries, a hard
        # deadline: a slow Firestore must not hold the events back.
        for snapshot in client.get_all(refs, field_paths=list(PROFILE_FIELDS), retry=None, timeout=self._timeout):
            if snapshot.exists:
                profiles[snapshot.id] = snapshot.to_dict() or {}
            if time.monotonic() > deadline:
                raise TimeoutError("profile lookup over its time budget")
        return profiles


def _valid_doc_id(uid: str) -> bool:
    return (
        0 < len(uid.encode("utf-8")) <= 1500
        and "/" not in uid
        and uid not in (".", "..")
        and not (uid.startswith("__") and uid.endswith("__"))
    )


class FirestoreDeadLetter:
    """Events Meta could not take (already normalized and hashed), kept for `capi_replay`."""

    def __init__(
        self, client: Callable[[], Any], collection: str, pixel_id: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._collection = collection
        self._pixel_id = pixel_id
        self._clock = clock

    def store(self, events: list[dict[str, Any]], error: MetaError, test_event_code: str | None) -> int:
        now = self._clock()
        try:
            client = self._client()
            collection = client.collection(self._collection)

            def write(batch: Any, event: dict[str, Any]) -> None:
                # One document per (pixel, event_name, event_id): the same event failing again
                # overwrites its dead letter instead of adding a second copy.
                ref = collection.document(_doc_id(self._pixel_id, event["event_name"], event["event_id"]))
                batch.set(
                    ref,
                    {
                        "event_json": orjson.dumps(event).decode("utf-8"),
                        "event_name": event["event_name"],
                        "event_id": event["event_id"],
                        "event_time": event["event_time"],
                        "pixel_id": self._pixel_id,
                        "test_event_code": test_event_code,
                        "attempts": 1,
                        "first_failure": now,
                        "last_attempt": now,
                        "last_error": error.message[:500],
                        "lease_until": 0.0,
                    },
                )

            _write_in_batches(client, events, write)
        except Exception as exc:  # noqa: BLE001 - any Firestore failure means "not stored"
            raise StoreUnavailable(f"dead-letter write failed ({type(exc).__name__})") from None
        log(logging.WARNING, "events stored for replay", stored=len(events), error=error.message[:200])
        return len(events)


class FirestoreIdempotency:
    """Remembers delivered (event_name, event_id) pairs for `ttl` seconds (48 h by default).

    A pair is claimed before sending (create-if-absent), marked delivered after Meta accepts
    it, and released when delivery fails, so a retry is not mistaken for a duplicate.
    """

    def __init__(
        self,
        client: Callable[[], Any],
        collection: str,
        pixel_id: str,
        ttl: float = 48 * 3600,
        lease: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._collection = collection
        self._pixel_id = pixel_id
        self._ttl = ttl
        self._lease = lease
        self._clock = clock

    def _ref(self, key: tuple[str, str]) -> Any:
        return self._client().collection(self._collection).document(_doc_id(self._pixel_id, *key))

    def claim(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        from google.api_core import exceptions as gexc

        now = self._clock()
        try:
            client = self._client()
            refs = {key: self._ref(key) for key in keys}
            by_id = {ref.id: key for key, ref in refs.items()}
            seen: set[tuple[str, str]] = set()
            stale: dict[tuple[str, str], Any] = {}  # expired records, taken over if unchanged
            for snap in client.get_all(list(refs.values()), timeout=5):
                if snap.exists:
                    if self._live(snap.to_dict() or {}, now):
                        seen.add(by_id[snap.id])
                    else:
                        stale[by_id[snap.id]] = snap.update_time
            todo = [k for k in refs if k not in seen]
            record = {"status": "claimed", "claimed_at": now, "expires": now + self._lease}

            def write(batch: Any, key: tuple[str, str]) -> None:
                data = {**record, "event_name": key[0], "event_id": key[1]}
                if key in stale:
                    batch.update(refs[key], data, option=client.write_option(last_update_time=stale[key]))
                else:
                    batch.create(refs[key], data)  # fails if another request claimed it first

            if todo:
                try:
                    batch = client.batch()
                    for key in todo:
                        write(batch, key)
                    batch.commit(retry=_write_retry(), timeout=WRITE_TIMEOUT)
                except (gexc.Conflict, gexc.FailedPrecondition, gexc.Aborted):
                    # A concurrent claim won at least one key: claim one by one to find which.
                    for key in todo:
                        try:
                            single = client.batch()
                            write(single, key)
                            single.commit(retry=_write_retry(), timeout=WRITE_TIMEOUT)
                        except (gexc.Conflict, gexc.FailedPrecondition, gexc.Aborted):
                            seen.add(key)
            return seen
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - any Firestore failure means "cannot guard"
            raise StoreUnavailable(f"idempotency store failed ({type(exc).__name__})") from None

    def _live(self, record: dict[str, Any], now: float) -> bool:
        # Expiry is checked here, not left to a TTL policy: Firestore deletes expired
        # documents only within about a day.
        return float(record.get("expires", 0)) > now

    def delivered(self, keys: list[tuple[str, str]]) -> None:
        expires = self._clock() + self._ttl
        _write_in_batches(
            self._client(),
            keys,
            lambda batch, key: batch.set(
                self._ref(key), {"status": "delivered", "expires": expires, "event_name": key[0], "event_id": key[1]}
            ),
        )

    def release(self, keys: list[tuple[str, str]]) -> None:
        _write_in_batches(self._client(), keys, lambda batch, key: batch.delete(self._ref(key)))


class Replayer:
    """Re-sends dead-lettered events; claims each document with a lease before sending.

    Two replays at once cannot both send an event: a claim is an update conditioned on the
    document's update time, so only one of two concurrent claims succeeds.
    """

    def __init__(
        self,
        client: Callable[[], Any],
        collection: str,
        sender: Any,
        *,
        max_attempts: int = 20,
        lease: float = 300.0,
        batch_size: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._collection = collection
        self._sender = sender
        self._max_attempts = max_attempts
        self._lease = lease
        self._batch_size = batch_size
        self._clock = clock

    def run(self, limit: int = 5000) -> dict[str, int]:
        from google.api_core import exceptions as gexc
        from google.cloud.firestore_v1.base_query import FieldFilter

        client = self._client()
        collection = client.collection(self._collection)
        counts = {"found": 0, "claimed": 0, "delivered": 0, "failed": 0, "expired": 0, "gave_up": 0, "busy": 0}
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
        by_code: dict[str | None, list[tuple[Any, dict[str, Any]]]] = {}
        for ref, data in claimed:
            by_code.setdefault(data.get("test_event_code"), []).append((ref, data))
        for code, group in by_code.items():
            for chunk in _chunks(group, self._batch_size):
                events = [orjson.loads(d["event_json"]) for _, d in chunk]
                try:
                    self._sender.send(request_body(events, code))
                except MetaError as error:
                    counts["failed"] += len(chunk)
                    failed = {"last_attempt": self._clock(), "last_error": error.message[:500], "lease_until": 0.0}
                    _write_in_batches(
                        client,
                        chunk,
                        lambda batch, doc, failed=failed: batch.update(
                            doc[0], {**failed, "attempts": int(doc[1].get("attempts", 0)) + 1}
                        ),
                    )
                    continue
                _write_in_batches(client, chunk, lambda batch, doc: batch.delete(doc[0]))
                counts["delivered"] += len(chunk)
        log(logging.INFO, "replay finished", **counts)
        return counts
