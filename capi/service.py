"""The forwarding pipeline: parsed request -> validated, enriched, hashed events -> Meta.

No HTTP here (see `capi.http`, which turns the `Outcome` into a status) and no client
construction (see `capi.app`): the stores and the Graph client are passed in, so tests
substitute real local peers or fakes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from capi import shutdown
from capi.config import Config
from capi.delivery import Sender, Sent, log_config_refusal, send_split
from capi.errors import CapiError, MetaError, StoreUnavailable
from capi.events import Draft, Finished, Rejection, Skip, finish, prepare
from capi.inputs import Envelope
from capi.inputs import read as read_envelope
from capi.log import log
from capi.payload import request_body


class ProfileStore(Protocol):
    def get_many(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Profiles by user id, in one batched read; missing ids are simply absent."""
        ...


class DeadLetterStore(Protocol):
    def store(self, events: list[dict[str, Any]], error: MetaError, test_event_code: str | None) -> int:
        """Keep events for replay; returns how many were stored. Raises StoreUnavailable."""
        ...


Key = tuple[str, str]  # (event_name, event_id)


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


def _key(f: Finished) -> Key:
    return (f.event["event_name"], f.event["event_id"])


NO_NAME = "(no name)"  # by_event's key for an event that came without a usable name
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


@dataclass
class Delivery:
    """What became of one destination's events: the domain outcome `capi.http` turns into a status.

    `states` maps each event's input index to forwarded, stored, failed (refused by Meta), or
    unsent (neither delivered nor stored: the caller must retry); `in_flight` counts events
    another request holds an idempotency claim on (the caller must retry those too).
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
    dry_run: bool = False

    def count(self, state: str) -> int:
        return sum(1 for s in self.states.values() if s == state)

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

    @property
    def dialect(self) -> str:
        """The request's dialect for /validate: the one all its events were read as, else "mixed"."""
        found = set(self.dialects)
        return found.pop() if len(found) == 1 else "mixed"

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
    """What a request came to; `capi.http.outcome_status` chooses its HTTP status."""

    batch: _Batch
    deliveries: list[Delivery] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # /validate's payload and match_keys

    @property
    def body(self) -> dict[str, Any]:
        if not self.deliveries:
            return self.batch.response(**self.extra)
        delivery = self.deliveries[0]  # one destination today (README "Response": statuses)
        body = self.batch.response(
            forwarded=delivery.forwarded,
            stored=delivery.stored,
            failed=[f.to_json() for f in delivery.failed],
            event_ids=[
                f.event["event_id"]
                for f in self.batch.finished
                if delivery.states.get(f.index) in ("forwarded", "stored")
            ],
            events_received=delivery.events_received,
            fbtrace_id=delivery.fbtrace_id,
        )
        if delivery.error is not None:
            body.update(delivery.error.to_body())
            body["fbtrace_id"] = delivery.fbtrace_id
            if isinstance(delivery.error, MetaError) and delivery.error.fix:
                body["fix"] = delivery.error.fix
        elif delivery.in_flight:
            body["error"] = "in_flight"
        if delivery.message:
            body["message"] = delivery.message
        if delivery.dry_run:
            body["dry_run"] = True
        body.update(self.extra)
        return body

    def log_fields(self) -> dict[str, Any]:
        """The fields of the "events processed" line (RULES.md log contract; names are fixed)."""
        batch = self.batch
        delivery = self.deliveries[0] if self.deliveries else Delivery()
        by_event: dict[str, dict[str, int]] = {}

        def count(name: str, state: str) -> None:
            name = name[:MAX_EVENT_NAME_IN_LOG]
            entry = by_event.setdefault(name, {"forwarded": 0, "rejected": 0, "skipped": 0, "stored": 0, "failed": 0})
            if state in entry:
                entry[state] += 1

        match_keys: dict[str, int] = {}
        from_profile: dict[str, int] = {}
        for f in batch.finished:
            state = delivery.states.get(f.index, "forwarded" if delivery.dry_run else "")
            count(f.event["event_name"], state)
            if state == "forwarded":
                for key in f.event["user_data"]:
                    match_keys[key] = match_keys.get(key, 0) + 1
                for key in f.from_profile:
                    from_profile[key] = from_profile.get(key, 0) + 1
        for skip in batch.skipped:
            count(skip.event_name or NO_NAME, "skipped")
        for rejection in batch.rejected:
            count(rejection.event_name or NO_NAME, "rejected")
        error = delivery.error
        rejections = [
            {"index": r.index, "field": r.field, "reason": r.message}
            for r in sorted(batch.rejected, key=lambda r: r.index)[:MAX_LOGGED_REJECTIONS]
        ]
        return {
            "received": batch.received,
            "forwarded": delivery.forwarded if self.deliveries else 0,
            "stored": delivery.stored,
            "skipped": len(batch.skipped),
            "rejected": len(batch.rejected),
            "failed": len(delivery.failed),
            "in_flight": delivery.in_flight or None,
            "unsent": delivery.unsent or None,
            "by_event": by_event,
            "match_keys": match_keys,
            "from_profile": from_profile,
            "rejections": rejections,
            "error": delivery.error_code,
            "meta_code": error.meta_code if isinstance(error, MetaError) else None,
            "meta_subcode": error.meta_subcode if isinstance(error, MetaError) else None,
            "events_received": delivery.events_received,
            "fbtrace_id": delivery.fbtrace_id,
            "consent": batch.consent or None,
        }

    def forwarded_events(self) -> list[dict[str, Any]]:
        """The Graph API events Meta took (or, in a dry run, would have taken)."""
        delivery = self.deliveries[0] if self.deliveries else Delivery()
        default = "forwarded" if delivery.dry_run else ""
        return [f.event for f in self.batch.finished if delivery.states.get(f.index, default) == "forwarded"]


