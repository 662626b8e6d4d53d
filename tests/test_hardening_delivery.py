"""Issue 19, second attack, the delivery side: each finding reproduced on loopback peers (the
fake Graph API, the Firestore emulator, the fake Secret Manager) and its fix asserted.

Each test names its finding (F5, F6, ...); docs/delivery.md lists the guarantees and bounds.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from capi.app import Application
from capi.config import load_config
from tests.conftest import EMULATOR_PROJECT, log_lines, serve
from tests.fakes.graph import GraphServer

UA = "Mozilla/5.0"
NOW = int(time.time())
SHOP_A = {"name": "shop_a", "pixel_id": "111", "access_token": "tok-a", "hosts": ["shop-a.example.com"]}
SHOP_B = {"name": "shop_b", "pixel_id": "222", "access_token": "tok-b", "hosts": ["shop-b.example.com"]}


def env_for(graph: GraphServer, destinations: list[dict[str, Any]], **extra: str) -> dict[str, str]:
    return {
        "META_DESTINATIONS": json.dumps(destinations),
        "GOOGLE_CLOUD_PROJECT": EMULATOR_PROJECT,
        "ALLOW_UNAUTHENTICATED": "true",
        "PROFILE_COLLECTION": "",
        "META_API_BASE_URL": graph.base_url,
        "META_TIMEOUT_SECONDS": "2",
        "META_RETRY_BUDGET_SECONDS": "5",
        **extra,
    }


def application(graph: GraphServer, destinations: list[dict[str, Any]], db: Any = None, **extra: str) -> Application:
    graph.fake.tokens.update({d["pixel_id"]: d["access_token"] for d in destinations if "access_token" in d})
    return Application(
        load_config(env_for(graph, destinations, **extra)),
        firestore_client=lambda: db,
        sleep=lambda s: None,
        rng=lambda: 0.5,
    )


def order(shop: str, transaction_id: str, **extra: Any) -> dict[str, Any]:
    """A GA4 purchase from sGTM's event data, its event_id taken from the order id."""
    return {
        "event_name": "purchase",
        "transaction_id": transaction_id,
        "event_time": NOW,
        "page_location": f"https://{shop}/checkout/thanks",
        "user_agent": UA,
        "value": 5,
        "currency": "EUR",
        "user_data": {"email_address": f"{transaction_id.lower()}@example.com"},
        **extra,
    }


def delivered_ids(graph: GraphServer, pixel: str) -> list[str]:
    return sorted(event_id for (_, event_id) in graph.fake.delivered_by_pixel.get(pixel, {}))


# -- F5: repeats are judged per destination ------------------------------------------------


def test_f5_same_transaction_id_for_two_destinations_reaches_both(graph: GraphServer) -> None:
    client = serve(application(graph, [SHOP_A, SHOP_B]))
    # A bare array (sGTM batches): two shops whose order numbers collide.
    response = client.post("/events", json=[order("shop-a.example.com", "1001"), order("shop-b.example.com", "1001")])
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["skipped"] == [] and body["forwarded"] == 2
    assert delivered_ids(graph, "111") == ["1001"] and delivered_ids(graph, "222") == ["1001"]
    # A true repeat for the same shop in the same request is still one event.
    again = client.post("/events", json=[order("shop-a.example.com", "1002"), order("shop-a.example.com", "1002")])
    assert again.get_json()["skipped"] == [{"index": 1, "event_id": "1002", "reason": "duplicate"}]
    assert graph.fake.delivered_by_pixel["111"][("Purchase", "1002")] == 1


# -- F21: Meta counting fewer events than it was sent ---------------------------------------


@pytest.mark.emulator
def test_f21_events_received_below_sent_is_kept_for_replay(firestore_db: Any, graph: GraphServer) -> None:
    from tests.conftest import make_app, purchase

    graph.fake.fail_next("short_count")
    client = serve(make_app(graph, firestore=firestore_db))
    response = client.post("/events", json={"events": [purchase(f"C{n}") for n in range(5)]})
    body = response.get_json()
    assert response.status_code == 202, body
    assert (body["forwarded"], body["stored"], body["error"]) == (0, 5, "meta_unreadable")
    assert "events_received 0 for 5 events" in body["message"]
    assert graph.fake.requests == 1  # not retried: Meta may have taken them
    assert sorted(d.to_dict()["event_id"] for d in firestore_db.collection("capi_deadletter").stream()) == [
        f"C{n}" for n in range(5)
    ]
    # The replay sends them again; Meta deduplicates by event_id.
    assert client.post("/replay").get_json()["delivered"] == 5


