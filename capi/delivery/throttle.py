"""Meta's throttling: recognising it, reading how long it lasts, and pausing a pixel meanwhile.

Meta throttles with codes 4 (application), 17 (user), 613 (calls per second) and
80000–80014 (business use case), and says how long in the `X-Business-Use-Case-Usage`
header: per business object, a list of usages with `estimated_time_to_regain_access` in
minutes (Meta's Graph API rate-limiting docs). Retrying a throttled call at once only extends the
throttle, so the queued path (`capi_deliver`) pauses that pixel for Meta's time and lets
Pub/Sub hold the messages (`Pauses`; `capi.delivery.consume.ThrottleAwarePolicy`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import orjson

from capi.errors import MetaError

THROTTLE_CODES = frozenset({4, 17, 613, *range(80000, 80015)})
DEFAULT_PAUSE = 60.0  # when Meta throttles without saying for how long
MAX_PAUSE = 3600.0  # never longer than an hour: Meta's estimate is in minutes, and freshness matters
MAX_HEADER_CHARS = 16 * 1024


def is_throttle(error: BaseException | None) -> bool:
    return isinstance(error, MetaError) and error.meta_code in THROTTLE_CODES


def regain_seconds(header: str | None) -> float | None:
    """The longest `estimated_time_to_regain_access` of an `X-Business-Use-Case-Usage` header,
    in seconds; None when the header is absent, unreadable or gives no wait."""
    if not header or len(header) > MAX_HEADER_CHARS:
        return None
    try:
        usage = orjson.loads(header)
    except orjson.JSONDecodeError:
        return None
    minutes = [
        entry.get("estimated_time_to_regain_access")
        for entries in (usage.values() if isinstance(usage, dict) else ())
        if isinstance(entries, list)
        for entry in entries
        if isinstance(entry, dict)
    ]
    found = [m for m in minutes if isinstance(m, int | float) and not isinstance(m, bool) and m > 0]
    return max(found) * 60.0 if found else None


def regain_after(headers: Mapping[str, str], retry_after: float | None) -> float | None:
    """What Meta's answer says about waiting: its usage header first, else Retry-After."""
    return regain_seconds(headers.get("X-Business-Use-Case-Usage")) or retry_after


class Pauses:
    """Pixels Meta throttles, each until the time Meta gave (bounded by MAX_PAUSE); per instance."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._until: dict[str, float] = {}
        self._cause: dict[str, MetaError] = {}  # Meta's answer that paused the pixel, for the logs
        self._lock = threading.Lock()
        self._clock = clock

    def pause(self, pixel_id: str, error: MetaError) -> float:
        """Pause the pixel for Meta's time; returns the pause in seconds."""
        seconds = min(MAX_PAUSE, error.regain_after or DEFAULT_PAUSE)
        with self._lock:
            self._until[pixel_id] = max(self._until.get(pixel_id, 0.0), self._clock() + seconds)
            self._cause[pixel_id] = error
        return seconds

    def cause(self, pixel_id: str) -> MetaError | None:
        """Meta's answer that paused the pixel (its code, for the nacked pushes' log lines)."""
        return self._cause.get(pixel_id)

    def remaining(self, pixel_id: str) -> float:
        """Seconds left of the pixel's pause; 0 when it is not paused."""
        until = self._until.get(pixel_id)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            with self._lock:
                if self._until.get(pixel_id) == until:
                    del self._until[pixel_id]
            return 0.0
        return left
