"""Meta's refusals (docs/delivery.md "Delivery guarantees"), live and in replay.

Issue 10 findings 7, 8, 9 and 12, and the "events processed" log line (issue 14). Real peers:
the loopback fake Graph API and the Firestore emulator.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from capi.delivery import MAX_SPLIT_CALLS
from capi.delivery.graph import FIX_APP_SECRET, FIX_PERMISSION, FIX_PIXEL, FIX_TOKEN, literal_fix
from tests.conftest import PIXEL_ID, log_lines, make_app, purchase, serve

pytestmark = pytest.mark.emulator


NONE = {"forwarded": 0, "rejected": 0, "skipped": 0, "stored": 0, "failed": 0}  # by_event counts


def dead_letters(db: Any) -> dict[str, dict[str, Any]]:
    return {d.to_dict()["event_id"]: d.to_dict() for d in db.collection("capi_deadletter").stream()}


# -- finding 7: one refused event never sinks the others ----------------------------------


def test_refused_event_is_isolated_and_the_others_delivered(firestore_db: Any, graph: Any) -> None:
    graph.fake.poison = {"C"}
    client = serve(make_app(graph, firestore=firestore_db))
    ids = list("ABCDEFGH")
    response = client.post("/events", json={"events": [purchase(i) for i in ids]})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["forwarded"], body["stored"], body["events_received"]) == (7, 0, 7)
    assert body["failed"] == [
        {
            "index": 2,
            "event_id": "C",
            "message": "Invalid parameter: event 0: poisoned by the test",
            "meta_code": 100,
            "meta_subcode": 2804003,
        }
    ]
    assert body["event_ids"] == ["A", "B", "D", "E", "F", "G", "H"]
    assert graph.fake.delivered == {("Purchase", i): 1 for i in ids if i != "C"}
    # bisection: [A-H] refused, [A-D] refused, [A,B] ok, [C,D] refused, [C] refused, [D] ok, [E-H] ok
    assert graph.fake.requests == 7
    assert dead_letters(firestore_db) == {}  # the refused event is reported, never stored


def test_a_lone_refused_event_is_502_with_metas_message(firestore_db: Any, graph: Any) -> None:
    graph.fake.poison = {"X"}
    response = serve(make_app(graph, firestore=firestore_db)).post("/events", json=purchase("X"))
    assert response.status_code == 502
    body = response.get_json()
    assert (body["error"], body["meta_code"], body["meta_subcode"]) == ("meta_refused", 100, 2804003)
    assert [f["event_id"] for f in body["failed"]] == ["X"] and body["event_ids"] == []
    assert graph.fake.requests == 1 and dead_letters(firestore_db) == {}


def test_splitting_is_bounded_and_what_is_left_is_kept(firestore_db: Any, graph: Any) -> None:
    ids = [f"E{n:03d}" for n in range(200)]
    graph.fake.poison = set(ids[::10])  # 20 bad events spread over the batch
    client = serve(make_app(graph, firestore=firestore_db))
    response = client.post("/events", json={"events": [purchase(i) for i in ids]})
    body = response.get_json()
    assert graph.fake.requests <= MAX_SPLIT_CALLS
    assert response.status_code == 202 and body["error"] == "meta_refused"
    stored = dead_letters(firestore_db)
    failed = {f["event_id"] for f in body["failed"]}
    delivered = {event_id for _, event_id in graph.fake.delivered}
    # every event is delivered, reported refused, or kept for the replay to split further
    assert delivered | failed | set(stored) == set(ids)
    assert not delivered & failed and not delivered & set(stored) and not failed & set(stored)
    assert body["forwarded"] == len(delivered) and body["stored"] == len(stored)
    # and the replays finish the job: the good events all reach Meta once, the bad never
    for _ in range(10):
        if not dead_letters(firestore_db):
            break
        client.post("/replay")
    assert set(graph.fake.delivered) == {("Purchase", i) for i in ids if i not in graph.fake.poison}
    assert graph.fake.duplicates == 0


def test_parts_of_a_split_share_its_time_and_what_is_not_sent_by_then_is_kept() -> None:
    from capi.delivery import SPLIT_SECONDS, send_split
    from capi.errors import MetaError

    now = [0.0]
    calls: list[tuple[int, float | None]] = []

    class SlowRefusals:
        """Meta refuses every batch (one bad event in it); the first answer is quick, the next slow."""

        def send(self, body: dict[str, Any], *, deadline: float | None = None) -> Any:
            calls.append((len(body["data"]), deadline))
            now[0] += 1 if len(calls) == 1 else SPLIT_SECONDS + 1
            raise MetaError("Invalid parameter", kind="refused", meta_code=100, meta_subcode=2804003)

    events = [{"event_name": "Purchase", "event_id": f"S{n}"} for n in range(4)]
    sent = send_split(SlowRefusals(), events, None, clock=lambda: now[0], stopping=lambda: False)
    # The whole batch with the full retry budget, then its first half with the split's deadline;
    # the second half is never sent: the split's time is over, it waits for replay.
    assert calls == [(4, None), (2, SPLIT_SECONDS)]
    assert [group for group, _ in sent.kept] == [[0, 1], [2, 3]]
    assert sent.delivered == [] and sent.refused == [] and sent.calls == 2


def test_a_split_meeting_throttling_keeps_the_parts_not_sent_instead_of_calling_for_each() -> None:
    """Meta refuses the batch (one bad event), then throttles the first half: the other half would
    meet the same, so it is kept with it and not sent, sparing the pixel's quota (issue 24)."""
    from capi.delivery import send_split
    from capi.errors import MetaError

    calls: list[int] = []

    class RefusesThenThrottles:
        def send(self, body: dict[str, Any], *, deadline: float | None = None) -> Any:
            calls.append(len(body["data"]))
            if len(calls) == 1:
                raise MetaError("Invalid parameter", kind="refused", meta_code=100, meta_subcode=2804003)
            raise MetaError("Too many calls", kind="transient", meta_code=80004)

    events = [{"event_name": "Purchase", "event_id": f"T{n}"} for n in range(8)]
    sent = send_split(RefusesThenThrottles(), events, None, stopping=lambda: False)
    assert calls == [8, 4]
    assert [group for group, _ in sent.kept] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert {error.meta_code for _, error in sent.kept} == {80004}
    assert sent.delivered == [] and sent.refused == [] and sent.calls == 2


