"""Consent Mode v2 and the other consent signals (docs/api.md "Consent"), decoder by decoder and
through the pipeline: the skip names its signal, CONSENT_REQUIRED skips events with none."""

from __future__ import annotations

import string
from typing import Any

import pytest

from capi import consent
from capi.service import EventService
from tests.conftest import NOW, make_service

BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"

# The nine gcd state letters and what each means (clients.md section 2; the decoder in
# analytics-debugger/gtm-template-server-side-google-consent-parser template.tpl, matching
# giancampo.com "understanding new gcd parameter in ga4"): default (v >> 2) & 3, update v & 3,
# 1 not set, 2 denied, 3 granted, the update winning when set.
GCD_TABLE = {
    "l": "not set",
    "p": "denied",
    "q": "denied",
    "t": "granted",
    "r": "granted",
    "m": "denied",
    "n": "granted",
    "u": "denied",
    "v": "granted",
}


def _bits(letter: str) -> str:
    """The state a base64url digit encodes, computed from its bits (to check the table)."""
    value = BASE64URL.index(letter)
    default, update = (value >> 2) & 3, value & 3
    names = {1: "not set", 2: "denied", 3: "granted"}
    if update in names and update != 1:
        return names[update]
    return names.get(default, "unknown") if update == 1 else "unknown"


@pytest.mark.parametrize("letter", sorted(GCD_TABLE))
def test_every_gcd_letter_decodes_as_its_bits_say(letter: str) -> None:
    assert consent.GCD_LETTERS[letter] == GCD_TABLE[letter] == _bits(letter)


@pytest.mark.parametrize("letter", [c for c in BASE64URL + "!. " if c not in GCD_TABLE])
def test_every_other_gcd_character_counts_as_denied(letter: str) -> None:
    gcd = f"13{letter}3{letter}3{letter}3{letter}5l1"
    assert consent.gcd_state(gcd, consent.GCD_AD_STORAGE) == "denied"
    assert consent.decide({"x-ga-gcd": gcd}, False) == (False, "x-ga-gcd")


@pytest.mark.parametrize(
    ("ad_storage", "ad_user_data", "decision"),
    [
        ("granted", "granted", (True, "x-ga-gcd")),
        ("granted", "not set", (True, "x-ga-gcd")),
        ("not set", "granted", (True, "x-ga-gcd")),
        ("not set", "not set", (True, None)),  # nothing read: allowed, and no signal named
        ("denied", "granted", (False, "x-ga-gcd")),
        ("denied", "not set", (False, "x-ga-gcd")),
        ("granted", "denied", (False, "x-ga-gcd")),
        ("not set", "denied", (False, "x-ga-gcd")),
        ("denied", "denied", (False, "x-ga-gcd")),
    ],
)
def test_gcd_ad_storage_and_ad_user_data_letters(
    ad_storage: str, ad_user_data: str, decision: tuple[bool, str | None]
) -> None:
    # Positions 2 and 6 of "13r3r3r3r5l1": ad_storage and ad_user_data; analytics_storage (4)
    # and ad_personalization (8) do not gate forwarding, so they are set to denied here.
    # Every letter of each state is tried: the 81 pairs of the nine letters in all.
    for storage_letter in [letter for letter, state in GCD_TABLE.items() if state == ad_storage]:
        for user_data_letter in [letter for letter, state in GCD_TABLE.items() if state == ad_user_data]:
            gcd = f"13{storage_letter}3q3{user_data_letter}3q5l1"
            assert consent.decide({"x-ga-gcd": gcd}, False) == decision, gcd


@pytest.mark.parametrize("gcd", ["", "1", "13r", "13r3r", 13, None, ["13r3r3r3r5l1"]])
def test_short_or_malformed_gcd_is_denied(gcd: Any) -> None:
    expected = (True, None) if gcd is None else (False, "x-ga-gcd")
    assert consent.decide({"x-ga-gcd": gcd}, False) == expected


@pytest.mark.parametrize(
    ("gcs", "allowed"),
    [
        ("G100", False),  # ad_storage denied, analytics denied (Advanced Consent Mode only)
        ("G101", False),  # ad_storage denied, analytics granted
        ("G110", True),  # ad_storage granted, analytics denied
        ("G111", True),  # both granted
        ("G1", False),  # malformed: unknown counts as denied
        ("G11", False),
        ("G1111", False),
        ("G2111", False),
        ("g111", False),
        ("G1x1", False),
        ("G11x", False),
        (111, False),
    ],
)
def test_every_gcs_value(gcs: Any, allowed: bool) -> None:
    # gcs "G1xy": x (index 2) is ad_storage (ga4audits.com "gcs parameter decoded").
    assert consent.decide({"x-ga-gcs": gcs}, False) == (allowed, "x-ga-gcs")


