"""Shared fixtures: the loopback fake Graph API, the fake Secret Manager, the Firestore emulator.

Two ways to run capi in a test:
- `make_app(graph, firestore=..., **env)` builds an `Application` with the test's clients
  injected through its constructor; `serve(app)` puts a Flask test client around it.
- the `make_client` fixture loads main.py's entry point from environment variables alone, as
  production does (no injection).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from capi.app import Application
from capi.config import load_config
from capi.service import EventService
from tests.fakes.emulator import PROJECT as EMULATOR_PROJECT
from tests.fakes.emulator import clear, running_emulator, wait_ready
from tests.fakes.graph import GraphServer
from tests.fakes.secretmanager import SecretManagerServer

ROOT = Path(__file__).resolve().parent.parent
PIXEL_ID = "1234567890"
TOKEN = "test-token"
NOW = 1_790_000_000.0  # the pipeline's clock in make_service: 2026-09-21, a fixed "now"


@pytest.fixture
def graph() -> Iterator[GraphServer]:
    with GraphServer() as server:
        yield server


@pytest.fixture
def secret_manager() -> Iterator[SecretManagerServer]:
    with SecretManagerServer() as server:
        yield server


def base_env(graph: GraphServer | None = None, **extra: str) -> dict[str, str]:
    """capi's environment for a test: open, no profiles, on the fake Graph API when given."""
    env = {
        "META_PIXEL_ID": PIXEL_ID,
        "META_ACCESS_TOKEN": TOKEN,
        "ALLOW_UNAUTHENTICATED": "true",
        "PROFILE_COLLECTION": "",
        "META_RETRY_BUDGET_SECONDS": "3",
        "META_TIMEOUT_SECONDS": "1",
        "GOOGLE_CLOUD_PROJECT": EMULATOR_PROJECT,
    }
    if graph is not None:
        env["META_API_BASE_URL"] = graph.base_url
    env.update(extra)
    return env


def purchase(event_id: str, **extra: Any) -> dict[str, Any]:
    """A GA4 purchase capi forwards as Meta's Purchase, with its own email; `extra` overrides."""
    return {
        "event_name": "purchase",
        "event_id": event_id,
        "page_location": "https://shop.example.com/ok",
        "user_agent": "Mozilla/5.0",
        "value": 5,
        "currency": "USD",
        "user_data": {"email_address": f"{event_id.lower()}@example.com"},
        **extra,
    }


def no_wait(seconds: float) -> None:
    """Meta's backoff without the wait: every retry still happens, at once."""


def make_app(
    graph: GraphServer | None = None,
    *,
    firestore: Any = None,
    secret_client: Any = None,
    sleep: Callable[[float], None] = no_wait,
    rng: Callable[[], float] = lambda: 0.5,
    **env: str,
) -> Application:
    """An `Application` on the test's peers, its clients injected through its constructor.

    graph: the fake Graph API it posts to; None makes it a dry run (DRY_RUN=true), as nothing
      would answer. env: variables over `base_env(graph)`, e.g. PROFILE_COLLECTION="users".
    firestore: the Firestore client every store uses (`firestore_db`, a wrapper of it, or
      `dead_firestore()`); None builds one lazily from the environment, as in production.
    secret_client: a Secret Manager client (`secret_manager.client()`) for *_SECRET variables.
    sleep, rng: the retry backoff's wait and jitter; by default no wait and a fixed jitter.
    """
    if graph is None:
        env = {"DRY_RUN": "true", **env}
    config = load_config(base_env(graph, **env))
    return Application(
        config,
        firestore_client=None if firestore is None else lambda: firestore,
        secret_client=secret_client,
        sleep=sleep,
        rng=rng,
    )


def make_service(**env: str) -> EventService:
    """The event pipeline alone, as /validate and /events run it, with no I/O: a dry run at a
    fixed time (NOW), minting event ids minted-0, minted-1, ... `env` over a pixel id."""
    config = load_config({"META_PIXEL_ID": "1", "DRY_RUN": "true", **env})
    ids = (f"minted-{n}" for n in itertools.count())
    return EventService(config, sender=None, clock=lambda: NOW, mint=lambda: next(ids))


@pytest.fixture
def make_client(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """A functions-framework test client for main.py's `target`, with these env vars only."""
    import functions_framework

    def build(env: dict[str, str], target: str = "capi_events") -> Any:
        for name in list(os.environ):
            if name.startswith(
                (
                    "META_",
                    "INGEST_",
                    "DEFAULT_COUNTRY",
                    "FORWARD_EVENTS",
                    "EVENT_NAME_MAP",
                    "PROFILE_",
                    "DRY_RUN",
                    "ALLOW_UNAUTH",
                    "IDEMPOTENCY_",
                    "DEADLETTER_",
                )
            ):
                monkeypatch.delenv(name)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        app = functions_framework.create_app(target, str(ROOT / "main.py"))
        return app.test_client()

    return build


# -- Firestore emulator -----------------------------------------------------------------


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[str]:
    """HOST:PORT of a Firestore emulator: $FIRESTORE_EMULATOR_HOST, or one we start and stop.

    A missing emulator is an error, not a skip: these tests are part of `make test`.
    """
    host = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if host:
        wait_ready(host, time.monotonic() + 30, None)
        yield host
        return
    with running_emulator() as started:
        yield started


@pytest.fixture
def firestore_db(firestore_emulator: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Firestore client on the emulator, with every document cleared before the test."""
    from google.cloud import firestore

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", EMULATOR_PROJECT)
    clear(firestore_emulator, EMULATOR_PROJECT)
    return firestore.Client(project=EMULATOR_PROJECT)


def serve(application: Any) -> Any:
    """A Flask test client around an `Application` built with injected clients."""
    import flask

    app = flask.Flask("capi-test")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "DELETE"])
    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "DELETE"])
    def events(path: str) -> Any:
        return application.events(flask.request)

    @app.route("/replay", methods=["GET", "POST"])
    def replay() -> Any:
        return application.replay(flask.request)

    return app.test_client()


def log_lines(out: str, message: str | None = None) -> list[dict[str, Any]]:
    """The JSON lines capi wrote to `out` (captured stdout), only those of `message` if given."""
    found = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in found if message is None or line["message"] == message]


def at_once(*calls: Callable[[], object]) -> None:
    """Run each call in its own thread, all released together, and wait for them all.

    An exception in a call fails the test (a plain thread would only print it).
    """
    barrier = threading.Barrier(len(calls))
    errors: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class CountingFirestore:
    """Wraps a real Firestore client and counts batched reads (get_all) and commits."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.get_all_calls = 0
        self.documents_read = 0

    def get_all(self, refs: Any, *args: Any, **kwargs: Any) -> Any:
        refs = list(refs)
        self.get_all_calls += 1
        self.documents_read += len(refs)
        return self._client.get_all(refs, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


# -- Pub/Sub emulator (DELIVERY=queue) ------------------------------------------------------


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[str]:
    """HOST:PORT of a Pub/Sub emulator: $PUBSUB_EMULATOR_HOST, or one we start (lazily: only
    the tests that ask for it pay its start) and stop. Missing is an error, not a skip."""
    from tests.fakes.pubsub import running_pubsub

    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if host:
        wait_ready(host, time.monotonic() + 30, None, "Pub/Sub")
        yield host
        return
    with running_pubsub() as started:
        yield started