def test_replay_isolates_a_poisoned_dead_letter(firestore_db: Any, graph: Any, capsys: Any) -> None:
    graph.fake.down = "503"
    client = serve(make_app(graph, firestore=firestore_db))
    ids = [f"R{n}" for n in range(6)]
    assert client.post("/events", json={"events": [purchase(i) for i in ids]}).status_code == 202
    graph.fake.down = None
    graph.fake.poison = {"R4"}
    capsys.readouterr()
    counts = client.post("/replay").get_json()
    assert (counts["delivered"], counts["rejected"], counts["failed"]) == (5, 1, 0)
    assert dead_letters(firestore_db) == {}
    assert graph.fake.delivered == {("Purchase", i): 1 for i in ids if i != "R4"}
    out = capsys.readouterr().out
    [dropped] = log_lines(out, "dead letter dropped: refused by Meta")
    assert (dropped["severity"], dropped["event_id"], dropped["meta_code"]) == ("ERROR", "R4", 100)
    [summary] = log_lines(out, "replay finished")
    assert summary["severity"] == "WARNING" and summary["rejected"] == 1


# -- finding 8: a refused configuration keeps the events -----------------------------------


@pytest.mark.parametrize(
    ("answer", "code", "subcode", "fix", "calls"),
    [
        # The token is re-read once (rotation) first; it came from META_ACCESS_TOKEN (issue 20 item 4).
        ("code:190", 190, None, literal_fix(FIX_TOKEN, token=True, app_secret=True), 2),
        ("code:10", 10, None, FIX_PERMISSION, 1),
        ("code:200", 200, None, FIX_PERMISSION, 1),
        ("code:294", 294, None, FIX_PERMISSION, 1),
        ("code:803", 803, None, FIX_PIXEL, 1),
        ("code:100:33", 100, 33, FIX_PIXEL, 1),
    ],
)
def test_refused_configuration_stores_then_replay_delivers(
    firestore_db: Any, graph: Any, capsys: Any, answer: str, code: int, subcode: int | None, fix: str, calls: int
) -> None:
    graph.fake.down = answer
    client = serve(make_app(graph, firestore=firestore_db))
    response = client.post("/events", json={"events": [purchase("K1"), purchase("K2")]})
    assert response.status_code == 202
    body = response.get_json()
    assert (body["error"], body["stored"], body["forwarded"], body["meta_code"]) == ("meta_config", 2, 0, code)
    assert body["fix"] == fix and body["failed"] == []
    assert graph.fake.requests == calls  # not split, not retried: the events are not the problem
    assert set(dead_letters(firestore_db)) == {"K1", "K2"}
    out = capsys.readouterr().out
    [error] = log_lines(out, "Meta refused capi's configuration")
    assert error["severity"] == "ERROR"
    assert (error["error"], error["meta_code"], error.get("meta_subcode"), error["fix"], error["stored"]) == (
        "meta_config",
        code,
        subcode,
        fix,
        2,
    )
    [processed] = log_lines(out, "events processed")
    assert (
        processed["severity"],
        processed["status"],
        processed["error"],
        processed["meta_code"],
        processed["stored"],
        processed["forwarded"],
        processed["by_event"],
    ) == ("WARNING", 202, "meta_config", code, 2, 0, {"Purchase": {**NONE, "stored": 2}})
    # the configuration is fixed: the replay delivers them
    graph.fake.down = None
    assert client.post("/replay").get_json()["delivered"] == 2
    assert graph.fake.delivered == {("Purchase", "K1"): 1, ("Purchase", "K2"): 1}


