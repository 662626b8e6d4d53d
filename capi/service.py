"""The forwarding pipeline: parsed request -> validated, enriched, hashed events -> Meta.

No HTTP here (see `capi.http`, which turns the `Outcome` into a status) and no client
construction (see `capi.app`): the stores and the Graph client are passed in, so tests
substitute real local peers or fakes.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from capi import browsers, shutdown
from capi.config import Config
from capi.consent import ad_user_data_granted
from capi.delivery import Sender, Sent, log_config_refusal, send_split
from capi.delivery.deadletter import MAX_EVENT_BYTES
from capi.delivery.publish import Queued
from capi.destinations import Destination, Inherit, route
from capi.errors import CapiError, MetaError, QueueUnavailable, StoreUnavailable, TokenUnreadable, UnavailableError
from capi.events import Draft, Finished, Rejection, Skip, finish, prepare
from capi.inputs import Envelope, Skipped
from capi.inputs import read as read_envelope
from capi.log import log
from capi.normalize import HASHED_KEYS
from capi.orders import Key, keys_of, order_key, skip_reason, verdict
from capi.payload import request_body


class EnrichmentStore(Protocol):
    def get_many(
        self, user_ids: list[str], browser_ids: list[str]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, list[str]]]]:
        """(profiles by user id, remembered digests by browser id: Meta key -> digests), in one
        batched read within FIRESTORE_TIMEOUT_SECONDS; missing ids are simply absent."""
        ...


class BrowserStore(Protocol):
    def remember(self, updates: Mapping[str, dict[str, list[str]]], timeout: float) -> None:
        """Write the merged digests of browsers that taught something new."""
        ...


class DeadLetterStore(Protocol):
    def store(self, events: list[dict[str, Any]], error: MetaError, test_event_code: str | None) -> list[int]:
        """Keep events for replay; returns the positions of those too large to keep (each
        reported alone, the others stored). Raises StoreUnavailable."""
        ...


class Publisher(Protocol):
    def publish(self, messages: Sequence[Queued]) -> list[str]:
        """Publish all or none; raises QueueUnavailable when Pub/Sub did not take them."""
        ...


class IdempotencyStore(Protocol):
    def claim(self, keys: list[Key]) -> tuple[set[Key], set[Key]]:
        """Claim pairs as pending; returns (done, busy): pairs delivered or stored already, and
        pairs another request is delivering now. Raises StoreUnavailable."""
        ...

    def delivered(self, keys: list[Key]) -> None:
        """Remember claimed pairs as delivered for the guard's window (48 h)."""
        ...

    def stored(self, keys: list[Key]) -> None:
        """Remember claimed pairs as stored for replay (replay delivers them)."""
        ...

    def release(self, keys: list[Key]) -> None:
        """Forget claims whose delivery failed, so a retry is not skipped."""
        ...


PROFILE_PLACEHOLDER = "(from the Firestore profile: not shown)"
BROWSER_PLACEHOLDER = "(remembered for this browser: not shown)"


def _keys(f: Finished) -> list[Key]:
    """What the idempotency guard claims for an event: its pair, and its order (capi.orders)."""
    return keys_of(f.event)


NO_NAME = "(no name)"  # by_event's key for an event that came without a usable name
SHOP_SOURCES = frozenset({"shopify", "woocommerce"})  # dialects the log line names as its `source`
MAX_LOGGED_REJECTIONS = 100
MAX_EVENT_NAME_IN_LOG = 100


@dataclass(frozen=True)
class Failure:
    """An event Meta refused on its own (found by splitting): reported, never stored."""

    index: int
    event_id: str
    message: str
    meta_code: int | None
    meta_subcode: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "event_id": self.event_id,
            "message": self.message,
            "meta_code": self.meta_code,
            "meta_subcode": self.meta_subcode,
        }


# What became of a destination's events, the mildest first (`Delivery.result`).
RESULTS = ("delivered", "stored", "refused", "unsent")
TAKEN = frozenset({"forwarded", "stored"})  # an event's states that put it in `event_ids`


@dataclass
class Delivery:
    """What became of one destination's events: the domain outcome `capi.http` turns into a status.

    `states` maps the input index of each event routed here to forwarded, stored, failed
    (refused by Meta), unsent (neither delivered nor stored: the caller must retry), or
    duplicate / in flight (the idempotency guard had it for this destination); `in_flight`
    counts events another request holds a claim on (the caller must retry those too).
    """

    name: str = "default"
    pixel_id: str | None = None
    states: dict[int, str] = field(default_factory=dict)
    failed: list[Failure] = field(default_factory=list)
    in_flight: int = 0
    events_received: int | None = None
    fbtrace_id: str | None = None
    error: MetaError | CapiError | None = None
    message: str | None = None
    meta_messages: list[str] = field(default_factory=list)  # Meta's own `messages`
    held: int = 0  # events the idempotency guard held back (duplicate or in flight)
    too_large: int = 0  # kept events too large for a dead letter (unsent, the others stored)
    dry_run: bool = False

    def count(self, state: str) -> int:
        return list(self.states.values()).count(state)

    @property
    def forwarded(self) -> int:
        return self.count("forwarded")

    @property
    def stored(self) -> int:
        return self.count("stored")

    @property
    def unsent(self) -> int:
        return self.count("unsent")

    @property
    def error_code(self) -> str | None:
        return self.error.code if self.error is not None else None

    @property
    def result(self) -> str:
        """The gravest thing that happened here (one of RESULTS): unsent when an event is
        neither delivered nor stored (or in flight elsewhere), refused when Meta refused
        events and nothing was delivered or kept, stored when some were kept for replay."""
        if self.unsent or self.in_flight:
            return "unsent"
        if self.failed and not self.forwarded and not self.stored:
            return "refused"
        return "stored" if self.stored else "delivered"

    def summary(self) -> dict[str, Any]:
        """This destination's entry in the answer's `destinations`."""
        entry: dict[str, Any] = {
            "name": self.name,
            "pixel_id": self.pixel_id,
            "forwarded": self.forwarded,
            "stored": self.stored,
            "failed": len(self.failed),
            "events_received": self.events_received,
            "fbtrace_id": self.fbtrace_id,
            "error": self.error_code if self.error is not None else ("in_flight" if self.in_flight else None),
        }
        if self.message:
            entry["message"] = self.message
        return entry


