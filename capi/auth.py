"""Caller authentication with ingest keys (`Authorization: Bearer KEY` or `X-Api-Key: KEY`).

Closed by default: with no key configured every request is refused unless
ALLOW_UNAUTHENTICATED=true (local runs, or a function already protected by IAM).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from capi.errors import Unauthorized

MAX_BOUND_KEYS = 50  # entries of INGEST_KEYS


def split_keys(text: str) -> tuple[str, ...]:
    """Several keys in one value (comma- or newline-separated), for rotation without downtime."""
    return tuple(k.strip() for k in text.replace("\n", ",").split(",") if k.strip())


@dataclass(frozen=True)
class BoundKey:
    """An entry of INGEST_KEYS: ingest key(s) that may send only to `destinations`, kept in a
    Secret Manager `secret` (one or several keys, for rotation) or, for local runs, a literal `key`."""

    destinations: frozenset[str]
    secret: str | None = None
    key: str | None = field(default=None, repr=False)


def parse_bound_keys(text: str) -> tuple[BoundKey, ...]:
    """INGEST_KEYS: `[{"secret": "capi-key-shop-a", "destinations": ["shop_a"]}, ...]`.

    Raises:
        ValueError: the reason (the configuration loader names the variable; never a key).
    """
    if not text:
        return ()
    try:
        entries = json.loads(text)
    except ValueError:
        raise ValueError("must be a JSON array of {secret (or key), destinations}") from None
    if not isinstance(entries, list) or not entries or len(entries) > MAX_BOUND_KEYS:
        raise ValueError(f"must be a JSON array of 1 to {MAX_BOUND_KEYS} entries")
    return tuple(_bound_key(entry, position) for position, entry in enumerate(entries))


def _bound_key(entry: Any, position: int) -> BoundKey:
    where = f"entry {position}"
    if not isinstance(entry, dict) or set(entry) - {"secret", "key", "destinations"}:
        raise ValueError(f"{where} must be an object with secret (or key) and destinations only")
    secret, key = entry.get("secret"), entry.get("key")
    if (secret is None) == (key is None) or not all(isinstance(v, str) and v.strip() for v in (secret or key,)):
        raise ValueError(f"{where} needs exactly one of secret (a Secret Manager secret) and key (local runs)")
    names = entry.get("destinations")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{where}: destinations must be a non-empty array of destination names")
    return BoundKey(frozenset(names), secret.strip() if secret else None, key.strip() if key else None)


class Authenticator:
    def __init__(
        self,
        keys: Callable[[], Sequence[str]] | None,
        allow_unauthenticated: bool,
        bound: Callable[[], Sequence[tuple[str, frozenset[str]]]] | None = None,
    ) -> None:
        """`keys` returns the valid keys (literal or read from Secret Manager, cached there);
        `bound` the keys of INGEST_KEYS, each with the destinations it may send to."""
        self._keys = keys if keys is not None or bound is None else (lambda: ())
        self._bound = bound
        self._open = allow_unauthenticated

    def check(self, headers: Mapping[str, str]) -> frozenset[str] | None:
        """The destinations the request may send to (None: every one). Raises Unauthorized
        unless the request presents a valid key (or auth is off)."""
        if self._keys is None:
            if self._open:
                return None
            raise Unauthorized(
                "no ingest key is configured: set INGEST_API_KEY_SECRET (or INGEST_API_KEY), or"
                " ALLOW_UNAUTHENTICATED=true when the function is protected by IAM"
            )
        presented = []
        auth = headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            presented.append(auth[7:].strip())
        if headers.get("X-Api-Key"):
            presented.append(headers["X-Api-Key"].strip())
        if not presented:
            raise Unauthorized("missing ingest key: send Authorization: Bearer KEY or X-Api-Key: KEY")
        valid = self._keys()
        ok = False
        allowed: set[str] = set()
        for candidate in presented:
            given = candidate.encode("utf-8")
            for key in valid:
                # compare_digest on bytes takes the same time wherever the first difference is.
                ok |= hmac.compare_digest(given, key.encode("utf-8"))
            for key, destinations in self._bound() if self._bound is not None else ():
                if hmac.compare_digest(given, key.encode("utf-8")):
                    allowed |= destinations
        if ok:
            return None
        if allowed:
            return frozenset(allowed)
        raise Unauthorized("wrong ingest key")
