"""What every dialect adapter returns: an `Incoming`, or a `Skipped` in place of its event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# (the internal event, or the raw item when it is not an object; the dialect's name; the input
# keys the adapter did not carry over, named as the caller wrote them). A plain tuple: most
# requests are one event, and this is built for each.
Incoming = tuple[Any, str, tuple[str, ...]]


@dataclass(frozen=True)
class Skipped:
    """An input its dialect recognised and decided not to send, such as an unpaid order: it is
    answered as skipped with `reason` (the Incoming's first element in place of an event)."""

    reason: str
    event_id: str | None
    event_name: str = "Purchase"