# The events' notes in the answer's `messages` (docs/delivery.md "Bounds"): each event has at most
# capi.events.MAX_NOTES_PER_EVENT + 2; past this many for the request, one entry counts the
# rest. The request's own notes and Meta's messages are always shown. With the per-note bounds
# this keeps any answer to a few MiB (issue 19 finding 4).
MAX_EVENT_NOTES = 1000


@dataclass
class _Batch:
    """Everything known about one request's events, in input order."""

    received: int
    finished: list[Finished] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    dialects: list[str] = field(default_factory=list)  # the input dialect of each event, by index
    # Consent decisions by signal: {"x-ga-gcd": {"granted": 2, "denied": 1}, "none": {"granted": 1}}
    consent: dict[str, dict[str, int]] = field(default_factory=dict)
    targets: dict[int, tuple[str, ...]] = field(default_factory=dict)  # destination names by index
    # Enhanced event coverage (capi.browsers): the keys a browser's remembered digests added,
    # by index, and the browsers whose events taught something new (browser id -> merged keys).
    from_browser: dict[int, tuple[str, ...]] = field(default_factory=dict)
    browsers_learned: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    event_notes: int = 0  # the events' notes so far, shown or not (add_notes)
    omitted: dict[str, Any] | None = None  # the message counting the events' notes not shown

    @property
    def dialect(self) -> str:
        """The request's dialect for /validate: the one all its events were read as, else "mixed"."""
        found = set(self.dialects)
        return found.pop() if len(found) == 1 else "mixed"

    def add_notes(self, notes: list[dict[str, Any]]) -> None:
        """An event's notes, while the request has room for them (MAX_EVENT_NOTES); the rest counted."""
        room = MAX_EVENT_NOTES - self.event_notes
        self.event_notes += len(notes)
        if room >= len(notes):
            self.messages.extend(notes)
            return
        if room > 0:
            self.messages.extend(notes[:room])
        if self.omitted is None:
            self.omitted = {"message": "more notes on events, not shown", "omitted": 0}
            self.messages.append(self.omitted)
        self.omitted["omitted"] += len(notes) - max(room, 0)

    def count_consent(self, signal: str | None, decision: str) -> None:
        counts = self.consent.setdefault(signal or "none", {})
        counts[decision] = counts.get(decision, 0) + 1

    def response(self, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "received": self.received,
            "forwarded": 0,
            "stored": 0,
            "failed": [],
            "skipped": [s.to_json() for s in sorted(self.skipped, key=lambda s: s.index)],
            "rejected": [r.to_json() for r in sorted(self.rejected, key=lambda r: r.index)],
            "event_ids": [f.event["event_id"] for f in self.finished],
            "events_received": None,
            "fbtrace_id": None,
            "messages": self.messages,
        }
        body.update(extra)
        return body


