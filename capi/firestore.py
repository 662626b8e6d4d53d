"""Firestore edges: the enrichment lookup (profiles and remembered browsers in one read), the
idempotency guard, and the helpers the dead-letter store and the replay (capi/delivery/) share.

One Firestore client per instance, created on first use through `capi.lazy.Lazy` (never at
import: cold starts stay fast and paths that need no Firestore never pay for it).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from capi import browsers
from capi.destinations import DEFAULT
from capi.errors import StoreUnavailable
from capi.events import PROFILE_FIELDS
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


def doc_id(*parts: str) -> str:
    """A stable document id: event ids may hold '/' or be longer than Firestore allows."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def scope(destination: str, pixel_id: str) -> tuple[str, ...]:
    """What a document id is scoped by: the destination and its pixel. The `default`
    destination keeps the single-pixel ids (the pixel alone), so records written before
    several pixels existed still guard and overwrite."""
    return (pixel_id,) if destination == DEFAULT else (destination, pixel_id)


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def write_in_batches(
    client: Any, items: list[Any], write: Callable[[Any, Any], None], budget: float = STORE_SECONDS
) -> None:
    """Apply `write(batch, item)` to every item, WRITE_CHUNK writes per commit, all in `budget`."""
    deadline = time.monotonic() + budget
    for chunk in chunks(items, WRITE_CHUNK):
        batch = client.batch()
        for item in chunk:
            write(batch, item)
        bounded(lambda timeout, batch=batch: batch.commit(retry=None, timeout=timeout), deadline - time.monotonic())


class FirestoreLookup:
    """The enrichment read of one request: the users' profiles (document id = user_id in
    `profile_collection`) and the browsers' remembered keys (capi.browsers, in
    `browser_collection`), in ONE BatchGetDocuments call: one round trip, one deadline.
    An empty collection name turns that kind of document off."""

    def __init__(
        self,
        client: Callable[[], Any],
        profile_collection: str,
        browser_collection: str,
        timeout: float = 2.0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._profiles = profile_collection
        self._browsers = browser_collection
        self._timeout = timeout
        self._clock = clock

    def get_many(
        self, user_ids: list[str], browser_ids: list[str]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, browsers.Remembered]]:
        """(profiles by user id, remembered keys by browser id); missing, unknown or expired
        ids are simply absent. Raises TimeoutError past the deadline, or the client's error."""
        client = self._client()
        # Document path -> (kind, id): paths, not collection names, tell the two kinds apart,
        # so even one collection holding both cannot mix them up.
        wanted: dict[str, tuple[str, str]] = {}
        refs: list[Any] = []
        if self._profiles:
            collection = client.collection(self._profiles)
            for uid in user_ids:
                if _valid_doc_id(uid):
                    refs.append(collection.document(uid))
                    wanted[refs[-1].path] = ("profile", uid)
        if self._browsers:
            collection = client.collection(self._browsers)
            for browser in list(dict.fromkeys(browser_ids))[: browsers.MAX_BROWSERS_PER_READ]:
                refs.append(collection.document(browsers.document_id(browser)))
                wanted[refs[-1].path] = ("browser", browser)
        if not refs:
            return {}, {}
        # One mask for both kinds (a BatchGetDocuments call has one): each kind keeps its own fields below.
        fields = [*PROFILE_FIELDS, browsers.KEYS_FIELD, browsers.TTL_FIELD]
        deadline = time.monotonic() + self._timeout
        now = datetime.fromtimestamp(self._clock(), UTC)
        profiles: dict[str, dict[str, Any]] = {}
        remembered: dict[str, browsers.Remembered] = {}
        # No retries and a hard deadline: a slow Firestore must not hold the events back.
        for snapshot in client.get_all(refs, field_paths=fields, retry=None, timeout=self._timeout):
            found = wanted.get(snapshot.reference.path) if snapshot.exists else None
            if found is not None:
                record = snapshot.to_dict() or {}
                kind, key = found
                if kind == "profile":
                    profiles[key] = {name: value for name, value in record.items() if name in PROFILE_FIELDS}
                elif keys := browsers.remembered(record, now):
                    remembered[key] = keys
            if time.monotonic() > deadline:
                raise TimeoutError("enrichment lookup over its time budget")
        return profiles, remembered


def _valid_doc_id(uid: str) -> bool:
    return (
        0 < len(uid.encode("utf-8")) <= 1500
        and "/" not in uid
        and uid not in (".", "..")
        and not (uid.startswith("__") and uid.endswith("__"))
    )


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
        self._scope = scope(destination, pixel_id)
        self._ttl = ttl
        self._order_ttl = order_ttl
        self._lease = lease
        self._clock = clock

    def _ref(self, key: tuple[str, str]) -> Any:
        return self._client().collection(self._collection).document(doc_id(*self._scope, *key))

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
        write_in_batches(
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
        write_in_batches(self._client(), keys, lambda batch, key: batch.delete(self._ref(key)))
