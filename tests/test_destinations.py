"""Several pixels (docs/destinations.md): configuration, routing, fan-out, partial failure,
replay to the right destination, and calls made in parallel.

Real peers: the loopback fake Graph API serving three pixels (each with its own token) and
the Firestore emulator for dead letters and the idempotency guard.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from capi.app import Application, application_from_env, exit_on_config_error
from capi.config import load_config
from capi.delivery.deadletter import FirestoreDeadLetter
from capi.delivery.replay import Replayer
from capi.destinations import Destination, host_matches
from capi.errors import ConfigError
from capi.payload import GraphResult
from capi.service import EventService, Target
from tests.conftest import EMULATOR_PROJECT, log_lines, serve
from tests.fakes.graph import GraphServer

UA = "Mozilla/5.0"
NOW = int(time.time())
# Three datasets: two brands routed by their shop's host, and an agency pixel that gets every event.
BRAND_A = {
    "name": "brand_a",
    "pixel_id": "111",
    "access_token": "tok-a",
    "hosts": ["shop-a.example", "*.shop-a.example"],
}
BRAND_B = {"name": "brand_b", "pixel_id": "222", "access_token": "tok-b", "hosts": ["shop-b.example"]}
AGENCY = {"name": "agency", "pixel_id": "333", "access_token": "tok-agency"}
THREE = [BRAND_A, BRAND_B, AGENCY]


def purchase(event_id: str, url: str = "https://shop-a.example/checkout", **extra: Any) -> dict[str, Any]:
    return {
        "event_name": "purchase",
        "event_id": event_id,
        "event_time": NOW,
        "page_location": url,
        "user_agent": UA,
        "value": 5,
        "currency": "USD",
        "user_data": {"email_address": f"{event_id.lower()}@example.com"},
        **extra,
    }


def env_for(graph: GraphServer, destinations: list[dict[str, Any]], **extra: str) -> dict[str, str]:
    return {
        "META_DESTINATIONS": json.dumps(destinations),
        "GOOGLE_CLOUD_PROJECT": EMULATOR_PROJECT,
        "ALLOW_UNAUTHENTICATED": "true",
        "PROFILE_COLLECTION": "",
        "META_API_BASE_URL": graph.base_url,
        "META_TIMEOUT_SECONDS": "2",
        "META_RETRY_BUDGET_SECONDS": "10",
        **extra,
    }


def application(graph: GraphServer, destinations: list[dict[str, Any]], db: Any = None, **extra: str) -> Application:
    graph.fake.tokens.update({d["pixel_id"]: d["access_token"] for d in destinations})
    return Application(
        load_config(env_for(graph, destinations, **extra)),
        firestore_client=lambda: db,
        sleep=lambda s: None,
        rng=lambda: 0.5,
    )


def delivered_ids(graph: GraphServer, pixel: str) -> list[str]:
    return sorted(event_id for (_, event_id) in graph.fake.delivered_by_pixel.get(pixel, {}))


# -- configuration ----------------------------------------------------------------------


def test_pixel_id_alone_is_one_destination_named_default() -> None:
    config = load_config({"META_PIXEL_ID": "123", "META_ACCESS_TOKEN": "t", "META_TEST_EVENT_CODE": "T1"})
    [default] = config.destinations
    assert (default.name, default.pixel_id, default.access_token, default.hosts) == ("default", "123", "t", ())
    assert default.implicit and default.forward_events == config.forward_events


def test_destinations_parsed_with_their_own_settings() -> None:
    entries = [
        {**BRAND_A, "test_event_code": "TA", "forward_events": ["purchase", "Lead"]},
        {"name": "b", "pixel_id": 222, "access_token_secret": "tok-b", "app_secret_secret": "app-b"},
        {
            "name": "c",
            "pixel_id": "333",
            "access_token": "LITERAL-C",
            "forward_events": "*",
            "hosts": ["Shop.Example."],
        },
    ]
    config = load_config({"META_DESTINATIONS": json.dumps(entries), "GOOGLE_CLOUD_PROJECT": "p"})
    a, b, c = config.destinations
    assert (a.test_event_code, a.forward_events, a.hosts) == (
        "TA",
        {"purchase", "Lead"},
        ("shop-a.example", "*.shop-a.example"),
    )
    assert (b.pixel_id, b.access_token_secret, b.app_secret_secret) == ("222", "tok-b", "app-b")
    assert b.forward_events == config.forward_events  # none of its own: FORWARD_EVENTS
    assert (c.forward_events, c.hosts) == (None, ("shop.example",))
    assert config.pixel_id is None and "LITERAL-C" not in repr(config)


GOOD = {"name": "a", "pixel_id": "1", "access_token": "t"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[oops", "META_DESTINATIONS must be a JSON array of destinations"),
        ("[]", "META_DESTINATIONS must be a non-empty JSON array of destinations"),
        (json.dumps([GOOD, {**GOOD, "pixel_id": "2"}]), "META_DESTINATIONS names the destination 'a' twice"),
        (json.dumps([{**GOOD, "pixel_id": "12ab"}]), "META_DESTINATIONS destination 'a': pixel_id must be digits"),
        (
            json.dumps([{"name": "a", "pixel_id": "1"}]),
            "META_DESTINATIONS destination 'a' has no token: give access_token_secret (or access_token for local runs)",
        ),
        (
            json.dumps([{**GOOD, "hosts": ["https://shop.example/"]}]),
            "META_DESTINATIONS destination 'a': bad host pattern 'https://shop.example/' (a host name such as"
            " shop.example.com, or *.example.com; no scheme, port or path)",
        ),
        (
            json.dumps([{**GOOD, "hosts": ["shop.*.example"]}]),
            "META_DESTINATIONS destination 'a': bad host pattern 'shop.*.example' (a host name such as"
            " shop.example.com, or *.example.com; no scheme, port or path)",
        ),
        (
            json.dumps([{**GOOD, "hosts": []}]),
            "META_DESTINATIONS destination 'a': hosts must be a non-empty array of host names",
        ),
        (
            json.dumps([{**GOOD, "name": "a b"}]),
            "META_DESTINATIONS entry 0: name must be 1-64 letters, digits, '_' or '-'",
        ),
        (json.dumps([{**GOOD, "token": "x"}]), "META_DESTINATIONS destination 'a': unknown key(s) 'token'"),
        (
            json.dumps([{**GOOD, "forward_events": ""}]),
            "META_DESTINATIONS destination 'a': forward_events is empty: list event names or use *",
        ),
        (json.dumps([GOOD] * 21), "META_DESTINATIONS has 21 destinations; at most 20"),
    ],
)
def test_each_bad_destination_config_is_one_line_naming_the_variable(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"META_DESTINATIONS": value})
    assert (caught.value.message, caught.value.field) == (message, "META_DESTINATIONS")
    assert "\n" not in caught.value.message and '"t"' not in caught.value.message


@pytest.mark.parametrize(
    ("env", "message", "variable"),
    [
        ({}, "META_PIXEL_ID is required (your pixel / dataset id), or META_DESTINATIONS for several", "META_PIXEL_ID"),
        (
            {"META_PIXEL_ID": "1", "META_DESTINATIONS": json.dumps([GOOD])},
            "META_PIXEL_ID cannot be used with META_DESTINATIONS: give each destination its pixel_id and token",
            "META_PIXEL_ID",
        ),
        (
            {"META_ACCESS_TOKEN_SECRET": "s", "META_DESTINATIONS": json.dumps([GOOD])},
            "META_ACCESS_TOKEN_SECRET cannot be used with META_DESTINATIONS: give each destination its pixel_id"
            " and token",
            "META_ACCESS_TOKEN_SECRET",
        ),
        (
            {"META_DESTINATIONS": json.dumps([{"name": "a", "pixel_id": "1", "access_token_secret": "tok"}])},
            "META_DESTINATIONS 'a' access_token_secret is a short secret name, so GOOGLE_CLOUD_PROJECT must be set"
            " (or give projects/P/secrets/S/versions/V)",
            "META_DESTINATIONS",
        ),
    ],
)
def test_pixel_id_or_destinations_exactly_one(env: dict[str, str], message: str, variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    assert (caught.value.message, caught.value.field) == (message, variable)


def test_start_up_prints_one_line_for_a_bad_destination(capsys: Any) -> None:
    env = {"META_DESTINATIONS": json.dumps([GOOD, GOOD])}
    with pytest.raises(SystemExit):
        exit_on_config_error(lambda: application_from_env(env))
    [line] = capsys.readouterr().err.splitlines()
    assert json.loads(line) == {
        "severity": "CRITICAL",
        "message": "capi configuration error: META_DESTINATIONS names the destination 'a' twice",
        "variable": "META_DESTINATIONS",
    }


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("shop.example", "shop.example", True),
        ("shop.example", "www.shop.example", False),
        ("*.shop.example", "www.shop.example", True),
        ("*.shop.example", "a.b.shop.example", True),
        ("*.shop.example", "shop.example", False),  # the apex is listed on its own
        ("*.shop.example", "evilshop.example", False),
    ],
)
def test_host_patterns(pattern: str, host: str, matches: bool) -> None:
    assert host_matches(pattern, host) is matches


# -- routing ------------------------------------------------------------------------------


def test_three_pixels_routed_by_host_and_by_the_events_own_destinations(graph: GraphServer, capsys: Any) -> None:
    client = serve(application(graph, THREE))
    events = [
        purchase("E0", "https://www.shop-a.example/p"),  # brand_a (wildcard) + agency
        purchase("E1", "https://shop-b.example/p"),  # brand_b + agency
        purchase("E2", "https://SHOP-A.example:8443/p"),  # brand_a (exact, any case, any port) + agency
        purchase("E3", "https://shop-a.example/p", destinations=["brand_b"]),  # named: brand_b only
        purchase("E4", destinations=["brand_b", "nope"]),  # rejected: unknown name
        purchase("E5", "https://elsewhere.example/p"),  # agency only
    ]
    capsys.readouterr()
    response = client.post("/events", json={"events": events})
    assert response.status_code == 200
    body = response.get_json()
    assert delivered_ids(graph, "111") == ["E0", "E2"]
    assert delivered_ids(graph, "222") == ["E1", "E3"]
    assert delivered_ids(graph, "333") == ["E0", "E1", "E2", "E5"]
    # One Graph call per destination per request, each with its own token.
    assert graph.fake.requests_by_pixel == {"111": 1, "222": 1, "333": 1}
    assert {p: b[0]["access_token"] for p, b in graph.fake.bodies_by_pixel.items()} == {
        "111": "tok-a",
        "222": "tok-b",
        "333": "tok-agency",
    }
    assert (body["forwarded"], body["stored"], body["events_received"]) == (8, 0, 8)
    assert body["event_ids"] == ["E0", "E1", "E2", "E3", "E5"]
    assert body["rejected"] == [
        {
            "index": 4,
            "event_id": "E4",
            "field": "destinations",
            "message": "unknown destination(s) 'nope'; known: agency, brand_a, brand_b",
            "problems": [
                {"field": "destinations", "message": "unknown destination(s) 'nope'; known: agency, brand_a, brand_b"}
            ],
        }
    ]
    assert body["destinations"] == [
        {"name": n, "pixel_id": p, "forwarded": c, "stored": 0, "failed": 0, "events_received": c,
         "fbtrace_id": "AbCdEf123", "error": None}
        for n, p, c in (("brand_a", "111", 2), ("brand_b", "222", 2), ("agency", "333", 4))
    ]  # fmt: skip
    [line] = log_lines(capsys.readouterr().out, "events processed")
    assert (line["forwarded"], line["rejected"], line["by_event"]["Purchase"]["forwarded"]) == (8, 1, 8)
    assert line["destinations"] == {
        "brand_a": {"forwarded": 2, "stored": 0, "failed": 0},
        "brand_b": {"forwarded": 2, "stored": 0, "failed": 0},
        "agency": {"forwarded": 4, "stored": 0, "failed": 0},
    }
    assert line["match_keys"]["em"] == 8


def test_an_event_no_destination_takes_is_skipped_with_the_reason(graph: GraphServer) -> None:
    client = serve(application(graph, [BRAND_A, BRAND_B]))
    response = client.post(
        "/events",
        json={"events": [purchase("X0", "https://shop-a.example.evil/"), purchase("X1", "https://a.shop-b.example/")]},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["skipped"] == [
        {"index": 0, "event_id": "X0", "reason": "no destination"},
        {"index": 1, "event_id": "X1", "reason": "no destination"},  # shop-b.example lists no subdomains
    ]
    assert body["forwarded"] == 0 and graph.fake.requests == 0
    assert [d["forwarded"] for d in body["destinations"]] == [0, 0]


def test_forward_events_and_test_event_code_per_destination(graph: GraphServer) -> None:
    everything = {**AGENCY, "forward_events": "*", "test_event_code": "AGENCY-TEST"}
    only_leads = {**BRAND_B, "hosts": None, "forward_events": ["Lead"]}
    del only_leads["hosts"]
    app = application(graph, [BRAND_A, only_leads, everything], META_TEST_EVENT_CODE="ENV-TEST")
    client = serve(app)
    page_view = {
        "event_name": "page_view",
        "event_id": "PV",
        "page_location": "https://shop-a.example/",
        "user_agent": UA,
    }
    lead = {**purchase("L1"), "event_name": "generate_lead"}
    response = client.post("/events", json={"events": [page_view, purchase("P1"), lead]})
    assert response.status_code == 200
    # FORWARD_EVENTS' default leaves page_view out of brand_a; the agency forwards everything.
    assert delivered_ids(graph, "111") == ["L1", "P1"]
    assert delivered_ids(graph, "222") == ["L1"]
    assert delivered_ids(graph, "333") == ["L1", "P1", "PV"]
    codes = {p: b[0].get("test_event_code") for p, b in graph.fake.bodies_by_pixel.items()}
    assert codes == {"111": "ENV-TEST", "222": "ENV-TEST", "333": "AGENCY-TEST"}
    # The request's own code wins over both.
    client.post("/events", json={"events": [purchase("P2")], "test_event_code": "REQ"})
    assert {p: b[-1].get("test_event_code") for p, b in graph.fake.bodies_by_pixel.items()} == {
        "111": "REQ",
        "222": "ENV-TEST",  # took no event of this request: no call
        "333": "REQ",
    }
    # An event whose destinations all leave its name out is skipped, with FORWARD_EVENTS' reason.
    body = client.post("/events", json={"events": [purchase("N1", destinations=["brand_b"])]}).get_json()
    assert body["skipped"] == [{"index": 0, "event_id": "N1", "reason": "not in FORWARD_EVENTS"}]
    assert body["forwarded"] == 0 and delivered_ids(graph, "222") == ["L1"]


def test_validate_names_each_events_destinations(graph: GraphServer) -> None:
    client = serve(application(graph, THREE))
    body = client.post(
        "/validate", json={"events": [purchase("V0"), purchase("V1", "https://shop-b.example/")]}
    ).get_json()
    assert [m["destinations"] for m in body["match_keys"]] == [["brand_a", "agency"], ["brand_b", "agency"]]
    assert graph.fake.requests == 0


# -- one destination failing never holds back another ----------------------------------------


@pytest.mark.emulator
def test_refused_token_stores_for_that_destination_and_replay_sends_to_it_alone(
    firestore_db: Any, graph: GraphServer, capsys: Any
) -> None:
    app = application(graph, THREE, firestore_db)
    graph.fake.tokens["222"] = "rotated-by-someone"  # Meta no longer takes brand_b's token
    client = serve(app)
    capsys.readouterr()
    events = [purchase("R0"), purchase("R1", "https://shop-b.example/"), purchase("R2", "https://shop-b.example/")]
    response = client.post("/events", json={"events": events})
    assert response.status_code == 202
    body = response.get_json()
    assert delivered_ids(graph, "111") == ["R0"] and delivered_ids(graph, "333") == ["R0", "R1", "R2"]
    assert delivered_ids(graph, "222") == []
    assert (body["forwarded"], body["stored"], body["error"], body["meta_code"]) == (4, 2, "meta_config", 190)
    assert body["message"].startswith("destination brand_b: Meta refused capi's configuration")
    assert body["fix"] == (  # brand_b's token is a literal `access_token`: that key is named (issue 20 item 4)
        "rotate the token: set access_token of destination 'brand_b' (META_DESTINATIONS) to a new token"
        " (Meta says it is invalid or expired)"
    )
    assert body["event_ids"] == ["R0", "R1", "R2"]
    a, b, agency = body["destinations"]
    assert (a["forwarded"], a["error"], agency["forwarded"], agency["error"]) == (1, None, 3, None)
    assert (b["forwarded"], b["stored"], b["error"], b["fbtrace_id"]) == (0, 2, "meta_config", "TRACE190")
    # Its events are kept for it alone, marked with the destination and its pixel.
    stored = [d.to_dict() for d in firestore_db.collection("capi_deadletter").stream()]
    assert sorted((d["event_id"], d["destination"], d["pixel_id"]) for d in stored) == [
        ("R1", "brand_b", "222"),
        ("R2", "brand_b", "222"),
    ]
    out = capsys.readouterr().out
    [refusal] = log_lines(out, "Meta refused capi's configuration")
    assert (refusal["destination"], refusal["stored"], refusal["meta_code"]) == ("brand_b", 2, 190)
    assert refusal["fix"] == body["fix"]
    assert [line["destination"] for line in log_lines(out, "events stored for replay")] == ["brand_b"]
    assert {line["destination"] for line in log_lines(out, "Meta call failed")} == {"brand_b"}
    [processed] = log_lines(out, "events processed")
    assert (processed["severity"], processed["status"], processed["error"]) == ("WARNING", 202, "meta_config")
    assert processed["destinations"]["brand_b"] == {"forwarded": 0, "stored": 2, "failed": 0}
    assert "tok-b" not in out and "tok-a" not in out

    # WHEN the token is fixed and the replay runs: brand_b alone gets its two events.
    graph.fake.tokens["222"] = "tok-b"
    before = dict(graph.fake.requests_by_pixel)
    replay = app.replay(_post_request())
    assert replay.status_code == 200
    assert json.loads(replay.get_data())["delivered"] == 2
    assert delivered_ids(graph, "222") == ["R1", "R2"]
    assert graph.fake.requests_by_pixel["111"] == before["111"] and graph.fake.requests_by_pixel["333"] == before["333"]
    assert graph.fake.bodies_by_pixel["222"][-1]["access_token"] == "tok-b"
    assert list(firestore_db.collection("capi_deadletter").stream()) == []
    assert all(n == 1 for counts in graph.fake.delivered_by_pixel.values() for n in counts.values())


@pytest.mark.emulator
def test_one_destination_down_while_the_others_deliver(firestore_db: Any, graph: GraphServer) -> None:
    app = application(graph, THREE, firestore_db, META_MAX_ATTEMPTS="3")
    graph.fake.pixel_down["333"] = "503"
    response = serve(app).post("/events", json={"events": [purchase("D0"), purchase("D1", "https://shop-b.example/")]})
    assert response.status_code == 202
    body = response.get_json()
    assert delivered_ids(graph, "111") == ["D0"] and delivered_ids(graph, "222") == ["D1"]
    assert graph.fake.requests_by_pixel == {"111": 1, "222": 1, "333": 3}  # its own retries only
    assert [(d["name"], d["stored"], d["error"]) for d in body["destinations"]] == [
        ("brand_a", 0, None),
        ("brand_b", 0, None),
        ("agency", 2, "meta_unavailable"),
    ]
    assert body["error"] == "meta_unavailable"


@pytest.mark.emulator
def test_nothing_stored_and_meta_down_for_one_destination_is_503(firestore_emulator: str, graph: GraphServer) -> None:
    from tests.fakes.emulator import dead_firestore

    # Firestore refuses every write: nothing can be stored
    app = application(graph, THREE, dead_firestore(EMULATOR_PROJECT), META_MAX_ATTEMPTS="1")
    graph.fake.pixel_down["111"] = "503"
    response = serve(app).post("/events", json={"events": [purchase("U0")]})
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"] == "store_unavailable" and body["event_ids"] == ["U0"]
    assert [(d["name"], d["forwarded"], d["error"]) for d in body["destinations"]] == [
        ("brand_a", 0, "store_unavailable"),
        ("brand_b", 0, None),
        ("agency", 1, None),
    ]
    assert delivered_ids(graph, "333") == ["U0"]


@pytest.mark.emulator
def test_idempotency_guard_is_per_destination(firestore_db: Any, graph: GraphServer) -> None:
    client = serve(application(graph, THREE, firestore_db, IDEMPOTENCY_COLLECTION="capi_sent"))
    first = client.post("/events", json={"events": [purchase("I0", destinations=["brand_a"])]})
    assert first.status_code == 200 and delivered_ids(graph, "111") == ["I0"]
    # The same event for brand_a and brand_b: brand_a has it already, brand_b gets it.
    second = client.post("/events", json={"events": [purchase("I0", destinations=["brand_a", "brand_b"])]}).get_json()
    assert second["skipped"] == [] and second["forwarded"] == 1 and second["event_ids"] == ["I0"]
    assert delivered_ids(graph, "222") == ["I0"] and graph.fake.delivered_by_pixel["111"][("Purchase", "I0")] == 1
    # Once every destination has it, it is a duplicate.
    third = client.post("/events", json={"events": [purchase("I0", destinations=["brand_a", "brand_b"])]}).get_json()
    assert third["skipped"] == [{"index": 0, "event_id": "I0", "reason": "duplicate"}] and third["forwarded"] == 0
    assert graph.fake.requests_by_pixel == {"111": 1, "222": 1}


@pytest.mark.emulator
def test_replay_sends_old_dead_letters_to_the_only_destination_and_keeps_unknown_ones(
    firestore_db: Any, graph: GraphServer
) -> None:
    app = application(graph, [AGENCY], firestore_db)
    # Written before destinations, for the pixel agency sends to (issue 19 F6: a dead letter of
    # another pixel is another configuration's and is left alone, as the removed one is).
    old = FirestoreDeadLetter(lambda: firestore_db, "capi_deadletter", "333")
    gone = FirestoreDeadLetter(lambda: firestore_db, "capi_deadletter", "444", destination="removed")
    event = {"event_name": "Purchase", "event_id": "OLD", "event_time": NOW, "action_source": "website",
             "event_source_url": "https://shop.example/", "user_data": {"client_user_agent": UA}}  # fmt: skip
    from capi.errors import MetaError

    old.store([event], MetaError("down", kind="transient"), None)
    gone.store([{**event, "event_id": "GONE"}], MetaError("down", kind="transient"), None)
    firestore_db.collection("capi_deadletter").document(_only_doc(firestore_db, "OLD")).update({"destination": None})
    counts = Replayer(lambda: firestore_db, "capi_deadletter", app.senders).run()
    assert (counts["delivered"], counts["unrouted"]) == (1, 1)
    assert delivered_ids(graph, "333") == ["OLD"]
    assert [d.to_dict()["event_id"] for d in firestore_db.collection("capi_deadletter").stream()] == ["GONE"]


def _only_doc(db: Any, event_id: str) -> str:
    [doc] = [d for d in db.collection("capi_deadletter").stream() if d.to_dict()["event_id"] == event_id]
    return doc.id


def _post_request() -> Any:
    import flask

    app = flask.Flask("replay")
    with app.test_request_context("/", method="POST"):
        return flask.request._get_current_object()


# -- in parallel ----------------------------------------------------------------------------


def test_two_destinations_overlap_instead_of_adding_up(graph: GraphServer) -> None:
    two = [{**BRAND_A, "hosts": None}, {**AGENCY}]
    del two[0]["hosts"]
    client = serve(application(graph, two))
    solo = serve(application(graph, [AGENCY]))
    graph.fake.pixel_latency.update({"111": 0.3, "333": 0.3})
    client.post("/events", json={"events": [purchase("W-warm")]})  # connections open
    solo.post("/events", json={"events": [purchase("W-warm1")]})

    started = time.perf_counter()
    assert solo.post("/events", json={"events": [purchase("W1")]}).status_code == 200
    one = time.perf_counter() - started
    started = time.perf_counter()
    assert client.post("/events", json={"events": [purchase("W2")]}).status_code == 200
    both = time.perf_counter() - started
    print(f"one destination: {one * 1000:.0f} ms; two destinations: {both * 1000:.0f} ms")
    assert 0.3 <= one < 0.5 and 0.3 <= both < 0.5  # not 0.6: the calls overlap
    assert delivered_ids(graph, "111") == ["W-warm", "W2"]


class Recorder:
    def __init__(self) -> None:
        self.threads: list[str] = []

    def send(self, body: dict[str, Any], *, deadline: float | None = None) -> GraphResult:
        self.threads.append(threading.current_thread().name)
        return GraphResult(events_received=len(body["data"]), fbtrace_id=None, messages=[], attempts=1)


def _service(*names: str) -> tuple[EventService, list[Recorder]]:
    config = load_config({"META_PIXEL_ID": "1", "META_ACCESS_TOKEN": "t"})
    recorders = [Recorder() for _ in names]
    targets = [
        Target(Destination(n, str(i + 1), access_token="t"), r)
        for i, (n, r) in enumerate(zip(names, recorders, strict=True))
    ]
    return EventService(config, targets=targets), recorders


def test_one_destination_runs_inline_several_in_threads() -> None:
    service, [only] = _service("default")
    assert service.forward({"events": [purchase("T1")]}).body["forwarded"] == 1
    assert only.threads == [threading.current_thread().name]
    service, recorders = _service("a", "b", "c")
    assert service.forward({"events": [purchase("T2")]}).body["forwarded"] == 3
    names = [r.threads[0] for r in recorders]
    assert names[0] == threading.current_thread().name  # the first in the request's thread
    assert all(n.startswith("capi-destination") for n in names[1:])


def test_quality_reads_every_destination(graph: GraphServer) -> None:
    app = application(graph, THREE)
    assert [(d.name, d.pixel_id) for d in app.quality_report._destinations] == [
        ("brand_a", "111"),
        ("brand_b", "222"),
        ("agency", "333"),
    ]


@pytest.mark.emulator
def test_a_destinations_unreadable_token_holds_back_no_other(
    graph: GraphServer, secret_manager: Any, firestore_db: Any
) -> None:
    # brand_a's token is in Secret Manager; agency's secret has no version yet: nothing can be sent to it.
    secret_manager.fake.add_version(f"projects/{EMULATOR_PROJECT}/secrets/tok-a", "tok-a")
    entries = [
        {**{k: v for k, v in BRAND_A.items() if k != "access_token"}, "access_token_secret": "tok-a"},
        {**{k: v for k, v in AGENCY.items() if k != "access_token"}, "access_token_secret": "tok-agency"},
    ]
    graph.fake.tokens.update({"111": "tok-a", "333": "tok-agency"})
    app = Application(
        load_config(env_for(graph, entries)),
        secret_client=secret_manager.client(),
        firestore_client=lambda: firestore_db,
    )
    response = serve(app).post("/events", json={"events": [purchase("S0")]})
    # Issue 19 F18: agency's events are stored for replay, as for a token Meta refused.
    assert response.status_code == 202
    body = response.get_json()
    assert delivered_ids(graph, "111") == ["S0"] and graph.fake.requests_by_pixel == {"111": 1}
    assert body["error"] == "secret_unavailable" and body["message"].startswith("destination agency: ")
    assert [(d["name"], d["forwarded"], d["stored"], d["error"]) for d in body["destinations"]] == [
        ("brand_a", 1, 0, None),
        ("agency", 0, 1, "secret_unavailable"),
    ]


def test_pixel_id_alone_names_an_events_destinations_ignored(graph: GraphServer) -> None:
    # Issue 19 finding 23: with one pixel an event's `destinations` is not read (travel sites
    # send a GA4 parameter of that name); it is named ignored and the event goes.
    env = {k: v for k, v in env_for(graph, []).items() if k != "META_DESTINATIONS"}
    app = Application(load_config({**env, "META_PIXEL_ID": "555", "META_ACCESS_TOKEN": "test-token"}))
    client = serve(app)
    travel = purchase("D2", destinations=[{"city": "Lisbon", "nights": 3}])
    body = client.post("/events", json={"events": [purchase("D1", destinations=["default"]), travel]}).get_json()
    assert delivered_ids(graph, "555") == ["D1", "D2"] and "destinations" not in body
    assert body["rejected"] == []
    ignored = [(m["index"], m["ignored"]) for m in body["messages"] if "ignored" in m]
    assert ignored == [(0, ["destinations"]), (1, ["destinations"])]
