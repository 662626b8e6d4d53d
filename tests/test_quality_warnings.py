"""capi_quality's release-3 warnings (deduplication, event coverage, Meta's IP diagnostics), each
with its fix, through main.py's real entry point against the loopback fake Dataset Quality API.

The answers are Meta's documented samples (tests/fakes/dataset_quality.py: the "API Response"
examples of developers.facebook.com/docs/marketing-api/conversions-api/dataset-quality-api),
plus one entry built here in the same shape for an IPv4 diagnostic.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from capi.quality import quality_warnings
from tests.conftest import PIXEL_ID, base_env, log_lines
from tests.fakes.dataset_quality import SAMPLE_WEB
from tests.fakes.graph import GraphServer

# Meta's diagnostics name a server that sends IPv4 where the Pixel saw IPv6 (capi-spec.md §11
# quotes it as "Server sending IPv4"); the wording of name and solution here is ours, the shape Meta's.
IPV4_ENTRY: dict[str, Any] = {
    "event_name": "ViewContent",
    "event_match_quality": {
        "composite_score": 6.5,
        "match_key_feedback": [{"identifier": "ip_address", "coverage": {"percentage": 100}}],
        "diagnostics": [
            {
                "name": "Server sending IPv4 addresses instead of IPv6",
                "description": "Your server sends IPv4 client IP addresses while the browser has an IPv6 one.",
                "solution": "Send the IPv6 client IP address when one is available.",
                "percentage": 80.2,
                "affected_event_count": 802,
                "total_event_count": 1000,
            },
            {
                "name": "Missing email",
                "description": "...",
                "solution": "...",
                "percentage": 50,
                "affected_event_count": 500,
                "total_event_count": 1000,
            },
        ],
    },
    "event_coverage": {"percentage": 90, "goal_percentage": 75, "description": "..."},
    "dedupe_key_feedback": [
        {
            "dedupe_key": "event_id",
            "browser_events_with_dedupe_key": {"percentage": 100, "description": "..."},
            "server_events_with_dedupe_key": {"percentage": 100, "description": "..."},
            "overall_browser_coverage_from_dedupe_key": {"percentage": 96.5, "description": "..."},
        }
    ],
}


def run_quality(graph: GraphServer, make_client: Callable[..., Any], capsys: Any, **env: str) -> tuple[Any, str]:
    graph.fake.quality.web[PIXEL_ID] = [*copy.deepcopy(SAMPLE_WEB), IPV4_ENTRY]
    client = make_client(base_env(graph, **env), target="capi_quality")
    capsys.readouterr()
    response = client.post("/")
    assert response.status_code == 200
    return response.get_json(), capsys.readouterr().out


def test_warns_per_event_name_with_the_fix(
    graph: GraphServer, make_client: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    body, out = run_quality(graph, make_client, capsys)
    [destination] = body["destinations"]
    warnings = destination["warnings"]
    assert [(w["event_name"], w["kind"]) for w in warnings] == [
        ("AddToCart", "dedup"),
        ("Purchase", "coverage"),
        ("Purchase", "dedup"),
        ("Purchase", "ip"),
        ("ViewContent", "ip"),
    ]
    add_to_cart, purchase_coverage, purchase_dedup, purchase_ip, view_ip = warnings
    # AddToCart: the server events carry no event id at all (Meta's sample: 0 %).
    assert add_to_cart["deduplicated"] == 0 and add_to_cart["server"] == 0 and add_to_cart["browser"] == 100
    assert add_to_cart["threshold"] == 50 and "send the Pixel's eventID as event_id" in add_to_cart["fix"]
    assert "(docs/sgtm.md#5-deduplicate-with-the-browser-pixel)" in add_to_cart["fix"]
    # Purchase: both sides carry ids, 14.8 % deduplicated: they do not match.
    assert purchase_dedup["deduplicated"] == 14.8 and "do not match" in purchase_dedup["fix"]
    assert purchase_coverage == {
        "kind": "coverage",
        "message": "event coverage below Meta's goal",
        "event_name": "Purchase",
        "percentage": 34.1,
        "goal": 75,
        "fix": purchase_coverage["fix"],
    }
    assert "FORWARD_EVENTS" in purchase_coverage["fix"]
    assert purchase_ip["diagnostic"] == "Server sending mismatched IP addresses"
    assert purchase_ip["affected_event_count"] == 19567 and purchase_ip["percentage"] == 61.5
    assert purchase_ip["solution"].startswith("In your server payload, send the client_ip_address")
    assert "Parameter Builder" in purchase_ip["fix"] and "_fbi" in purchase_ip["fix"]
    assert view_ip["diagnostic"].startswith("Server sending IPv4")  # "Missing email" is not an IP diagnostic
    # One WARNING line each, with the destination and the same fields as the answer.
    lines = [line for line in log_lines(out) if line["severity"] == "WARNING"]
    by_message = {
        message: [line for line in lines if line["message"] == message]
        for message in ("deduplication below threshold", "event coverage below Meta's goal", "Meta IP diagnostic")
    }
    assert [line["event_name"] for line in by_message["deduplication below threshold"]] == ["AddToCart", "Purchase"]
    assert [line["event_name"] for line in by_message["event coverage below Meta's goal"]] == ["Purchase"]
    assert [line["event_name"] for line in by_message["Meta IP diagnostic"]] == ["Purchase", "ViewContent"]
    for line in (*by_message["deduplication below threshold"], *by_message["Meta IP diagnostic"]):
        assert line["destination"] == "default" and line["pixel_id"] == PIXEL_ID and line["fix"]


def test_dedup_alert_below_is_the_threshold(
    graph: GraphServer, make_client: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    body, out = run_quality(graph, make_client, capsys, DEDUP_ALERT_BELOW="10")
    [destination] = body["destinations"]
    dedup = [w for w in destination["warnings"] if w["kind"] == "dedup"]
    assert [(w["event_name"], w["threshold"]) for w in dedup] == [("AddToCart", 10)]  # 14.8 % is not under 10
    assert len(log_lines(out, "deduplication below threshold")) == 1


def test_nothing_to_warn_about() -> None:
    healthy = copy.deepcopy(IPV4_ENTRY)
    healthy["event_match_quality"]["diagnostics"] = healthy["event_match_quality"]["diagnostics"][1:]
    assert quality_warnings(healthy, 50) == []
    # Missing or odd fields are no warning, never an error.
    assert quality_warnings({"event_name": "X", "event_coverage": {"percentage": "34"}}, 50) == []
    assert quality_warnings({"dedupe_key_feedback": [None, {"dedupe_key": "event_id"}]}, 50) == []