# -- issue 20 item 4: the fix names the setting actually used --------------------------------


def test_token_fix_names_the_setting_used(graph: GraphServer, secret_manager: Any) -> None:
    from capi.delivery.graph import FIX_TOKEN
    from capi.errors import MetaError
    from capi.payload import request_body
    from tests.conftest import make_app

    graph.fake.down = "code:190"
    body = request_body([{"event_name": "Purchase", "event_id": "T1"}], None)
    with pytest.raises(MetaError) as literal:
        make_app(graph).graph.send(body)  # the token came from META_ACCESS_TOKEN
    assert literal.value.fix is not None
    assert "set META_ACCESS_TOKEN to a new token" in literal.value.fix and "_SECRET" not in literal.value.fix
    secret_manager.fake.add_version(f"projects/{EMULATOR_PROJECT}/secrets/meta-token", "stale-token")
    from_secret = make_app(
        graph, secret_client=secret_manager.client(), META_ACCESS_TOKEN="", META_ACCESS_TOKEN_SECRET="meta-token"
    )
    with pytest.raises(MetaError) as secret:
        from_secret.graph.send(body)
    assert secret.value.fix == FIX_TOKEN


# -- F8: a dripping answer is bounded in total time ------------------------------------------


def test_f8_dripping_answer_is_cut_within_the_retry_budget(graph: GraphServer) -> None:
    from capi.errors import MetaError
    from capi.payload import request_body
    from tests.conftest import make_app

    # One byte every 0.2 s: each read is far inside the 1 s read timeout, so before the fix
    # one call lasted the whole answer (about 40 s) and every retry again.
    graph.fake.drip = 0.2
    app = make_app(graph, META_TIMEOUT_SECONDS="1", META_RETRY_BUDGET_SECONDS="3")
    started = time.monotonic()
    with pytest.raises(MetaError) as failed:
        app.graph.send(request_body([{"event_name": "Purchase", "event_id": "D1"}], None))
    elapsed = time.monotonic() - started
    assert failed.value.kind == "transient" and "in total" in failed.value.message
    assert elapsed < 3.8, elapsed  # the retry budget (3 s) and one call's slack, not the drip
    assert graph.fake.requests >= 2  # cut calls are retried inside the budget


# -- F6, F14: replay takes only its own pixels' dead letters, and reaches all of them --------


def _letters(db: Any) -> list[dict[str, Any]]:
    return [d.to_dict() for d in db.collection("capi_deadletter").stream()]


def _dead_event(event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_id": event_id,
        "event_time": NOW - 60,
        "action_source": "website",
        "event_source_url": "https://shop.example.com/",
        "user_data": {"client_user_agent": UA},
        **extra,
    }


@pytest.mark.emulator
def test_f6_replay_leaves_another_deployments_dead_letters(firestore_db: Any, graph: GraphServer) -> None:
    from tests.conftest import make_app, purchase

    # Two single-pixel deployments in one project, both on the default DEADLETTER_COLLECTION.
    first = serve(make_app(graph, firestore=firestore_db, META_PIXEL_ID="111"))
    second = serve(make_app(graph, firestore=firestore_db, META_PIXEL_ID="222"))
    graph.fake.down = "503"
    assert first.post("/events", json={"events": [purchase("P1")]}).status_code == 202
    graph.fake.down = None
    counts = second.post("/replay").get_json()
    assert (counts["found"], counts["delivered"], counts["unrouted"]) == (0, 0, 1)
    assert graph.fake.delivered_by_pixel == {} and [d["event_id"] for d in _letters(firestore_db)] == ["P1"]
    [letter] = _letters(firestore_db)
    assert letter["pixel_id"] == "111"
    # Its own deployment delivers it, to its own pixel.
    assert first.post("/replay").get_json()["delivered"] == 1
    assert delivered_ids(graph, "111") == ["P1"] and _letters(firestore_db) == []


