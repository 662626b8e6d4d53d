"""Shared fixtures: the loopback fake Graph API, the fake Secret Manager, the Firestore emulator."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.emulator import clear, running_emulator, wait_ready
from tests.fakes.graph import GraphServer
from tests.fakes.secretmanager import SecretManagerServer

ROOT = Path(__file__).resolve().parent.parent
EMULATOR_PROJECT = "demo-capi-test"
PIXEL_ID = "1234567890"
TOKEN = "test-token"


@pytest.fixture
def graph() -> Iterator[GraphServer]:
    with GraphServer() as server:
        yield server


@pytest.fixture
def secret_manager() -> Iterator[SecretManagerServer]:
    with SecretManagerServer() as server:
        yield server


def base_env(graph: GraphServer | None = None, **extra: str) -> dict[str, str]:
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
