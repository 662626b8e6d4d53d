"""Enhanced event coverage: the hashed customer keys capi remembers per browser (`BROWSER_COLLECTION`).

When an event carries customer information and a browser id (`fbp`), capi remembers the
digests it sent for that browser, so the browser's later events that lack them (a PageView
after a sign-up, an AddToCart before checkout) are sent with them too. Meta's and Stape's tags
do the same in a `_gtmeec` cookie; capi keeps them server-side, where no script can read them.

- Document id: the SHA-256 of the browser id, never the id itself; the document holds digests
  only (`keys`: Meta key -> digests), never a raw value.
- `expire_at` (a timestamp, `BROWSER_TTL_DAYS` ahead, renewed with each write) is the field of
  the Firestore TTL policy (terraform/ and `make deploy`); a document past it is ignored on
  read even before Firestore deletes it (TTL deletion can lag by a day or more).
- Consent: remembered and added only when the event's consent grants ad_user_data
  (`capi.consent.ad_user_data_granted`).
- Written only when an event teaches something new; a known browser costs no write.
- Read in the request's one batched lookup, in the same BatchGetDocuments call and deadline
  as the profiles (capi.firestore.FirestoreLookup).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from capi.normalize import HASHED_KEYS, Dropped, FieldContext, hash_value

TTL_FIELD = "expire_at"  # the Firestore TTL policy's field (terraform/, make deploy)
KEYS_FIELD = "keys"
MAX_DIGESTS_PER_KEY = 5  # the latest few per key: a shared browser must not grow a document without bound
_DIGEST = re.compile(r"[0-9a-f]{64}")
MAX_BROWSERS_PER_READ = 1000  # one request holds at most 1000 events, so at most 1000 browsers

Remembered = dict[str, list[str]]  # Meta key -> digests


def document_id(browser_id: str) -> str:
    """The document of a browser: a digest of its id, so the collection never holds the id."""
    return hashlib.sha256(browser_id.encode("utf-8")).hexdigest()


def learned(user_data: Mapping[str, Any], keys: Iterable[str]) -> Remembered:
    """The digests of `keys` (the event's own hashed keys) in `user_data`."""
    out: Remembered = {}
    for key in keys:
        values = user_data.get(key)
        if key in HASHED_KEYS and isinstance(values, list) and values:
            out[key] = [v for v in values if isinstance(v, str)][:MAX_DIGESTS_PER_KEY]
    return {k: v for k, v in out.items() if v}


def merged(known: Remembered, new: Remembered) -> Remembered | None:
    """`known` with `new` added (the newest digests first, at most MAX_DIGESTS_PER_KEY per key),
    or None when `new` teaches nothing: then nothing is written."""
    result = {key: list(values) for key, values in known.items()}
    changed = False
    for key, digests in new.items():
        old = result.get(key, [])
        fresh = [d for d in digests if d not in old]
        if fresh:
            result[key] = (fresh + old)[:MAX_DIGESTS_PER_KEY]
            changed = True
    return result if changed else None


def _clean(raw: Any) -> Remembered:
    """A stored `keys` map, only what capi writes: lists of SHA-256 hex digests under Meta's hashed keys."""
    if not isinstance(raw, Mapping):
        return {}
    out: Remembered = {}
    for key, values in raw.items():
        if key in HASHED_KEYS and isinstance(values, list):
            # Meta refuses the whole event for a value that is not a lowercase SHA-256 hex digest.
            digests = [v for v in values if isinstance(v, str) and _DIGEST.fullmatch(v)][:MAX_DIGESTS_PER_KEY]
            if digests:
                out[key] = digests
    return out


def remembered(record: Mapping[str, Any], now: datetime) -> Remembered:
    """The keys a browser's stored document holds, or {} once it is past `expire_at`. The
    read itself is part of the request's one enrichment lookup (capi.firestore.FirestoreLookup)."""
    expires = record.get(TTL_FIELD)
    if not isinstance(expires, datetime) or expires <= now:
        return {}
    return _clean(record.get(KEYS_FIELD))


class FirestoreBrowserStore:
    """Remembered keys by browser id in `collection`: written only when new, and deleted on
    request. Read by the request's one enrichment lookup (capi.firestore.FirestoreLookup)."""

    def __init__(
        self,
        client: Callable[[], Any],
        collection: str,
        ttl_days: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._collection = collection
        self._ttl = timedelta(days=ttl_days)
        self._clock = clock

    def remember(self, updates: Mapping[str, Remembered], timeout: float) -> None:
        """Write each browser's merged keys (the caller passes only browsers with something
        new), with a renewed `expire_at`, in one batch commit within `timeout` seconds."""
        if not updates:
            return
        client = self._client()
        collection = client.collection(self._collection)
        expire_at = datetime.fromtimestamp(self._clock(), UTC) + self._ttl
        batch = client.batch()
        for browser, keys in list(updates.items())[:MAX_BROWSERS_PER_READ]:
            # set() without merge: the document is exactly the merged keys, so a key dropped
            # from the cap does not linger.
            batch.set(collection.document(document_id(browser)), {KEYS_FIELD: keys, TTL_FIELD: expire_at})
        batch.commit(retry=None, timeout=timeout)

    # -- deleting remembered data (docs/matching.md) --------------------------------------

    def forget_browser(self, browser_id: str) -> int:
        """Delete one browser's remembered keys; returns how many documents were deleted (0 or 1)."""
        ref = self._client().collection(self._collection).document(document_id(browser_id))
        existed = ref.get(retry=None, timeout=30).exists
        ref.delete(retry=None, timeout=30)
        return int(existed)

    def forget_user(self, key: str, digest: str) -> int:
        """Delete every browser whose remembered `key` (em, ph, ...) holds `digest`: all a user's
        browsers, found by the digest capi sent for them. Returns how many were deleted."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        collection = self._client().collection(self._collection)
        where = FieldFilter(f"{KEYS_FIELD}.{key}", "array_contains", digest)
        found = collection.where(filter=where).stream(retry=None, timeout=60)
        deleted = 0
        for snapshot in found:
            snapshot.reference.delete(retry=None, timeout=30)
            deleted += 1
        return deleted


def main(argv: Sequence[str] | None = None, client: Callable[[], Any] | None = None) -> int:
    """`python -m capi.browsers --collection capi_browsers (--fbp ID | --email E | --phone P)`:
    deletes a browser's, or a user's, remembered keys (GOOGLE_CLOUD_PROJECT and
    FIRESTORE_DATABASE as the function's). Prints how many browsers were forgotten."""
    import os

    parser = argparse.ArgumentParser(prog="python -m capi.browsers", description=main.__doc__)
    parser.add_argument("--collection", required=True, help="BROWSER_COLLECTION")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--fbp", help="the browser's _fbp value")
    which.add_argument("--email", help="the user's email, as given or its SHA-256")
    which.add_argument("--phone", help="the user's phone in international form (+1 650 ...), or its SHA-256")
    args = parser.parse_args(argv)
    if client is None:
        from capi.firestore import new_client

        database = os.environ.get("FIRESTORE_DATABASE", "(default)")
        client = lambda: new_client(os.environ.get("GOOGLE_CLOUD_PROJECT"), database)  # noqa: E731
    store = FirestoreBrowserStore(client, args.collection, ttl_days=1)
    if args.fbp:
        count = store.forget_browser(args.fbp.strip())
    else:
        key, value = ("em", args.email) if args.email else ("ph", args.phone)
        try:
            digest = hash_value(key, value, FieldContext(None, None))
        except Dropped as exc:
            parser.error(f"--{'email' if key == 'em' else 'phone'}: {exc}")
        count = store.forget_user(key, digest)
    print(f"forgot {count} browser(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