@dataclass
class Outcome:
    """What a request came to; `capi.http.outcome_status` chooses its HTTP status.

    With several destinations the counts are sums over them, and the request's `error`,
    `message` and `fbtrace_id` are those of the destination that fared worst (the first
    one configured among equals); `named` adds the per-destination `destinations` to the
    answer and the log (not for META_PIXEL_ID alone, whose answer is unchanged).
    """

    batch: _Batch
    deliveries: list[Delivery] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # /validate's payload and match_keys
    named: bool = False

    # Read once, when the deliveries are done (every answer and log field reads them).
    lead: Delivery = field(init=False, repr=False)  # the gravest result, an error first
    _states: dict[int, list[str]] = field(init=False, repr=False)  # each event's states, by index
    _tally: dict[str, int] = field(init=False, repr=False)  # (event, destination) pairs per state
    _events_received: int | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        deliveries = self.deliveries
        if len(deliveries) <= 1:
            self.lead = deliveries[0] if deliveries else Delivery()
        else:
            self.lead = max(deliveries, key=lambda d: (RESULTS.index(d.result), d.error is not None))
        states: dict[int, list[str]] = {}
        tally = {"forwarded": 0, "stored": 0, "unsent": 0}
        received = None
        for d in deliveries:
            for index, state in d.states.items():
                states.setdefault(index, []).append(state)
                tally[state] = tally.get(state, 0) + 1
            if d.events_received is not None:
                received = (received or 0) + d.events_received
        self._states, self._tally, self._events_received = states, tally, received

    def _fbtrace_id(self) -> str | None:
        lead = self.lead
        if lead.error is not None:
            return lead.fbtrace_id
        return next((d.fbtrace_id for d in self.deliveries if d.fbtrace_id), None)

    def states_of(self, f: Finished) -> list[str]:
        return self._states.get(f.index, [])

    @property
    def body(self) -> dict[str, Any]:
        if not self.deliveries:
            return self.batch.response(**self.extra)
        deliveries = self.deliveries
        lead = self.lead
        tally = self._tally
        body = self.batch.response(
            forwarded=tally["forwarded"],
            stored=tally["stored"],
            failed=[
                {**f.to_json(), "destination": d.name} if self.named else f.to_json()
                for d in deliveries
                for f in d.failed
            ],
            event_ids=[
                f.event["event_id"] for f in self.batch.finished if not TAKEN.isdisjoint(self._states.get(f.index, ()))
            ],
            events_received=self._events_received,
            fbtrace_id=self._fbtrace_id(),
        )
        if lead.error is not None:
            body.update(lead.error.to_body())
            body["fbtrace_id"] = lead.fbtrace_id
            if isinstance(lead.error, MetaError) and lead.error.fix:
                body["fix"] = lead.error.fix
        elif lead.in_flight:
            body["error"] = "in_flight"
        if lead.message:
            body["message"] = f"destination {lead.name}: {lead.message}" if self.named else lead.message
        if any(d.dry_run for d in deliveries):
            body["dry_run"] = True
        if self.named:
            body["destinations"] = [d.summary() for d in deliveries]
        body.update(self.extra)
        return body

    def log_summary(self) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
        """The fields of the "events processed" line (docs/operations.md "Log lines"; names are fixed),
        and per event name how many of its forwarded events carried each user_data key (the
        "events by name" lines, capi.report). With several destinations, each count is the sum
        over them."""
        batch = self.batch
        deliveries = self.deliveries
        lead = self.lead
        tally = self._tally
        by_event: dict[str, dict[str, int]] = {}

        def count(name: str, state: str) -> None:
            name = name[:MAX_EVENT_NAME_IN_LOG]
            entry = by_event.setdefault(name, {"forwarded": 0, "rejected": 0, "skipped": 0, "stored": 0, "failed": 0})
            if state in entry:
                entry[state] += 1

        match_keys: dict[str, int] = {}
        keys_by_name: dict[str, dict[str, int]] = {}
        from_profile: dict[str, int] = {}
        from_browser: dict[str, int] = {}
        for f in batch.finished:
            states = self.states_of(f)
            if not states:
                count(f.event["event_name"], "")  # its name is still listed
            for state in states:
                count(f.event["event_name"], state)
                if state == "forwarded":
                    of_name = keys_by_name.setdefault(f.event["event_name"][:MAX_EVENT_NAME_IN_LOG], {})
                    for key in f.event["user_data"]:
                        match_keys[key] = match_keys.get(key, 0) + 1
                        of_name[key] = of_name.get(key, 0) + 1
                    for key in f.from_profile:
                        from_profile[key] = from_profile.get(key, 0) + 1
                    for key in batch.from_browser.get(f.index, ()):
                        from_browser[key] = from_browser.get(key, 0) + 1
        skip_reasons: dict[str, int] = {}
        for skip in batch.skipped:
            count(skip.event_name or NO_NAME, "skipped")
            skip_reasons[skip.reason] = skip_reasons.get(skip.reason, 0) + 1
        for rejection in batch.rejected:
            count(rejection.event_name or NO_NAME, "rejected")
        error = lead.error
        rejections = [
            {"index": r.index, "field": r.field, "reason": r.message}
            for r in sorted(batch.rejected, key=lambda r: r.index)[:MAX_LOGGED_REJECTIONS]
        ]
        fields = {
            "received": batch.received,
            "forwarded": tally["forwarded"],
            "stored": tally["stored"],
            "skipped": len(batch.skipped),
            "rejected": len(batch.rejected),
            "failed": sum(len(d.failed) for d in deliveries),
            "in_flight": sum(d.in_flight for d in deliveries) or None,
            "unsent": tally["unsent"] or None,
            "by_event": by_event,
            "match_keys": match_keys,
            "from_profile": from_profile,
            **({"from_browser": from_browser} if from_browser else {}),
            "rejections": rejections,
            "error": lead.error_code,
            "meta_code": error.meta_code if isinstance(error, MetaError) else None,
            "meta_subcode": error.meta_subcode if isinstance(error, MetaError) else None,
            "events_received": self._events_received,
            "fbtrace_id": self._fbtrace_id(),
            "consent": batch.consent or None,
            "skip_reasons": skip_reasons or None,  # {"unpaid": 1, "duplicate_order": 2}: reasons, never values
            "source": batch.dialect if batch.dialect in SHOP_SOURCES else None,
        }
        if self.named:
            fields["destinations"] = {
                d.name: {"forwarded": d.forwarded, "stored": d.stored, "failed": len(d.failed)} for d in deliveries
            }
        return fields, keys_by_name


def parse_envelope(payload: Any) -> tuple[Envelope, str | None]:
    """The request's events in capi's internal form (every dialect: capi.inputs) and its
    test_event_code; a body no dialect reads is a 400 for the whole request."""
    envelope = payload if isinstance(payload, Envelope) else read_envelope(payload)
    return envelope, envelope.test_event_code


@dataclass(frozen=True)
class Target:
    """One destination and the peers that deliver to it: its Graph client, its dead letters
    and its idempotency guard (each keyed by the destination)."""

    destination: Destination
    sender: Sender | None
    deadletter: DeadLetterStore | None = None
    idempotency: IdempotencyStore | None = None


