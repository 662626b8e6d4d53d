"""What every dialect adapter returns."""

from __future__ import annotations

from typing import Any

# (the internal event, or the raw item when it is not an object; the dialect's name; the input
# keys the adapter did not carry over, named as the caller wrote them). A plain tuple: most
# requests are one event, and this is built for each.
Incoming = tuple[Any, str, tuple[str, ...]]