def parse_envelope(payload: Any) -> tuple[Envelope, str | None]:
    """The request's events in capi's internal form (every dialect: capi.inputs) and its
    test_event_code; a body no dialect reads is a 400 for the whole request."""
    envelope = read_envelope(payload)
    return envelope, envelope.test_event_code


class EventService:
    def __init__(
        self,
        config: Config,
        *,
        sender: Sender | None,
        profiles: ProfileStore | None = None,
        deadletter: DeadLetterStore | None = None,
        idempotency: IdempotencyStore | None = None,
        clock: Callable[[], float] = time.time,
        mint: Callable[[], str] = lambda: str(uuid.uuid4()),
        stopping: Callable[[], bool] = shutdown.stopping,
    ) -> None:
        self.config = config
        self.sender = sender
        self.profiles = profiles
        self.deadletter = deadletter
        self.idempotency = idempotency
        self.clock = clock
        self.mint = mint
        self.stopping = stopping

    # -- building ---------------------------------------------------------------------

    def _build(self, envelope: Envelope) -> _Batch:
        batch = _Batch(received=len(envelope.events), dialects=envelope.dialects)
        batch.messages.extend(envelope.messages)
        now = self.clock()
        # Every draft is finished once all are prepared: with enrichment they wait for the one
        # batched profile read; without, two passes measured faster than finishing each event
        # right after preparing it (29 against 37 ms per 1000 events, README "Performance").
        enrich = self.profiles is not None and bool(self.config.profile_collection)
        drafts: list[Draft] = []
        sent: set[tuple[str, str]] = set()  # (event_name, event_id): each goes once per request
        for index, (raw, dialect, ignored) in enumerate(envelope.events):
            result = prepare(raw, index, self.config, now, self.mint, ignored)
            if isinstance(result, Draft):
                result.dialect = dialect
                batch.count_consent(result.consent_signal, "granted")
                key = (result.event["event_name"], result.event["event_id"])
                if key in sent:
                    batch.skipped.append(Skip(index, key[1], "duplicate", event_name=key[0]))
                    continue
                sent.add(key)
                drafts.append(result)
            elif isinstance(result, Skip):
                if result.reason == "consent":
                    batch.count_consent(result.consent_signal, "denied")
                batch.skipped.append(result)
            else:
                batch.rejected.append(result)
        profiles = self._profiles(drafts, batch) if enrich and drafts else {}
        for draft in drafts:
            self._finish(batch, draft, profiles.get(draft.user_id) if draft.user_id else None)
        return batch

    def _finish(self, batch: _Batch, draft: Draft, profile: Mapping[str, Any] | None) -> None:
        done = finish(draft, profile, self.config.default_country)
        if draft.notes:
            batch.messages.extend(draft.notes)
        if isinstance(done, Finished):
            batch.finished.append(done)
        else:
            batch.rejected.append(done)

    def _profiles(self, drafts: list[Draft], batch: _Batch) -> Mapping[str, dict[str, Any]]:
        user_ids = sorted({d.user_id for d in drafts if d.user_id})
        if self.profiles is None or not user_ids:
            return {}
        try:
            return self.profiles.get_many(user_ids)
        except Exception as exc:  # noqa: BLE001 - enrichment must never block forwarding
            log(
                logging.WARNING,
                "profile lookup failed; events sent without enrichment",
                error=type(exc).__name__,
                users=len(user_ids),
            )
            batch.messages.append({"message": "profile lookup failed; events sent without enrichment"})
            return {}

    # -- entry points -----------------------------------------------------------------

    def validate(self, payload: Any) -> Outcome:
        """Run the whole pipeline and return the exact body that would be sent; send nothing.

        Values a Firestore profile filled are replaced by a placeholder: no endpoint returns
        a value that came from a profile (its digest would give the value away to anyone
        who can enumerate, e.g., phone numbers).
        """
        events, code = parse_envelope(payload)
        batch = self._build(events)
        shown = []
        for f in batch.finished:
            if f.from_profile:
                user_data = dict(f.event["user_data"])
                for key in f.from_profile:
                    user_data[key] = [PROFILE_PLACEHOLDER]
                shown.append({**f.event, "user_data": user_data})
            else:
                shown.append(f.event)
        if any(f.from_profile for f in batch.finished):
            batch.messages.append(
                {
                    "message": "values filled from Firestore profiles are not shown (placeholder instead);"
                    " match_keys.from_profile names their keys"
                }
            )
        body = request_body(shown, code or self.config.test_event_code)
        match_keys = [
            {
                "index": f.index,
                "event_id": f.event["event_id"],
                "from_event": f.from_event,
                "from_profile": f.from_profile,
                "dialect": f.dialect,
            }
            for f in batch.finished
        ]
        return Outcome(batch, extra={"payload": body, "match_keys": match_keys, "dialect": batch.dialect})

    def forward(self, payload: Any) -> Outcome:
        events, code = parse_envelope(payload)
        batch = self._build(events)
        delivery = self._deliver(batch, code or self.config.test_event_code)
        return Outcome(batch, [delivery])

    def _deliver(self, batch: _Batch, test_event_code: str | None) -> Delivery:
        delivery = Delivery(pixel_id=self.config.pixel_id)
        claims: list[Key] = []
        if self.idempotency is not None and batch.finished and not self.config.dry_run:
            guarded = self._claim(batch, delivery)
            if guarded is None:
                return delivery
            claims = guarded
        if not batch.finished:
            return delivery
        if self.config.dry_run or self.sender is None:
            log(logging.INFO, "dry run: payload built, nothing sent", events=len(batch.finished))
            batch.messages.append({"message": "DRY_RUN: nothing was sent to Meta"})
            delivery.dry_run = True
            for f in batch.finished:
                delivery.states[f.index] = "forwarded"
            return delivery
        try:
            sent = send_split(self.sender, [f.event for f in batch.finished], test_event_code, stopping=self.stopping)
        except Exception:
            self._release(claims)
            raise
        self._record(batch, delivery, sent, test_event_code)
        return delivery

    def _claim(self, batch: _Batch, delivery: Delivery) -> list[Key] | None:
        """Claim the batch's events in the idempotency store; drop repeats from the batch.

        Returns the keys claimed, or None when the guard could not reach Firestore (nothing
        is sent then: the caller retries).
        """
        assert self.idempotency is not None
        try:
            done, busy = self.idempotency.claim([_key(f) for f in batch.finished])
        except StoreUnavailable as exc:
            for f in batch.finished:
                delivery.states[f.index] = "unsent"
            delivery.error = exc
            delivery.message = "the idempotency guard could not reach Firestore, so nothing was sent: retry the request"
            log(logging.ERROR, "idempotency claim failed; nothing sent", error=exc.code, detail=exc.message)
            return None
        kept = []
        for f in batch.finished:
            if _key(f) in done:
                batch.skipped.append(Skip(f.index, f.event["event_id"], "duplicate"))
            elif _key(f) in busy:
                batch.skipped.append(Skip(f.index, f.event["event_id"], "in flight"))
            else:
                kept.append(f)
        batch.finished = kept
        delivery.in_flight = len(busy)
        if busy:
            delivery.message = (
                f"{len(busy)} event(s) are being delivered by another request right now"
                " (idempotency guard): retry the request"
            )
        return [_key(f) for f in kept]

    def _record(self, batch: _Batch, delivery: Delivery, sent: Sent, test_event_code: str | None) -> None:
        """What became of each event: delivered, refused (reported), or kept (stored if possible)."""
        finished = batch.finished
        for position in sent.delivered:
            delivery.states[finished[position].index] = "forwarded"
        for position, error in sorted(sent.refused, key=lambda refused: refused[0]):
            f = finished[position]
            delivery.states[f.index] = "failed"
            delivery.failed.append(
                Failure(f.index, f.event["event_id"], error.message, error.meta_code, error.meta_subcode)
            )
        delivery.events_received = sent.events_received
        delivery.fbtrace_id = sent.fbtrace_id
        batch.messages.extend({"source": "meta", "message": m} for m in sent.messages)
        stored: list[Key] = []
        released = [_key(finished[p]) for p, _ in sent.refused]
        reachable = True
        for positions, error in sent.kept:
            group = [finished[p] for p in positions]
            # Once a write failed, Firestore is down: do not spend another deadline on it.
            reachable = reachable and self._store([f.event for f in group], error, test_event_code)
            for f in group:
                delivery.states[f.index] = "stored" if reachable else "unsent"
            (stored if reachable else released).extend(_key(f) for f in group)
        self._report(delivery, sent)
        self._bookkeep([_key(finished[p]) for p in sent.delivered], stored, released)

    def _store(self, events: list[dict[str, Any]], error: MetaError, test_event_code: str | None) -> bool:
        try:
            if self.deadletter is None:
                raise StoreUnavailable("no dead-letter store configured")
            self.deadletter.store(events, error, test_event_code)
        except StoreUnavailable as exc:
            log(
                logging.ERROR,
                "Meta did not take the events and they could not be stored; the caller must retry",
                events=len(events),
                error=exc.code,
                detail=exc.message,
            )
            return False
        return True

    def _report(self, delivery: Delivery, sent: Sent) -> None:
        """The request's error and message, and the configuration ERROR line when due."""
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
            )
            return
        if error.kind == "config":
            log_config_refusal(error, delivery.stored)
            delivery.message = f"Meta refused capi's configuration ({error.message}); events stored for replay"
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

    def _bookkeep(self, delivered: list[Key], stored: list[Key], released: list[Key]) -> None:
        """Settle the idempotency claims. Skipped once the instance is stopping: its time is
        for answering, and a pending claim lapses by itself when its lease ends."""
        if self.idempotency is None or self.stopping():
            return
        for keys, mark in ((delivered, self.idempotency.delivered), (stored, self.idempotency.stored)):
            if keys:
                try:
                    mark(keys)
                except Exception as exc:  # noqa: BLE001 - sent already; the pending claim lapses
                    log(logging.WARNING, "could not mark events in the idempotency store", error=type(exc).__name__)
        self._release(released)

    def _release(self, claims: list[Key]) -> None:
        if claims and self.idempotency is not None:
            try:
                self.idempotency.release(claims)
            except Exception as exc:  # noqa: BLE001 - the original failure is what the caller needs
                log(logging.WARNING, "could not release idempotency claims", error=type(exc).__name__)
