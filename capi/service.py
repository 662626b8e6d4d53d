"""The forwarding pipeline: parsed request -> validated, enriched, hashed events -> Meta.

No HTTP here (see `capi.http`) and no client construction (see `capi.app`): the stores and
the Graph client are passed in, so tests substitute real local peers or fakes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from capi.config import Config
from capi.errors import MetaError, StoreUnavailable
from capi.events import Draft, Finished, Rejection, Skip, finish, prepare
from capi.inputs import Envelope
from capi.inputs import read as read_envelope
from capi.log import log
from capi.payload import GraphResult, request_body


class Sender(Protocol):
    def send(self, body: dict[str, Any]) -> GraphResult: ...


class ProfileStore(Protocol):
    def get_many(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Profiles by user id, in one batched read; missing ids are simply absent."""
        ...


class DeadLetterStore(Protocol):
    def store(self, events: list[dict[str, Any]], error: MetaError, test_event_code: str | None) -> int:
        """Keep events for replay; returns how many were stored. Raises StoreUnavailable."""
        ...


class IdempotencyStore(Protocol):
    def claim(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Claim (event_name, event_id) pairs; returns those already delivered or claimed."""
        ...

    def delivered(self, keys: list[tuple[str, str]]) -> None:
        """Remember claimed pairs as delivered for the guard's window (48 h)."""
        ...

    def release(self, keys: list[tuple[str, str]]) -> None:
        """Forget claims whose delivery failed, so a retry is not skipped."""
        ...


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]


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
            "skipped": [s.to_json() for s in sorted(self.skipped, key=lambda s: s.index)],
            "rejected": [r.to_json() for r in sorted(self.rejected, key=lambda r: r.index)],
            "event_ids": [f.event["event_id"] for f in self.finished],
            "events_received": None,
            "fbtrace_id": None,
            "messages": self.messages,
        }
        body.update(extra)
        return body


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
    ) -> None:
        self.config = config
        self.sender = sender
        self.profiles = profiles
        self.deadletter = deadletter
        self.idempotency = idempotency
        self.clock = clock
        self.mint = mint

    # -- building ---------------------------------------------------------------------

    def _build(self, envelope: Envelope) -> _Batch:
        batch = _Batch(received=len(envelope.events), dialects=envelope.dialects)
        batch.messages.extend(envelope.messages)
        now = self.clock()
        # With enrichment, every draft waits for the one batched profile read; without, each
        # is finished at once, while its values are still in the CPU's cache.
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
                if enrich:
                    drafts.append(result)
                else:
                    self._finish(batch, result, None)
            elif isinstance(result, Skip):
                if result.reason == "consent":
                    batch.count_consent(result.consent_signal, "denied")
                batch.skipped.append(result)
            else:
                batch.rejected.append(result)
        if drafts:
            profiles = self._profiles(drafts, batch)
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
        """Run the whole pipeline and return the exact body that would be sent; send nothing."""
        events, code = parse_envelope(payload)
        batch = self._build(events)
        body = request_body([f.event for f in batch.finished], code or self.config.test_event_code)
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
        return Outcome(200, batch.response(payload=body, match_keys=match_keys, dialect=batch.dialect))

    def forward(self, payload: Any) -> Outcome:
        events, code = parse_envelope(payload)
        batch = self._build(events)
        outcome = self._deliver(batch, code or self.config.test_event_code)
        log(
            logging.INFO if outcome.status < 400 else logging.ERROR,
            "events processed",
            status=outcome.status,
            received=batch.received,
            forwarded=outcome.body["forwarded"],
            stored=outcome.body["stored"],
            skipped=len(batch.skipped),
            rejected=len(batch.rejected),
            events_received=outcome.body.get("events_received"),
            fbtrace_id=outcome.body.get("fbtrace_id"),
            consent=batch.consent,
        )
        return outcome

    def _deliver(self, batch: _Batch, test_event_code: str | None) -> Outcome:
        claims: list[tuple[str, str]] = []
        if self.idempotency is not None and batch.finished and not self.config.dry_run:
            keys = [(f.event["event_name"], f.event["event_id"]) for f in batch.finished]
            seen = self.idempotency.claim(keys)
            if seen:
                kept = []
                for f in batch.finished:
                    if (f.event["event_name"], f.event["event_id"]) in seen:
                        batch.skipped.append(Skip(f.index, f.event["event_id"], "duplicate"))
                    else:
                        kept.append(f)
                batch.finished = kept
            claims = [k for k in keys if k not in seen]
        if not batch.finished:
            return Outcome(200, batch.response())
        events = [f.event for f in batch.finished]
        body = request_body(events, test_event_code)
        if self.config.dry_run or self.sender is None:
            log(logging.INFO, "dry run: payload built, nothing sent", events=len(events))
            batch.messages.append({"message": "DRY_RUN: nothing was sent to Meta"})
            return Outcome(200, batch.response(forwarded=len(events), dry_run=True))
        try:
            result = self.sender.send(body)
        except MetaError as error:
            if error.transient:
                return self._store(batch, events, error, test_event_code, claims)
            self._release(claims)
            return Outcome(502, batch.response(event_ids=[], **error.to_body()))
        except Exception:
            self._release(claims)
            raise
        self._mark_delivered(claims)
        batch.messages.extend({"source": "meta", "message": m} for m in result.messages)
        return Outcome(
            200,
            batch.response(forwarded=len(events), events_received=result.events_received, fbtrace_id=result.fbtrace_id),
        )

    def _store(
        self,
        batch: _Batch,
        events: list[dict[str, Any]],
        error: MetaError,
        test_event_code: str | None,
        claims: list[tuple[str, str]],
    ) -> Outcome:
        try:
            if self.deadletter is None:
                raise StoreUnavailable("no dead-letter store configured")
            stored = self.deadletter.store(events, error, test_event_code)
        except StoreUnavailable as exc:
            self._release(claims)
            log(
                logging.ERROR,
                "Meta unavailable and events could not be stored; the caller must retry",
                events=len(events),
                error=exc.message,
            )
            return Outcome(
                503,
                batch.response(
                    event_ids=[],
                    error="unavailable",
                    message=f"Meta is unavailable ({error.message}) and the events could"
                    " not be stored for replay: retry the request",
                ),
            )
        # A stored event will be delivered by replay, so a repeat of it is a duplicate.
        self._mark_delivered(claims)
        return Outcome(
            202,
            batch.response(
                stored=stored,
                error="meta_unavailable",
                message=f"Meta is unavailable ({error.message}); events stored for replay",
                fbtrace_id=error.fbtrace_id,
            ),
        )

    def _mark_delivered(self, claims: list[tuple[str, str]]) -> None:
        if claims and self.idempotency is not None:
            try:
                self.idempotency.delivered(claims)
            except Exception as exc:  # noqa: BLE001 - sent already; the claim still guards until its lease ends
                log(
                    logging.WARNING,
                    "could not mark events delivered in the idempotency store",
                    error=type(exc).__name__,
                )

    def _release(self, claims: list[tuple[str, str]]) -> None:
        if claims and self.idempotency is not None:
            try:
                self.idempotency.release(claims)
            except Exception as exc:  # noqa: BLE001 - the original failure is what the caller needs
                log(logging.WARNING, "could not release idempotency claims", error=type(exc).__name__)
