"""Firestore edges: user profiles, the dead-letter store and the idempotency guard.

One Firestore client per instance, created on first use through `capi.lazy.Lazy` (never at
import: cold starts stay fast and paths that need no Firestore never pay for it).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import orjson

from capi.delivery import Sender, log_config_refusal, send_split
from capi.destinations import DEFAULT
from capi.errors import MetaError, StoreUnavailable
from capi.events import MAX_AGE_SECONDS, PROFILE_FIELDS
from capi.log import log
from capi.orders import is_order_key

WRITE_CHUNK = 500  # writes per batch commit, Firestore's classic limit
STORE_SECONDS = 3.0  # the whole time of one Firestore step on the request path, retries included
T = TypeVar("T")


def bounded(
    step: Callable[[float], T], budget: float = STORE_SECONDS, clock: Callable[[], float] = time.monotonic
) -> T:
    """Run `step(timeout)`, retrying transient errors, all within `budget` seconds.

    Each call is made with `retry=None` and the time left as its timeout: the client
    library's default retry keeps trying for minutes, and its `timeout` bounds one attempt
    only, so a stalled or dead Firestore would hold the caller that long.
    """
    from google.api_core import exceptions as gexc

    deadline = clock() + budget
    pause = 0.1
    while True:
        try:
            return step(max(0.05, deadline - clock()))
        except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError, gexc.TooManyRequests):
            if deadline - clock() < pause + 0.2:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


def new_client(project: str | None, database: str) -> Any:
    """A Firestore client (wrap it in `capi.lazy.Lazy`: one per instance, on first use)."""
    from google.cloud import firestore

    return firestore.Client(project=project, database=database)


def _doc_id(*parts: str) -> str:
    """A stable document id: event ids may hold '/' or be longer than Firestore allows."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _scope(destination: str, pixel_id: str) -> tuple[str, ...]:
    """What a document id is scoped by: the destination and its pixel. The `default`
    destination keeps the single-pixel ids (the pixel alone), so records written before
    several pixels existed still guard and overwrite."""
    return (pixel_id,) if destination == DEFAULT else (destination, pixel_id)


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _write_in_batches(
    client: Any, items: list[Any], write: Callable[[Any, Any], None], budget: float = STORE_SECONDS
) -> None:
    """Apply `write(batch, item)` to every item, WRITE_CHUNK writes per commit, all in `budget`."""
    deadline = time.monotonic() + budget
    for chunk in _chunks(items, WRITE_CHUNK):
        batch = client.batch()
        for item in chunk:
            write(batch, item)
        bounded(lambda timeout, batch=batch: batch.commit(retry=None, timeout=timeout), deadline - time.monotonic())


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


class FirestoreIdempotency:
    """Remembers (event_name, event_id) pairs for the guard, per destination.

    A pair is claimed `pending` before sending (create-if-absent) with a short lease, then
    marked `delivered` once Meta took it or `stored` once it is kept for replay; those two
    suppress a repeat for `ttl` (48 h). A pending claim never does: a repeat that meets one
    is "in flight" (the caller retries), and once its lease ends it can be claimed again. So a
    request that died or could not finish its bookkeeping never turns a retry into a
    silently dropped duplicate.

    Order keys (`capi.orders`: one Purchase per order) are claimed, marked and released with
    the pairs, in the same calls, and suppress a repeat for `order_ttl` (ORDER_DEDUP_HOURS)
    instead of `ttl`. Their documents hold the order id (`event_id`) and `ORDER` as the name.
    """

    FINAL = ("delivered", "stored")

    def __init__(
        self,
        client: Callable[[], Any],
        collection: str,
        pixel_id: str,
        ttl: float = 48 * 3600,
        lease: float = 30.0,
        order_ttl: float = 48 * 3600,
        clock: Callable[[], float] = time.time,
        *,
        destination: str = DEFAULT,
    ) -> None:
        self._client = client
        self._collection = collection
        self._scope = _scope(destination, pixel_id)
        self._ttl = ttl
        self._order_ttl = order_ttl
        self._lease = lease
        self._clock = clock

    def _ref(self, key: tuple[str, str]) -> Any:
        return self._client().collection(self._collection).document(_doc_id(*self._scope, *key))

    def claim(self, keys: list[tuple[str, str]]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """Claim the pairs; returns (done, busy): pairs delivered or stored already, and pairs
        another request holds a live pending claim on. Neither is claimed by this call.

        Raises:
            StoreUnavailable: Firestore did not answer within STORE_SECONDS.
        """
        from google.api_core import exceptions as gexc

        now = self._clock()
        started = time.monotonic()
        try:
            client = self._client()
            refs = {key: self._ref(key) for key in keys}
            by_id = {ref.id: key for key, ref in refs.items()}
            done: set[tuple[str, str]] = set()
            busy: set[tuple[str, str]] = set()
            stale: dict[tuple[str, str], Any] = {}  # expired records, taken over if unchanged
            snaps = bounded(lambda timeout: list(client.get_all(list(refs.values()), retry=None, timeout=timeout)))
            for snap in snaps:
                if not snap.exists:
                    continue
                record = snap.to_dict() or {}
                key = by_id[snap.id]
                if float(record.get("expires", 0)) <= now:
                    # Expiry is checked here, not left to a TTL policy: Firestore deletes
                    # expired documents only within about a day.
                    stale[key] = snap.update_time
                elif record.get("status") in self.FINAL:
                    done.add(key)
                else:
                    busy.add(key)
            todo = [k for k in refs if k not in done and k not in busy]
            record = {"status": "pending", "claimed_at": now, "expires": now + self._lease}

            def write(batch: Any, key: tuple[str, str]) -> None:
                data = {**record, "event_name": key[0], "event_id": key[1]}
                if key in stale:
                    batch.update(refs[key], data, option=client.write_option(last_update_time=stale[key]))
                else:
                    batch.create(refs[key], data)  # fails if another request claimed it first

            def commit(keys: list[tuple[str, str]]) -> None:
                batch = client.batch()
                for key in keys:
                    write(batch, key)
                remaining = STORE_SECONDS - (time.monotonic() - started)
                bounded(lambda timeout: batch.commit(retry=None, timeout=timeout), remaining)

            if todo:
                try:
                    commit(todo)
                except (gexc.Conflict, gexc.FailedPrecondition, gexc.Aborted):
                    # A concurrent claim won at least one key: claim one by one to find which.
                    for key in todo:
                        try:
                            commit([key])
                        except (gexc.Conflict, gexc.FailedPrecondition, gexc.Aborted):
                            busy.add(key)
            return done, busy
        except Exception as exc:  # noqa: BLE001 - any Firestore failure means "cannot guard"
            raise StoreUnavailable(f"idempotency store failed ({type(exc).__name__})") from None

    def _mark(self, keys: list[tuple[str, str]], status: str) -> None:
        now = self._clock()
        _write_in_batches(
            self._client(),
            keys,
            lambda batch, key: batch.set(
                self._ref(key),
                {
                    "status": status,
                    "expires": now + (self._order_ttl if is_order_key(key) else self._ttl),
                    "event_name": key[0],
                    "event_id": key[1],
                },
            ),
        )

    def delivered(self, keys: list[tuple[str, str]]) -> None:
        self._mark(keys, "delivered")

    def stored(self, keys: list[tuple[str, str]]) -> None:
        self._mark(keys, "stored")

    def release(self, keys: list[tuple[str, str]]) -> None:
        _write_in_batches(self._client(), keys, lambda batch, key: batch.delete(self._ref(key)))


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
