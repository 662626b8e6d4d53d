"""Meta's 2025-2026 rules (issue 21; capi-spec.md §11, docs/meta-capi.md §11), each through the
real pipeline: /validate for the payload, the loopback fake Graph API for what Meta answers.

Sources: Meta's parameter pages (server event, custom data, Limited Data Use), Meta's best
practices (invalid customer-information combinations), stape-io/facebook-tag issue #88 (contents
without id refused since April 2026), the `X-Ad-Api-Version-Warning` header as Meta sends it
(laravel/socialite PR #749 quotes one: "The call has been auto-upgraded to v17.0 as v3.3 has
been deprecated.").
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from capi import __version__
from capi.app import TEST_EVENT_CODE_WARNING, application_from_env
from capi.delivery import graph as graph_module
from capi.delivery.graph import VERSION_WARNING, classify, version_to_move_to
from capi.errors import ConfigError
from capi.events import CUSTOMER_SEGMENTS, NO_CONTENT_ID, NO_ITEM_ID
from capi.payload import PARTNER_AGENT, partner_agent
from capi.quality import AGENT_NAME
from tests.conftest import NOW, base_env, log_lines, make_app, make_service, purchase, serve

UA = "Mozilla/5.0"
URL = "https://shop.example.com/p/1"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def event(**fields: Any) -> dict[str, Any]:
    return {
        "event_name": "purchase",
        "event_id": "e1",
        "page_location": URL,
        "user_agent": UA,
        "event_time": int(NOW) - 10,
        "value": 30,
        "currency": "EUR",
        "user_data": {"email_address": "a@example.com"},
        **fields,
    }


def validate(body: Any, **env: str) -> dict[str, Any]:
    return make_service(**env).validate(body).body


def sent(body: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return body["payload"]["data"][index]


def messages_of(body: dict[str, Any]) -> dict[str, str]:
    return {m["field"]: m["message"] for m in body["messages"] if "field" in m}


# -- contents without an id are not sent --------------------------------------------------------


def test_ga4_items_without_an_id_are_dropped_and_ids_and_count_follow() -> None:
    body = validate(
        event(items=[{"item_id": "A", "quantity": 2, "price": 10}, {"price": 5, "quantity": 3}, {"item_name": "Hat"}])
    )
    custom = sent(body)["custom_data"]
    assert custom["contents"] == [{"id": "A", "quantity": 2, "item_price": 10}, {"id": "Hat", "quantity": 1}]
    assert (custom["content_ids"], custom["num_items"]) == (["A", "Hat"], 3)
    assert messages_of(body) == {"items[1]": NO_ITEM_ID}
    assert body["rejected"] == []


def test_meta_contents_without_an_id_are_dropped_with_their_index() -> None:
    body = validate(
        {
            "data": [
                {
                    **event(),
                    "custom_data": {
                        "value": 30,
                        "currency": "EUR",
                        "contents": [{"quantity": 1}, {"id": "B", "quantity": 2}, {"id": " ", "quantity": 1}],
                        "content_ids": ["B"],
                        "num_items": 2,
                    },
                }
            ]
        }
    )
    custom = sent(body)["custom_data"]
    assert custom["contents"] == [{"id": "B", "quantity": 2}]
    assert messages_of(body) == {"custom_data.contents[0]": NO_CONTENT_ID, "custom_data.contents[2]": NO_CONTENT_ID}


def test_meta_contents_all_without_id_leave_no_contents_key() -> None:
    body = validate(event(custom_data={"contents": [{"quantity": 1}]}))
    assert "contents" not in sent(body)["custom_data"]


# -- delivery_category --------------------------------------------------------------------------


def test_delivery_category_on_items_and_event_from_every_shape() -> None:
    body = validate(
        {
            "events": [
                event(
                    event_id="ga4",
                    delivery_category="curbside",
                    items=[
                        {"item_id": "A", "delivery_category": "in_store"},
                        {"item_id": "B", "delivery_category": "drone"},
                    ],
                ),
                event(
                    event_id="meta",
                    custom_data={
                        "delivery_category": "pickup",
                        "contents": [
                            {"id": "C", "quantity": 1, "delivery_category": "home_delivery"},
                            {"id": "D", "quantity": 1, "delivery_category": "teleport"},
                        ],
                    },
                ),
                {**event(event_id="tag"), "x-fb-cd-delivery_category": "home_delivery"},
            ]
        }
    )
    ga4, meta, tag = (sent(body, i)["custom_data"] for i in range(3))
    assert ga4["delivery_category"] == "curbside"
    assert ga4["contents"] == [{"id": "A", "quantity": 1, "delivery_category": "in_store"}, {"id": "B", "quantity": 1}]
    assert "delivery_category" not in meta
    assert meta["contents"] == [
        {"id": "C", "quantity": 1, "delivery_category": "home_delivery"},
        {"id": "D", "quantity": 1},
    ]
    assert tag["delivery_category"] == "home_delivery"
    notes = {(m["index"], m["field"]): m["message"] for m in body["messages"] if "field" in m}
    assert (
        notes[(0, "items[1].delivery_category")] == "'drone' is not one of curbside, home_delivery, in_store; not sent"
    )
    assert notes[(1, "custom_data.delivery_category")].startswith("'pickup' is not one of")
    assert notes[(1, "custom_data.contents[1].delivery_category")].startswith("'teleport' is not one of")


# -- net_revenue, predicted_ltv, customer_segmentation from every dialect -------------------------

NEW_FIELDS = {"net_revenue": 12.5, "predicted_ltv": 300, "customer_segmentation": "new_customer_to_business"}


@pytest.mark.parametrize(
    ("dialect", "body"),
    [
        ("ga4", event(**NEW_FIELDS)),
        ("meta", {"data": [{**event(), "custom_data": {"value": 30, "currency": "EUR", **NEW_FIELDS}}]}),
        # Meta's parameter table puts customer_segmentation on the server event itself.
        (
            "meta",
            {
                "data": [
                    {
                        **event(),
                        "customer_segmentation": "new_customer_to_business",
                        "custom_data": {"value": 30, "currency": "EUR", "net_revenue": 12.5, "predicted_ltv": 300},
                    }
                ]
            },
        ),
        ("meta_tag", {**event(), **{f"x-fb-cd-{k}": v for k, v in NEW_FIELDS.items()}}),
        ("stape", {**event(user_data=None), "email": "a@example.com", **NEW_FIELDS}),
        (
            "measurement_protocol",
            {
                "client_id": "1.2",
                "user_data": {"sha256_email_address": sha("a@example.com")},
                "events": [
                    {
                        "name": "purchase",
                        "params": {
                            "page_location": URL,
                            "user_agent": UA,
                            "value": 30,
                            "currency": "EUR",
                            "event_id": "e1",
                            **NEW_FIELDS,
                        },
                    }
                ],
            },
        ),
    ],
)
def test_new_custom_data_fields_land_in_custom_data_from_every_dialect(dialect: str, body: dict[str, Any]) -> None:
    answer = validate(body)
    assert answer["rejected"] == [], answer["rejected"]
    assert answer["dialect"] == dialect
    custom = sent(answer)["custom_data"]
    assert {k: custom.get(k) for k in NEW_FIELDS} == NEW_FIELDS  # where Meta's example puts them
    assert "customer_segmentation" not in sent(answer)


def test_customer_segmentation_has_nine_values_and_others_are_dropped() -> None:
    assert len(CUSTOMER_SEGMENTS) == 9
    segments = sorted(CUSTOMER_SEGMENTS)
    events = [event(event_id=f"s{n}", customer_segmentation=s) for n, s in enumerate(segments)]
    body = validate({"events": [*events, event(event_id="bad", customer_segmentation="vip")]})
    assert [sent(body, n)["custom_data"].get("customer_segmentation") for n in range(10)] == [
        *sorted(CUSTOMER_SEGMENTS),
        None,
    ]
    assert {
        "index": 9,
        "field": "customer_segmentation",
        "message": "'vip' is not one of Meta's nine segments; not sent",
    } in (body["messages"])


def test_net_revenue_must_be_a_number_and_wants_a_currency() -> None:
    lead = event(event_id="b", event_name="generate_lead", currency=None, value=None, net_revenue=3)
    body = validate({"events": [event(event_id="a", net_revenue="lots"), lead]})
    assert body["rejected"][0]["field"] == "net_revenue" and body["rejected"][0]["message"] == "must be a number"
    assert {
        "index": 1,
        "field": "net_revenue",
        "message": "Meta reads net_revenue in the event's currency: send currency too",
    } in body["messages"]


# -- Limited Data Use -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "state", "ok"),
    [
        (0, 0, True),
        (1, 1000, True),
        (1, 1013, True),
        (1, 1014, False),
        (1, 999, False),
        (2, 0, False),
        (1, True, False),
    ],
)
def test_ldu_country_and_state_take_metas_values(country: int, state: Any, ok: bool) -> None:
    body = validate(
        event(
            data_processing_options=["LDU"],
            data_processing_options_country=country,
            data_processing_options_state=state,
        )
    )
    if ok:
        assert sent(body)["data_processing_options_state"] == state
    else:
        (rejected,) = body["rejected"]
        assert rejected["field"] in ("data_processing_options_country", "data_processing_options_state")
        assert rejected["message"].startswith("must be 0 (Meta geolocates)")


LDU_GEO = {"data_processing_options": ["LDU"], "data_processing_options_country": 0, "data_processing_options_state": 0}


def dpo(sent_event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sent_event.items() if k.startswith("data_processing_options")}


def test_limited_data_use_setting_and_per_event_request() -> None:
    events = {
        "events": [
            event(event_id="plain"),
            event(event_id="asked", restricted_data_processing=True),
            event(event_id="asked-text", restricted_data_processing="1"),
            event(
                event_id="own",
                data_processing_options=["LDU"],
                data_processing_options_country=1,
                data_processing_options_state=1000,
            ),
            event(event_id="off", data_processing_options=[]),
            event(event_id="declined", restricted_data_processing=False),
        ]
    }
    off = validate(events)
    assert [dpo(e) for e in off["payload"]["data"]] == [
        {},
        LDU_GEO,
        LDU_GEO,
        {
            "data_processing_options": ["LDU"],
            "data_processing_options_country": 1,
            "data_processing_options_state": 1000,
        },
        {"data_processing_options": []},
        {},
    ]
    geo = validate(events, LIMITED_DATA_USE="geo")
    # The site's choice covers every event; an event's own LDU keeps its state.
    assert [dpo(e) for e in geo["payload"]["data"]] == [
        LDU_GEO,
        LDU_GEO,
        LDU_GEO,
        {
            "data_processing_options": ["LDU"],
            "data_processing_options_country": 1,
            "data_processing_options_state": 1000,
        },
        LDU_GEO,
        LDU_GEO,
    ]
    bad = validate(event(restricted_data_processing="maybe"))
    assert bad["rejected"][0]["field"] == "restricted_data_processing"


def test_limited_data_use_setting_is_checked_at_start_up() -> None:
    with pytest.raises(ConfigError, match="LIMITED_DATA_USE must be one of off, geo"):
        make_service(LIMITED_DATA_USE="california")


# -- Meta's invalid customer-information combinations --------------------------------------------


ADDRESS_RULE = "ct+country+st+zp+ge+client_user_agent"


@pytest.mark.parametrize(
    ("user_data", "rule"),
    [
        ({"city": "Paris", "country": "FR", "region": "IDF", "postal_code": "75001", "ge": "f"}, ADDRESS_RULE),
        ({"city": "Paris"}, ADDRESS_RULE),
        ({"db": "1990-02-16"}, "db+client_user_agent"),
        ({"first_name": "Ann", "ge": "f"}, "fn+ge"),
        ({"last_name": "Lee", "ge": "f"}, "ln+ge"),
    ],
)  # fmt: skip
def test_invalid_combinations_are_refused_naming_the_rule(user_data: dict[str, Any], rule: str) -> None:
    website = "user_agent" if "first_name" not in user_data and "last_name" not in user_data else None
    fields = {"user_data": user_data}
    if website is None:  # fn+ge and ln+ge: a server event without the user agent
        fields |= {"action_source": "system_generated", "user_agent": None, "page_location": None}
    body = validate(event(**fields))
    (rejected,) = body["rejected"]
    assert rejected["field"] == "user_data"
    assert f"inside the combination {rule} that Meta's best practices call invalid" in rejected["message"]
    assert body["payload"]["data"] == []


def test_a_strong_key_makes_those_combinations_valid() -> None:
    body = validate(event(user_data={"first_name": "Ann", "ge": "f", "phone_number": "+16505551212"}))
    assert body["rejected"] == [] and set(sent(body)["user_data"]) == {"fn", "ge", "ph", "client_user_agent"}
    alone = validate(event(user_data=None, action_source="website"))  # the user agent alone: no combination
    assert alone["rejected"] == []


# -- X-Ad-Api-Version-Warning ---------------------------------------------------------------------


def test_version_to_move_to() -> None:
    header = "The call has been auto-upgraded to v17.0 as v3.3 has been deprecated."
    assert version_to_move_to(header, "v3.3") == "v17.0"
    assert version_to_move_to("v24.0 will be retired on 2026-10-06; upgrade to v26.0", "v24.0") == "v26.0"
    assert version_to_move_to("deprecated", "v24.0") is None


def test_version_warning_is_logged_once_per_process_and_version(graph: Any, capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(graph_module, "_warned_versions", set())
    graph.fake.version_warning = "The call has been auto-upgraded to v26.0 as v24.0 has been deprecated."
    client = serve(make_app(graph, META_API_VERSION="v24.0"))
    capsys.readouterr()
    for n in range(3):
        assert client.post("/events", json=purchase(f"V{n}")).status_code == 200
    (line,) = log_lines(capsys.readouterr().out, VERSION_WARNING)
    assert line["severity"] == "WARNING"
    assert (line["api_version"], line["move_to"]) == ("v24.0", "v26.0")
    assert line["fix"] == "set META_API_VERSION=v26.0 and deploy (docs/meta-capi.md §12)"
    assert graph.fake.accepted_requests == 3  # a warning, not a failure


# -- a configured test event code ------------------------------------------------------------------


def test_a_configured_test_event_code_warns_at_start_up(capsys: Any) -> None:
    capsys.readouterr()
    application_from_env({**base_env(), "DRY_RUN": "true", "META_TEST_EVENT_CODE": "TEST1"})
    (line,) = log_lines(capsys.readouterr().out, TEST_EVENT_CODE_WARNING)
    assert line["severity"] == "WARNING" and line["destinations"] == ["default"]
    assert "TEST1" not in str(line)
    application_from_env({**base_env(), "DRY_RUN": "true"})
    assert log_lines(capsys.readouterr().out, TEST_EVENT_CODE_WARNING) == []


# -- a final policy refusal --------------------------------------------------------------------------


def test_policy_refusal_is_final_even_when_marked_transient() -> None:
    from tests.fakes.graph import POLICY_REFUSAL

    error = classify(400, POLICY_REFUSAL)
    assert (error.kind, error.transient, error.meta_code) == ("refused", False, 368)
    assert classify(400, {"error": {"message": "temporarily blocked", "code": 368}}).kind == "transient"


@pytest.mark.emulator
def test_policy_refusal_is_reported_not_retried_or_stored(firestore_db: Any, graph: Any) -> None:
    graph.fake.policy_refused = {"M"}
    client = serve(make_app(graph, firestore=firestore_db))
    body = client.post("/events", json={"events": [purchase("M"), purchase("N")]}).get_json()
    assert (body["forwarded"], body["stored"]) == (1, 0)
    assert body["failed"] == [
        {
            "index": 0,
            "event_id": "M",
            "message": "Messaging Event Within Messaging Restrictive Region",
            "meta_code": 368,
            "meta_subcode": None,
        }
    ]
    # [M, N] refused, [M] refused, [N] delivered: bisected once, never retried.
    assert graph.fake.requests == 3
    assert list(firestore_db.collection("capi_deadletter").stream()) == []


# -- partner_agent -------------------------------------------------------------------------------------


def test_partner_agent_is_in_metas_form_and_is_the_quality_apis_agent_name() -> None:
    assert PARTNER_AGENT == AGENT_NAME == f"capi-gcf-{__version__}"
    assert len(PARTNER_AGENT) < 23 and PARTNER_AGENT.lower() == PARTNER_AGENT
    assert partner_agent("2.0.0RC1") == "capi-gcf-2.0.0rc1"
    with pytest.raises(ValueError, match="not in Meta's form"):
        partner_agent("1.0.0+build.20261202")
    body = validate(event())
    assert body["payload"]["partner_agent"] == AGENT_NAME


# -- Meta's tag: x-fb-cd-contents null falls back to the GA4 items -----------------------------------


@pytest.mark.parametrize("contents", [None, "null", ""])
def test_meta_tag_contents_null_falls_back_to_the_ga4_items(contents: Any) -> None:
    # Meta's sGTM tag (template.tpl): contents = x-fb-cd-contents, else the items.
    body = validate({**event(items=[{"item_id": "SKU-1", "quantity": 2, "price": 15}]), "x-fb-cd-contents": contents})
    assert body["dialect"] == "meta_tag"
    custom = sent(body)["custom_data"]
    assert custom["contents"] == [{"id": "SKU-1", "quantity": 2, "item_price": 15}]
    assert (custom["content_ids"], custom["num_items"]) == (["SKU-1"], 2)


def test_closed_lists_given_as_lists_or_objects_are_dropped_not_a_500() -> None:
    body = validate(
        event(
            customer_segmentation=["new_customer_to_business"],
            delivery_category={"x": 1},
            items=[{"item_id": "A", "delivery_category": ["in_store"]}],
        )
    )
    custom = sent(body)["custom_data"]
    assert "customer_segmentation" not in custom and "delivery_category" not in custom
    assert custom["contents"] == [{"id": "A", "quantity": 1}]
    assert set(messages_of(body)) == {"customer_segmentation", "delivery_category", "items[0].delivery_category"}
