"""Gathering concurrent requests into one batch per key, in the requests' own threads.

Pub/Sub pushes one message per HTTP request; `capi_deliver` serves many at once (its
concurrency). The first request of a key (a destination and test event code) leads a batch:
it waits `window` seconds, or until the batch is full, then delivers every item gathered and
hands each follower its own result. No background thread: Cloud Run gives CPU to an instance
while it serves requests, and the leader is one of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Group(Generic[Item, Result]):
    items: list[Item] = field(default_factory=list)
    size: int = 0
    full: threading.Event = field(default_factory=threading.Event)  # wakes the leader early
    done: threading.Event = field(default_factory=threading.Event)
    results: Sequence[Result] = ()
    error: BaseException | None = None


class Batcher(Generic[Item, Result]):
    """`deliver(key, items)` returns one result per item, in order; it runs once per batch.

    A batch closes after `window` seconds or at `max_size` (items weigh `size(item)`, e.g.
    their events): an item that would overflow it starts the next batch.
    """

    def __init__(
        self,
        deliver: Callable[[Hashable, list[Item]], Sequence[Result]],
        *,
        window: float,
        max_size: int,
        size: Callable[[Item], int] = lambda item: 1,
    ) -> None:
        self._deliver = deliver
        self._window = window
        self._max = max_size
        self._size = size
        self._open: dict[Hashable, _Group[Item, Result]] = {}
        self._lock = threading.Lock()

    def submit(self, key: Hashable, item: Item) -> Result:
        """Add the item to its key's open batch and return its result once delivered.

        Raises what `deliver` raised for the batch.
        """
        weight = self._size(item)
        with self._lock:
            group = self._open.get(key)
            if group is not None and group.size + weight > self._max:
                self._close(key, group)
                group = None
            leader = group is None
            if group is None:
                group = _Group()
                self._open[key] = group
            position = len(group.items)
            group.items.append(item)
            group.size += weight
            if group.size >= self._max:
                self._close(key, group)
        if not leader:
            group.done.wait()  # the leader always sets it, whatever deliver does
            if group.error is not None:
                raise group.error
            return group.results[position]
        group.full.wait(self._window)
        with self._lock:
            if self._open.get(key) is group:
                del self._open[key]
        try:
            group.results = self._deliver(key, group.items)
        except BaseException as exc:
            group.error = exc
            raise
        finally:
            group.done.set()
        return group.results[position]

    def _close(self, key: Hashable, group: _Group[Item, Result]) -> None:
        """Take a full batch off the open ones and wake its leader (under the lock)."""
        if self._open.get(key) is group:
            del self._open[key]
        group.full.set()
