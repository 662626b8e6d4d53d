"""Meta Graph API client: POST /{version}/{pixel_id}/events with bounded, classified retries.

Errors are classified by Meta's error code, not only the HTTP status (docs/meta-capi.md §7),
into what they mean for the events (`MetaError.kind`). Meta's answer is read bounded (size and
time) and only well-formed, short fields of it are passed on.
Retrying a POST is safe here only because every event carries a stable event_id that Meta
deduplicates on (with event_name).
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
import urllib3

from capi import shutdown
from capi.delivery.throttle import regain_after
from capi.delivery.watchdog import bounded_call, guarded_pool
from capi.destinations import DEFAULT
from capi.errors import MetaAuthError, MetaError
from capi.lazy import Lazy
from capi.log import log
from capi.payload import GraphResult, appsecret_proof
from capi.secrets import SecretSource

# Throttling (4, 17, 613, 80000-80014) is transient too: the events are fine, Meta asks to wait.
TRANSIENT_CODES = frozenset({1, 2, 4, 17, 32, 341, 368, 613, *range(80000, 80015)})
CONNECT_TIMEOUT = 3.05
MAX_ANSWER_BYTES = 256 * 1024  # Meta's answers are a few hundred bytes; more is not Meta's
MAX_ECHOED_MESSAGES = 20
MAX_MESSAGE_CHARS = 500
FBTRACE = re.compile(r"[A-Za-z0-9_\-]{1,64}")

# What to change when Meta refuses capi's configuration (docs/delivery.md "Delivery guarantees").
FIX_TOKEN = "rotate the token: add a new version to META_ACCESS_TOKEN_SECRET (Meta says it is invalid or expired)"
FIX_PERMISSION = "give the token's system user the dataset (pixel) with permission to send events"
FIX_PIXEL = "check META_PIXEL_ID: Meta knows no such pixel, or this token cannot see it"
FIX_APP_SECRET = "check META_APP_SECRET_SECRET: it must be the secret of the token's app"


# A literal token or app secret (local runs) is fixed in its own variable, not in a secret.
_LITERAL_FIXES = {
    "token": ("add a new version to META_ACCESS_TOKEN_SECRET", "set META_ACCESS_TOKEN to a new token"),
    "app_secret": ("META_APP_SECRET_SECRET", "META_APP_SECRET"),
}

# With META_DESTINATIONS, what to fix is a key of one destination, not a variable.
_DESTINATION_KEYS = {
    "META_ACCESS_TOKEN_SECRET": "access_token_secret",
    "META_ACCESS_TOKEN": "access_token",
    "META_PIXEL_ID": "pixel_id",
    "META_APP_SECRET_SECRET": "app_secret_secret",
    "META_APP_SECRET": "app_secret",
}
_VARIABLE = re.compile(r"\bMETA_[A-Z_]+\b")


def literal_fix(fix: str, *, token: bool, app_secret: bool) -> str:
    """`fix` naming the setting actually used: META_ACCESS_TOKEN (META_APP_SECRET) when the
    value came from that variable rather than from a Secret Manager secret."""
    for used, (secret_text, literal_text) in _LITERAL_FIXES.items():
        if token if used == "token" else app_secret:
            fix = fix.replace(secret_text, literal_text)
    return fix


# Meta's refusals on policy grounds that are final for the event, whatever the code or
# is_transient says (docs/meta-capi.md §11): not retried, not stored, reported as failed.
FINAL_POLICY_REFUSALS = ("messaging event within messaging restrictive region",)

# Meta answers a call to a version being retired or auto-upgraded with this header
# (docs/meta-capi.md §11): one WARNING per process and version, with the version to move to.
VERSION_WARNING_HEADER = "X-Ad-Api-Version-Warning"
VERSION_WARNING = "Meta API version warning"
_VERSION = re.compile(r"v(\d{1,3})\.(\d{1,3})")
_warned_versions: set[str] = set()
_warned_lock = threading.Lock()


def version_to_move_to(header: str, api_version: str) -> str | None:
    """The newest version the header names other than the one called ("auto-upgraded to v17.0
    as v3.3 has been deprecated" -> v17.0), or None when it names none."""
    found = {(int(major), int(minor)) for major, minor in _VERSION.findall(header)}
    if current := _VERSION.fullmatch(api_version):
        found.discard((int(current[1]), int(current[2])))
    if not found:
        return None
    major, minor = max(found)
    return f"v{major}.{minor}"


def warn_version(header: str | None, api_version: str, destination: str) -> None:
    """Log Meta's version warning once per process and API version (every call carries it)."""
    if not header or api_version in _warned_versions:  # the common cases, without the lock
        return
    with _warned_lock:
        if api_version in _warned_versions:
            return
        _warned_versions.add(api_version)
    move_to = version_to_move_to(header, api_version)
    log(
        logging.WARNING,
        VERSION_WARNING,
        api_version=api_version,
        move_to=move_to,
        warning=_short(header),
        destination=destination,
        fix=(
            f"set META_API_VERSION={move_to} and deploy (docs/meta-capi.md §12)"
            if move_to
            else "move META_API_VERSION to Meta's current version and deploy (docs/meta-capi.md §12)"
        ),
    )


def destination_fix(fix: str, destination: str) -> str:
    """`fix` for one destination of META_DESTINATIONS: its own key named instead of the variable."""

    def key(match: re.Match[str]) -> str:
        name = _DESTINATION_KEYS.get(match.group(0))
        return f"{name} of destination {destination!r} (META_DESTINATIONS)" if name else match.group(0)

    return _VARIABLE.sub(key, fix)


def _config_fix(code: int | None, subcode: int | None, message: str) -> str | None:
    """What to fix when the answer means capi's configuration is wrong; None otherwise."""
    if code == 190:
        return FIX_TOKEN
    if code in (3, 10) or (code is not None and 200 <= code <= 299):
        return FIX_PERMISSION
    if code == 803 or (code == 100 and subcode == 33):
        return FIX_PIXEL
    if code == 100 and "appsecret_proof" in message:
        return FIX_APP_SECRET
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again: an immutable policy whose `after` returns its next state.

    At most `max_attempts` tries, all inside `budget` seconds; between tries an exponential
    backoff with equal jitter (half the step fixed, half random, so retries never bunch at
    zero) or Meta's Retry-After when it gives one. A refused token (190) is re-read once and
    tried again without counting as a try, so a rotated secret works without a redeploy.
    Once the instance is stopping, nothing is tried again.
    """

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 4.0
    budget: float = 10.0
    attempts: int = 0  # failed tries so far
    deadline: float = 0.0  # set by start()
    refreshed: bool = False  # the token was re-read once already
    wait: float = 0.0  # sleep this long before the next try
    refresh: bool = False  # re-read the token before the next try

    def start(self, now: float) -> RetryPolicy:
        return replace(self, attempts=0, deadline=now + self.budget, refreshed=False, wait=0.0, refresh=False)

    def remaining(self, now: float) -> float:
        return self.deadline - now

    def delay(self, attempt: int, rng: Callable[[], float]) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return ceiling / 2 + rng() * ceiling / 2

    def after(
        self,
        error: MetaError,
        *,
        now: float,
        retry_after: float | None = None,
        rng: Callable[[], float] = random.random,
        stopping: bool = False,
    ) -> RetryPolicy | None:
        """The state for the next try after `error`, or None: give up and raise it."""
        if stopping:
            return None
        if isinstance(error, MetaAuthError) and not self.refreshed:
            return replace(self, refreshed=True, refresh=True, wait=0.0)
        attempts = self.attempts + 1
        if not error.transient or attempts >= self.max_attempts:
            return None
        wait = retry_after if retry_after is not None else self.delay(attempts, rng)
        if now + wait >= self.deadline:
            return None
        return replace(self, attempts=attempts, wait=wait, refresh=False)


def classify(http_status: int, payload: Any) -> MetaError:
    """Turn a Graph API error answer into a MetaError that says what it means for the events."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        kind = "transient" if http_status >= 500 or http_status == 429 else "unreadable"
        return MetaError(f"Meta answered HTTP {http_status} without an error body", kind=kind, http_status=http_status)
    code = error.get("code") if isinstance(error.get("code"), int) else None
    subcode = error.get("error_subcode") if isinstance(error.get("error_subcode"), int) else None
    message = _short(error.get("message")) or "unknown error"
    detail = _short(error.get("error_user_msg")) or _short(error.get("error_user_title"))
    if detail:
        message = f"{message} ({detail})"
    fbtrace = _fbtrace(error.get("fbtrace_id"))
    fix = None
    lowered = message.lower()
    if any(phrase in lowered for phrase in FINAL_POLICY_REFUSALS):
        kind = "refused"  # final for the event, even when Meta marks it transient (e.g. code 368)
    elif error.get("is_transient") is True or code in TRANSIENT_CODES:
        kind = "transient"
    elif fix := _config_fix(code, subcode, message):
        kind = "config"
    elif code is None and (http_status >= 500 or http_status == 429):
        kind = "transient"
    elif code is None:
        kind = "unreadable"
    elif http_status >= 500 or http_status == 429:
        kind = "transient"
    else:
        kind = "refused"
    error_type = MetaAuthError if code == 190 else MetaError
    return error_type(
        message,
        kind=kind,
        http_status=http_status,
        meta_code=code,
        meta_subcode=subcode,
        fbtrace_id=fbtrace,
        fix=fix,
    )


def _short(value: Any) -> str | None:
    """A string from Meta's answer fit to echo: bounded, or None when it is not a string."""
    if not isinstance(value, str) or not value:
        return None
    return value if len(value) <= MAX_MESSAGE_CHARS else value[:MAX_MESSAGE_CHARS] + "…"


def _fbtrace(value: Any) -> str | None:
    return value if isinstance(value, str) and FBTRACE.fullmatch(value) else None


def _messages(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [m for m in (_short(v) for v in value[:MAX_ECHOED_MESSAGES]) if m]


def _accepted(payload: Any, attempts: int) -> GraphResult | None:
    """The result of a 2xx answer, or None when it does not say Meta took the events."""
    if not isinstance(payload, dict) or "error" in payload:
        return None
    received = payload.get("events_received")
    if not isinstance(received, int) or isinstance(received, bool):
        return None
    return GraphResult(
        events_received=received,
        fbtrace_id=_fbtrace(payload.get("fbtrace_id")),
        messages=_messages(payload.get("messages")),
        attempts=attempts,
    )


def _retry_after(response: urllib3.BaseHTTPResponse) -> float | None:
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


def _new_pool(url: str, pool_size: int) -> urllib3.PoolManager:
    """Keep-alive connections, a pool sized for the instance's concurrent requests, no urllib3
    retries (retrying is `GraphClient.send`'s job, by Meta's error codes) and no redirects.

    urllib3 directly, not `requests`: on a one-event request, `requests` spent as much CPU
    around the call (merging cookie jars, reading netrc and the proxy variables from the
    environment, hooks, building its Response) as the HTTP round trip itself, about 0.2 ms
    (docs/performance.md). Its configuration is still honoured, read once here with its own
    helpers: HTTPS_PROXY / NO_PROXY, and REQUESTS_CA_BUNDLE or certifi's CA bundle.
    """
    # Imported here, on the first send, not at start-up: `requests` cost 17 ms of capi's 64 ms
    # import on Python 3.12 (python -X importtime), and a cold instance answers before it sends.
    from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_environ_proxies

    ca_certs = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or DEFAULT_CA_BUNDLE_PATH
    proxies = get_environ_proxies(url)
    proxy = proxies.get(url.split(":", 1)[0]) or proxies.get("all")
    options: dict[str, Any] = {"maxsize": pool_size, "retries": False, "ca_certs": ca_certs}
    return guarded_pool(urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options))


class GraphClient:
    """Sends request bodies to one destination's (pixel's) /events edge, with its token.

    One urllib3 pool manager per client (created on first use) keeps connections alive; its
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
        session: urllib3.PoolManager | None = None,
        timeout: float = 5.0,
        policy: RetryPolicy | None = None,
        pool_size: int = 16,
        sleep: Callable[[float], None] = shutdown.wait,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        stopping: Callable[[], bool] = shutdown.stopping,
        destination: str = DEFAULT,
        from_destinations: bool = False,
        literal_token: bool = False,
        literal_app_secret: bool = False,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/{api_version}/{pixel_id}/events"
        self.pixel_id = pixel_id
        self.api_version = api_version
        self.destination = destination
        self._from_destinations = from_destinations  # configured in META_DESTINATIONS
        self._literal = {"token": literal_token, "app_secret": literal_app_secret}  # not Secret Manager
        self._token = token
        self._app_secret = app_secret
        self._session = Lazy(lambda: session or _new_pool(self.url, pool_size))
        self._timeout = timeout
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._stopping = stopping

    @property
    def session(self) -> urllib3.PoolManager:
        return self._session()

    def _wire(self, body: dict[str, Any], refresh: bool) -> bytes:
        token = self._token.get(refresh=refresh)
        full = dict(body)
        full["access_token"] = token
        if self._app_secret is not None:
            full["appsecret_proof"] = appsecret_proof(self._app_secret.get(refresh=refresh), token)
        return orjson.dumps(full)

    def send(self, body: dict[str, Any], *, deadline: float | None = None) -> GraphResult:
        """POST one body (at most 1000 events); retry what the policy says to retry.

        `deadline` (on this client's clock) ends the retries earlier than the policy's budget:
        the parts of a split batch share what is left of the split's time.

        Raises:
            MetaError: its `kind` says what the failure means for the events.
            SecretUnavailable: the token could not be read.
        """
        state = self._policy.start(self._clock())
        if deadline is not None and deadline < state.deadline:
            state = replace(state, deadline=deadline)
        while True:
            wire = self._wire(body, state.refresh)
            remaining = max(0.05, state.remaining(self._clock()))
            # The whole call (connecting, sending, the answer's headers and body) ends by
            # `read_by`: socket timeouts bound each read only, so a watchdog cuts a dripping answer.
            bound = min(self._timeout, remaining)
            read_by = self._clock() + bound
            retry_after: float | None = None
            response: urllib3.BaseHTTPResponse | None = None
            raw: bytes | None = None
            with bounded_call(time.monotonic() + bound) as call:
                try:
                    response = self.session.request(
                        "POST",
                        self.url,
                        body=wire,
                        headers={"Content-Type": "application/json"},
                        timeout=urllib3.Timeout(connect=min(CONNECT_TIMEOUT, remaining), read=bound),
                        preload_content=False,  # read a bounded answer, never a whole unbounded one
                        retries=False,
                        redirect=False,
                    )
                except (urllib3.exceptions.HTTPError, OSError) as exc:
                    error = MetaError(f"could not reach Meta ({type(exc).__name__})", kind="transient")
                else:
                    raw = _read_bounded(response, read_by, self._clock)
            # The connection goes back to the pool only once the watchdog let go of it.
            if response is not None:
                if raw is None or call.cut:
                    response.close()  # not read to its end, or cut: this connection cannot be reused
                response.release_conn()
                warn_version(response.headers.get(VERSION_WARNING_HEADER), self.api_version, self.destination)
                error = self._answer(response, raw, state.attempts + 1, len(body.get("data") or ()))
                retry_after = _retry_after(response)
                if isinstance(error, MetaError):  # how long Meta says to wait (the queued path pauses)
                    error.regain_after = regain_after(response.headers, retry_after)
            if call.cut and not isinstance(error, GraphResult):
                # Cut by the watchdog: Meta's answer took longer than the call's total bound.
                error = MetaError(
                    f"Meta's answer took over {bound:.1f} s in total (the bound of one call); cut",
                    kind="transient",
                    http_status=error.http_status,
                )
            if isinstance(error, GraphResult):
                return error
            log(
                logging.WARNING,
                "Meta call failed",
                destination=self.destination,
                attempt=state.attempts + 1,
                kind=error.kind,
                meta_code=error.meta_code,
                meta_subcode=error.meta_subcode,
                http_status=error.http_status,
                fbtrace_id=error.fbtrace_id,
                error=error.message,
            )
            next_state = state.after(
                error, now=self._clock(), retry_after=retry_after, rng=self._rng, stopping=self._stopping()
            )
            if next_state is None:
                if error.fix:
                    error.fix = literal_fix(error.fix, **self._literal)
                if error.fix and self._from_destinations:
                    error.fix = destination_fix(error.fix, self.destination)
                raise error
            state = next_state
            if state.wait:
                self._sleep(state.wait)

    @staticmethod
    def _answer(
        response: urllib3.BaseHTTPResponse, raw: bytes | None, attempt: int, sent: int
    ) -> GraphResult | MetaError:
        status = response.status
        if raw is None:
            return MetaError(
                f"Meta's answer (HTTP {status}) was over {MAX_ANSWER_BYTES} bytes or too slow to read",
                kind="transient" if status >= 500 or status == 429 else "unreadable",
                http_status=status,
            )
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        if 200 <= status < 300:
            result = _accepted(payload, attempt)
            if result is not None and result.events_received is not None and result.events_received < sent:
                # Meta says it took fewer events than it was sent and not which: the outcome of
                # each is unknown, so all are kept for replay (Meta deduplicates a second copy).
                return MetaError(
                    f"Meta answered events_received {result.events_received} for {sent} events sent:"
                    " unknown which it took",
                    kind="unreadable",
                    http_status=status,
                    fbtrace_id=result.fbtrace_id,
                )
            if result is not None:
                return result
            if not (isinstance(payload, dict) and isinstance(payload.get("error"), dict)):
                return MetaError(
                    f"Meta answered HTTP {status} without events_received: unknown whether it took the events",
                    kind="unreadable",
                    http_status=status,
                )
        return classify(status, payload)


def _read_bounded(response: urllib3.BaseHTTPResponse, deadline: float, clock: Callable[[], float]) -> bytes | None:
    """At most MAX_ANSWER_BYTES of the answer, read before `deadline`; None past either bound."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.stream(16 * 1024):
            size += len(chunk)
            if size > MAX_ANSWER_BYTES or clock() > deadline:
                return None
            chunks.append(chunk)
    except (urllib3.exceptions.HTTPError, OSError):
        return None
    return b"".join(chunks)