@pytest.mark.parametrize(
    ("state", "decision"),
    [
        ({"ad_storage": True, "ad_user_data": True}, (True, "consent_state")),
        ({"ad_storage": False, "ad_user_data": True}, (False, "consent_state")),
        ({"ad_storage": True, "ad_user_data": False}, (False, "consent_state")),
        ({"ad_storage": True}, (True, "consent_state")),
        ({"ad_user_data": False}, (False, "consent_state")),
        ({"ad_storage": "false"}, (False, "consent_state")),  # not a boolean: unknown counts as denied
        ({"analytics_storage": False}, (True, None)),  # does not gate Meta: nothing read
        ("granted", (False, "consent_state")),
    ],
)
def test_stape_consent_state(state: Any, decision: tuple[bool, str | None]) -> None:
    # Stape's Data Tag writes consent_state booleans (stape-io/data-tag template.js).
    assert consent.decide({"consent_state": state}, False) == decision


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ({"ad_user_data": "GRANTED", "ad_personalization": "DENIED"}, True),  # MP reference casing
        ({"ad_user_data": "DENIED", "ad_personalization": "GRANTED"}, False),
        ({"ad_user_data": "denied"}, False),  # capi's own object
        ({"ad_storage": "denied", "ad_user_data": "granted"}, False),
        ({"ad_storage": "granted", "ad_user_data": "granted"}, True),
        ({"ad_user_data": "maybe"}, False),
        ({"ad_user_data": True}, False),
        ("denied", False),
    ],
)
def test_consent_object_capi_and_measurement_protocol(value: Any, allowed: bool) -> None:
    # Every value here is read (granted, denied or unknown): the signal is always named.
    assert consent.decide({"consent": value}, False) == (allowed, "consent")


def test_any_denying_signal_wins_and_is_named() -> None:
    event = {"x-ga-gcs": "G111", "x-ga-gcd": "13q3r3r3r5l1", "consent_state": {"ad_storage": True}}
    assert consent.decide(event, False) == (False, "x-ga-gcd")
    assert consent.decide({"x-ga-gcs": "G111", "x-ga-gcd": "13r3r3r3r5l1"}, False) == (True, "x-ga-gcd")


def test_consent_required_skips_only_events_without_a_signal() -> None:
    assert consent.decide({}, True) == (False, "CONSENT_REQUIRED")
    assert consent.decide({"x-ga-gcd": "13l3l3l3l5l1"}, True) == (False, "CONSENT_REQUIRED")  # all not set
    assert consent.decide({"x-ga-gcs": "G111"}, True) == (True, "x-ga-gcs")
    assert consent.decide({}, False) == (True, None)


def _service(**env: str) -> EventService:
    return make_service(FORWARD_EVENTS="*", **env)


def _event(event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_name": "purchase",
        "event_id": event_id,
        "event_time": int(NOW),
        "page_location": "https://shop.example.com/",
        "user_agent": "UA",
        "value": 1,
        "currency": "USD",
        "user_data": {"email_address": "jane@example.com"},
        **fields,
    }


def test_skips_name_their_signal_through_the_pipeline() -> None:
    body = (
        _service()
        .validate(
            {
                "events": [
                    _event("gcs", **{"x-ga-gcs": "G101"}),
                    _event("gcd", **{"x-ga-gcd": "13r3r3m3r5l1"}),
                    _event("stape", consent_state={"ad_user_data": False}),
                    _event("capi", consent={"ad_storage": "denied"}),
                    _event("ok", **{"x-ga-gcs": "G111"}),
                    _event("none"),
                ]
            }
        )
        .body
    )
    assert body["skipped"] == [
        {"index": 0, "event_id": "gcs", "reason": "consent", "consent_signal": "x-ga-gcs"},
        {"index": 1, "event_id": "gcd", "reason": "consent", "consent_signal": "x-ga-gcd"},
        {"index": 2, "event_id": "stape", "reason": "consent", "consent_signal": "consent_state"},
        {"index": 3, "event_id": "capi", "reason": "consent", "consent_signal": "consent"},
    ]
    assert body["event_ids"] == ["ok", "none"]


def test_measurement_protocol_request_consent_applies_to_every_event() -> None:
    body = (
        _service()
        .validate(
            {
                "client_id": "1.2",
                "consent": {"ad_user_data": "DENIED"},
                "events": [{"name": "purchase", "params": {"value": 1}}, {"name": "sign_up"}],
            }
        )
        .body
    )
    assert [(s["index"], s["reason"], s["consent_signal"]) for s in body["skipped"]] == [
        (0, "consent", "consent"),
        (1, "consent", "consent"),
    ]


def test_consent_required_through_the_pipeline_and_the_decision_counts() -> None:
    service = _service(CONSENT_REQUIRED="true")
    events = [_event("none"), _event("ok", **{"x-ga-gcs": "G111"}), _event("no", **{"x-ga-gcs": "G100"})]
    outcome = service.forward({"events": events})
    assert outcome.body["skipped"] == [
        {"index": 0, "event_id": "none", "reason": "consent", "consent_signal": "CONSENT_REQUIRED"},
        {"index": 2, "event_id": "no", "reason": "consent", "consent_signal": "x-ga-gcs"},
    ]
    # What the "events processed" line carries: counts per signal, never a value.
    consent_counts = {"CONSENT_REQUIRED": {"denied": 1}, "x-ga-gcs": {"granted": 1, "denied": 1}}
    assert outcome.log_summary()[0]["consent"] == consent_counts
