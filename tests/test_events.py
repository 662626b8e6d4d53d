"""Mapping and validation of input events, through the pure pipeline (no HTTP, nothing sent)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from capi.config import load_config
from capi.errors import RequestError
from capi.service import EventService

NOW = 1_790_000_000.0
UA = "Mozilla/5.0 (X11; Linux x86_64)"
URL = "https://shop.example.com/p/1"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def service(**env: str) -> EventService:
    config = load_config({"META_PIXEL_ID": "1", "DRY_RUN": "true", **env})
    ids = iter(f"minted-{n}" for n in range(10_000))
    return EventService(config, sender=None, clock=lambda: NOW, mint=lambda: next(ids))


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_name": "add_to_cart",
        "page_location": URL,
        "user_agent": UA,
        "event_time": int(NOW) - 10,
    }
    base.update(fields)
    return base


def validate(events: list[Any], **env: str) -> dict[str, Any]:
    return service(**env).validate({"events": events}).body


def test_standard_event_mapping() -> None:
    names = [
        "page_view",
        "view_item",
        "add_to_cart",
        "add_to_wishlist",
        "begin_checkout",
        "add_payment_info",
        "sign_up",
        "generate_lead",
        "search",
        "my_custom",
    ]
    body = validate([event(event_name=n) for n in names], FORWARD_EVENTS="*")
    assert [e["event_name"] for e in body["payload"]["data"]] == [
        "PageView",
        "ViewContent",
        "AddToCart",
        "AddToWishlist",
        "InitiateCheckout",
        "AddPaymentInfo",
        "CompleteRegistration",
        "Lead",
        "Search",
        "my_custom",
    ]


def test_default_forward_events_skip_page_view_and_custom_names() -> None:
    body = validate([event(event_name="page_view"), event(event_name="my_custom"), event(event_name="Lead")])
    assert body["skipped"] == [
        {"index": 0, "event_id": None, "reason": "not in FORWARD_EVENTS"},
        {"index": 1, "event_id": None, "reason": "not in FORWARD_EVENTS"},
    ]
    assert [e["event_name"] for e in body["payload"]["data"]] == ["Lead"]


def test_event_name_map_and_forward_events_match_either_name() -> None:
    env = {"EVENT_NAME_MAP": '{"lead_form": "Lead", "purchase": "Subscribe"}', "FORWARD_EVENTS": "Lead, Subscribe"}
    body = validate(
        [
            event(event_name="lead_form"),
            event(event_name="purchase", value=1, currency="EUR"),
            event(event_name="add_to_cart"),
        ],
        **env,
    )
    assert [e["event_name"] for e in body["payload"]["data"]] == ["Lead", "Subscribe"]
    assert body["skipped"] == [{"index": 2, "event_id": None, "reason": "not in FORWARD_EVENTS"}]


def test_purchase_custom_data_from_ga4_fields() -> None:
    body = validate(
        [
            event(
                event_name="purchase",
                event_id="ORDER-9",
                value="42.50",
                currency="eur",
                transaction_id=9001,
                items=[{"item_id": "A", "price": 10, "quantity": 2}, {"item_name": "Hat", "price": 22.5}],
            )
        ]
    )
    assert body["payload"]["data"][0]["custom_data"] == {
        "value": 42.5,
        "currency": "eur",
        "order_id": "9001",
        "contents": [{"id": "A", "quantity": 2, "item_price": 10}, {"id": "Hat", "quantity": 1, "item_price": 22.5}],
        "content_ids": ["A", "Hat"],
        "content_type": "product",
        "num_items": 3,
    }


def test_ecommerce_object_and_custom_data_pass_through() -> None:
    body = validate(
        [
            event(event_name="search", search_term="red shoes"),
            event(
                ecommerce={"value": 5, "currency": "USD", "items": [{"item_id": "Z"}]},
                custom_data={"content_category": "shoes", "value": 6},
            ),
        ]
    )
    assert body["payload"]["data"][0]["custom_data"] == {"search_string": "red shoes"}
    assert body["payload"]["data"][1]["custom_data"] == {
        "value": 6,
        "currency": "usd",
        "contents": [{"id": "Z", "quantity": 1}],
        "content_ids": ["Z"],
        "content_type": "product",
        "num_items": 1,
        "content_category": "shoes",
    }


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"event_name": None}, "event_name", "is required"),
        ({"event_time": NOW - 8 * 86400}, "event_time", "older than 7 days"),
        ({"event_time": NOW + 120}, "event_time", "more than a minute in the future"),
        ({"event_time": (NOW - 5) * 1000}, "event_time", "milliseconds"),
        ({"event_time": "yesterday"}, "event_time", "ISO 8601"),
        ({"currency": "XYZ", "value": 1}, "currency", "not an ISO 4217"),
        ({"currency": "dollars", "value": 1}, "currency", "ISO 4217"),
        ({"value": "lots"}, "value", "must be a number"),
        ({"event_name": "purchase", "value": 3}, "currency", "Meta requires value and currency for Purchase"),
        ({"action_source": "fax"}, "action_source", "must be one of"),
        ({"page_location": None}, "page_location", "event_source_url"),
        ({"page_location": "ftp://x"}, "page_location", "http(s) URL"),
        ({"user_agent": None}, "user_agent", "client_user_agent"),
        ({"items": [{"price": 3}]}, "items[0]", "item_id"),
        ({"items": [{"item_id": "A"}, {"item_id": "B", "quantity": 1.5}]}, "items[1].quantity", "whole number"),
        ({"items": [{"item_id": "A", "quantity": -1}]}, "items[0].quantity", "whole number"),
        ({"ecommerce": {"items": [{"item_id": "A", "price": "cheap"}]}}, "ecommerce.items[0].price", "number"),
        ({"items": [{"item_id": 7, "quantity": "2"}, "B"]}, "items[1]", "must be an object"),
        ({"currency": 840}, "currency", "ISO 4217 currency code such as USD"),
        ({"items": "A"}, "items", "list"),
        ({"user_data": "john@example.com"}, "user_data", "must be an object"),
        ({"event_id": {"a": 1}}, "event_id", "non-empty string"),
        ({"data_processing_options": "LDU"}, "data_processing_options", "list"),
        ({"opt_out": "yes"}, "opt_out", "true or false"),
    ],
)
def test_one_bad_event_is_rejected_with_its_field_and_the_others_go_through(
    fields: dict[str, Any], field: str, message: str
) -> None:
    body = validate([event(event_id="good-1"), event(**{"event_id": "bad", **fields}), event(event_id="good-2")])
    assert [e["event_id"] for e in body["payload"]["data"]] == ["good-1", "good-2"]
    assert len(body["rejected"]) == 1
    rejected = body["rejected"][0]
    assert (rejected["index"], rejected["field"]) == (1, field)
    assert message in rejected["message"]


def test_currency_trimmed_and_sent_lowercase() -> None:
    body = validate([event(event_id="a", currency=" usd "), event(event_id="b", currency="EUR")])
    assert [e["custom_data"]["currency"] for e in body["payload"]["data"]] == ["usd", "eur"]


def test_iso_event_time_and_default_now() -> None:
    body = validate([event(event_time="2026-09-21T13:33:10Z"), event(event_time=None)])
    times = [e["event_time"] for e in body["payload"]["data"]]
    assert times[0] == 1789997590 and times[1] == int(NOW)


def test_event_id_kept_or_minted_once_and_returned() -> None:
    body = validate([event(event_id="E-1"), event(), event(event_id=42)])
    assert body["event_ids"] == ["E-1", "minted-0", "42"]
    assert [e["event_id"] for e in body["payload"]["data"]] == ["E-1", "minted-0", "42"]


def test_user_data_all_input_names_merge_into_one_deduplicated_list() -> None:
    digest = sha("john@example.com")
    body = validate(
        [
            event(
                user_data={
                    "email_address": "John@Example.com",
                    "em": ["john@example.com", " x@y.org "],
                    "sha256_email_address": digest.upper(),
                }
            )
        ]
    )
    assert body["payload"]["data"][0]["user_data"]["em"] == [digest, sha("x@y.org")]


def test_ga4_address_and_meta_short_keys() -> None:
    body = validate(
        [
            event(
                user_id="U-1",
                **{"x-fb-ck-fbp": "fb.1.1596403881668.1116446470"},
                user_data={
                    "address": [
                        {
                            "first_name": "Anna",
                            "last_name": "Smith",
                            "city": "Menlo Park",
                            "region": "california",
                            "postal_code": "94025",
                            "country": "US",
                        }
                    ],
                    "ph": "650-555-1212",
                    "ge": "female",
                    "db": "1990-01-31",
                },
            )
        ]
    )
    user = body["payload"]["data"][0]["user_data"]
    assert user == {
        "ph": [sha("16505551212")],
        "fn": [sha("anna")],
        "ln": [sha("smith")],
        "ge": [sha("f")],
        "db": [sha("19900131")],
        "ct": [sha("menlopark")],
        "st": [sha("ca")],
        "zp": [sha("94025")],
        "country": [sha("us")],
        "external_id": [sha("u-1")],
        "client_user_agent": UA,
        "fbp": "fb.1.1596403881668.1116446470",
    }


def test_default_country_completes_phones_but_is_never_sent_as_country() -> None:
    body = validate(
        [event(user_data={"phone_number": "020 7946 0958", "address": {"postal_code": "94025-1234"}})],
        DEFAULT_COUNTRY="GB",
    )
    user = body["payload"]["data"][0]["user_data"]
    assert user["ph"] == [sha("442079460958")]
    assert user["zp"] == [sha("940251234")]  # GB rule, not the US 5-digit cut
    assert "country" not in user


def test_no_region_phone_sent_as_digits_with_a_message() -> None:
    body = validate([event(user_data={"phone_number": "(650) 555-1212"})])
    assert body["payload"]["data"][0]["user_data"]["ph"] == [sha("6505551212")]
    assert any(m["field"] == "user_data.ph" and "DEFAULT_COUNTRY" in m["message"] for m in body["messages"])


def test_bad_values_dropped_with_messages_event_kept() -> None:
    body = validate(
        [
            event(
                user_data={"email_address": "nope", "gender": "other", "phone_number": "12"},
                ip_override="not-an-ip",
                fbp="fb.1.1596403881668.1116446470",
                fbc="IwAR-no-prefix",
            )
        ],
        DEFAULT_COUNTRY="US",
    )
    user = body["payload"]["data"][0]["user_data"]
    assert user == {"client_user_agent": UA, "fbp": "fb.1.1596403881668.1116446470"}
    fields = {m["field"] for m in body["messages"]}
    assert {"user_data.email_address", "user_data.gender", "user_data.phone_number", "ip_override", "fbc"} <= fields


@pytest.mark.parametrize(
    ("fbc", "kept"),
    [
        ("fb.1.1554763741205.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk", True),
        ("fb.2.1554763741205.AbC.AQICAQMC", True),  # param-builder's fifth segment
        ("fb.1.1554763741205", False),
        ("1554763741205.IwAR", False),
        ("fb.1.now.IwAR", False),
        (
            "fb.1.\u0661\u0665\u0665\u0664\u0667\u0666\u0663\u0667\u0664\u0661\u0662\u0660\u0665.IwAR",
            False,
        ),  # Arabic-Indic ms
    ],
)
def test_fbc_shape_checked(fbc: str, kept: bool) -> None:
    body = validate([event(fbc=fbc)])
    assert ("fbc" in body["payload"]["data"][0]["user_data"]) is kept


def test_event_without_any_customer_information_is_rejected() -> None:
    body = validate([event(action_source="system_generated", user_agent=None, page_location=None)])
    assert body["rejected"] == [
        {
            "index": 0,
            "event_id": None,
            "field": "user_data",
            "message": "no customer information left to match on",
            "problems": [{"field": "user_data", "message": "no customer information left to match on"}],
        }
    ]


def test_fbc_built_from_fbclid_case_kept_and_given_fbc_wins() -> None:
    t = int(NOW) - 10
    body = validate(
        [
            event(page_location="https://x.example/?a=1&fbclid=IwAR2xYz_AbC", event_time=t),
            event(page_location="https://x.example/?fbclid=Zz", fbc="fb.1.1554763741205.given"),
        ]
    )
    assert body["payload"]["data"][0]["user_data"]["fbc"] == f"fb.1.{t * 1000}.IwAR2xYz_AbC"
    assert body["payload"]["data"][1]["user_data"]["fbc"] == "fb.1.1554763741205.given"


def test_consent_denied_is_skipped() -> None:
    body = validate(
        [
            event(event_id="a", consent={"ad_user_data": "denied"}),
            event(event_id="b", consent={"ad_storage": "DENIED", "ad_user_data": "granted"}),
            event(event_id="c", consent={"ad_user_data": "granted", "ad_storage": "granted"}),
        ]
    )
    assert body["skipped"] == [
        {"index": 0, "event_id": "a", "reason": "consent", "consent_signal": "consent"},
        {"index": 1, "event_id": "b", "reason": "consent", "consent_signal": "consent"},
    ]
    assert body["event_ids"] == ["c"]


def test_ldu_passes_through_and_referrer_and_action_source() -> None:
    body = validate(
        [
            event(
                data_processing_options=["LDU"],
                data_processing_options_country=1,
                data_processing_options_state=1000,
                page_referrer="https://google.com/",
                action_source="app",
            )
        ]
    )
    sent = body["payload"]["data"][0]
    assert (
        sent["data_processing_options"],
        sent["data_processing_options_country"],
        sent["data_processing_options_state"],
    ) == (["LDU"], 1, 1000)
    assert sent["referrer_url"] == "https://google.com/"
    assert sent["action_source"] == "app"


def test_exact_payload_shape() -> None:
    body = (
        service(META_TEST_EVENT_CODE="TEST123")
        .validate(event(event_id="e1", event_name="generate_lead", user_data={"email": "a@b.co"}))
        .body
    )
    assert body["payload"] == {
        "data": [
            {
                "event_name": "Lead",
                "event_time": int(NOW) - 10,
                "event_id": "e1",
                "action_source": "website",
                "event_source_url": URL,
                "user_data": {"em": [sha("a@b.co")], "client_user_agent": UA},
            }
        ],
        "partner_agent": "capi-gcf-0.1.0",
        "test_event_code": "TEST123",
    }
    assert "access_token" not in body["payload"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "body"),
        ("x", "body"),
        ({}, "events"),
        ({"events": []}, "events"),
        ({"events": {}}, "events"),
        ({"events": [{}] * 1001}, "events"),
        ({"events": [{"event_name": "x"}], "test_event_code": 5}, "test_event_code"),
    ],
)
def test_bad_envelopes_are_request_errors(payload: Any, field: str) -> None:
    with pytest.raises(RequestError) as info:
        service().validate(payload)
    assert info.value.field == field


def test_non_object_events_rejected_individually() -> None:
    body = validate([5, "x", None, event(event_id="ok")])
    assert [r["index"] for r in body["rejected"]] == [0, 1, 2]
    assert body["event_ids"] == ["ok"]


def test_item_price_used_when_price_is_null() -> None:
    body = validate([event(items=[{"item_id": "A", "price": None, "item_price": 5}, {"id": "B", "quantity": "2"}])])
    assert body["payload"]["data"][0]["custom_data"]["contents"] == [
        {"id": "A", "quantity": 1, "item_price": 5},
        {"id": "B", "quantity": 2},
    ]


def test_ga4_sha256_phone_is_sent_with_a_warning() -> None:
    digest = sha("+16505551212")
    for value in (digest, [digest]):
        body = validate([event(event_id="e1", user_data={"sha256_phone_number": value})])
        assert body["payload"]["data"][0]["user_data"]["ph"] == [digest]
        assert [m["field"] for m in body["messages"]] == ["user_data.sha256_phone_number"]
        assert "leading '+'" in body["messages"][0]["message"]


def test_null_customer_fields_are_ignored_without_messages() -> None:
    body = validate(
        [
            event(
                event_id="e1",
                user_id=None,
                user_data={"sha256_phone_number": None, "email": None, "address": {"city": None}},
            )
        ]
    )
    assert body["payload"]["data"][0]["user_data"] == {"client_user_agent": UA}
    assert body["messages"] == []
