"""Property-based tests of the delivery side (issue 19): whatever Meta answers, capi reads it
without an exception and with bounded, well-typed fields, and /events accounts for and keeps
every event (end to end, on the fake Graph API and the Firestore emulator); however bad events are spread, a
split batch accounts for every event once; any URL's host is a valid host or none."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from capi.delivery.graph import FBTRACE, MAX_MESSAGE_CHARS, GraphClient
from capi.delivery.split import send_split
from capi.destinations import HOST_PATTERN, event_host
from capi.errors import MetaError
from capi.payload import GraphResult
from capi.quality import quality_warnings, summarize

SETTINGS = settings(max_examples=200, deadline=None)

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
# Graph answers: Meta's own shapes with every field of any type, and anything else.
errors = st.fixed_dictionaries(
    {},
    optional={
        "code": json_values | st.integers(0, 3000),
        "error_subcode": json_values,
        "message": json_values,
        "error_user_msg": json_values,
        "is_transient": json_values,
        "fbtrace_id": json_values,
    },
)
answers = (
    st.fixed_dictionaries(
        {},
        optional={
            "events_received": json_values | st.integers(0, 1200),
            "messages": json_values,
            "fbtrace_id": json_values,
            "error": errors | json_values,
        },
    )
    | json_values
)


@SETTINGS
@given(status=st.integers(100, 599), payload=answers, sent=st.integers(1, 1000))
@example(status=200, payload={"events_received": 0}, sent=5)  # issue 19 finding 21
def test_any_graph_answer_is_read_without_an_exception(status: int, payload: Any, sent: int) -> None:
    raw = json.dumps(payload).encode()  # the standard encoder: integers past 64 bits included
    result = GraphClient._answer(SimpleNamespace(status=status), raw, 1, sent)  # type: ignore[arg-type]
    if isinstance(result, GraphResult):
        # Taken only on a 2xx that counts at least every event sent.
        assert 200 <= status < 300 and isinstance(result.events_received, int)
        assert result.events_received >= sent
        assert all(isinstance(m, str) and len(m) <= MAX_MESSAGE_CHARS + 1 for m in result.messages)
    else:
        assert isinstance(result, MetaError) and result.kind in ("transient", "config", "refused", "unreadable")
        assert isinstance(result.message, str) and len(result.message) < 2 * MAX_MESSAGE_CHARS + 200
    trace = result.fbtrace_id
    assert trace is None or FBTRACE.fullmatch(trace)


@SETTINGS
@given(
    entry=st.dictionaries(
        st.sampled_from(
            ["event_name", "event_match_quality", "dedupe_key_feedback", "event_coverage", "acr", "data_freshness"]
        ),
        json_values
        | st.dictionaries(
            st.sampled_from(["composite_score", "match_key_feedback", "diagnostics", "percentage", "upload_frequency"]),
            json_values,
        ),
    )
)
def test_any_dataset_quality_entry_is_summarized(entry: dict[str, Any]) -> None:  # fmt: skip
    summary = summarize(entry, 6.0)
    assert isinstance(summary["event_name"], str)
    assert summary["score"] is None or isinstance(summary["score"], int | float)
    assert all(isinstance(k, str) for k in summary["match_keys"]) and all(isinstance(k, str) for k in summary["dedupe"])
    assert summary["data_freshness"] is None or isinstance(summary["data_freshness"], str)
    for diagnostic in summary["diagnostics"]:
        assert diagnostic["name"] is None or isinstance(diagnostic["name"], str)
    for warning in quality_warnings(entry, 50.0):
        assert isinstance(warning["event_name"], str) and isinstance(warning["fix"], str)


class PoisonedMeta:
    """Meta as the split sees it: a batch holding a bad event is refused whole (code 100)."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad

    def send(self, body: dict[str, Any], *, deadline: float | None = None) -> GraphResult:
        if any(event["n"] in self.bad for event in body["data"]):
            raise MetaError("Invalid parameter", kind="refused", meta_code=100, meta_subcode=2804003)
        return GraphResult(events_received=len(body["data"]), fbtrace_id=None)