@pytest.mark.emulator
def test_f14_unrouted_dead_letters_do_not_starve_routable_ones(firestore_db: Any, graph: GraphServer) -> None:
    from capi.delivery.deadletter import FirestoreDeadLetter
    from capi.delivery.replay import Replayer
    from capi.errors import MetaError
    from tests.conftest import make_app

    down = MetaError("down", kind="transient")
    removed = FirestoreDeadLetter(lambda: firestore_db, "capi_deadletter", "999", destination="removed")
    removed.store([_dead_event(f"GONE-{n}") for n in range(300)], down, None)
    ours = FirestoreDeadLetter(lambda: firestore_db, "capi_deadletter", "111")
    ours.store([_dead_event(f"OURS-{n}") for n in range(40)], down, None)
    app = make_app(graph, firestore=firestore_db, META_PIXEL_ID="111")
    # A run reading at most 100 documents: before the fix, in document-id order, mostly the
    # 300 it cannot route, so most of ours waited (and would expire).
    counts = Replayer(lambda: firestore_db, "capi_deadletter", app.senders).run(limit=100)
    assert (counts["delivered"], counts["unrouted"]) == (40, 300)
    assert len(delivered_ids(graph, "111")) == 40 and len(_letters(firestore_db)) == 300


# -- F7: replay attrition: attempts count only what Meta said about the event ---------------


@pytest.mark.emulator
def test_f7_good_dead_letters_survive_bad_neighbours_across_runs(
    firestore_db: Any, graph: GraphServer, capsys: Any
) -> None:
    from capi.delivery.replay import MAX_REPLAY_CALLS
    from capi.delivery.split import MAX_SPLIT_CALLS
    from tests.conftest import make_app, purchase

    client = serve(make_app(graph, firestore=firestore_db, REPLAY_MAX_ATTEMPTS="3"))
    graph.fake.down = "503"
    ids = [f"A{n:03}" for n in range(300)]
    assert client.post("/events", json={"events": [purchase(i) for i in ids]}).get_json()["stored"] == 300
    graph.fake.down = None
    bad = set(ids[::10])  # 30 events Meta refuses, spread through the batch
    graph.fake.poison = bad
    runs = []
    while _letters(firestore_db) and len(runs) < 12:
        runs.append(client.post("/replay").get_json())
    assert sum(r["gave_up"] for r in runs) == 0, runs
    assert sum(r["rejected"] for r in runs) == 30 and sum(r["delivered"] for r in runs) == 270
    assert {event_id for (_, event_id) in graph.fake.delivered} == set(ids) - bad
    assert graph.fake.duplicates == 0 and _letters(firestore_db) == []
    assert len(runs) <= 4, len(runs)  # progress is kept: each run splits on from where the last stopped
    calls = [line["calls"] for line in log_lines(capsys.readouterr().out, "replay finished")]
    assert len(calls) == len(runs) and max(calls) <= MAX_REPLAY_CALLS + MAX_SPLIT_CALLS  # bounded per run


# -- F20: a dead letter dropped as refused releases its idempotency claim ---------------------


@pytest.mark.emulator
def test_f20_refused_dead_letter_releases_the_idempotency_claim(firestore_db: Any, graph: GraphServer) -> None:
    from tests.conftest import make_app, purchase

    client = serve(make_app(graph, firestore=firestore_db, IDEMPOTENCY_COLLECTION="capi_sent"))
    graph.fake.down = "503"
    assert client.post("/events", json={"events": [purchase("G1", transaction_id="ORD-1")]}).status_code == 202
    graph.fake.down = None
    graph.fake.poison = {"G1"}
    assert client.post("/replay").get_json()["rejected"] == 1
    graph.fake.poison = set()
    # The corrected resend goes through instead of being skipped as a duplicate for 48 h:
    # by its event id, and by its order (the guard also keys a Purchase by its order id).
    resend = client.post("/events", json={"events": [purchase("G1", transaction_id="ORD-1")]}).get_json()
    assert (resend["forwarded"], resend["skipped"]) == (1, [])
    again = client.post("/events", json={"events": [purchase("G2", transaction_id="ORD-1")]}).get_json()
    assert [s["reason"] for s in again["skipped"]] == ["duplicate_order"]  # the guard holds it again
    assert graph.fake.delivered == {("Purchase", "G1"): 1}


