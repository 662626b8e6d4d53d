"""What every dialect adapter returns: an `Incoming`, or a `Skipped` in place of its event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capi.events import MAX_ID_CHARS

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

    def __post_init__(self) -> None:
        # The id is echoed in the answer: an order id longer than any event_id (MAX_ID_CHARS)
        # is not an id capi would send, and is not repeated back.
        if self.event_id is not None and len(self.event_id) > MAX_ID_CHARS:
            object.__setattr__(self, "event_id", None)