class EventService:
    """`targets` are the destinations, in configuration order. Without them, `sender`,
    `deadletter` and `idempotency` serve the configuration's one destination (tests,
    /validate and dry runs pass `sender=None`)."""

    def __init__(
        self,
        config: Config,
        *,
        sender: Sender | None = None,
        lookup: EnrichmentStore | None = None,
        browsers: BrowserStore | None = None,
        deadletter: DeadLetterStore | None = None,
        idempotency: IdempotencyStore | None = None,
        targets: Sequence[Target] | None = None,
        clock: Callable[[], float] = time.time,
        mint: Callable[[], str] = lambda: str(uuid.uuid4()),
        stopping: Callable[[], bool] = shutdown.stopping,
        queue: Publisher | None = None,
    ) -> None:
        if targets is None:
            if len(config.destinations) > 1 and (sender or deadletter or idempotency):
                raise ValueError("several destinations: give each its peers with `targets`")
            targets = [Target(d, sender, deadletter, idempotency) for d in config.destinations]
        self.config = config
        self.targets = tuple(targets)
        self.destinations = tuple(t.destination for t in self.targets)
        self.lookup = lookup
        self.browsers = browsers if config.browser_collection else None
        self.clock = clock
        self.mint = mint
        self.stopping = stopping
        self.queue = queue  # DELIVERY=queue: /events publishes, capi_deliver delivers
        # prepare() skips what no destination forwards; each destination filters on its own.
        self._prepare_config = _forwarding_any(config, self.destinations)
        self._named = not (len(self.destinations) == 1 and self.destinations[0].implicit)
        self._several = len(self.destinations) > 1
        # One destination taking every host (META_PIXEL_ID alone): no routing per event.
        only = self.destinations[0] if len(self.destinations) == 1 else None
        self._only = (only.name,) if only is not None and not only.hosts else None

    # -- building ---------------------------------------------------------------------

    def _build(self, envelope: Envelope, allowed: frozenset[str] | None = None) -> _Batch:
        batch = _Batch(received=len(envelope.events), dialects=envelope.dialects)
        batch.messages.extend(envelope.messages)
        now = self.clock()
        # Every draft is finished once all are prepared: with enrichment they wait for the one
        # batched profile read; without, two passes measured faster than finishing each event
        # right after preparing it (29 against 37 ms per 1000 events, docs/performance.md).
        enrich = self.lookup is not None and bool(self.config.profile_collection)
        drafts: list[Draft] = []
        browser_of: dict[int, str] = {}  # index -> fbp, for events whose consent lets capi remember
        for index, (raw, dialect, ignored) in enumerate(envelope.events):
            if type(raw) is Skipped:  # a shop order that is not a paid purchase (capi.inputs)
                batch.skipped.append(Skip(index, raw.event_id, raw.reason, event_name=raw.event_name))
                continue
            result = prepare(raw, index, self._prepare_config, now, self.mint, ignored, envelope.consent)
            if isinstance(result, Draft):
                result.dialect = dialect
                batch.count_consent(result.consent_signal, "granted")
                result = self._route(batch, raw, result, allowed)
            elif (
                isinstance(result, Rejection)
                and self._several
                and isinstance(raw, dict)
                and raw.get("destinations") is not None
            ):
                result = self._route_problem(raw, result)
            if isinstance(result, Draft):
                drafts.append(result)
                fbp = result.plain.get("fbp")
                if (
                    self.browsers is not None
                    and fbp
                    and ad_user_data_granted(raw, self.config.consent_required, envelope.consent)
                ):
                    browser_of[result.index] = fbp
            elif isinstance(result, Skip):
                if result.reason == "consent":
                    batch.count_consent(result.consent_signal, "denied")
                batch.skipped.append(result)
            else:
                batch.rejected.append(result)
        # The profiles and the browsers' remembered keys: one batched read, one deadline.
        user_ids = sorted({d.user_id for d in drafts if d.user_id}) if enrich else []
        profiles, remembered = self._lookup(user_ids, sorted(set(browser_of.values())), batch)
        # (event_name, event_id), or an order's key -> the destinations it goes to already: each
        # goes once per request and destination (two shops' orders may share a transaction_id).
        sent: dict[Key, set[str]] = {}
        for draft in drafts:
            self._finish(batch, draft, profiles.get(draft.user_id) if draft.user_id else None, sent)
        if remembered is not None:
            self._use_browsers(batch, browser_of, remembered)
        return batch

    def _route(
        self, batch: _Batch, raw: dict[str, Any], draft: Draft, allowed: frozenset[str] | None = None
    ) -> Draft | Skip | Rejection:
        """Record the destinations of a valid event; or skip it (no destination takes it),
        or reject it (its own `destinations` names one that does not exist, or it would go
        only where the request's ingest key may not send: INGEST_KEYS)."""
        # An event's `destinations` is read only when several pixels are configured; with one,
        # prepare() names it ignored (a GA4 parameter of that name is not a routing request).
        chosen = raw.get("destinations") if self._several else None
        if self._only is not None and chosen is None and allowed is None:
            batch.targets[draft.index] = self._only  # prepare() applied its FORWARD_EVENTS already
            return draft
        meta_name = draft.event["event_name"]
        incoming = raw.get("event_name", "").strip()
        found = route(self.destinations, chosen, draft.event.get("event_source_url"), incoming, meta_name)
        if found.problem:
            return Rejection(draft.index, draft.given_id, "destinations", found.problem, event_name=meta_name)
        if found.skip:
            return Skip(draft.index, draft.given_id, found.skip, event_name=meta_name)
        names = found.names if allowed is None else tuple(n for n in found.names if n in allowed)
        # An event that names a destination itself names only those its key may send to.
        if not names or (names != found.names and chosen is not None):
            problem = f"the ingest key may send only to {', '.join(sorted(allowed or ()))} (INGEST_KEYS)"
            return Rejection(draft.index, draft.given_id, "destinations", problem, event_name=meta_name)
        batch.targets[draft.index] = names
        return draft

    def _route_problem(self, raw: dict[str, Any], rejection: Rejection) -> Rejection:
        """A rejected event whose `destinations` is wrong too: that problem is listed as well."""
        found = route(self.destinations, raw["destinations"], None, "", "")
        if not found.problem:
            return rejection
        problems = rejection.problems or ((rejection.field, rejection.message),)
        return replace(rejection, problems=(*problems, ("destinations", found.problem)))

    def _finish(
        self, batch: _Batch, draft: Draft, profile: Mapping[str, Any] | None, sent: dict[Key, set[str]]
    ) -> None:
        done = finish(draft, profile, self.config.default_country)
        if draft.notes:
            batch.add_notes(draft.notes)
        if not isinstance(done, Finished):
            batch.rejected.append(done)
            return
        # Checked once finished: a first copy that was rejected must not make a valid repeat a duplicate.
        # A repeat is judged per destination: it is a duplicate only where the pair goes already.
        key = (done.event["event_name"], done.event["event_id"])
        names = batch.targets[draft.index]  # set by _route for every draft
        # The common event is the pair's first copy: taken as routed, with no generator to run
        # (pipeline under callgrind on 3.12: 335.9 M -> 327.4 M instructions per 1000 events).
        already = sent.get(key)
        fresh = names if already is None else tuple(name for name in names if name not in already)
        if not fresh:
            batch.skipped.append(Skip(draft.index, key[1], "duplicate", event_name=key[0]))
            return
        order = order_key(done.event)
        if order is not None:
            # The same order under another event_id: one Purchase per order and destination.
            taken = sent.get(order)
            fresh = fresh if taken is None else tuple(name for name in fresh if name not in taken)
            if not fresh:
                batch.skipped.append(Skip(draft.index, key[1], "duplicate_order", event_name=key[0]))
                return
            sent.setdefault(order, set()).update(fresh)
        batch.targets[draft.index] = fresh
        sent.setdefault(key, set()).update(fresh)
        batch.finished.append(done)

    def _lookup(
        self, user_ids: list[str], browser_ids: list[str], batch: _Batch
    ) -> tuple[Mapping[str, dict[str, Any]], dict[str, dict[str, list[str]]] | None]:
        """(profiles, remembered), read in one call. `remembered` is None when no browser was
        asked for or nothing could be read: then nothing is added, and nothing written either
        (a write without what is known would replace it)."""
        if self.lookup is None or not (user_ids or browser_ids):
            return {}, None
        try:
            profiles, remembered = self.lookup.get_many(user_ids, browser_ids)
            return profiles, (remembered if browser_ids else None)
        except Exception as exc:  # noqa: BLE001 - enrichment must never block forwarding
            # One line per kind asked for: each names what its events went without.
            for kind, count, message in (
                ("users", len(user_ids), "profile lookup failed; events sent without enrichment"),
                ("browsers", len(browser_ids), "browser lookup failed; events sent without remembered keys"),
            ):
                if count:
                    log(logging.WARNING, message, error=type(exc).__name__, **{kind: count})
                    batch.messages.append({"message": message})
            return {}, None

    @staticmethod
    def _use_browsers(
        batch: _Batch, browser_of: Mapping[int, str], remembered: Mapping[str, dict[str, list[str]]]
    ) -> None:
        """Add a browser's remembered digests to its events that lack those keys (the event's own
        and its profile's values win), and note what each event teaches (written by `forward`)."""
        learning: dict[str, dict[str, list[str]]] = {}  # browser id -> keys known so far in this request
        for f in batch.finished:
            browser = browser_of.get(f.index)
            if browser is None:
                continue
            user_data = f.event["user_data"]
            own = [key for key in HASHED_KEYS if key in user_data and key not in f.from_profile]
            known = learning.get(browser, remembered.get(browser, {}))
            added = tuple(key for key in HASHED_KEYS if key in known and key not in user_data)
            for key in added:
                user_data[key] = list(known[key])
            if added:
                batch.from_browser[f.index] = added
            update = browsers.merged(known, browsers.learned(user_data, own))
            if update is not None:
                learning[browser] = update
                batch.browsers_learned[browser] = update
            else:
                learning.setdefault(browser, known)

    def _remember(self, batch: _Batch) -> None:
        """Write what this request's events taught (only browsers with something new); never
        in a dry run, which leaves no trace."""
        if self.browsers is None or not batch.browsers_learned or self.config.dry_run or self.stopping():
            return
        try:
            self.browsers.remember(batch.browsers_learned, self.config.firestore_timeout_seconds)
        except Exception as exc:  # noqa: BLE001 - delivered already; the next event teaches it again
            log(
                logging.WARNING,
                "could not remember browser keys",
                error=type(exc).__name__,
                browsers=len(batch.browsers_learned),
            )

    # -- entry points -----------------------------------------------------------------

    def validate(self, payload: Any, allowed: frozenset[str] | None = None) -> Outcome:
        """Run the whole pipeline and return the exact body that would be sent; send nothing.

        Values a Firestore profile filled are replaced by a placeholder: no endpoint returns
        a value that came from a profile (its digest would give the value away to anyone
        who can enumerate, e.g., phone numbers).
        """
        events, code = parse_envelope(payload)
        batch = self._build(events, allowed)
        shown = []
        hidden = False
        hidden_browser = False
        for f in batch.finished:
            from_browser = batch.from_browser.get(f.index, ())
            if f.from_profile or from_browser:
                hidden = hidden or bool(f.from_profile)
                hidden_browser = hidden_browser or bool(from_browser)
                user_data = dict(f.event["user_data"])
                for key in f.from_profile:
                    user_data[key] = [PROFILE_PLACEHOLDER]
                for key in from_browser:
                    user_data[key] = [BROWSER_PLACEHOLDER]
                shown.append({**f.event, "user_data": user_data})
            else:
                shown.append(f.event)
        if hidden:
            batch.messages.append(
                {
                    "message": "values filled from Firestore profiles are not shown (placeholder instead);"
                    " match_keys.from_profile names their keys"
                }
            )
        if hidden_browser:
            batch.messages.append(
                {
                    "message": "values remembered for the browser are not shown (placeholder instead);"
                    " match_keys.from_browser names their keys"
                }
            )
        body = request_body(shown, code or self.config.test_event_code)
        match_keys = [
            {
                "index": f.index,
                "event_id": f.event["event_id"],
                "from_event": f.from_event,
                "from_profile": f.from_profile,
                **({"from_browser": list(batch.from_browser[f.index])} if f.index in batch.from_browser else {}),
                "dialect": f.dialect,
                **({"destinations": list(batch.targets[f.index])} if self._named else {}),
            }
            for f in batch.finished
        ]
        return Outcome(batch, extra={"payload": body, "match_keys": match_keys, "dialect": batch.dialect})

    def forward(self, payload: Any, allowed: frozenset[str] | None = None, *, set_cookies: bool = False) -> Outcome:
        """Build, deliver, remember. `allowed`: the destinations the request's ingest key may
        send to (None: every one). `set_cookies` (the sGTM tag's X-Capi-Set-Cookies) adds
        `set_cookies` to the answer: for each event delivered or stored, the fbp / fbc Meta
        gets, which the tag sets as the browser's _fbp / _fbc. An event capi did not take
        (consent denied, rejected, duplicate) has none, so the tag sets nothing for it."""
        events, code = parse_envelope(payload)
        batch = self._build(events, allowed)
        if len(self.targets) == 1:  # every event kept is routed to it
            jobs = [(self.targets[0], batch.finished)]
        else:
            jobs = [
                (t, [f for f in batch.finished if t.destination.name in batch.targets[f.index]]) for t in self.targets
            ]
        if self.queue is not None:
            queued = self._publish(batch, jobs, code)
            if queued is not None:  # taken: Pub/Sub keeps them until capi_deliver delivers them
                self._remember(batch)
                if set_cookies:
                    queued.extra["set_cookies"] = _cookie_entries([f for _, events in jobs for f in events])
                return queued
        deliveries = self._deliver_all(jobs, code)
        outcome = Outcome(batch, deliveries, named=self._named)
        self._settle(outcome)
        self._remember(batch)
        if set_cookies:
            outcome.extra["set_cookies"] = _cookies_to_set(outcome)
        if self.queue is not None:
            outcome.extra["queued"] = 0
            outcome.extra["delivery"] = "direct"
        return outcome

    def code_for(self, destination: Destination, request_code: str | None) -> str | None:
        """The test_event_code a destination's events go with: the request's, else the
        destination's, else META_TEST_EVENT_CODE."""
        return request_code or destination.test_event_code or self.config.test_event_code

    def _publish(self, batch: _Batch, jobs: list[tuple[Target, list[Finished]]], code: str | None) -> Outcome | None:
        """DELIVERY=queue: one message per destination with events, in one publish call; the
        answer says `queued` (events, summed over destinations). None when Pub/Sub did not
        take them: the caller delivers them directly (and says so)."""
        messages = [
            Queued(
                destination=t.destination.name,
                events=[f.event for f in events],
                test_event_code=self.code_for(t.destination, code),
                from_profile=[f.from_profile for f in events],
            )
            for t, events in jobs
            if events
        ]
        if messages:
            try:
                self.queue.publish(messages)  # type: ignore[union-attr]
            except QueueUnavailable as exc:
                log(logging.ERROR, "events not queued; delivered directly", error=exc.code, detail=exc.message)
                batch.messages.append(
                    {"message": f"{exc.message}: the events were not queued and went to Meta directly"}
                )
                return None
        return Outcome(batch, extra={"queued": sum(len(m.events) for m in messages), "delivery": "queue"})

    def outcome_of(self, finished: list[Finished], delivery: Delivery) -> Outcome:
        """The outcome of a queued batch, for the direct path's log lines (capi_deliver)."""
        return Outcome(_Batch(received=len(finished), finished=finished), [delivery], named=self._named)

    def deliver_queued(self, target: Target, events: list[Finished], code: str | None) -> Delivery:
        """capi_deliver: a destination's events taken from the queue, delivered as the direct
        path delivers them (the same idempotency claim, bisection and bookkeeping), except
        that what Meta did not take is released and left `unsent` for Pub/Sub to redeliver,
        never stored: the subscription's retry policy and dead-letter topic keep it."""
        destination = target.destination
        delivery = Delivery(name=destination.name, pixel_id=destination.pixel_id)
        try:
            sending = self._send(target, events, delivery, code)
        except UnavailableError as exc:  # nothing sent (claims released): Pub/Sub redelivers
            for f in events:
                delivery.states.setdefault(f.index, "unsent")  # the held keep their state
            delivery.error = exc
            return delivery
        if sending is None:
            return delivery
        events, sent = sending
        self._mark_sent(events, delivery, sent)
        for positions, _ in sent.kept:
            delivery.states.update((events[p].index, "unsent") for p in positions)
        error = sent.first_error
        if error is not None:
            delivery.error = error
            delivery.fbtrace_id = delivery.fbtrace_id or error.fbtrace_id
            if error.kind == "config":
                log_config_refusal(error, 0, destination.name)
        released = [key for p, _ in sent.refused for key in _keys(events[p])]
        released += [key for ps, _ in sent.kept for p in ps for key in _keys(events[p])]
        delivered = [key for p in sent.delivered for key in _keys(events[p])]
        self._bookkeep(target.idempotency, delivered, [], released)
        return delivery

    def _deliver_all(self, jobs: list[tuple[Target, list[Finished]]], code: str | None) -> list[Delivery]:
        """Each destination's delivery, in parallel: one Graph call (and its retries) per
        destination, so one slow or failing destination never delays another past its own
        budget. The common case, one destination with events, runs inline: no thread."""
        if len(jobs) == 1:
            return [self._deliver(*jobs[0], code)]
        busy = [i for i, (_, events) in enumerate(jobs) if events]
        deliveries = [Delivery(name=t.destination.name, pixel_id=t.destination.pixel_id) for t, _ in jobs]
        if len(busy) <= 1:
            for i in busy:
                deliveries[i] = self._deliver(*jobs[i], code)
            return deliveries
        with ThreadPoolExecutor(max_workers=len(busy) - 1, thread_name_prefix="capi-destination") as pool:
            # Each thread runs in a copy of this request's context (its trace id for the logs).
            futures = {i: pool.submit(contextvars.copy_context().run, self._deliver, *jobs[i], code) for i in busy[1:]}
            deliveries[busy[0]] = self._deliver(*jobs[busy[0]], code)
            for i, future in futures.items():
                deliveries[i] = future.result()
        return deliveries

    def _settle(self, outcome: Outcome) -> None:
        """What the destinations' answers mean for the request as a whole: an event every
        destination's guard had already is skipped; Meta's messages and the dry-run note."""
        batch = outcome.batch
        if any(d.held for d in outcome.deliveries):
            self._skip_held(outcome)
        dry = 0
        for d in outcome.deliveries:
            for message in d.meta_messages:
                entry = {"source": "meta", "message": message}
                batch.messages.append({**entry, "destination": d.name} if outcome.named else entry)
            if d.dry_run:
                dry += d.forwarded
        if dry:
            log(logging.INFO, "dry run: payload built, nothing sent", events=dry)
            batch.messages.append({"message": "DRY_RUN: nothing was sent to Meta"})

    @staticmethod
    def _skip_held(outcome: Outcome) -> None:
        """Skip each event every destination's guard held back (duplicate, or in flight)."""
        batch = outcome.batch
        for f in batch.finished:
            reason = skip_reason(outcome.states_of(f))
            if reason is not None:
                batch.skipped.append(Skip(f.index, f.event["event_id"], reason, event_name=f.event["event_name"]))

    def _deliver(self, target: Target, events: list[Finished], request_code: str | None) -> Delivery:
        """Send one destination's events; whatever Meta or Firestore does, return what
        became of each (a destination's failure stays in its own Delivery)."""
        destination = target.destination
        delivery = Delivery(name=destination.name, pixel_id=destination.pixel_id)
        code = self.code_for(destination, request_code)
        # An unreadable token comes back as kept events (TokenUnreadable), stored by _record.
        sending = self._send(target, events, delivery, code)
        if sending is not None:
            self._record(target, *sending, delivery, code)
        return delivery

    def _send(
        self, target: Target, events: list[Finished], delivery: Delivery, code: str | None
    ) -> tuple[list[Finished], Sent] | None:
        """Claim the events (not in a dry run) and send those to send, split as Meta's answers
        require; None when nothing was sent (all held, the guard unreachable, a dry run), the
        events' states then set in `delivery`. On an exception the claims are released."""
        guard = target.idempotency if not self.config.dry_run else None
        claims: list[Key] = []
        if guard is not None and events:
            guarded = self._claim(guard, events, delivery)
            if guarded is None:
                return None
            events = guarded
            claims = [key for f in events for key in _keys(f)]
        if not events:
            return None
        if self.config.dry_run or target.sender is None:
            delivery.dry_run = True
            delivery.states.update((f.index, "forwarded") for f in events)
            return None
        try:
            return events, send_split(target.sender, [f.event for f in events], code, stopping=self.stopping)
        except Exception:
            self._release(guard, claims)
            raise

    def _claim(self, guard: IdempotencyStore, events: list[Finished], delivery: Delivery) -> list[Finished] | None:
        """Claim the events in the destination's idempotency store; returns those to send
        (not delivered, stored or in flight already), or None when the guard could not reach
        Firestore (nothing is sent then: the caller retries)."""
        keys = [_keys(f) for f in events]
        try:
            done, busy = guard.claim([key for of_event in keys for key in of_event])
        except StoreUnavailable as exc:
            for f in events:
                delivery.states[f.index] = "unsent"
            delivery.error = exc
            delivery.message = "the idempotency guard could not reach Firestore, so nothing was sent: retry the request"
            log(
                logging.ERROR,
                "idempotency claim failed; nothing sent",
                destination=delivery.name,
                error=exc.code,
                detail=exc.message,
            )
            return None
        kept = []
        unclaim: list[Key] = []  # keys this call claimed for an event it holds back
        for f, of_event in zip(events, keys, strict=True):
            state = verdict(of_event, done, busy)
            if state is None:
                kept.append(f)
                continue
            delivery.states[f.index] = state
            unclaim.extend(key for key in of_event if key not in done and key not in busy)
        self._release(guard, unclaim)
        delivery.held = len(events) - len(kept)
        delivery.in_flight = delivery.count("in flight")
        if delivery.in_flight:
            delivery.message = (
                f"{delivery.in_flight} event(s) are being delivered by another request right now"
                " (idempotency guard): retry the request"
            )
        return kept

    def _record(
        self, target: Target, events: list[Finished], sent: Sent, delivery: Delivery, test_event_code: str | None
    ) -> None:
        """What became of each event: delivered, refused (reported), or kept (stored if possible)."""
        self._mark_sent(events, delivery, sent)
        stored: list[Key] = []
        released = [key for p, _ in sent.refused for key in _keys(events[p])]
        reachable = True
        for positions, error in sent.kept:
            group = [events[p] for p in positions]
            # Once a write failed, Firestore is down: do not spend another deadline on it.
            too_large = self._store(target, [f.event for f in group], error, test_event_code) if reachable else None
            reachable = too_large is not None
            for i, f in enumerate(group):
                kept = reachable and i not in (too_large or ())
                delivery.states[f.index] = "stored" if kept else "unsent"
                (stored if kept else released).extend(_keys(f))
            delivery.too_large += len(too_large or ())
        self._report(delivery, sent)
        delivered = [key for p in sent.delivered for key in _keys(events[p])]
        self._bookkeep(target.idempotency, delivered, stored, released)

    @staticmethod
    def _mark_sent(events: list[Finished], delivery: Delivery, sent: Sent) -> None:
        """The events Meta took (forwarded) and refused (failed, with Meta's message), and what
        its answers said; the kept ones are each path's own (stored, or left for Pub/Sub)."""
        for position in sent.delivered:
            delivery.states[events[position].index] = "forwarded"
        for position, error in sorted(sent.refused, key=lambda refused: refused[0]):
            f = events[position]
            delivery.states[f.index] = "failed"
            delivery.failed.append(
                Failure(f.index, f.event["event_id"], error.message, error.meta_code, error.meta_subcode)
            )
        delivery.events_received = sent.events_received
        delivery.fbtrace_id = sent.fbtrace_id
        delivery.meta_messages = sent.messages

    def _store(
        self, target: Target, events: list[dict[str, Any]], error: MetaError, test_event_code: str | None
    ) -> set[int] | None:
        """The positions of events too large to store (the others are stored); None when
        Firestore could not store them."""
        try:
            if target.deadletter is None:
                raise StoreUnavailable("no dead-letter store configured")
            return set(target.deadletter.store(events, error, test_event_code))
        except StoreUnavailable as exc:
            log(
                logging.ERROR,
                "Meta did not take the events and they could not be stored; the caller must retry",
                destination=target.destination.name,
                events=len(events),
                error=exc.code,
                detail=exc.message,
            )
            return None

    def _report(self, delivery: Delivery, sent: Sent) -> None:
        """The destination's error and message, and the configuration ERROR line when due."""
        error = sent.first_error
        if error is None:
            return
        delivery.error = error
        delivery.fbtrace_id = delivery.fbtrace_id or error.fbtrace_id
        if delivery.unsent:
            delivery.error = StoreUnavailable(error.message)
            delivery.message = (
                f"Meta did not take the events ({error.message}) and they could not be stored for replay:"
                " retry the request"
                if delivery.unsent > delivery.too_large
                else f"Meta did not take the events ({error.message}); {delivery.too_large} of them too large"
                f" to store for replay (over {MAX_EVENT_BYTES} bytes), the others stored: retry the request"
            )
            return
        if error.kind == "config":
            log_config_refusal(error, delivery.stored, delivery.name)
            delivery.message = (
                f"{error.message[0].upper()}{error.message[1:]}; events stored for replay"
                if isinstance(error, TokenUnreadable)
                else f"Meta refused capi's configuration ({error.message}); events stored for replay"
            )
        elif error.kind == "transient":
            delivery.message = f"Meta is unavailable ({error.message}); events stored for replay"
        elif error.kind == "unreadable":
            delivery.message = (
                f"Meta's answer could not be read ({error.message}); events stored for replay"
                " (Meta deduplicates a second copy by event_id)"
            )
        elif delivery.stored:
            delivery.message = (
                f"Meta refused a batch ({error.message}) and splitting it stopped at its bound;"
                " the rest is stored for replay, which splits further"
            )
        else:
            delivery.message = error.message

    def _bookkeep(
        self, guard: IdempotencyStore | None, delivered: list[Key], stored: list[Key], released: list[Key]
    ) -> None:
        """Settle the idempotency claims. Skipped once the instance is stopping: its time is
        for answering, and a pending claim lapses by itself when its lease ends."""
        if guard is None or self.stopping():
            return
        for keys, mark in ((delivered, guard.delivered), (stored, guard.stored)):
            if keys:
                try:
                    mark(keys)
                except Exception as exc:  # noqa: BLE001 - sent already; the pending claim lapses
                    log(logging.WARNING, "could not mark events in the idempotency store", error=type(exc).__name__)
        self._release(guard, released)

    def _release(self, guard: IdempotencyStore | None, claims: list[Key]) -> None:
        if claims and guard is not None:
            try:
                guard.release(claims)
            except Exception as exc:  # noqa: BLE001 - the original failure is what the caller needs
                log(logging.WARNING, "could not release idempotency claims", error=type(exc).__name__)


