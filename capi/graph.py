"""Meta Graph API client: POST /{version}/{pixel_id}/events with bounded, classified retries.

Errors are classified by Meta's error code, not only the HTTP status (capi-spec.md section 7).
Retrying a POST is safe here only because every event carries a stable event_id that Meta
deduplicates on (with event_name).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
import requests
from requests.adapters import HTTPAdapter

from capi.errors import MetaAuthError, MetaError
from capi.lazy import Lazy
from capi.log import log
from capi.payload import GraphResult, appsecret_proof
from capi.secrets import SecretSource

TRANSIENT_CODES = frozenset({1, 2, 4, 17, 32, 341, 368, 613, 80003, 80004})
PERMANENT_CODES = frozenset({3, 10, 100, 190} | set(range(200, 300)))
CONNECT_TIMEOUT = 3.05


@dataclass(frozen=True)
class RetryPolicy:
    """At most `max_attempts` tries, exponential backoff with full jitter, all within `budget`."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 4.0
    budget: float = 10.0

    def delay(self, attempt: int, rng: Callable[[], float]) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return ceiling / 2 + rng() * ceiling / 2


def classify(http_status: int, payload: Any) -> MetaError:
    """Turn a Graph API error answer into a MetaError that says whether to retry."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        transient = http_status >= 500 or http_status == 429
        return MetaError(
            f"Meta answered HTTP {http_status} without an error body", transient=transient, http_status=http_status
        )
    code = error.get("code") if isinstance(error.get("code"), int) else None
    subcode = error.get("error_subcode") if isinstance(error.get("error_subcode"), int) else None
    message = str(error.get("message") or "unknown error")
    detail = error.get("error_user_msg") or error.get("error_user_title")
    if detail:
        message = f"{message} ({detail})"
    fbtrace = error.get("fbtrace_id") if isinstance(error.get("fbtrace_id"), str) else None
    if error.get("is_transient") is True or code in TRANSIENT_CODES:
        transient = True
    elif code in PERMANENT_CODES:
        transient = False
    else:
        transient = http_status >= 500 or http_status == 429
    kind = MetaAuthError if code == 190 else MetaError
    return kind(
        message, transient=transient, http_status=http_status, meta_code=code, meta_subcode=subcode, fbtrace_id=fbtrace
    )


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _new_session(pool_size: int) -> requests.Session:
    """Keep-alive connections, a pool sized for the instance's concurrent requests, and no
    urllib3 retries: retrying is `GraphClient.send`'s job, by Meta's error codes."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class GraphClient:
    """Sends request bodies to one pixel's /events edge.

    One `requests.Session` per instance (created on first use) keeps connections alive; its
    pool is sized for the instance's concurrent requests.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_version: str,
        pixel_id: str,
        token: SecretSource,
        app_secret: SecretSource | None = None,
        session: requests.Session | None = None,
        timeout: float = 5.0,
        policy: RetryPolicy | None = None,
        pool_size: int = 16,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/{api_version}/{pixel_id}/events"
        self._token = token
        self._app_secret = app_secret
        self._session = Lazy(lambda: session or _new_session(pool_size))
        self._timeout = timeout
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng

    @property
    def session(self) -> requests.Session:
        return self._session()

    def _wire(self, body: dict[str, Any], refresh: bool) -> bytes:
        token = self._token.get(refresh=refresh)
        full = dict(body)
        full["access_token"] = token
        if self._app_secret is not None:
            full["appsecret_proof"] = appsecret_proof(self._app_secret.get(refresh=refresh), token)
        return orjson.dumps(full)

    def send(self, body: dict[str, Any]) -> GraphResult:
        """POST one body (at most 1000 events); retry what is transient.

        Raises:
            MetaError: `transient` True when Meta may accept it later (the caller stores it).
            SecretUnavailable: the token could not be read.
        """
        policy = self._policy
        deadline = self._clock() + policy.budget
        attempt = 0
        refreshed = False
        refresh = False
        while True:
            attempt += 1
            wire = self._wire(body, refresh)
            refresh = False
            remaining = max(0.05, deadline - self._clock())
            try:
                response = self.session.post(
                    self.url,
                    data=wire,
                    headers={"Content-Type": "application/json"},
                    timeout=(min(CONNECT_TIMEOUT, remaining), min(self._timeout, remaining)),
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                error = MetaError(f"could not reach Meta ({type(exc).__name__})", transient=True)
                wait = None
            else:
                try:
                    payload = response.json()
                except ValueError:
                    payload = None
                if 200 <= response.status_code < 300 and isinstance(payload, dict) and "error" not in payload:
                    received = payload.get("events_received")
                    return GraphResult(
                        events_received=received if isinstance(received, int) else None,
                        fbtrace_id=payload.get("fbtrace_id") if isinstance(payload.get("fbtrace_id"), str) else None,
                        messages=payload.get("messages") if isinstance(payload.get("messages"), list) else [],
                        attempts=attempt,
                    )
                error = classify(response.status_code, payload)
                wait = _retry_after(response)
            log(
                logging.WARNING,
                "Meta call failed",
                attempt=attempt,
                transient=error.transient,
                meta_code=error.meta_code,
                meta_subcode=error.meta_subcode,
                http_status=error.http_status,
                fbtrace_id=error.fbtrace_id,
                error=error.message,
            )
            if isinstance(error, MetaAuthError) and not refreshed:
                # The token may have been rotated: read it again and try once more.
                refreshed = refresh = True
                attempt -= 1
                continue
            if not error.transient or attempt >= policy.max_attempts:
                raise error
            delay = wait if wait is not None else policy.delay(attempt, self._rng)
            if self._clock() + delay >= deadline:
                raise error
            self._sleep(delay)
