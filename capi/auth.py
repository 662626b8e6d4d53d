"""Caller authentication with ingest keys (`Authorization: Bearer KEY` or `X-Api-Key: KEY`).

Closed by default: with no key configured every request is refused unless
ALLOW_UNAUTHENTICATED=true (local runs, or a function already protected by IAM).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence

from capi.errors import Unauthorized


def split_keys(text: str) -> tuple[str, ...]:
    """Several keys in one value (comma- or newline-separated), for rotation without downtime."""
    return tuple(k.strip() for k in text.replace("\n", ",").split(",") if k.strip())


class Authenticator:
    def __init__(self, keys: Callable[[], Sequence[str]] | None, allow_unauthenticated: bool) -> None:
        """`keys` returns the valid keys (literal or read from Secret Manager, cached there)."""
        self._keys = keys
        self._open = allow_unauthenticated

    def check(self, headers: Mapping[str, str]) -> None:
        """Raises Unauthorized unless the request presents a valid key (or auth is off)."""
        if self._keys is None:
            if self._open:
                return
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
        for candidate in presented:
            for key in valid:
                # compare_digest on bytes takes the same time wherever the first difference is.
                ok |= hmac.compare_digest(candidate.encode("utf-8"), key.encode("utf-8"))
        if not ok:
            raise Unauthorized("wrong ingest key")
