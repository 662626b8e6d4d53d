"""Every input dialect (docs/dialects.md), read from public payloads (tests/payloads/,
each naming its source) through the pure pipeline: the exact Meta event, the dialect /validate
reports, the messages (ignored keys, minted ids), nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from capi.errors import RequestError
from capi.events import FROM_ORDER, MINTED
from tests import dialects as d
from tests.conftest import make_service

NOW = 1_790_000_000
UA = "Mozilla/5.0"


def validate(payload: Any, **env: str) -> dict[str, Any]:
    return make_service(FORWARD_EVENTS="*", DEFAULT_COUNTRY="US", **env).validate(payload).body


def test_meta_request_body_from_using_the_api() -> None:
    # Meta, "Using the API" example body: a back end that called Meta switches by the URL alone.
    body = validate(d.meta_body(NOW))
    assert body["dialect"] == "meta"
    assert body["payload"]["data"] == [d.meta_expected(NOW)]
    assert body["payload"]["test_event_code"] == "TEST12345"
    assert body["rejected"] == [] and body["skipped"] == []
    assert body["messages"] == [{"field": "access_token", "message": "ignored: capi sends with its own token"}]
    assert "EAAB-NOT-A-REAL-TOKEN" not in json.dumps(body)


def test_meta_tag_keys_from_the_tag_templates_tests() -> None:
    # facebookincubator/ConversionsAPI-Tag-for-GoogleTagManager template.tpl ___TESTS___.
    body = validate(d.meta_tag_event(NOW))
    assert body["dialect"] == "meta_tag"
    assert body["payload"]["data"] == [d.meta_tag_expected(NOW)]
    assert body["payload"]["test_event_code"] == "test123"  # from the event data, as Meta's tag reads it
    assert body["messages"] == [
        {"index": 0, "field": "x-fb-ck-fbc", "message": "not fb.{subdomain}.{ms}.{value}; ignored"},
        {"index": 0, "field": "x-fb-ck-fbp", "message": "not fb.{subdomain}.{ms}.{value}; ignored"},
        {"index": 0, "field": "event_id", "message": MINTED},
        {"index": 0, "field": "user_data.ph", "message": "not a possible phone number for its country; not sent"},
    ]


def test_stape_data_client_event() -> None:
    body = validate(d.stape_event(NOW))
    assert body["dialect"] == "stape"
    assert body["payload"]["data"] == [d.stape_expected(NOW)]
    assert body["messages"] == [
        {"index": 0, "field": "event_id", "message": MINTED},
        {
            "index": 0,
            "ignored": ["common_cookie._ga", "page_title", "screen_resolution"],
            "message": "input keys capi does not use",
        },
    ]


def test_measurement_protocol_as_google_documents_it_says_what_a_website_event_lacks() -> None:
    # Google's uid-data example body: no page URL, no user agent. Both are named.
    body = validate(d.mp_body(NOW, website_ready=False))
    no_url = "Meta requires event_source_url (page_location) for website events"
    no_ua = "Meta requires client_user_agent (user_agent) for website events"
    assert body["dialect"] == "measurement_protocol"
    assert body["payload"]["data"] == []
    assert body["rejected"] == [
        {
            "index": 0,
            "event_id": None,
            "field": "page_location",
            "message": no_url,
            "problems": [{"field": "page_location", "message": no_url}, {"field": "user_agent", "message": no_ua}],
        }
    ]


def test_measurement_protocol_with_page_and_user_agent_in_params() -> None:
    body = validate(d.mp_body(NOW, website_ready=True))
    assert body["payload"]["data"] == [d.mp_expected(NOW)]
    assert body["messages"] == [
        {
            "index": 0,
            "field": "user_data.sha256_phone_number",
            "message": "GA4 hashes phones with the leading '+', which Meta does not match; send phone_number too",
        },
        {"index": 0, "field": "event_id", "message": FROM_ORDER},
        {
            "index": 0,
            "ignored": ["client_id", "session_id", "engagement_time_msec", "user_data.address.sha256_street"],
            "message": "input keys capi does not use",
        },
    ]


def test_sgtm_ga4_client_purchase() -> None:
    # sGTM "Common event data" and "Immutable parameters": a GA4 client purchase.
    body = validate(d.sgtm_event(NOW))
    assert body["dialect"] == "ga4"
    assert body["payload"]["data"] == [d.sgtm_expected(NOW)]
    assert body["messages"] == [
        {"index": 0, "field": "event_id", "message": FROM_ORDER},
        {
            "index": 0,
            "ignored": [
                "client_id", "language", "page_encoding", "page_title", "screen_resolution", "viewport_size",
                "x-ga-protocol_version", "x-ga-measurement_id", "x-ga-page_id", "x-ga-npa", "x-ga-dma",
                "x-ga-dma_cps", "x-sst-system_properties", "items[].item_brand", "items[].item_category",
                "user_data.address.street",
            ],
            "message": "input keys capi does not use",
        },
    ]  # fmt: skip


def test_bare_array_is_read_like_events() -> None:
    events = [d.sgtm_event(NOW), d.stape_event(NOW)]
    assert validate(events)["payload"] == validate({"events": events})["payload"]
    body = validate(events)
    assert body["dialect"] == "mixed"
    assert [m["dialect"] for m in body["match_keys"]] == ["ga4", "stape"]
    assert validate([d.sgtm_event(NOW)])["dialect"] == "ga4"


def test_a_list_events_test_event_code_is_named_ignored() -> None:
    event = {**d.sgtm_event(NOW), "test_event_code": "TEST1"}
    body = validate([event])
    assert "test_event_code" not in body["payload"]
    assert body["messages"][-1]["ignored"][0] == "test_event_code"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"data": {}}, "data"),
        ({"data": []}, "data"),
        ({"events": "x"}, "events"),
        ([], "body"),
        ("text", "body"),
        ({"hello": 1}, "events"),
        ({"data": [{}], "test_event_code": 5}, "test_event_code"),
        ({"client_id": "1", "events": [{"name": "x"}] * 1001}, "events"),
    ],
)
def test_bodies_no_dialect_reads_are_400_naming_the_shapes(payload: Any, field: str) -> None:
    with pytest.raises(RequestError) as error:
        make_service().validate(payload)
    assert error.value.field == field


def test_meta_dialect_passes_never_hashed_keys_and_objects_through() -> None:
    # Meta's customer-information and app-events parameters: never-hashed ids, app_data,
    # original_event_data, messaging_channel (docs/meta-capi.md §3).
    event = {
        "event_name": "Lead",
        "event_time": NOW,
        "event_id": "lead-1",
        "action_source": "system_generated",
        "messaging_channel": "whatsapp",
        "user_data": {
            "fb_login_id": 1234567890,
            "subscription_id": "sub-1",
            "lead_id": 525645896321548,
            "anon_id": "anon-1",
            "madid": "38400000-8cf0-11bd-b23e-10b96e40000d",
            "ctwa_clid": "ctwa-1",
            "page_id": "1122334455",
            "page_scoped_user_id": "psid-1",
            "ig_account_id": "ig-1",
            "ig_sid": "igsid-1",
        },
        "app_data": {"advertiser_tracking_enabled": 1, "extinfo": ["a2", "com.example", "1.0"]},
        "original_event_data": {"event_name": "Purchase", "event_time": NOW - 60, "order_id": "O-1"},
    }
    body = validate({"data": [event]})
    sent = body["payload"]["data"][0]
    assert sent["user_data"] == event["user_data"]
    assert sent["app_data"] == event["app_data"]
    assert sent["original_event_data"] == event["original_event_data"]
    assert sent["messaging_channel"] == "whatsapp"
    assert body["messages"] == []


def test_meta_tag_contents_as_a_json_string_and_x_fb_event_id() -> None:
    event = {
        "event_name": "purchase",
        "event_time": NOW,
        "page_location": "https://shop.example.com/",
        "user_agent": UA,
        "value": 10,
        "currency": "EUR",
        "x-fb-event_id": "evt-7",
        "x-fb-ud-em": d.sha("jane@example.com"),  # already hashed, as Meta's tag assumes
        "x-fb-ud-fb-login-id": "998877",
        "x-fb-cd-contents": '[{"id": "A", "quantity": 1, "item_price": 10}]',
        "x-fb-cd-unknown": "x",
    }
    body = validate(event)
    sent = body["payload"]["data"][0]
    assert sent["event_id"] == "evt-7"
    assert sent["user_data"]["em"] == [d.sha("jane@example.com")]
    assert sent["user_data"]["fb_login_id"] == "998877"
    assert sent["custom_data"]["contents"] == [{"id": "A", "quantity": 1, "item_price": 10}]
    assert body["messages"] == [{"index": 0, "ignored": ["x-fb-cd-unknown"], "message": "input keys capi does not use"}]


def test_stape_flat_values_join_user_data_values() -> None:
    event = {
        "event_name": "sign_up",
        "event_id": "s-1",
        "event_time": NOW,
        "page_location": "https://shop.example.com/",
        "user_agent": UA,
        "email": "second@example.com",
        "first_name": "Jo",
        "user_data": {"email_address": "first@example.com"},
    }
    sent = validate(event)["payload"]["data"][0]
    assert sent["user_data"]["em"] == [d.sha("first@example.com"), d.sha("second@example.com")]
    assert sent["user_data"]["fn"] == [d.sha("jo")]


@pytest.mark.parametrize("micros", [NOW * 1_000_000, str(NOW * 1_000_000)])
def test_measurement_protocol_timestamp_micros_per_request_or_event(micros: Any) -> None:
    event = {"name": "sign_up", "params": {"action_source": "system_generated", "user_id": "u-1"}}
    body = validate({"client_id": "1.2", "timestamp_micros": micros, "events": [event]})
    assert body["payload"]["data"][0]["event_time"] == NOW
    body = validate({"client_id": "1.2", "events": [{**event, "timestamp_micros": micros}]})
    assert body["payload"]["data"][0]["event_time"] == NOW


def test_measurement_protocol_request_and_event_keys_not_used_are_named() -> None:
    body = validate(
        {
            "client_id": "1.2",
            "user_properties": {"tier": {"value": "gold"}},
            "non_personalized_ads": False,
            "events": [{"name": "sign_up", "params": {"action_source": "system_generated", "user_id": "u"}, "x": 1}],
        }
    )
    assert body["messages"][-1] == {
        "index": 0,
        "ignored": ["client_id", "user_properties", "non_personalized_ads", "x"],
        "message": "input keys capi does not use",
    }
