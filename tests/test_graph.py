"""The Graph API client against the loopback fake: retries, classification, timeouts."""

from __future__ import annotations

import time
from typing import Any

import pytest

from capi.delivery.graph import (
    FIX_PERMISSION,
    FIX_PIXEL,
    FIX_TOKEN,
    MAX_ANSWER_BYTES,
    GraphClient,
    RetryPolicy,
    classify,
)
from capi.errors import MetaAuthError, MetaError
from capi.secrets import StaticSecret
from tests.conftest import PIXEL_ID, TOKEN

BODY_EVENT = {
    "event_name": "Lead",
    "event_id": "e1",
    "action_source": "system_generated",
    "user_data": {"em": ["a" * 64]},
}


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(
    graph: Any, sleeps: Sleeps, *, token: str = TOKEN, timeout: float = 1.0, attempts: int = 4, budget: float = 10.0
) -> GraphClient:
    return GraphClient(
        base_url=graph.base_url,
        api_version="v26.0",
        pixel_id=PIXEL_ID,
        token=StaticSecret(token),
        timeout=timeout,
        policy=RetryPolicy(max_attempts=attempts, budget=budget),
        sleep=sleeps,
        rng=lambda: 0.5,
    )


def body() -> dict[str, Any]:
    return {"data": [{**BODY_EVENT, "event_time": int(time.time())}], "partner_agent": "test"}


@pytest.mark.parametrize(
    "failure",
    [
        "500",
        "503",
        "429",
        "code:1",
        "code:2",
        "code:4",
        "code:17",
        "code:341",
        "code:368",
        "code:613",
        "code:80004",
        "drop",
        "html",
    ],
)
def test_transient_failures_are_retried_then_delivered(graph: Any, failure: str) -> None:
    sleeps = Sleeps()
    graph.fake.fail_next(failure, failure)
    result = client(graph, sleeps).send(body())
    assert result.events_received == 1 and result.attempts == 3
    assert graph.fake.accepted_requests == 1
    assert sleeps == [0.375, 0.75]  # exponential backoff with jitter (rng fixed at 0.5)


@pytest.mark.parametrize("failure", ["code:100", "code:3", "code:10", "code:200", "code:294"])
def test_permanent_failures_are_not_retried(graph: Any, failure: str) -> None:
    sleeps = Sleeps()
    graph.fake.fail_next(failure)
    with pytest.raises(MetaError) as info:
        client(graph, sleeps).send(body())
    assert info.value.transient is False
    assert info.value.meta_code == int(failure[5:])
    assert graph.fake.requests == 1 and sleeps == []


def test_retry_after_is_honoured(graph: Any) -> None:
    sleeps = Sleeps()
    graph.fake.fail_next("429", retry_after="2")
    assert client(graph, sleeps).send(body()).attempts == 2
    assert sleeps == [2.0]


def test_retry_after_beyond_budget_gives_up_as_transient(graph: Any) -> None:
    sleeps = Sleeps()
    graph.fake.fail_next("503", retry_after="60")
    with pytest.raises(MetaError) as info:
        client(graph, sleeps, budget=5).send(body())
    assert info.value.transient is True
    assert sleeps == [] and graph.fake.requests == 1


def test_attempts_are_bounded(graph: Any) -> None:
    sleeps = Sleeps()
    graph.fake.down = "500"
    with pytest.raises(MetaError) as info:
        client(graph, sleeps, attempts=4).send(body())
    assert info.value.transient is True and info.value.meta_code == 2
    assert graph.fake.requests == 4 and len(sleeps) == 3


def test_a_deadline_ends_the_retries_before_the_budget(graph: Any) -> None:
    # The parts of a split batch share the split's time (capi.delivery.split): no retry past it.
    sleeps = Sleeps()
    graph.fake.down = "500"
    with pytest.raises(MetaError) as info:
        client(graph, sleeps, attempts=4).send(body(), deadline=time.monotonic() + 0.2)
    assert info.value.transient is True
    assert graph.fake.requests == 1 and sleeps == []  # the first backoff (0.375 s) would pass the deadline


def test_hung_connection_times_out_and_is_retried(graph: Any) -> None:
    sleeps = Sleeps()
    graph.fake.fail_next("hang")
    started = time.monotonic()
    result = client(graph, sleeps, timeout=0.3).send(body())
    assert result.attempts == 2
    assert time.monotonic() - started < 3


def test_unreachable_meta_is_transient() -> None:
    sleeps = Sleeps()
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    graph_client = GraphClient(
        base_url=f"http://127.0.0.1:{port}",
        api_version="v26.0",
        pixel_id=PIXEL_ID,
        token=StaticSecret(TOKEN),
        policy=RetryPolicy(max_attempts=2),
        sleep=sleeps,
    )
    with pytest.raises(MetaError) as info:
        graph_client.send(body())
    assert info.value.transient is True and "ConnectionError" in info.value.message


def test_auth_error_refreshes_token_once() -> None:
    class Rotating:
        name = "rotating"

        def __init__(self) -> None:
            self.values = ["old", TOKEN]
            self.refreshes = 0

        def get(self, *, refresh: bool = False) -> str:
            if refresh:
                self.refreshes += 1
                self.values.pop(0)
            return self.values[0]

    from tests.fakes.graph import GraphServer

    with GraphServer() as graph:
        token = Rotating()
        graph_client = GraphClient(base_url=graph.base_url, api_version="v26.0", pixel_id=PIXEL_ID, token=token)
        assert graph_client.send(body()).events_received == 1
        assert token.refreshes == 1 and graph.fake.requests == 2