def test_wrong_app_secret_is_configuration_not_the_events(firestore_db: Any, graph: Any) -> None:
    graph.fake.app_secret = "the-right-one"
    client = serve(make_app(graph, firestore=firestore_db, META_APP_SECRET="a-wrong-one"))
    response = client.post("/events", json={"events": [purchase("S1"), purchase("S2")]})
    assert response.status_code == 202
    # The secret came from META_APP_SECRET: that is the setting named (issue 20 item 4).
    fix = literal_fix(FIX_APP_SECRET, token=True, app_secret=True)
    assert "check META_APP_SECRET:" in fix and "META_APP_SECRET_SECRET" not in fix
    assert (response.get_json()["error"], response.get_json()["fix"]) == ("meta_config", fix)
    assert graph.fake.requests == 1 and set(dead_letters(firestore_db)) == {"S1", "S2"}


# -- findings 9 and 12: an answer capi cannot read -----------------------------------------


@pytest.mark.parametrize("answer", ["garbage", "html200", "no_count", "huge_trace"])
def test_unreadable_answer_is_kept_for_replay(firestore_db: Any, graph: Any, answer: str) -> None:
    graph.fake.fail_next(answer)
    client = serve(make_app(graph, firestore=firestore_db))
    started = time.monotonic()
    response = client.post("/events", json=purchase("U1"))
    assert time.monotonic() - started < 5
    assert response.status_code == 202
    body = response.get_json()
    assert (body["error"], body["stored"], body["forwarded"]) == ("meta_unreadable", 1, 0)
    assert len(response.get_data()) < 2048  # nothing of Meta's answer is echoed
    assert graph.fake.requests == 1  # not resent blindly within the request
    assert set(dead_letters(firestore_db)) == {"U1"}
    # Meta did take it; the replay sends a second copy, which Meta deduplicates by event_id
    assert client.post("/replay").get_json()["delivered"] == 1
    assert graph.fake.delivered[("Purchase", "U1")] == 2


