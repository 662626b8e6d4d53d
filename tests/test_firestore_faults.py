"""Firestore stalled, dead or failing mid-request (issue 10 findings 4 and 5).

A dedicated emulator, started here, is paused (SIGSTOP on its process group) and then killed;
the session's emulator is never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import make_app, purchase, serve
from tests.fakes.emulator import emulator_process, firestore_client_at

pytestmark = pytest.mark.emulator
ANSWER_WITHIN = 15.0  # seconds: /events answers within this whatever Firestore does


# -- finding 4: a pending claim never makes a retry a duplicate ----------------------------


class FailingCommits:
    """A real Firestore client whose batch commits fail once `allowed` commits went through."""

    def __init__(self, client: Any, allowed: int) -> None:
        self._client = client
        self.allowed: int | None = allowed

    def batch(self) -> Any:
        from google.api_core import exceptions as gexc

        batch = self._client.batch()
        owner = self

        class Batch:
            def __getattr__(self, name: str) -> Any:
                return getattr(batch, name)

            def commit(self, *args: Any, **kwargs: Any) -> Any:
                if owner.allowed is not None:
                    if owner.allowed <= 0:
                        raise gexc.GatewayTimeout("Firestore stalled")
                    owner.allowed -= 1
                return batch.commit(*args, **kwargs)

        return Batch()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_pending_claim_never_turns_a_retry_into_a_silent_duplicate(firestore_db: Any, graph: Any) -> None:
    # The claim is written; Meta answers 503; Firestore then fails, so neither the dead letter
    # nor the claim's release is written: the caller is told to retry.
    failing = FailingCommits(firestore_db, allowed=1)
    graph.fake.down = "503"
    client = serve(make_app(graph, firestore=failing, IDEMPOTENCY_COLLECTION="capi_sent"))
    first = client.post("/events", json=purchase("O-1"))
    assert first.status_code == 503 and first.get_json()["error"] == "store_unavailable"
    # The caller retries at once, everything healthy again: the claim is still pending, so
    # the answer is "in flight, retry", never a 200 "duplicate" for an event Meta never got.
    failing.allowed = None
    graph.fake.down = None
    again = client.post("/events", json=purchase("O-1"))
    assert again.status_code == 503
    body = again.get_json()
    assert body["error"] == "in_flight" and "retry" in body["message"]
    assert body["skipped"] == [{"index": 0, "event_id": "O-1", "reason": "in flight"}]
    assert graph.fake.delivered == {}
    # Once the claim's lease has ended, the retry goes through, once.
    for snap in firestore_db.collection("capi_sent").stream():
        assert snap.to_dict()["status"] == "pending"
        snap.reference.update({"expires": time.time() - 1})
    third = client.post("/events", json=purchase("O-1"))
    assert third.status_code == 200 and third.get_json()["forwarded"] == 1
    assert graph.fake.delivered == {("Purchase", "O-1"): 1}
    # and now it is a duplicate
    fourth = client.post("/events", json=purchase("O-1")).get_json()
    assert fourth["skipped"] == [{"index": 0, "event_id": "O-1", "reason": "duplicate"}]


def test_stored_claim_suppresses_a_repeat(firestore_db: Any, graph: Any) -> None:
    graph.fake.down = "503"
    client = serve(make_app(graph, firestore=firestore_db, IDEMPOTENCY_COLLECTION="capi_sent"))
    assert client.post("/events", json=purchase("O-2")).status_code == 202
    [record] = [d.to_dict() for d in firestore_db.collection("capi_sent").stream()]
    assert record["status"] == "stored" and record["expires"] > time.time() + 47 * 3600
    repeat = client.post("/events", json=purchase("O-2"))
    assert repeat.status_code == 200
    assert repeat.get_json()["skipped"] == [{"index": 0, "event_id": "O-2", "reason": "duplicate"}]


# -- finding 5: a stalled or dead Firestore never holds /events for minutes ----------------


@pytest.fixture(scope="module")
def own_emulator() -> Iterator[tuple[str, subprocess.Popen]]:
    """An emulator for this module only: it gets paused and killed."""
    with emulator_process() as started:
        yield started


SCENARIOS = [
    # (guard on, Meta down, the status capi answers)
    (True, False, 503),  # the claim cannot be made: nothing sent, retry
    (False, True, 503),  # Meta down and the dead letter cannot be written: retry
    (False, False, 200),  # the profile lookup gives up; the event goes out unenriched
]


def _run_scenarios(db: Any, graph: Any) -> None:
    for guard, meta_down, status in SCENARIOS:
        graph.fake.down = "503" if meta_down else None
        env = {"IDEMPOTENCY_COLLECTION": "capi_sent"} if guard else {}
        client = serve(make_app(graph, firestore=db, PROFILE_COLLECTION="users", FIRESTORE_TIMEOUT_SECONDS="1", **env))
        started = time.monotonic()
        response = client.post("/events", json=purchase(f"F-{guard}-{meta_down}", user_id="u1"))  # u1 has a profile
        elapsed = time.monotonic() - started
        assert elapsed < ANSWER_WITHIN, (guard, meta_down, elapsed)
        assert response.status_code == status, (guard, meta_down, response.get_json())


def test_paused_then_killed_firestore_answers_within_bounds(own_emulator: Any, graph: Any) -> None:
    host, proc = own_emulator
    db = firestore_client_at(host)
    db.collection("users").document("u1").set({"phone": "+16505550100"})  # the connection is up
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        _run_scenarios(db, graph)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=15)
    _run_scenarios(db, graph)
