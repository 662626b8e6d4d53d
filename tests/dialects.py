"""The public payloads of tests/payloads/ and the exact Meta event capi must make of each.

Shared by tests/test_inputs_dialects.py (pure pipeline) and tests/test_dialects_e2e.py
(through /events to the fake Graph API). Hashes are computed here from the normalized plain
value, so a wrong normalization fails the tests.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

PAYLOADS = Path(__file__).resolve().parent / "payloads"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load(name: str) -> Any:
    """A payload file without its `_source` note."""
    body = json.loads((PAYLOADS / name).read_text())
    body.pop("_source", None)
    return body


def meta_body(now: int) -> dict[str, Any]:
    # Meta, "Using the API": only event_time moved into Meta's 7-day window.
    body = load("meta_using_the_api.json")
    body["data"][0]["event_time"] = now
    return body


def meta_expected(now: int) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_time": now,
        "event_id": "event.id.123",
        "action_source": "website",
        "event_source_url": "http://jaspers-market.com/product/123",
        "user_data": {
            "em": ["309a0a5c3e211326ae75ca18196d301a9bdbd1a882a4d2569511033da23f0abd"],
            "ph": [sha("12345678901"), sha("14251234567")],
            "client_ip_address": "192.19.9.9",
            "client_user_agent": "test ua",
            "fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
            "fbp": "fb.1.1558571054389.1098115397",
        },
        "custom_data": {
            "value": 100.2,
            "currency": "usd",
            "content_ids": ["product.id.123"],
            "content_type": "product",
        },
        "opt_out": False,
    }


def meta_tag_event(now: int) -> dict[str, Any]:
    # Meta's tag ___TESTS___: event_time moved from 1973 into the window, and page_location
    # added (Meta's tag test sets action_source "source123"; capi's default website needs a URL).
    event = load("meta_tag_template_tests.json")
    event["event_time"] = str(now)
    event["page_location"] = "https://shop.example.com/"
    return event


def meta_tag_expected(now: int) -> dict[str, Any]:
    return {
        "event_name": "Test1",
        "event_time": now,
        "event_id": "minted-0",
        "action_source": "website",
        "event_source_url": "https://shop.example.com/",
        "user_data": {
            "em": [sha("test@example.com")],
            # "123456789" is not a possible US number: dropped, with a message.
            "fn": [sha("foo")],
            "ln": [sha("bar")],
            "ge": [sha("m")],
            "db": [sha("19910526")],
            "ct": [sha("menlopark")],
            "st": [sha("ca")],
            "zp": [sha("12345")],
            "country": [sha("us")],
            "external_id": [sha("user123")],
            "subscription_id": "abc123",
            "client_ip_address": "1.2.3.4",
            "client_user_agent": "Test_UA",
            # test_browser_id / test_click_id are not fb.1.{ms}.{value}: left out, with a message.
        },
        "custom_data": {
            "value": 123,
            "currency": "usd",
            "order_id": "order_123",
            "search_string": "query123",
            "status": "subscribed",
            "content_category": "testCategory",
            "content_name": "Foo",
            "content_type": "product",
            "contents": [{"id": "123", "quantity": 2}, {"id": "456", "quantity": 2}],
            "num_items": 4,
            "predicted_ltv": 10000,
            "delivery_category": "home_delivery",
        },
    }


def stape_event(now: int) -> dict[str, Any]:
    event = load("stape_data_client.json")
    event["event_time"] = now
    return event


def stape_expected(now: int) -> dict[str, Any]:
    return {
        "event_name": "Lead",
        "event_time": now,
        "event_id": "minted-0",
        "action_source": "website",
        "event_source_url": "https://shop.example.com/contact?utm_source=newsletter",
        "referrer_url": "https://shop.example.com/",
        "user_data": {
            "em": [sha("jane.doe@example.com")],
            "ph": [sha("16505551212")],
            "fn": [sha("jane")],
            "ln": [sha("doe")],
            "ct": [sha("menlopark")],
            "st": [sha("ca")],
            "zp": [sha("94025")],
            "country": [sha("us")],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
                " Version/17.1 Safari/605.1.15"
            ),
            "fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
            "fbp": "fb.1.1558571054389.1098115397",
        },
    }


MP_DIGESTS = {
    # Google's placeholders, each replaced by the digest of a value normalized as Google asks.
    "yourEmailSha256Variable": sha("jane.doe@example.com"),
    "yourPhoneSha256Variable": sha("+16505551212"),  # Google hashes E.164 with its '+'
    "yourFirstNameSha256Variable": sha("jane"),
    "yourLastNameSha256Variable": sha("doe"),
    "yourStreetAddressSha256Variable": sha("1600 amphitheatre pkwy"),
    "yourCityVariable": "Mountain View",
    "yourRegionVariable": "CA",
    "yourPostalCodeVariable": "94043",
    "yourCountryVariable": "US",
}


def mp_body(now: int, website_ready: bool) -> dict[str, Any]:
    """Google's uid-data example; with `website_ready`, the sender also put page_location and
    user_agent in the event's params, which an MP hit otherwise lacks."""
    text = json.dumps(load("measurement_protocol_uid_data.json"))
    for placeholder, value in MP_DIGESTS.items():
        text = text.replace(f'"{placeholder}"', json.dumps(value))
    body = json.loads(text)
    body["timestamp_micros"] = now * 1_000_000
    if website_ready:
        body["events"][0]["params"]["page_location"] = "https://shop.example.com/thanks"
        body["events"][0]["params"]["user_agent"] = "Mozilla/5.0"
    return body