@SETTINGS
@given(data=st.data(), size=st.integers(1, 300))
def test_split_accounts_for_every_event_once(data: st.DataObject, size: int) -> None:
    bad = data.draw(st.sets(st.integers(0, size - 1), max_size=min(size, 12)))
    events = [{"n": n} for n in range(size)]
    sent = send_split(PoisonedMeta(bad), events, None, stopping=lambda: False)
    delivered, refused = set(sent.delivered), {p for p, _ in sent.refused}
    kept = [p for positions, _ in sent.kept for p in positions]
    assert sorted([*delivered, *refused, *kept]) == list(range(size))  # each once
    assert refused <= bad and not delivered & bad  # a good event is never refused, a bad one never taken
    assert sent.calls <= 32


hosts = st.from_regex(
    r"[a-z0-9]([a-z0-9\-]{0,10}[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]{0,10}[a-z0-9])?){1,3}", fullmatch=True
)


@SETTINGS
@given(url=st.text(max_size=80) | st.builds("https://{}{}".format, st.text(max_size=30), st.text(max_size=30)))
def test_any_url_gives_a_valid_host_or_none(url: str) -> None:
    host = event_host(url)
    assert host is None or (host.startswith("[") or HOST_PATTERN.fullmatch(host))


@SETTINGS
@given(real=hosts, spelled=hosts, tail=st.sampled_from(["\\", "/", "?", "#"]))
def test_the_host_is_where_a_browser_goes(real: str, spelled: str, tail: str) -> None:
    # A browser ends the host at \ / ? # (WHATWG): what follows, an "@" included, is not the host.
    assert event_host(f"https://{real}{tail}@{spelled}/") == real.rstrip(".")


# End to end: whatever Meta answers to every call, /events answers a status its caller can act
# on, accounts for every event, and keeps what it could not deliver (Firestore emulator).
EVENTS = 3


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(status=st.sampled_from([200, 201, 202, 400, 401, 403, 404, 429, 500, 502, 503]), payload=answers)
@example(status=200, payload={"events_received": 0})  # finding 21
@example(status=200, payload={"events_received": EVENTS, "fbtrace_id": "A" * 5000})
@example(status=400, payload={"error": {"code": 100, "error_subcode": 2804003, "message": "bad"}})
@example(status=400, payload={"error": {"code": 190, "message": "token"}})
@example(status=500, payload={"error": {"code": 2**70, "is_transient": "yes"}})
@pytest.mark.emulator
def test_any_graph_answer_end_to_end(firestore_db: Any, graph: Any, status: int, payload: Any) -> None:
    from tests.conftest import make_app, purchase, serve

    graph.fake.answer = (status, payload)
    calls_before = graph.fake.requests
    client = serve(make_app(graph, firestore=firestore_db))
    response = client.post("/events", json={"events": [purchase(f"Q{n}") for n in range(EVENTS)]})
    assert response.status_code in (200, 202, 502), response.get_data(as_text=True)
    body = response.get_json()
    done = body["forwarded"] + body["stored"] + len(body["failed"]) + len(body["skipped"]) + len(body["rejected"])
    assert done == body["received"] == EVENTS, body
    # Meta took them: a 2xx JSON object without `error`, counting every event (in 64 bits).
    count = payload.get("events_received") if isinstance(payload, dict) and "error" not in payload else None
    if 200 <= status < 300 and type(count) is int and EVENTS <= count < 2**63:
        assert (response.status_code, body["forwarded"]) == (200, EVENTS)
    else:
        assert body["forwarded"] == 0  # nothing Meta did not clearly take is counted as delivered
        assert body["stored"] + len(body["failed"]) == EVENTS
    assert graph.fake.requests - calls_before <= 4 + 32  # the retries, then at most the split's calls
