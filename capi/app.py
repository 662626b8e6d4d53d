"""Wiring: builds the service, the authenticator and the replayer from the configuration.

Clients (Firestore, Secret Manager, the HTTP connection pools) are created lazily on first use, once
per instance, unless a test passes its own.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import flask

from capi.auth import Authenticator, split_keys
from capi.browsers import FirestoreBrowserStore
from capi.config import Config, load_config
from capi.delivery.consume import Consumer, ThrottleAwarePolicy
from capi.delivery.deadletter import FirestoreDeadLetter
from capi.delivery.drain import DeadLetterDrain
from capi.delivery.graph import GraphClient, RetryPolicy
from capi.delivery.publish import Publisher
from capi.delivery.pubsub import PubSubClient, full_name
from capi.delivery.replay import Replayer
from capi.destinations import Destination
from capi.errors import ConfigError, QueueUnavailable
from capi.firestore import FirestoreIdempotency, FirestoreLookup
from capi.firestore import new_client as new_firestore_client
from capi.http import (
    guarded,
    health,
    json_response,
    outcome_status,
    read_body,
    read_json,
    route,
    route_job,
)
from capi.lazy import Lazy
from capi.log import log, set_trace, setup_logging
from capi.quality import DatasetQualityClient, QualityReport
from capi.quality import Destination as QualityDestination
from capi.report import fold_names, known_names, log_by_name
from capi.secrets import SecretManagerSecret, SecretSource, StaticSecret, resource_name
from capi.service import EventService, Outcome, Target
from capi.webhooks import SHOPIFY, WOOCOMMERCE, SignedWebhooks, is_ping, shop_of
from capi.webhooks import envelope as webhook_envelope
from capi.webhooks import parse as parse_webhook


class Application:
    """Everything one instance needs, built once from the configuration: per destination a
    Graph client, a dead-letter store and an idempotency guard, all on one Firestore client."""

    def __init__(
        self,
        config: Config,
        *,
        firestore_client: Callable[[], Any] | None = None,
        secret_client: Any = None,
        sleep: Callable[[float], None] | None = None,
        rng: Callable[[], float] | None = None,
        pubsub_client: PubSubClient | None = None,
    ) -> None:
        self.config = config
        setup_logging(config.log_level)
        # The clients are built on first use (cold starts stay fast), once per instance.
        self._secret_manager: Callable[[], Any] | None = (lambda: secret_client) if secret_client is not None else None
        firestore: Callable[[], Any] = firestore_client or Lazy(
            lambda: new_firestore_client(config.project, config.firestore_database)
        )
        retry = {k: v for k, v in (("sleep", sleep), ("rng", rng)) if v is not None}
        targets: list[Target] = []
        self.senders: dict[str, GraphClient | None] = {}  # by destination name; None: no token (dry run)
        tokens: list[QualityDestination] = []
        for destination in config.destinations:
            token = self._secret(destination.access_token, destination.access_token_secret)
            sender = self._graph_client(destination, token, retry) if token is not None else None
            if token is not None:
                tokens.append(QualityDestination(destination.name, destination.pixel_id, token))
            self.senders[destination.name] = sender
            targets.append(self._target(destination, None if config.dry_run else sender, firestore))
        lookup = (
            FirestoreLookup(
                firestore, config.profile_collection, config.browser_collection, config.firestore_timeout_seconds
            )
            if config.profile_collection or config.browser_collection
            else None
        )
        browsers = (
            FirestoreBrowserStore(firestore, config.browser_collection, int(config.browser_ttl_days))
            if config.browser_collection
            else None
        )
        # DELIVERY=queue: /events publishes (not in a dry run, which sends nothing anywhere).
        pubsub = pubsub_client or PubSubClient(pool_size=max(16, config.threads))
        queue = (
            Publisher(pubsub, full_name(config.pubsub_topic, "topics", config.project))
            if config.delivery == "queue" and not config.dry_run
            else None
        )
        self.service = EventService(config, lookup=lookup, browsers=browsers, targets=targets, queue=queue)
        self.consumer = Consumer(self.service, window=config.batch_window_ms / 1000)
        self.drain = (
            DeadLetterDrain(
                pubsub,
                full_name(config.pubsub_deadletter_subscription, "subscriptions", config.project),
                self.consumer,
            )
            if config.pubsub_deadletter_subscription and not config.dry_run
            else None
        )
        # A dry run sends nothing, dead letters included.
        live = {} if config.dry_run else {name: sender for name, sender in self.senders.items() if sender is not None}
        guards = {t.destination.name: t.idempotency for t in targets}
        self.replayer = (
            Replayer(
                firestore,
                config.deadletter_collection,
                live,
                guards=guards,
                max_attempts=config.replay_max_attempts,
            )
            if live
            else None
        )
        self.authenticator = Authenticator(self._keys(), config.allow_unauthenticated, self._bound_keys())
        self.webhooks = SignedWebhooks(
            {
                SHOPIFY: self._key_source(config.shopify_signing_keys, config.shopify_signing_key_secret),
                WOOCOMMERCE: self._key_source(config.woocommerce_signing_keys, config.woocommerce_signing_key_secret),
            }
        )
        self.quality_report = (
            QualityReport(
                DatasetQualityClient(base_url=config.api_base_url, api_version=config.api_version),
                tokens,
                config.emq_alert_below,
                config.dedup_alert_below,
            )
            if tokens
            else None
        )
        self.event_names = known_names(config)  # the names logged as themselves (capi.report)
        self.events = guarded(self._events)
        self.replay = guarded(self._replay)
        self.quality = guarded(self._quality)
        self.deliver = guarded(self._deliver)

    def _graph_client(self, destination: Destination, token: SecretSource, retry: Mapping[str, Any]) -> GraphClient:
        config = self.config
        return GraphClient(
            base_url=config.api_base_url,
            api_version=config.api_version,
            pixel_id=destination.pixel_id,
            token=token,
            app_secret=self._secret(destination.app_secret, destination.app_secret_secret),
            timeout=config.timeout_seconds,
            # Queued, a throttled call is not retried in place: capi_deliver pauses the pixel.
            policy=(ThrottleAwarePolicy if config.delivery == "queue" else RetryPolicy)(
                max_attempts=config.max_attempts, budget=config.retry_budget_seconds
            ),
            pool_size=max(16, config.threads),
            destination=destination.name,
            from_destinations=not destination.implicit,
            # The fix of a refused token names the setting it came from (the secret wins).
            literal_token=not destination.access_token_secret,
            literal_app_secret=not destination.app_secret_secret,
            **retry,
        )

    def _target(self, destination: Destination, sender: GraphClient | None, firestore: Callable[[], Any]) -> Target:
        """The destination with its sender, its dead letters and its idempotency guard."""
        config = self.config
        # A pending claim's lease outlives the request that holds it: all of Meta's retries,
        # the last call's timeout and the Firestore steps (STORE_SECONDS each), with room.
        lease = config.retry_budget_seconds + config.timeout_seconds + 15
        idempotency = (
            FirestoreIdempotency(
                firestore,
                config.idempotency_collection,
                destination.pixel_id,
                lease=lease,
                order_ttl=config.order_dedup_hours * 3600,
                destination=destination.name,
            )
            if config.idempotency_collection
            else None
        )
        deadletter = FirestoreDeadLetter(
            firestore,
            config.deadletter_collection,
            destination.pixel_id,
            destination=destination.name,
            deployment=os.environ.get("K_SERVICE"),  # the Cloud Run service: which deployment wrote it
        )
        return Target(destination, sender, deadletter, idempotency)

    @property
    def graph(self) -> GraphClient | None:
        """The first destination's Graph client (the only one with META_PIXEL_ID alone)."""
        return next(iter(self.senders.values()))

    def _secret(self, literal: str | None, secret: str | None) -> SecretSource | None:
        if secret:
            return SecretManagerSecret(
                resource_name(secret, self.config.project),
                ttl=self.config.secret_cache_seconds,
                client=self._secret_manager,
            )
        if literal:
            return StaticSecret(literal)
        return None

    def _keys(self) -> Callable[[], tuple[str, ...]] | None:
        return self._key_source(self.config.ingest_api_keys, self.config.ingest_api_key_secret)

    def _key_source(self, literal: tuple[str, ...], secrets: str | None) -> Callable[[], tuple[str, ...]] | None:
        """The valid keys: the literal ones and those in the named secrets (comma-separated
        names; several keys in one secret, comma or newline), each secret cached like the token."""
        config = self.config
        sources = [
            SecretManagerSecret(
                resource_name(name, config.project), ttl=config.secret_cache_seconds, client=self._secret_manager
            )
            for name in split_keys(secrets or "")
        ]
        if not sources and not literal:
            return None

        def keys() -> tuple[str, ...]:
            found = list(literal)
            for source in sources:
                found.extend(split_keys(source.get()))
            return tuple(found)

        return keys

    def _bound_keys(self) -> Callable[[], list[tuple[str, frozenset[str]]]] | None:
        """INGEST_KEYS: each key (a secret may hold several, for rotation) with its destinations."""
        sources = [
            (StaticSecret(bound.key) if bound.key else self._secret(None, bound.secret), bound.destinations)
            for bound in self.config.ingest_keys
        ]
        if not sources:
            return None

        def keys() -> list[tuple[str, frozenset[str]]]:
            return [(key, names) for source, names in sources if source for key in split_keys(source.get())]

        return keys

    def _events(self, request: flask.Request) -> flask.Response:
        set_trace(request.headers.get("X-Cloud-Trace-Context"), self.config.project)
        endpoint = route(request)
        if endpoint == "health":
            return health()
        if endpoint == "webhook":
            return self._webhook(request)
        allowed = self.authenticator.check(request.headers)  # None: every destination
        payload = read_json(request)
        if endpoint == "validate":
            return json_response(200, self.service.validate(payload, allowed).body)
        # The sGTM tag asks for the cookies to set (sgtm/template.tpl, setCookies).
        set_cookies = request.headers.get("X-Capi-Set-Cookies") == "1"
        return self._answer(self.service.forward(payload, allowed, set_cookies=set_cookies))

    def _webhook(self, request: flask.Request) -> flask.Response:
        """A shop's signed webhook (capi.webhooks): verified on the raw body, then forwarded
        as the shop's dialect; the signature stands in for the ingest key."""
        shop = shop_of(request.path) or ""
        body = read_body(request)
        if is_ping(shop, request.headers, body):
            log(logging.INFO, "webhook ping answered", source=shop)
            return json_response(200, {"ping": True, "source": shop})
        self.webhooks.verify(shop, request.headers, body)
        events = webhook_envelope(shop, request.headers, parse_webhook(body))
        return self._answer(self.service.forward(events), source=shop)

    def _answer(self, outcome: Outcome, source: str | None = None) -> flask.Response:
        """The answer to /events or a webhook, and its "events processed" line."""
        status = outcome_status(outcome)
        severity = {200: logging.INFO, 202: logging.WARNING}.get(status, logging.ERROR)
        fields, keys_by_name = outcome.log_summary()
        if source is not None:
            fields["source"] = source
        fields["by_event"], keys_by_name = fold_names(fields["by_event"], keys_by_name, self.event_names)
        if "delivery" in outcome.extra:  # DELIVERY=queue: queued, or delivered directly as a fallback
            fields.update(queued=outcome.extra["queued"], delivery=outcome.extra["delivery"])
        log(severity, "events processed", status=status, **fields)
        log_by_name(fields["by_event"], keys_by_name)
        return json_response(status, outcome.body)

    def _replay(self, request: flask.Request) -> flask.Response:
        set_trace(request.headers.get("X-Cloud-Trace-Context"), self.config.project)
        route_job(request, "replay")
        if self.replayer is None:
            return json_response(200, {"message": "DRY_RUN (or no token): nothing is replayed"})
        counts = self.replayer.run()
        if self.drain is not None:
            try:
                counts = {**counts, "queue": self.drain.run()}
            except QueueUnavailable as exc:  # the Firestore replay above still counts
                log(logging.ERROR, "dead-letter topic not drained", error=exc.code, detail=exc.message)
                counts = {**counts, "queue": {"error": exc.code}}
        return json_response(200, counts)

    def _deliver(self, request: flask.Request) -> flask.Response:
        """capi_deliver: one Pub/Sub push; its status acks (2xx) or nacks the message."""
        set_trace(request.headers.get("X-Cloud-Trace-Context"), self.config.project)
        if request.path.rstrip("/") == "/healthz" and request.method in ("GET", "HEAD"):
            return health()  # a probe, as capi_events answers it
        route_job(request, "deliver")
        status, body = self.consumer.push(read_json(request))
        return json_response(status, body)

    def _quality(self, request: flask.Request) -> flask.Response:
        set_trace(request.headers.get("X-Cloud-Trace-Context"), self.config.project)
        route_job(request, "quality")
        if self.quality_report is None:
            return json_response(200, {"message": "DRY_RUN without a token: no quality to read"})
        status, body = self.quality_report.run()
        return json_response(status, body)


