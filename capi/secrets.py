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


FAILURE_SECONDS = 5.0  # a failed read is answered from memory this long: no read storm
MAX_STALE_SECONDS = 300.0  # past its TTL, a value is served at most this long while refreshing


class _Flight:
    """One read in progress; every caller that needs its result waits on it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: str | None = None
        self.error: SecretUnavailable | None = None


class SecretManagerSecret:
    """A Secret Manager secret version, cached per instance for `ttl` seconds.

    Thread-safe, and no caller waits on another's lock: one read in flight serves every
    caller that needs it (a cold instance's first calls make one read, not one per thread).
    Once the TTL has passed, the cached value is still served (for at most
    MAX_STALE_SECONDS more) while one background read refreshes it: a token Meta refuses is
    re-read anyway (`refresh=True`, which never takes a stale value), and a revoked ingest key
    lives at most that much longer. A failed read is remembered for FAILURE_SECONDS, so a
    failing Secret Manager is not asked again by every request; while it is, a value within
    MAX_STALE_SECONDS is still served (a failed refresh does not turn a token that works into
    stored events). Every wait is bounded: the
    read's own timeout, and a caller waits at most that plus a second for a read in flight.
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
        self._lock = threading.Lock()  # held for bookkeeping only, never during a read
        self._value: str | None = None
        self._expires = 0.0
        self._failure: SecretUnavailable | None = None
        self._failed_until = 0.0
        self._flight: _Flight | None = None

    def __repr__(self) -> str:
        return f"SecretManagerSecret(name={self.name!r})"

    def get(self, *, refresh: bool = False) -> str:
        value = self._value
        if not refresh and value is not None and self._clock() < self._expires:
            return value
        with self._lock:
            now = self._clock()
            value = self._value
            if not refresh and value is not None and now < self._expires:
                return value
            stale = not refresh and value is not None and now < self._expires + MAX_STALE_SECONDS
            if self._failure is not None and now < self._failed_until:
                if stale:  # a refresh just failed: the value served while refreshing still serves
                    return value  # type: ignore[return-value]
                raise self._failure
            flight, lead = self._flight, self._flight is None
            if lead:
                flight = self._flight = _Flight()
        assert flight is not None
        if stale:
            if lead:  # refreshed in the background: no caller waits for it
                threading.Thread(target=self._fly, args=(flight,), name="capi-secret-refresh", daemon=True).start()
            return value  # type: ignore[return-value]
        if lead:
            self._fly(flight)
        elif not flight.done.wait(self._timeout + 1.0):
            raise SecretUnavailable(f"Secret Manager secret {self.name}: read still in flight", secret=self.name)
        if flight.error is not None:
            raise flight.error
        assert flight.value is not None
        return flight.value

    def _fly(self, flight: _Flight) -> None:
        try:
            flight.value = self._read()
        except SecretUnavailable as exc:
            flight.error = exc
        except Exception as exc:  # noqa: BLE001 - whatever failed, every waiter gets an answer
            flight.error = self._unavailable(f"read failed ({type(exc).__name__})", "check Secret Manager availability")
        finally:
            with self._lock:
                now = self._clock()
                if flight.value is not None:
                    self._value, self._expires, self._failure = flight.value, now + self._ttl, None
                else:
                    self._failure, self._failed_until = flight.error, now + FAILURE_SECONDS
                self._flight = None
            flight.done.set()

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