# -- F13: a dead letter within Firestore's document limit by construction ---------------------


@pytest.mark.emulator
def test_f13_large_event_is_stored_compactly_and_its_neighbours_always(firestore_db: Any, graph: GraphServer) -> None:
    from tests.conftest import make_app, purchase

    # 1,850 items of 510-character ids (a 1.0 MB request): stored with content_ids twice it
    # was 1.9 MB, over Firestore's 1 MiB limit, and the whole write failed (503, none stored).
    items = [{"item_id": f"{n:04}" + "x" * 506, "quantity": 1} for n in range(1850)]
    big = purchase("BIG", items=items)
    client = serve(make_app(graph, firestore=firestore_db))
    graph.fake.down = "503"
    response = client.post("/events", json={"events": [purchase(f"N{n}") for n in range(5)] + [big]})
    body = response.get_json()
    assert response.status_code == 202, body.get("message")
    assert body["stored"] == 6
    letters = {d["event_id"]: d for d in _letters(firestore_db)}
    assert len(letters) == 6 and letters["BIG"]["content_ids_from_contents"] is True
    assert len(letters["BIG"]["event_json"].encode()) < 1_000_000
    graph.fake.down = None
    assert client.post("/replay").get_json()["delivered"] == 6
    [sent] = [e for body in graph.fake.bodies for e in body["data"] if e["event_id"] == "BIG"]
    assert sent["custom_data"]["content_ids"] == [item["item_id"] for item in items]  # rebuilt as first sent


@pytest.mark.emulator
def test_f13_event_too_large_to_store_is_reported_alone(firestore_db: Any, capsys: Any) -> None:
    from capi.delivery.deadletter import MAX_EVENT_BYTES, FirestoreDeadLetter
    from capi.errors import MetaError

    store = FirestoreDeadLetter(lambda: firestore_db, "capi_deadletter", "111")
    huge = _dead_event("HUGE", custom_data={"contents": [{"id": "y" * 500, "quantity": n} for n in range(2100)]})
    too_large = store.store([_dead_event("OK1"), huge, _dead_event("OK2")], MetaError("down", kind="transient"), None)
    assert too_large == [1]
    assert sorted(d["event_id"] for d in _letters(firestore_db)) == ["OK1", "OK2"]
    [line] = log_lines(capsys.readouterr().out, "event too large to store for replay")
    assert (line["severity"], line["event_id"], line["limit"]) == ("ERROR", "HUGE", MAX_EVENT_BYTES)