def mp_expected(now: int) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_time": now,
        "event_id": "T_12345",
        "action_source": "website",
        "event_source_url": "https://shop.example.com/thanks",
        "user_data": {
            "external_id": [sha("user_id")],
            "em": [sha("jane.doe@example.com")],
            "ph": [sha("+16505551212")],
            "fn": [sha("jane")],
            "ln": [sha("doe")],
            "ct": [sha("mountainview")],
            "st": [sha("ca")],
            "zp": [sha("94043")],
            "country": [sha("us")],
            "client_user_agent": "Mozilla/5.0",
        },
        "custom_data": {
            "value": 30.03,
            "currency": "usd",
            "order_id": "T_12345",
            "contents": [{"id": "SKU_12345", "quantity": 3, "item_price": 10.01}],
            "content_ids": ["SKU_12345"],
            "content_type": "product",
            "num_items": 3,
        },
    }


def sgtm_event(now: int) -> dict[str, Any]:
    event = load("sgtm_ga4_purchase.json")
    event["event_time"] = now
    return event


def sgtm_expected(now: int) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_time": now,
        "event_id": "ORDER-1001",
        "action_source": "website",
        "event_source_url": "https://shop.example.com/checkout/thanks?fbclid=IwAR2xYz_AbC",
        "referrer_url": "https://shop.example.com/checkout",
        "user_data": {
            "em": [sha("jane.doe@example.com")],
            "ph": [sha("33612345678")],
            "fn": [sha("jane")],
            "ln": [sha("doe")],
            "ct": [sha("paris")],
            "st": [sha("iledefrance")],
            "zp": [sha("75001")],
            "country": [sha("fr")],
            "client_ip_address": "203.0.113.9",
            "client_user_agent": (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
                " Chrome/120.0.0.0 Safari/537.36"
            ),
            "fbc": f"fb.1.{now * 1000}.IwAR2xYz_AbC",
        },
        "custom_data": {
            "value": 59.8,
            "currency": "eur",
            "order_id": "ORDER-1001",
            "contents": [{"id": "SKU-1", "quantity": 2, "item_price": 29.9}],
            "content_ids": ["SKU-1"],
            "content_type": "product",
            "num_items": 2,
        },
    }
