"""Sending a list of events to Meta so that one bad event never sinks the others.

Meta refuses a whole request (code 100, subcodes 2804xxx) when one event in it is wrong, and
its answer usually does not say which. `send_split` then splits the batch in halves until the
refused event is alone: the others are delivered, that one is reported with Meta's message
and not stored. Every other failure (transient, capi's configuration, an unreadable answer)
keeps its events for replay. The live path and the replay both use this, so a bad dead letter
never holds its neighbours back either.

Bisection costs about 2·log2(n) extra calls per bad event; the calls and the time spent
splitting are bounded (MAX_SPLIT_CALLS, SPLIT_SECONDS). Events still unresolved past a bound,
or once the instance is stopping, are kept for replay, which splits further.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from capi import shutdown
from capi.errors import MetaError, SecretUnavailable, TokenUnreadable
from capi.log import log
from capi.payload import GraphResult, request_body

MAX_SPLIT_CALLS = 32  # enough to isolate one bad event in 1000 (about 20 calls) with room
SPLIT_SECONDS = 10.0


class Unresolved(MetaError):
    """Events kept without Meta saying anything about any of them alone: a refused batch
    whose splitting stopped at a bound, or a part not sent (out of time, SIGTERM). Replay
    counts no attempt against them and carries on splitting where this stopped."""

    @classmethod
    def of(cls, error: MetaError) -> Unresolved:
        return cls(
            error.message,
            kind=error.kind,
            http_status=error.http_status,
            meta_code=error.meta_code,
            meta_subcode=error.meta_subcode,
            fbtrace_id=error.fbtrace_id,
            fix=error.fix,
        )


class Sender(Protocol):
    def send(self, body: dict[str, Any], *, deadline: float | None = None) -> GraphResult: ...


@dataclass
class Sent:
    """What became of each event, by its position in the list given to `send_split`."""

    delivered: list[int] = field(default_factory=list)
    refused: list[tuple[int, MetaError]] = field(default_factory=list)  # reported, not stored
    kept: list[tuple[list[int], MetaError]] = field(default_factory=list)  # to store for replay
    results: list[GraphResult] = field(default_factory=list)
    calls: int = 0

    @property
    def events_received(self) -> int | None:
        counts = [r.events_received for r in self.results if r.events_received is not None]
        return sum(counts) if counts else None

    @property
    def fbtrace_id(self) -> str | None:
        return next((r.fbtrace_id for r in self.results if r.fbtrace_id), None)

    @property
    def messages(self) -> list[Any]:
        return [m for r in self.results for m in r.messages]

    @property
    def first_error(self) -> MetaError | None:
        """The failure to report for the whole request: a kept one first, else a refusal."""
        if self.kept:
            return self.kept[0][1]
        return self.refused[0][1] if self.refused else None


def send_split(
    sender: Sender,
    events: list[dict[str, Any]],
    test_event_code: str | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    stopping: Callable[[], bool] = shutdown.stopping,
) -> Sent:
    sent = Sent()
    deadline = clock() + SPLIT_SECONDS
    pending: list[list[int]] = [list(range(len(events)))]
    while pending:
        group = pending.pop(0)
        if stopping():  # SIGTERM: no new call; what is left is kept and the caller answered
            sent.kept.append((group, Unresolved("the instance is stopping; kept for replay", kind="transient")))
            continue
        if sent.calls and clock() > deadline:  # out of time: the parts not sent yet wait for replay
            sent.kept.append((group, Unresolved("no time left to split the batch; kept for replay", kind="transient")))
            continue
        sent.calls += 1
        # The first call has the whole retry budget; the parts of a split share what is left of
        # SPLIT_SECONDS, so a split request ends about when an unsplit one would.
        body = request_body([events[i] for i in group], test_event_code)
        try:
            try:
                sent.results.append(sender.send(body) if sent.calls == 1 else sender.send(body, deadline=deadline))
            except SecretUnavailable as unreadable:
                raise TokenUnreadable(unreadable) from None  # nothing sent: kept like a refused token
        except MetaError as error:
            if error.kept:
                # Meta unavailable or throttling, capi's configuration refused, an unreadable
                # answer: the parts not sent yet would meet the same, so they are kept with this
                # one instead of spending calls (and a throttled pixel's quota) on them.
                sent.kept.append((group, error))
                sent.kept.extend((rest, error) for rest in pending)
                pending.clear()
            elif len(group) == 1:
                sent.refused.append((group[0], error))
            elif sent.calls + len(pending) + 2 > MAX_SPLIT_CALLS or clock() > deadline or stopping():
                sent.kept.append((group, Unresolved.of(error)))  # replay splits further
            else:
                half = len(group) // 2
                pending[:0] = [group[:half], group[half:]]
            continue
        sent.delivered.extend(group)
    return sent


def log_config_refusal(error: MetaError, stored: int, destination: str) -> None:
    """The one ERROR line that says what to fix when Meta refuses capi's configuration (or
    its token cannot be read)."""
    if error.kind == "config":
        log(
            logging.ERROR,
            "the token could not be read; events stored for replay"
            if isinstance(error, TokenUnreadable)
            else "Meta refused capi's configuration",
            destination=destination,
            error=error.code,
            meta_code=error.meta_code,
            meta_subcode=error.meta_subcode,
            fix=error.fix,
            stored=stored,
            detail=error.message[:200],
        )
