"""capi_quality against the loopback fake Dataset Quality API (tests/fakes/dataset_quality.py),
through main.py's real entry point: the answer, the log lines, every way Meta can fail."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from capi.payload import PARTNER_AGENT
from capi.quality import FIELDS, DatasetQualityClient, Destination, QualityReport
from capi.secrets import StaticSecret
from tests.conftest import PIXEL_ID, TOKEN, base_env, log_lines
from tests.fakes.dataset_quality import SAMPLE_WEB
from tests.fakes.graph import GraphServer


@pytest.fixture
def quality_client(graph: GraphServer, make_client: Callable[..., Any]) -> Any:
    graph.fake.quality.web[PIXEL_ID] = SAMPLE_WEB
    return make_client(base_env(graph), target="capi_quality")


def test_answers_and_logs_per_event_name(
    graph: GraphServer, quality_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = quality_client.post("/")
    assert response.status_code == 200
    body = response.get_json()
    assert body["threshold"] == 6.0 and body["agent_name"] == PARTNER_AGENT.lower() == "capi-gcf-0.3.0"
    [destination] = body["destinations"]
    assert destination["name"] == "default" and destination["pixel_id"] == PIXEL_ID
    assert destination["below_threshold"] == ["AddToCart"]
    add_to_cart, purchase = destination["events"]
    assert purchase == {
        "event_name": "Purchase",
        "score": 7.2,
        "below_threshold": False,
        "match_keys": {"email": 100, "ip_address": 99.9},
        "dedupe": {"event_id": {"server": 100, "browser": 100, "deduplicated": 14.8}},
        "event_coverage": 34.1,
        "acr": 37.9,
        "data_freshness": "real_time",
        "diagnostics": [
            {
                "name": "Server sending mismatched IP addresses",
                "solution": "In your server payload, send the client_ip_address retrieved from customer interactions.",
                "percentage": 61.5,
                "affected_event_count": 19567,
                "total_event_count": 31830,
            }
        ],
    }
    # The "0 % deduplicated" problem: server events without an event id.
    assert add_to_cart["dedupe"] == {"event_id": {"server": 0, "browser": 100, "deduplicated": 0}}
    assert add_to_cart["score"] == 4.1 and add_to_cart["below_threshold"] is True

    # What Meta was asked: the documented query, the token in a header, never in the URL.
    [request] = graph.fake.quality.requests
    assert request["dataset_id"] == PIXEL_ID and request["agent_name"] == "capi-gcf-0.3.0"
    assert request["fields"] == FIELDS and "access_token" not in request
    assert request["authorization"] == f"Bearer {TOKEN}"

    out = capsys.readouterr().out
    logged = log_lines(out)
    quality = log_lines(out, "dataset quality")
    assert [(q["event_name"], q["score"], q["severity"]) for q in quality] == [
        ("AddToCart", 4.1, "INFO"),
        ("Purchase", 7.2, "INFO"),
    ]
    assert quality[1]["match_keys"] == {"email": 100, "ip_address": 99.9}
    assert quality[1]["dedupe"]["event_id"]["server"] == 100
    assert quality[1]["diagnostics"] == ["Server sending mismatched IP addresses"] and quality[0]["diagnostics"] == []
    assert all(q["destination"] == "default" and q["pixel_id"] == PIXEL_ID for q in quality)
    [warning] = log_lines(out, "Event Match Quality below threshold")
    assert {k: warning[k] for k in ("severity", "event_name", "score", "threshold", "pixel_id", "destination")} == {
        "severity": "WARNING",
        "event_name": "AddToCart",
        "score": 4.1,
        "threshold": 6.0,
        "pixel_id": PIXEL_ID,
        "destination": "default",
    }
    assert TOKEN not in json.dumps(logged)


def test_threshold_is_configurable_and_strict(graph: GraphServer, make_client: Callable[..., Any]) -> None:
    graph.fake.quality.web[PIXEL_ID] = SAMPLE_WEB
    # At exactly the score, nothing is below it; just above, Purchase is.
    at = make_client(base_env(graph, EMQ_ALERT_BELOW="7.2"), target="capi_quality").post("/").get_json()
    assert at["destinations"][0]["below_threshold"] == ["AddToCart"]
    above = make_client(base_env(graph, EMQ_ALERT_BELOW="7.21"), target="capi_quality").post("/").get_json()
    assert above["destinations"][0]["below_threshold"] == ["AddToCart", "Purchase"] and above["threshold"] == 7.21


@pytest.mark.parametrize(
    ("mode", "status", "error", "meta_code", "severity"),
    [
        ("code:190", 502, "meta_config", 190, "ERROR"),  # token invalid or expired
        ("code:10", 502, "meta_config", 10, "ERROR"),  # permission
        ("code:200", 502, "meta_config", 200, "ERROR"),  # permission
        ("code:3", 502, "meta_config", 3, "ERROR"),  # capability: as delivery classifies it
        ("code:803", 502, "meta_config", 803, "ERROR"),  # no such pixel
        ("code:2", 502, "meta_unavailable", 2, "WARNING"),  # transient on Meta's side
        ("code:100", 502, "meta_refused", 100, "WARNING"),
        ("empty", 502, "no_data", None, "WARNING"),  # no web events from capi's agent yet
        ("html", 502, "meta_unreadable", None, "WARNING"),  # a proxy's 502 page
        ("garbage", 502, "meta_unreadable", None, "WARNING"),  # a 200 that is not JSON
        ("big", 502, "meta_unreadable", None, "WARNING"),  # over the 1 MiB bound
    ],
)
def test_meta_failures_answer_and_log_an_error(
    graph: GraphServer,
    quality_client: Any,
    capsys: pytest.CaptureFixture[str],
    mode: str,
    status: int,
    error: str,
    meta_code: int | None,
    severity: str,
) -> None:
    graph.fake.quality.mode = mode
    capsys.readouterr()
    response = quality_client.post("/")
    assert response.status_code == status
    [destination] = response.get_json()["destinations"]
    assert destination["error"] == error and destination.get("meta_code") == meta_code
    assert destination["name"] == "default" and "events" not in destination
    [line] = log_lines(capsys.readouterr().out, "dataset quality unavailable")
    assert line["severity"] == severity and line["error"] == error and line.get("meta_code") == meta_code
    assert line["destination"] == "default" and line["pixel_id"] == PIXEL_ID
    # Only a configuration error says what to fix.
    assert ("fix" in line, "fix" in destination) == (error == "meta_config", error == "meta_config")
    assert TOKEN not in response.get_data(as_text=True)


def test_wrong_token_is_190_and_never_logged(graph: GraphServer, make_client: Callable[..., Any], capsys: Any) -> None:
    client = make_client(base_env(graph, META_ACCESS_TOKEN="expired-token-value"), target="capi_quality")
    capsys.readouterr()
    body = client.post("/").get_json()
    assert body["destinations"][0]["error"] == "meta_config" and body["destinations"][0]["meta_code"] == 190
    assert "token" in body["destinations"][0]["fix"]
    assert "expired-token-value" not in capsys.readouterr().out


def test_a_rotated_token_is_read_again_once_on_190(graph: GraphServer) -> None:
    class Rotated:
        name = "rotated"

        def __init__(self) -> None:
            self.reads: list[bool] = []

        def get(self, *, refresh: bool = False) -> str:
            self.reads.append(refresh)
            return TOKEN if refresh else "the-old-token"

    graph.fake.quality.web[PIXEL_ID] = SAMPLE_WEB
    token = Rotated()
    client = DatasetQualityClient(base_url=graph.base_url, api_version="v26.0")
    status, body = QualityReport(client, [Destination("default", PIXEL_ID, token)], 6.0).run()
    assert status == 200 and len(body["destinations"][0]["events"]) == 2
    assert token.reads == [False, True] and len(graph.fake.quality.requests) == 2


@pytest.mark.parametrize("mode", ["hang", "stall"])
def test_timeout_is_bounded(graph: GraphServer, mode: str) -> None:
    graph.fake.quality.mode = mode  # no headers at all; or headers and half a body
    client = DatasetQualityClient(base_url=graph.base_url, api_version="v26.0", timeout=0.3)
    report = QualityReport(client, [Destination("default", PIXEL_ID, StaticSecret(TOKEN))], 6.0)
    started = time.monotonic()
    status, body = report.run()
    assert time.monotonic() - started < 2
    assert status == 502 and body["destinations"][0]["error"] == "meta_unavailable"
    assert "Timeout" in body["destinations"][0]["message"]


def test_answer_size_bound_at_its_edge(graph: GraphServer) -> None:
    graph.fake.quality.web[PIXEL_ID] = SAMPLE_WEB
    size = len(json.dumps({"web": SAMPLE_WEB}).encode())  # what the fake sends
    destination = Destination("default", PIXEL_ID, StaticSecret(TOKEN))
    fits = DatasetQualityClient(base_url=graph.base_url, api_version="v26.0", max_bytes=size)
    assert len(fits.fetch(destination)) == 2
    over = DatasetQualityClient(base_url=graph.base_url, api_version="v26.0", max_bytes=size - 1)
    status, body = QualityReport(over, [destination], 6.0).run()
    assert status == 502 and body["destinations"][0]["error"] == "meta_unreadable"
    assert f"over {size - 1} bytes" in body["destinations"][0]["message"]


def test_one_destination_failing_does_not_hide_another(graph: GraphServer) -> None:
    graph.fake.quality.web["111"] = SAMPLE_WEB[:1]
    client = DatasetQualityClient(base_url=graph.base_url, api_version="v26.0")
    report = QualityReport(
        client,
        [Destination("shop", "111", StaticSecret(TOKEN)), Destination("other", "222", StaticSecret("wrong"))],
        6.0,
    )
    status, body = report.run()
    shop, other = body["destinations"]
    assert status == 502
    assert [e["event_name"] for e in shop["events"]] == ["Purchase"] and "error" not in shop
    assert other["error"] == "meta_config" and other["meta_code"] == 190


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/", 405), ("PUT", "/", 405), ("POST", "/x", 404)])
def test_only_post_slash(quality_client: Any, method: str, path: str, status: int) -> None:
    response = quality_client.open(path, method=method)
    assert response.status_code == status and response.get_json()["error"]


def test_dry_run_without_token(make_client: Callable[..., Any]) -> None:
    env = base_env(DRY_RUN="true")
    del env["META_ACCESS_TOKEN"]
    response = make_client(env, target="capi_quality").post("/")
    assert response.status_code == 200 and "no quality" in response.get_json()["message"]


@pytest.mark.parametrize("raw", ["-1", "10.5", "abc"])
def test_emq_alert_below_must_be_on_metas_scale(raw: str) -> None:
    from capi.config import load_config
    from capi.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_config(base_env(EMQ_ALERT_BELOW=raw))
    assert caught.value.field == "EMQ_ALERT_BELOW"