@pytest.mark.emulator
def test_f13_unstorable_event_is_the_only_one_unsent(
    firestore_db: Any, graph: GraphServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from capi.delivery import deadletter
    from tests.conftest import make_app, purchase

    monkeypatch.setattr(deadletter, "MAX_EVENT_BYTES", 5_000)  # the bound, scaled down to a small request
    client = serve(make_app(graph, firestore=firestore_db))
    graph.fake.down = "503"
    items = [{"item_id": f"{n:02}" + "z" * 400, "quantity": 1} for n in range(20)]
    response = client.post("/events", json={"events": [purchase("K1"), purchase("WIDE", items=items), purchase("K2")]})
    body = response.get_json()
    assert response.status_code == 503  # that one event must be sent again; the others are safe
    assert (body["stored"], body["error"]) == (2, "store_unavailable")
    assert "1 of them too large to store for replay" in body["message"]
    assert sorted(d["event_id"] for d in _letters(firestore_db)) == ["K1", "K2"]


# -- F17: secret reads never serialize callers -------------------------------------------------


def test_f17_one_failing_read_answers_every_waiter_at_once(secret_manager: Any) -> None:
    from capi.errors import SecretUnavailable
    from capi.secrets import SecretManagerSecret
    from tests.conftest import at_once

    name = f"projects/{EMULATOR_PROJECT}/secrets/keys"
    secret_manager.fake.add_version(name, "k1")
    secret_manager.fake.delay = 1.5  # Secret Manager answers after the read's 0.5 s timeout
    secret = SecretManagerSecret(f"{name}/versions/latest", client=secret_manager.client, timeout=0.5)
    failures: list[float] = []
    started = time.monotonic()

    def call() -> None:
        with pytest.raises(SecretUnavailable):
            secret.get()
        failures.append(time.monotonic() - started)

    at_once(*[call] * 8)
    # Before: the lock was held during the read and a failure was not kept, so the callers
    # read one after another (answered at 0.5, 1.0, ... 4.0 s).
    assert len(failures) == 8 and max(failures) < 1.4, failures
    assert secret_manager.fake.accesses[name] == 1


def test_f17_stale_value_served_while_one_read_refreshes(secret_manager: Any) -> None:
    from capi.secrets import SecretManagerSecret
    from tests.conftest import at_once

    name = f"projects/{EMULATOR_PROJECT}/secrets/keys"
    secret_manager.fake.add_version(name, "k1")
    now = [0.0]
    secret = SecretManagerSecret(f"{name}/versions/latest", client=secret_manager.client, clock=lambda: now[0], ttl=60)
    assert secret.get() == "k1"
    secret_manager.fake.add_version(name, "k2")
    secret_manager.fake.delay = 1.0
    now[0] = 61  # expired: eight requests at once
    answers: list[tuple[str, float]] = []
    started = time.monotonic()
    at_once(*[lambda: answers.append((secret.get(), time.monotonic() - started))] * 8)
    assert [a for a, _ in answers] == ["k1"] * 8 and max(t for _, t in answers) < 0.5, answers
    deadline = time.monotonic() + 5
    while secret.get() != "k2" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert secret.get() == "k2" and secret_manager.fake.accesses[name] == 2  # one refresh for all


def test_f17_a_failed_refresh_keeps_serving_the_stale_value(secret_manager: Any) -> None:
    # Was: after a background refresh failed, the failure was raised for FAILURE_SECONDS while
    # the value that worked a moment ago was still within MAX_STALE_SECONDS: with Secret Manager
    # down, every other few seconds each event was stored for replay instead of delivered.
    from capi.errors import SecretUnavailable
    from capi.secrets import FAILURE_SECONDS, MAX_STALE_SECONDS, SecretManagerSecret

    name = f"projects/{EMULATOR_PROJECT}/secrets/token"
    secret_manager.fake.add_version(name, "t1")
    now = [0.0]
    secret = SecretManagerSecret(f"{name}/versions/latest", client=secret_manager.client, clock=lambda: now[0], ttl=60)
    assert secret.get() == "t1"
    secret_manager.fake.denied.add(name)  # Secret Manager refuses from now on
    now[0] = 61
    assert secret.get() == "t1"  # stale, while one background read fails
    deadline = time.monotonic() + 5
    while secret_manager.fake.accesses[name] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)  # the failed read settles
    now[0] = 61 + FAILURE_SECONDS / 2  # the failure is remembered: the stale value still serves
    assert secret.get() == "t1"
    with pytest.raises(SecretUnavailable):
        secret.get(refresh=True)  # a token Meta refused never takes a stale value
    now[0] = 60 + MAX_STALE_SECONDS + 1  # past the stale bound: the failure is the answer
    with pytest.raises(SecretUnavailable):
        secret.get()


# -- F15: capi_quality type-checks Meta's answer, reports each destination alone, ends in time --