# Containers alive at the peak of a 1000-event request: about 27 000 (parsed input, events, answer).
GC_GEN0_THRESHOLD = 50_000


def tune_gc(gen0_threshold: int = GC_GEN0_THRESHOLD) -> None:
    """Keep the cyclic garbage collector out of the request path.

    What a request allocates is acyclic and freed by reference counting the moment it is
    done, yet the collector, triggered every 700 allocations by default, walks every object
    the request still holds: about 40 passes per 1000-event request, and a full pass over the
    whole heap every few requests. Freezing what start-up loaded (modules, libphonenumber
    and pycountry data) takes it out of every pass, and a threshold above a request's peak
    leaves collections to the rare real cycles. Cycles are still collected, only later.
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)


def application_from_env(env: Mapping[str, str] | None = None, **clients: Any) -> Application:
    """Load the configuration and build the application; one clear line on bad config."""
    env = os.environ if env is None else env
    config = load_config(env)
    application = Application(config, **clients)  # sets up logging
    if config.access_token and config.access_token_secret:
        log(
            logging.WARNING,
            "both META_ACCESS_TOKEN and META_ACCESS_TOKEN_SECRET are set; the Secret Manager secret wins",
        )
    testing = [d.name for d in config.destinations if d.test_event_code or config.test_event_code]
    if testing:
        # Meta does not drop test events (docs/meta-capi.md §11): say so where a code is set.
        log(
            logging.WARNING,
            TEST_EVENT_CODE_WARNING,
            destinations=testing,
            fix="remove META_TEST_EVENT_CODE (or a destination's test_event_code) once testing is done",
        )
    return application


TEST_EVENT_CODE_WARNING = (
    "a test event code is configured: every event goes to Events Manager's Test events, and Meta does"
    " not drop test events: they still count for targeting and measurement"
)


def exit_on_config_error(build: Callable[[], Application]) -> Application:
    """Build, or print one JSON line naming the bad variable and exit (no stack trace)."""
    try:
        return build()
    except ConfigError as exc:
        import json
        import sys

        print(
            json.dumps(
                {"severity": "CRITICAL", "message": f"capi configuration error: {exc.message}", "variable": exc.field}
            ),
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1) from None
