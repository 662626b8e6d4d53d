"""Secrets (the Meta token, the app secret, ingest keys): a literal, or Secret Manager.

`SecretSource.get(refresh=False)` returns the value; `refresh=True` forgets any cached value
first, which is how a token Meta rejected (code 190) is re-read after a rotation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from capi.errors import SecretUnavailable
from capi.lazy import Lazy
from capi.log import log


class SecretSource(Protocol):
    name: str

    def get(self, *, refresh: bool = False) -> str: ...


class StaticSecret:
    """A value from the environment (local runs); refreshing it changes nothing."""

    def __init__(self, value: str, name: str = "literal") -> None:
        self._value = value
        self.name = name

    def get(self, *, refresh: bool = False) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"StaticSecret(name={self.name!r})"


def resource_name(secret: str, project: str | None) -> str:
    """`projects/P/secrets/S/versions/V` from a full path, a path without version, or a short name."""
    if secret.startswith("projects/"):
        return secret if "/versions/" in secret else f"{secret}/versions/latest"
    return f"projects/{project}/secrets/{secret}/versions/latest"


def _new_client() -> Any:
    from google.cloud import secretmanager

    return secretmanager.SecretManagerServiceClient()


# Every secret of the instance (token, app secret, ingest keys) shares one client.
_shared_client: Lazy[Any] = Lazy(_new_client)


class SecretManagerSecret:
    """A Secret Manager secret version, cached per instance for `ttl` seconds.

    Thread-safe: concurrent first calls on a cold instance make one read, not one per
    thread. A failed read is not cached, so the next request tries again.
    """

    def __init__(
        self,
        resource: str,
        *,
        ttl: float = 300.0,
        client: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 5.0,
    ) -> None:
        self.name = resource
        self._ttl = ttl
        self._client = client or _shared_client
        self._clock = clock
        self._timeout = timeout
        self._lock = threading.Lock()
        self._value: str | None = None
        self._expires = 0.0

    def __repr__(self) -> str:
        return f"SecretManagerSecret(name={self.name!r})"

    def get(self, *, refresh: bool = False) -> str:
        value = self._value
        if not refresh and value is not None and self._clock() < self._expires:
            return value
        with self._lock:
            # Another thread may have read it while we waited for the lock.
            if not refresh and self._value is not None and self._clock() < self._expires:
                return self._value
            if refresh:
                self._value = None
            self._value = self._read()
            self._expires = self._clock() + self._ttl
            return self._value

    def _read(self) -> str:
        from google.api_core import exceptions as gexc

        try:
            response = self._client().access_secret_version(request={"name": self.name}, timeout=self._timeout)
        except gexc.NotFound:
            raise self._unavailable(
                "not found", "create it or add a version: gcloud secrets versions add ..."
            ) from None
        except (gexc.PermissionDenied, gexc.Forbidden, gexc.Unauthenticated):
            raise self._unavailable(
                "permission denied",
                "grant roles/secretmanager.secretAccessor on this secret to the function's service account",
            ) from None
        except (gexc.GoogleAPIError, OSError, ValueError) as exc:
            raise self._unavailable(
                f"unreachable ({type(exc).__name__})", "check Secret Manager availability"
            ) from None
        payload = response.payload
        data: bytes = payload.data
        if payload.data_crc32c:
            import google_crc32c

            if google_crc32c.value(data) != int(payload.data_crc32c):
                raise self._unavailable("payload checksum mismatch", "read it again; the data was corrupted in transit")
        value = data.decode("utf-8").strip()
        if not value:
            raise self._unavailable("the secret version is empty", "add a version with the value")
        return value

    def _unavailable(self, what: str, fix: str) -> SecretUnavailable:
        log(logging.ERROR, "secret unavailable", secret=self.name, problem=what, fix=fix)
        return SecretUnavailable(f"Secret Manager secret {self.name}: {what}", secret=self.name, fix=fix)