def test_malformed_fbtrace_id_is_not_echoed(firestore_db: Any, graph: Any) -> None:
    graph.fake.fail_next("bad_trace")
    response = serve(make_app(graph, firestore=firestore_db)).post("/events", json=purchase("T1"))
    assert response.status_code == 200
    body = response.get_json()
    assert (body["events_received"], body["fbtrace_id"]) == (1, None)


# -- issue 14: the "events processed" line -------------------------------------------------


def test_events_processed_line_has_the_contract_fields(firestore_db: Any, graph: Any, capsys: Any) -> None:
    graph.fake.poison = {"P-bad"}
    client = serve(make_app(graph, firestore=firestore_db))
    events = [
        purchase("P-ok", user_data={"email_address": "a@b.co", "phone_number": "+16505550100"}),
        {
            "event_name": "page_view",
            "event_id": "pv",
            "page_location": "https://x.example/",
            "user_agent": "Mozilla/5.0",
        },
        purchase("P-old", event_time=int(time.time()) - 8 * 86400),
        purchase("P-bad"),
    ]
    capsys.readouterr()
    assert client.post("/events", json={"events": events}).status_code == 200
    [line] = log_lines(capsys.readouterr().out, "events processed")
    assert line["severity"] == "INFO"
    fields = {k: v for k, v in line.items() if k not in ("severity", "message", "time", "logger")}
    assert fields == {
        "status": 200,
        "received": 4,
        "forwarded": 1,
        "stored": 0,
        "skipped": 1,
        "rejected": 1,
        "failed": 1,
        "by_event": {
            # Keyed by the Meta name, whatever the outcome: a rejected purchase is still a Purchase.
            "Purchase": {"forwarded": 1, "rejected": 1, "skipped": 0, "stored": 0, "failed": 1},
            "PageView": {"forwarded": 0, "rejected": 0, "skipped": 1, "stored": 0, "failed": 0},
        },
        "match_keys": {"em": 1, "ph": 1, "client_user_agent": 1},
        "from_profile": {},
        "rejections": [{"index": 2, "field": "event_time", "reason": line["rejections"][0]["reason"]}],
        "error": "meta_refused",
        "meta_code": 100,
        "meta_subcode": 2804003,
        "events_received": 1,
        "fbtrace_id": "AbCdEf123",
        # No event carried a consent signal: counted, never a value (capi.consent).
        "consent": {"none": {"granted": 2}},
        "skip_reasons": {"not in FORWARD_EVENTS": 1},
    }
    assert "a@b.co" not in json.dumps(line)


def test_no_new_call_once_the_instance_is_stopping(graph: Any) -> None:
    from capi.delivery import send_split
    from capi.delivery.graph import GraphClient
    from capi.secrets import StaticSecret

    graph.fake.poison = {"E1"}
    stopping = [False]

    class StopAfterFirstCall:
        def __init__(self) -> None:
            self.client = GraphClient(
                base_url=graph.base_url, api_version="v26.0", pixel_id=PIXEL_ID, token=StaticSecret(graph.fake.token)
            )

        def send(self, body: dict[str, Any], *, deadline: float | None = None) -> Any:
            stopping[0] = True  # SIGTERM arrives during the first call
            return self.client.send(body)

    now = int(time.time())
    events = [
        {"event_name": "Lead", "event_id": f"E{n}", "event_time": now, "action_source": "app",
         "user_data": {"em": ["a" * 64]}}
        for n in range(4)
    ]  # fmt: skip
    sent = send_split(StopAfterFirstCall(), events, None, stopping=lambda: stopping[0])
    assert graph.fake.requests == 1 and sent.delivered == [] and sent.refused == []
    # the refused batch is not split any more: both halves are kept for replay
    assert sorted(p for group, _ in sent.kept for p in group) == [0, 1, 2, 3]
