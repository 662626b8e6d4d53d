"""Mapping and validation of input events, through the pure pipeline (no HTTP, nothing sent)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson
import pytest

from capi.errors import RequestError
from capi.events import FROM_ORDER, MAX_CHARS, MINTED
from tests.conftest import NOW
from tests.conftest import make_service as service

UA = "Mozilla/5.0 (X11; Linux x86_64)"
URL = "https://shop.example.com/p/1"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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
        ({"items": [{"item_id": "A"}, {"item_id": "B", "quantity": 1.5}]}, "items[1].quantity", "whole number"),
        ({"items": [{"item_id": "A", "quantity": -1}]}, "items[0].quantity", "whole number"),
        ({"ecommerce": {"items": [{"item_id": "A", "price": "cheap"}]}}, "ecommerce.items[0].price", "number"),
        ({"items": [{"item_id": 7, "quantity": "2"}, "B"]}, "items[1]", "must be an object"),
        ({"currency": 840}, "currency", "ISO 4217 currency code such as USD"),
        ({"items": "A"}, "items", "list"),
        ({"user_data": "john@example.com"}, "user_data", "must be an object"),
        ({"event_id": {"a": 1}}, "event_id", "non-empty string"),
        ({"data_processing_options": "LDU"}, "data_processing_options", "list"),
        ({"data_processing_options": ["LDU"] * 5}, "data_processing_options", "at most 4"),  # one over the bound
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
        "partner_agent": "capi-gcf-0.3.0",
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


# -- Event ids and deduplication (docs/api.md "Deduplication with the Pixel") -------------------


def test_purchase_without_event_id_uses_its_order_id() -> None:
    purchase = {"event_name": "purchase", "value": 5, "currency": "USD", "user_data": {"email": "a@b.co"}}
    body = validate(
        [
            event(**purchase, transaction_id=" T-1 "),
            event(**{**purchase, "custom_data": {"order_id": "O-2"}}),
            event(**purchase),  # no order id: minted
        ]
    )
    assert body["event_ids"] == ["T-1", "O-2", "minted-0"]
    assert [m for m in body["messages"] if m.get("field") == "event_id"] == [
        {"index": 0, "field": "event_id", "message": FROM_ORDER},
        {"index": 1, "field": "event_id", "message": FROM_ORDER},
        {"index": 2, "field": "event_id", "message": MINTED},
    ]
    assert "Meta cannot deduplicate it against the Pixel" in MINTED


def test_only_purchases_take_the_order_id() -> None:
    body = validate([event(transaction_id="T-9", user_data={"email": "a@b.co"})])  # add_to_cart
    assert body["event_ids"] == ["minted-0"]


def test_same_event_name_and_id_twice_in_one_request_is_sent_once() -> None:
    # Issue 10 finding 15: the second copy was sent too.
    body = validate(
        [
            event(event_id="E-1", user_data={"email": "a@b.co"}),
            event(event_id="E-1", user_data={"email": "a@b.co"}),
            event(event_id="E-1", event_name="sign_up", user_data={"email": "a@b.co"}),  # another name: sent
        ]
    )
    assert [(e["event_name"], e["event_id"]) for e in body["payload"]["data"]] == [
        ("AddToCart", "E-1"),
        ("CompleteRegistration", "E-1"),
    ]
    assert body["skipped"] == [{"index": 1, "event_id": "E-1", "reason": "duplicate"}]


def test_a_rejected_first_copy_does_not_make_a_valid_repeat_a_duplicate() -> None:
    # The first copy loses its only customer value (not an email) and is rejected once
    # finished; the corrected repeat with the same name and id must go, not be skipped.
    server = {"action_source": "system_generated", "page_location": None, "user_agent": None}
    body = validate(
        [
            event(event_id="E-2", user_data={"email": "not-an-email"}, **server),
            event(event_id="E-2", user_data={"email": "a@b.co"}, **server),
        ]
    )
    assert [(e["event_name"], e["event_id"]) for e in body["payload"]["data"]] == [("AddToCart", "E-2")]
    assert body["payload"]["data"][0]["user_data"] == {"em": [hashlib.sha256(b"a@b.co").hexdigest()]}
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [(0, "user_data")]
    assert body["skipped"] == []


# -- Nothing silent --------------------------------------------------------------------------


def test_a_rejected_event_lists_all_its_problems() -> None:
    body = validate(
        [
            event(
                event_id="bad",
                event_name="purchase",
                event_time="yesterday",
                value="lots",
                currency="XYZ",
                page_location=None,
                user_agent=None,
                items=[{"item_id": "A", "quantity": 0}],
                opt_out="yes",
            )
        ]
    )
    (rejected,) = body["rejected"]
    assert [(p["field"], p["message"]) for p in rejected["problems"]] == [
        ("event_time", "must be unix seconds or an ISO 8601 date-time"),
        ("page_location", "Meta requires event_source_url (page_location) for website events"),
        ("value", "must be a number"),
        ("currency", "XYZ is not an ISO 4217 currency code"),
        ("items[0].quantity", "must be a whole number from 1 to 2147483647"),
        ("opt_out", "must be true or false"),
        ("user_agent", "Meta requires client_user_agent (user_agent) for website events"),
    ]
    assert (rejected["field"], rejected["message"]) == ("event_time", "must be unix seconds or an ISO 8601 date-time")


def test_every_unused_input_key_is_named_once_per_event() -> None:
    body = validate(
        [
            event(event_id="a", user_data={"email": "a@b.co", "street": "x", "address": {"street": "1 Main"}}),
            event(
                event_id="b",
                page_title="Home",
                ecommerce={"items": [{"item_id": "A", "item_brand": "B"}], "affiliation": "web"},
                user_data={"email": "a@b.co"},
            ),
            event(event_id="c", user_data={"email": "a@b.co"}),
        ]
    )
    assert [m for m in body["messages"] if "ignored" in m] == [
        {
            "index": 0,
            "ignored": ["user_data.street", "user_data.address.street"],
            "message": "input keys capi does not use",
        },
        {
            "index": 1,
            "ignored": ["page_title", "ecommerce.affiliation", "ecommerce.items[].item_brand"],
            "message": "input keys capi does not use",
        },
    ]


def test_event_time_far_in_the_future_is_not_called_milliseconds() -> None:
    # Issue 10 finding 16: an ISO date in year 9999 was rejected as "looks like milliseconds".
    body = validate([event(event_id="x", event_time="9999-12-31T00:00:00Z", user_data={"email": "a@b.co"})])
    assert body["rejected"][0]["message"] == "more than a minute in the future"
    body = validate([event(event_id="x", event_time=str((int(NOW) - 5) * 1000), user_data={"email": "a@b.co"})])
    assert body["rejected"][0]["message"] == "looks like milliseconds; send unix seconds"


# -- Bounds (docs/delivery.md "Bounds"; issue 10 findings 1-3) -----------------------------------------


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"items": [{"item_id": "A", "quantity": "1e30"}]}, "items[0].quantity", "whole number from 1"),
        ({"items": [{"item_id": "A", "quantity": 2**64 - 1}]}, "items[0].quantity", "whole number from 1"),
        ({"items": [{"item_id": "A", "quantity": 2**31}]}, "items[0].quantity", "whole number from 1"),
        ({"items": [{"item_id": "A", "quantity": 0}]}, "items[0].quantity", "whole number from 1"),
        ({"value": "100000000000000000000000000000"}, "value", "below 1e15"),
        ({"value": 10**15}, "value", "below 1e15"),
        ({"value": -(10**15)}, "value", "below 1e15"),
        ({"items": [{"item_id": "A", "price": 1e15}]}, "items[0].price", "below 1e15"),
        ({"custom_data": {"predicted_ltv": 2**70}}, "custom_data.predicted_ltv", "below 1e15"),
        ({"custom_data": {"num_items": -1}}, "custom_data.num_items", "whole number from 0"),
        ({"custom_data": {"contents": [{"id": "A", "quantity": 2**64}]}}, "custom_data.contents[0].quantity", "from 1"),
        ({"custom_data": _nested(300)}, "custom_data" + ".k" * 16, "nested deeper than 16 levels"),
        ({"custom_data": {"x": _nested(16)}}, "custom_data.x" + ".k" * 15, "nested deeper than 16 levels"),
        ({"custom_data": {"big": [1, 2**64]}}, "custom_data.big[1]", "larger than 64 bits"),
        ({"app_data": {"extinfo": [_nested(20)]}}, "app_data.extinfo[0]" + ".k" * 14, "nested deeper"),
        ({"data_processing_options": [], "data_processing_options_state": 2**64}, "data_processing_options_state", ""),
    ],
)
def test_numbers_and_nesting_json_cannot_carry_reject_only_their_event(
    fields: dict[str, Any], field: str, message: str
) -> None:
    # Issue 10 finding 1: these answered 500 and sank the good events of the request.
    body = validate([event(event_id="good", user_data={"email": "a@b.co"}), event(event_id="bad", **fields)])
    assert body["event_ids"] == ["good"]
    (rejected,) = body["rejected"]
    assert (rejected["index"], rejected["field"]) == (1, field)
    assert message in rejected["message"]
    orjson.dumps(body)  # what the answer and the Graph body go through: it must never fail


@pytest.mark.parametrize(
    "fields",
    [
        {"value": 10**15 - 1, "items": [{"item_id": "A", "quantity": 2**31 - 1, "price": -(10**15) + 1}]},
        {"items": [{"item_id": "A", "quantity": 1}]},
        {"custom_data": _nested(16)},  # custom_data itself is level 1: 16 levels in all
        {"custom_data": {"big": [2**64 - 1, -(2**63)], "num_items": 0}},
        {"app_data": {"extinfo": ["a2", _nested(14)]}},  # app_data, extinfo, then 14 levels
    ],
)
def test_numbers_and_nesting_at_their_bounds_pass(fields: dict[str, Any]) -> None:
    body = validate([event(event_id="edge", user_data={"email": "a@b.co"}, **fields)])
    assert body["event_ids"] == ["edge"], body["rejected"]
    orjson.dumps(body)


@pytest.mark.parametrize(
    ("key", "name", "valid"),
    [
        ("em", "email", "jane@example.com"),
        ("ph", "phone", "+16505551212"),
        ("fn", "first_name", "Jane"),
        ("ln", "last_name", "Doe"),
        ("ct", "city", "Paris"),
        ("st", "state", "CA"),
        ("zp", "zip", "94025"),
        ("country", "country", "US"),
        ("db", "db", "1990-02-16"),
        ("ge", "ge", "f"),
        ("external_id", "external_id", "u-1"),
    ],
)
def test_customer_values_at_their_character_bound_pass_and_one_over_is_dropped(key: str, name: str, valid: str) -> None:
    limit = MAX_CHARS[key]
    at_bound, over = valid + " " * (limit - len(valid)), valid + " " * (limit + 1 - len(valid))
    body = validate(
        [
            # A phone beside the value: alone with the user agent, ct, st, zp, country, db or ge
            # would be one of Meta's invalid combinations (test_meta_2026.py).
            event(event_id="at", user_data={name: at_bound, "ph" if key != "ph" else "em": "+16505551212"}),
            event(event_id="over", user_data={name: over, "ph" if key != "ph" else "em": "+16505551212"}),
        ]
    )
    at, over_event = body["payload"]["data"]
    assert key in at["user_data"]
    assert key not in over_event["user_data"]
    assert {"index": 1, "field": f"user_data.{name}", "message": f"longer than {limit} characters; not sent"} in (
        body["messages"]
    )


def test_an_email_of_254_characters_is_sent_and_255_is_not() -> None:
    local = "a" * 64
    domain = ("b" * 61 + ".") * 3
    email_254 = f"{local}@{domain}{'c' * (254 - len(local) - 1 - len(domain))}"
    assert len(email_254) == 254
    body = validate(
        [event(event_id="a", user_data={"email": email_254}), event(event_id="b", user_data={"email": email_254 + "c"})]
    )
    assert body["payload"]["data"][0]["user_data"]["em"] == [sha(email_254)]
    assert "em" not in body["payload"]["data"][1]["user_data"]


def test_values_per_key_are_capped_at_16_with_one_message() -> None:
    emails = [f"user{n}@example.com" for n in range(20)]
    body = validate(
        [event(event_id="a", user_data={"email": emails[:16]}), event(event_id="b", user_data={"email": emails})]
    )
    assert body["payload"]["data"][0]["user_data"]["em"] == [sha(e) for e in emails[:16]]
    assert body["payload"]["data"][1]["user_data"]["em"] == [sha(e) for e in emails[:16]]
    assert [m for m in body["messages"] if m.get("field") == "user_data.email"] == [
        {"index": 1, "field": "user_data.email", "message": "4 values over the limit of 16 per key; not sent"}
    ]


def test_forty_thousand_emails_cost_linear_time() -> None:
    # Issue 10 finding 2: 40 000 distinct emails took 8.6 s of CPU (a list scan per value).
    emails = [f"user{n}@example.com" for n in range(40_000)]
    started = time.process_time()
    body = validate([event(event_id="a", user_data={"email": emails, "em": emails})])
    assert time.process_time() - started < 1.0
    assert len(body["payload"]["data"][0]["user_data"]["em"]) == 16


def test_plain_and_id_values_have_bounds_too() -> None:
    body = validate(
        [
            event(event_id="a", user_agent="U" * 2048, user_data={"email": "a@b.co", "lead_id": "1" * 512}),
            event(event_id="b", user_agent="U" * 2049, user_data={"email": "a@b.co", "lead_id": "1" * 513}),
        ]
    )
    assert body["payload"]["data"][0]["user_data"]["lead_id"] == "1" * 512
    assert [r["index"] for r in body["rejected"]] == [1]  # a website event left without its user agent
    assert "client_user_agent" in body["rejected"][0]["message"]


def test_data_processing_options_at_the_bound_go_through() -> None:
    body = validate([event(event_id="dpo-4", data_processing_options=["LDU", "LDU", "LDU", "LDU"])])
    assert body["rejected"] == []
    assert body["payload"]["data"][0]["data_processing_options"] == ["LDU", "LDU", "LDU", "LDU"]