def test_f15_odd_field_types_in_metas_quality_answer(graph: GraphServer) -> None:
    from capi.quality import DatasetQualityClient, Destination, QualityReport
    from capi.secrets import StaticSecret
    from tests.conftest import TOKEN

    graph.fake.quality.web["111"] = [
        {"event_name": "Purchase", "event_match_quality": {"composite_score": 7, "match_key_feedback": 5,
         "diagnostics": True}, "dedupe_key_feedback": 1},
        {"event_name": ["Lead"], "event_match_quality": {"diagnostics": [{"name": {"x": 1}, "percentage": "9"}]},
         "data_freshness": {"upload_frequency": 3}},
    ]  # fmt: skip
    client = DatasetQualityClient(base_url=graph.base_url, api_version="v26.0")
    status, body = QualityReport(client, [Destination("shop", "111", StaticSecret(TOKEN))], 6.0).run()
    assert status == 200
    unnamed, purchase = body["destinations"][0]["events"]
    assert (purchase["score"], purchase["match_keys"], purchase["dedupe"], purchase["diagnostics"]) == (7, {}, {}, [])
    assert unnamed["event_name"] == "" and unnamed["data_freshness"] is None
    assert unnamed["diagnostics"] == [
        {"name": None, "solution": None, "percentage": None, "affected_event_count": None, "total_event_count": None}
    ]


def test_f15_one_destinations_failure_is_reported_alone(graph: GraphServer) -> None:
    from capi.quality import DatasetQualityClient, Destination, QualityReport
    from capi.secrets import StaticSecret
    from tests.conftest import TOKEN

    class Broken:
        name = "broken"

        def get(self, *, refresh: bool = False) -> str:
            raise RuntimeError("a bug, not Meta")

    graph.fake.quality.web["111"] = [{"event_name": "Purchase"}]
    client = DatasetQualityClient(base_url=graph.base_url, api_version="v26.0")
    report = QualityReport(
        client, [Destination("odd", "222", Broken()), Destination("shop", "111", StaticSecret(TOKEN))], 6.0
    )
    status, body = report.run()
    odd, shop = body["destinations"]
    assert status == 502 and odd["error"] == "internal" and "RuntimeError" in odd["message"]
    assert [e["event_name"] for e in shop["events"]] == ["Purchase"]


def test_f15_dripped_quality_answer_is_cut_in_total_time(graph: GraphServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from capi import quality
    from capi.secrets import StaticSecret
    from tests.conftest import TOKEN

    monkeypatch.setattr(quality, "FETCH_SECONDS", 1.0)  # 30 s in production; each read here takes 50 ms
    graph.fake.quality.mode = "drip"
    client = quality.DatasetQualityClient(base_url=graph.base_url, api_version="v26.0", timeout=0.3)
    report = quality.QualityReport(client, [quality.Destination("shop", "111", StaticSecret(TOKEN))], 6.0)
    started = time.monotonic()
    status, body = report.run()
    assert time.monotonic() - started < 2.0
    assert status == 502 and body["destinations"][0]["error"] == "meta_unavailable"
    assert "in total" in body["destinations"][0]["message"]


# -- F19: hosts parsed as browsers parse them -----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host"),
    [
        # A backslash ends an http(s) host (WHATWG URL Standard), so a browser goes to evil.example.
        ("https://evil.example\\@shop-b.example.com/", "evil.example"),
        ("https://shop-b.example.com@evil.example/", "evil.example"),  # credentials end at the last "@"
        ("HTTPS://SHOP-A.Example.COM.:443/x", "shop-a.example.com"),
        ("https:shop-a.example.com/", "shop-a.example.com"),  # a special scheme needs no slashes
        (" https://sh\top-a.example.com/\n", "shop-a.example.com"),  # tabs and newlines dropped
        ("https://%73hop-a.example.com/", "shop-a.example.com"),  # percent-decoded
        ("https://bücher.example/", "xn--bcher-kva.example"),
        ("https://x.example#@shop-b.example.com", "x.example"),
        ("ftp://shop-b.example.com/", None),
        ("https://a b.example/", None),
        ("javascript:alert(1)//shop-b.example.com", None),
    ],
)
def test_f19_event_host_as_a_browser_reads_it(url: str, host: str | None) -> None:
    from capi.destinations import event_host

    assert event_host(url) == host


def test_f19_backslash_url_does_not_route_to_the_shop_it_spells(graph: GraphServer) -> None:
    client = serve(application(graph, [SHOP_A, SHOP_B]))
    body = client.post(
        "/events",
        json=[order("shop-a.example.com", "2001", page_location="https://evil.example\\@shop-b.example.com/")],
    ).get_json()
    assert body["skipped"] == [{"index": 0, "event_id": "2001", "reason": "no destination"}]
    assert graph.fake.delivered_by_pixel == {}