def _cookies_to_set(outcome: Outcome) -> list[dict[str, Any]]:
    """For each event delivered or stored (never in a dry run), the fbp / fbc sent to Meta, under
    the names of the browser cookies the sGTM tag sets from them."""
    if any(d.dry_run for d in outcome.deliveries):
        return []
    return _cookie_entries([f for f in outcome.batch.finished if not TAKEN.isdisjoint(outcome.states_of(f))])


# A value a cookie can hold as it is (RFC 6265 cookie-octets): an fbp or fbc Meta takes may still
# hold ';', ',', '"' or '\\' (the click id is the caller's text), which is never handed back to be set.
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]+")


def _cookie_entries(taken: list[Finished]) -> list[dict[str, Any]]:
    """The `set_cookies` entries of events capi took (delivered, stored or queued), once each."""
    entries = []
    seen: set[int] = set()
    for f in taken:
        if f.index in seen:
            continue
        seen.add(f.index)
        user_data = f.event["user_data"]
        cookies = {
            name: user_data[key]
            for name, key in (("_fbp", "fbp"), ("_fbc", "fbc"))
            if key in user_data and _COOKIE_VALUE.fullmatch(user_data[key])
        }
        if cookies:
            entries.append({"index": f.index, "event_id": f.event["event_id"], **cookies})
    return entries


def _forwarding_any(config: Config, destinations: Sequence[Destination]) -> Config:
    """The configuration prepare() filters with: an event is prepared when at least one
    destination forwards its name (each destination filters on its own afterwards)."""
    names: set[str] = set()
    for d in destinations:
        if d.forward_events is None or isinstance(d.forward_events, Inherit):
            return config if config.forward_events is None else replace(config, forward_events=None)
        names |= d.forward_events
    wanted = frozenset(names)
    return config if wanted == config.forward_events else replace(config, forward_events=wanted)