def test_invalid_event_rejects_whole_batch_at_meta(graph: Any) -> None:
    sleeps = Sleeps()
    bad = body()
    bad["data"].append({**BODY_EVENT, "event_time": int(time.time()) - 8 * 86400})
    with pytest.raises(MetaError) as info:
        client(graph, sleeps).send(bad)
    assert info.value.meta_code == 100 and info.value.meta_subcode == 2804003


@pytest.mark.parametrize(
    ("status", "payload", "transient", "kind"),
    [
        (400, {"error": {"code": 190, "message": "expired"}}, False, MetaAuthError),
        (400, {"error": {"code": 100, "error_subcode": 2804019, "message": "x"}}, False, MetaError),
        (400, {"error": {"code": 999, "message": "x", "is_transient": True}}, True, MetaError),
        (500, {"error": {"code": 999, "message": "x"}}, True, MetaError),
        (400, {"error": {"code": 999, "message": "x"}}, False, MetaError),
        (503, None, True, MetaError),
        (404, "not json", False, MetaError),
    ],
)
def test_classification(status: int, payload: Any, transient: bool, kind: type) -> None:
    error = classify(status, payload)
    assert type(error) is kind and error.transient is transient


# -- the policy alone, without a server (issue 15 item 3) ----------------------------------

TRANSIENT = MetaError("down", kind="transient")


def test_policy_backs_off_with_equal_jitter_then_gives_up() -> None:
    state = RetryPolicy(max_attempts=4, budget=100).start(now=0.0)
    waits = []
    for rng in (0.0, 1.0, 0.5):
        state = state.after(TRANSIENT, now=0.0, rng=lambda rng=rng: rng)
        assert state is not None and state.refresh is False
        waits.append(state.wait)
    # step 0.5, 1, 2 s: half fixed, half random (rng 0 -> half the step, rng 1 -> the whole step)
    assert waits == [0.25, 1.0, 1.5]
    assert state.after(TRANSIENT, now=0.0) is None  # the fourth failure ends it


def test_policy_honours_retry_after_inside_the_budget_only() -> None:
    state = RetryPolicy(budget=10).start(now=100.0)
    assert state.after(TRANSIENT, now=101.0, retry_after=3.0).wait == 3.0
    assert state.after(TRANSIENT, now=101.0, retry_after=9.5) is None  # would end past the budget


def test_policy_refreshes_the_token_once_without_counting_a_try() -> None:
    auth = MetaAuthError("expired", kind="config", meta_code=190)
    state = RetryPolicy(max_attempts=1).start(now=0.0)
    refreshed = state.after(auth, now=0.0)
    assert refreshed is not None and (refreshed.refresh, refreshed.wait, refreshed.attempts) == (True, 0.0, 0)
    assert refreshed.after(auth, now=0.0) is None


@pytest.mark.parametrize("kind", ["config", "refused", "unreadable"])
def test_policy_never_retries_what_is_not_transient(kind: str) -> None:
    assert RetryPolicy().start(now=0.0).after(MetaError("no", kind=kind), now=0.0) is None


def test_policy_stops_retrying_once_the_instance_is_stopping() -> None:
    state = RetryPolicy().start(now=0.0)
    assert state.after(TRANSIENT, now=0.0, stopping=True) is None
    auth = MetaAuthError("expired", kind="config", meta_code=190)
    assert state.after(auth, now=0.0, stopping=True) is None


def test_client_asks_no_new_try_once_stopping(graph: Any) -> None:
    sleeps = Sleeps()
    graph.fake.down = "503"
    graph_client = GraphClient(
        base_url=graph.base_url,
        api_version="v26.0",
        pixel_id=PIXEL_ID,
        token=StaticSecret(TOKEN),
        sleep=sleeps,
        stopping=lambda: True,
    )
    with pytest.raises(MetaError) as info:
        graph_client.send(body())
    assert info.value.kind == "transient" and graph.fake.requests == 1 and sleeps == []


def test_answer_over_the_bound_is_not_read_whole(graph: Any) -> None:
    graph.fake.huge_bytes = 16 * 1024 * 1024
    graph.fake.fail_next("huge_trace")
    started = time.monotonic()
    with pytest.raises(MetaError) as info:
        client(graph, Sleeps()).send(body())
    assert info.value.kind == "unreadable" and str(MAX_ANSWER_BYTES) in info.value.message
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("payload", "kind", "fix"),
    [
        ({"error": {"code": 190, "message": "expired"}}, "config", FIX_TOKEN),
        ({"error": {"code": 10, "message": "no permission"}}, "config", FIX_PERMISSION),
        ({"error": {"code": 803, "message": "no such object"}}, "config", FIX_PIXEL),
        ({"error": {"code": 100, "error_subcode": 33, "message": "no such object"}}, "config", FIX_PIXEL),
        ({"error": {"code": 100, "error_subcode": 2804003, "message": "bad event"}}, "refused", None),
        ({"error": {"code": 2, "message": "x"}}, "transient", None),
        ({"error": {"message": "no code"}}, "unreadable", None),
        ("<html>", "unreadable", None),
    ],
)
def test_classification_kinds(payload: Any, kind: str, fix: str | None) -> None:
    error = classify(400, payload)
    assert (error.kind, error.fix) == (kind, fix)


def test_metas_message_is_bounded() -> None:
    error = classify(400, {"error": {"code": 100, "message": "m" * 100_000, "fbtrace_id": "x" * 1000}})
    assert len(error.message) <= 501 and error.fbtrace_id is None