def test_f19_ingest_keys_bound_to_destinations(graph: GraphServer, secret_manager: Any) -> None:
    secret_manager.fake.add_version(f"projects/{EMULATOR_PROJECT}/secrets/key-b", "key-b-old,key-b-new")
    bound = [{"key": "key-a", "destinations": ["shop_a"]}, {"secret": "key-b", "destinations": ["shop_b"]}]
    graph.fake.tokens.update({"111": "tok-a", "222": "tok-b"})
    app = Application(
        load_config(
            env_for(
                graph,
                [SHOP_A, SHOP_B],
                ALLOW_UNAUTHENTICATED="false",
                INGEST_API_KEY="agency-key",
                INGEST_KEYS=json.dumps(bound),
            )
        ),
        secret_client=secret_manager.client(),
        sleep=lambda s: None,
    )
    client = serve(app)

    def post(key: str, *events: dict[str, Any]) -> Any:
        return client.post("/events", json=list(events), headers={"Authorization": f"Bearer {key}"})

    # shop_a's key cannot write into shop_b's pixel, by URL or by naming it.
    refused = post(
        "key-a", order("shop-b.example.com", "3001"), order("shop-a.example.com", "3002", destinations=["shop_b"])
    ).get_json()
    assert [(r["index"], r["field"]) for r in refused["rejected"]] == [(0, "destinations"), (1, "destinations")]
    assert "may send only to shop_a (INGEST_KEYS)" in refused["rejected"][0]["message"]
    assert graph.fake.delivered_by_pixel == {}
    assert post("key-a", order("shop-a.example.com", "3003")).get_json()["forwarded"] == 1
    assert post("key-b-new", order("shop-b.example.com", "3004")).get_json()["forwarded"] == 1  # from the secret
    assert post("agency-key", order("shop-b.example.com", "3005")).get_json()["forwarded"] == 1  # unbound: any
    assert post("no-such-key", order("shop-a.example.com", "3006")).status_code == 401
    assert delivered_ids(graph, "111") == ["3003"] and delivered_ids(graph, "222") == ["3004", "3005"]


def test_f6_terraform_default_keeps_deployments_dead_letters_apart() -> None:
    import re

    from tests.test_terraform import TF, load

    environment = load(TF / "main.tf")["locals"][0]["environment"]
    [value] = re.findall(r"DEADLETTER_COLLECTION\s*=\s*(.+)", environment)
    # Unset, the collection is named after the deployment (var.name): capi_deadletter for "capi".
    assert 'coalesce(var.deadletter_collection, "${var.name}_deadletter")' in value
    [variable] = [
        v["deadletter_collection"] for v in load(TF / "variables.tf")["variable"] if "deadletter_collection" in v
    ]
    assert variable["default"] is None


@pytest.mark.emulator
def test_f7_a_run_past_its_bound_releases_what_it_did_not_reach(firestore_db: Any, graph: GraphServer) -> None:
    from capi.delivery.replay import Replayer
    from tests.conftest import make_app, purchase

    app = make_app(graph, firestore=firestore_db)
    client = serve(app)
    graph.fake.down = "503"
    ids = [f"B{n:03}" for n in range(200)]
    assert client.post("/events", json={"events": [purchase(i) for i in ids]}).get_json()["stored"] == 200
    graph.fake.down = None
    graph.fake.poison = set(ids[::8])  # 25 bad events: the first run leaves several split groups
    client.post("/replay")
    groups = {d["split_group"] for d in _letters(firestore_db) if d.get("split_group")}
    assert len(groups) >= 2 and all(d["attempts"] == 1 for d in _letters(firestore_db))
    # A run allowed one Graph call sends the first group only; the others wait, unclaimed.
    counts = Replayer(lambda: firestore_db, "capi_deadletter", app.senders, max_calls=1).run()
    left = _letters(firestore_db)
    assert counts["deferred"] > 0 and counts["deferred"] <= len(left)
    assert all(d["lease_until"] == 0 for d in left)  # the next run takes them at once
