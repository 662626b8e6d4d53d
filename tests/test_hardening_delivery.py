"""Issue 19, second attack, the delivery side: each finding reproduced on loopback peers (the
fake Graph API, the Firestore emulator, the fake Secret Manager) and its fix asserted.

Each test names its finding (F5, F6, ...); docs/_new/hardening-delivery.md lists the bounds.
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
