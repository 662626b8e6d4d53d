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
