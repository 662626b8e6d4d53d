"""Every log-based metric and alert of terraform/monitoring.tf against the log lines capi writes.

Every line is captured from the running code (the function through functions-framework or
`serve()`, the fake Graph API failing on demand, the Firestore emulator), never written by hand.
"""

from __future__ import annotations

import ast
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from capi.app import Application
from capi.delivery.deadletter import FirestoreDeadLetter
from capi.errors import MetaError
from tests.conftest import PIXEL_ID, ROOT, base_env, make_app, serve
from tests.fakes.dataset_quality import SAMPLE_WEB
from tests.fakes.graph import HASHED, GraphServer
from tests.logquery import entry, fields, matches
from tests.test_terraform import TF, load

NAME = "capi"  # var.name's default
EVENTS, REPLAY, QUALITY = f"{NAME}-events", f"{NAME}-replay", f"{NAME}-quality"
USER_DATA_KEYS = set(HASHED) | {"client_ip_address", "client_user_agent", "fbc", "fbp"}
PURCHASE = {
    "event_name": "purchase",
    "event_id": "A-1",
    "page_location": "https://shop.example.com/thanks",
    "user_agent": "Mozilla/5.0",
    "value": 5,
    "currency": "EUR",
    "user_data": {"email_address": "a@example.com"},
}

# -- the module, rendered as Terraform would for the default variables --------------------------

MONITORING = load(TF / "monitoring.tf")
LOCALS = {k: v for block in MONITORING["locals"] for k, v in block.items()}
DEFAULTS = {k: v.get("default") for block in load(TF / "variables.tf")["variable"] for k, v in block.items()}


def render(text: str, each: str | None = None) -> str:
    """Terraform's interpolation for the few references the filters use, with `\\"` unescaped."""

    def lookup(match: re.Match[str]) -> str:
        ref = match.group(1)
        if ref == "each.value" and each is not None:
            return each
        if ref == "var.name":
            return NAME
        if ref.startswith("var."):
            return str(DEFAULTS[ref[4:]])
        if ref.startswith("local.filters."):
            return render(LOCALS["filters"][ref[len("local.filters.") :]])
        if ref.startswith("local."):
            return render(LOCALS[ref[6:]])
        raise AssertionError(f"unknown reference {ref}")

    text = text.replace('\\"', '"').replace('${replace(var.name, "-", "_")}', NAME.replace("-", "_"))
    return re.sub(r"\$\{([a-z_.]+)\}", lookup, text)


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {name: body for block in MONITORING["resource"] for name, body in block.get(kind, {}).items()}


METRICS = resources("google_logging_metric")
ALERTS = resources("google_monitoring_alert_policy")
FILTERS = {key: render(value) for key, value in LOCALS["filters"].items()}


def metric_filter(name: str, each: str | None = None) -> str:
    return render(METRICS[name]["filter"], each)


def extract(expression: str, record: dict[str, Any]) -> Any:
    """EXTRACT(path) and REGEXP_EXTRACT(path, "re") of a label or value extractor."""
    expression = expression.replace('\\"', '"')
    found = re.fullmatch(r'(REGEXP_)?EXTRACT\(([\w.]+)(?:, "(.*)")?\)', expression)
    assert found, expression
    node: Any = record
    for part in found.group(2).split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if found.group(1) and node is not None:
        match = re.search(found.group(3), str(node))
        return match.group(1) if match else None
    return node


def labels(name: str, record: dict[str, Any], each: str | None = None) -> dict[str, Any]:
    extractors = {k: render(v, each) for k, v in (METRICS[name].get("label_extractors") or {}).items()}
    return {key: extract(expression, record) for key, expression in extractors.items()}


# -- capturing what the code writes --------------------------------------------------------------


def captured(capsys: pytest.CaptureFixture[str], service: str) -> list[dict[str, Any]]:
    """The JSON lines written to stdout since the last capture, as Cloud Logging stores them."""
    out = capsys.readouterr().out
    return [entry(json.loads(line), service) for line in out.splitlines() if line.startswith("{")]


def only(records: list[dict[str, Any]], message: str, **where: Any) -> dict[str, Any]:
    found = [
        r
        for r in records
        if r["jsonPayload"]["message"] == message and all(r["jsonPayload"].get(k) == v for k, v in where.items())
    ]
    assert len(found) == 1, (message, where, [r["jsonPayload"]["message"] for r in records])
    return found[0]


@pytest.fixture
def events_lines(graph: GraphServer, make_client: Callable[..., Any], capsys: Any) -> list[dict[str, Any]]:
    client = make_client(base_env(graph, META_MAX_ATTEMPTS="2"))
    capsys.readouterr()
    assert client.post("/events", json=PURCHASE).status_code == 200
    assert client.post("/events", json={**PURCHASE, "event_name": "page_view"}).status_code == 200  # skipped
    graph.fake.fail_next("code:2")  # one transient failure, then Meta takes it
    assert client.post("/events", json={**PURCHASE, "event_id": "A-2"}).status_code == 200
    return captured(capsys, EVENTS)


@pytest.fixture
def quality_lines(graph: GraphServer, make_client: Callable[..., Any], capsys: Any) -> list[dict[str, Any]]:
    graph.fake.quality.web[PIXEL_ID] = SAMPLE_WEB
    client = make_client(base_env(graph), target="capi_quality")
    capsys.readouterr()
    client.post("/")
    graph.fake.quality.mode = "empty"
    client.post("/")
    graph.fake.quality.mode = "code:190"
    client.post("/")
    return captured(capsys, QUALITY)


def emulator_app(db: Any, graph: GraphServer, **env: str) -> Application:
    return make_app(graph, firestore=db, META_MAX_ATTEMPTS="1", **env)


# -- each metric's filter: the line of its condition, not its neighbour ----------------------------


def test_requests_and_forwarding(events_lines: list[dict[str, Any]]) -> None:
    processed = [r for r in events_lines if r["jsonPayload"]["message"] == "events processed"]
    assert [r["jsonPayload"]["forwarded"] for r in processed] == [1, 0, 1]
    failed_call = only(events_lines, "Meta call failed")
    for record in processed:
        assert matches(metric_filter("requests"), record)
        assert labels("requests", record)["status"] == 200
    assert not matches(metric_filter("requests"), failed_call)
    assert [matches(metric_filter("forwarding_requests"), r) for r in processed] == [True, False, True]
    # The same line from another service is not capi's.
    assert not matches(metric_filter("requests"), {**processed[0], "resource": {"labels": {"service_name": "x"}}})


def test_meta_errors_by_code(events_lines: list[dict[str, Any]]) -> None:
    failed_call = only(events_lines, "Meta call failed")
    assert matches(metric_filter("meta_errors"), failed_call)
    assert labels("meta_errors", failed_call) == {"meta_code": 2, "destination": "default"}
    assert not any(
        matches(metric_filter("meta_errors"), r)
        for r in events_lines
        if r["jsonPayload"]["message"] != "Meta call failed"
    )


@pytest.mark.emulator
def test_stored_for_replay(firestore_db: Any, graph: GraphServer, capsys: Any) -> None:
    graph.fake.down = "503"
    client = serve(emulator_app(firestore_db, graph))
    capsys.readouterr()
    assert client.post("/events", json=PURCHASE).status_code == 202
    records = captured(capsys, EVENTS)
    stored = only(records, "events stored for replay")
    assert stored["severity"] == "WARNING" and stored["jsonPayload"]["stored"] == 1
    assert matches(metric_filter("stored_for_replay"), stored)
    assert labels("stored_for_replay", stored) == {"destination": "default"}
    for neighbour in (only(records, "events processed"), only(records, "Meta call failed")):
        assert not matches(metric_filter("stored_for_replay"), neighbour)
    # Stored events are not a configuration problem: the token alert stays quiet.
    assert not any(matches(FILTERS["meta_config"], r) for r in records)


@pytest.mark.emulator
def test_replay_gave_up(firestore_db: Any, graph: GraphServer, capsys: Any) -> None:
    now = int(time.time())
    old = {"event_name": "Purchase", "event_id": "old", "event_time": now - 7 * 86400 + 30, "action_source": "app",
           "user_data": {"em": ["a" * 64]}}  # fmt: skip
    tired = {**old, "event_id": "tired", "event_time": now - 60}
    fresh = {**old, "event_id": "fresh", "event_time": now - 60}
    poisoned = {**old, "event_id": "poisoned", "event_time": now - 60}
    graph.fake.poison = {"poisoned"}  # Meta refuses that event on its own: replay isolates and drops it
    FirestoreDeadLetter(lambda: firestore_db, "capi_deadletter", PIXEL_ID).store(
        [old, tired, fresh, poisoned], MetaError("down", transient=True), None
    )
    for snap in firestore_db.collection("capi_deadletter").stream():
        if snap.to_dict()["event_id"] == "tired":
            snap.reference.update({"attempts": 3})
    app = emulator_app(firestore_db, graph, REPLAY_MAX_ATTEMPTS="3")
    capsys.readouterr()
    assert serve(app).post("/replay").status_code == 200
    records = captured(capsys, REPLAY)
    exhausted = only(records, "dead letter dropped: too many attempts")
    refused = only(records, "dead letter dropped: refused by Meta")
    expired = only(records, "dead letter dropped: outside Meta's 7-day window")
    assert (exhausted["severity"], refused["severity"], expired["severity"]) == ("ERROR", "ERROR", "WARNING")
    assert labels("replay_gave_up", exhausted) == {"reason": "too many attempts"}
    assert labels("replay_gave_up", refused) == {"reason": "refused by Meta"}
    assert labels("replay_gave_up", expired) == {"reason": "outside Meta's 7-day window"}
    for dropped in (exhausted, refused, expired):
        assert matches(metric_filter("replay_gave_up"), dropped)
    assert not matches(metric_filter("replay_gave_up"), only(records, "replay finished"))


def test_quality_lines(quality_lines: list[dict[str, Any]]) -> None:
    purchase = only(quality_lines, "dataset quality", event_name="Purchase")
    below = only(quality_lines, "Event Match Quality below threshold")
    no_data = only(quality_lines, "dataset quality unavailable", error="no_data")
    refused = only(quality_lines, "dataset quality unavailable", error="meta_config")
    assert matches(metric_filter("emq"), purchase) and extract(METRICS["emq"]["value_extractor"], purchase) == 7.2
    assert labels("emq", purchase) == {"event_name": "Purchase", "destination": "default"}
    assert not matches(metric_filter("emq"), below)
    assert matches(FILTERS["emq_below"], below) and below["jsonPayload"]["event_name"] == "AddToCart"
    assert not any(matches(FILTERS["emq_below"], r) for r in quality_lines if r is not below)
    assert matches(FILTERS["quality_unavailable"], no_data)
    # A refused token is the token alert's, not this one's (one notification, not two).
    assert not matches(FILTERS["quality_unavailable"], refused) and matches(FILTERS["meta_config"], refused)


def test_quality_warning_lines(quality_lines: list[dict[str, Any]]) -> None:
    """Meta's samples (SAMPLE_WEB): AddToCart and Purchase not deduplicated, Purchase under its
    coverage goal and flagged for mismatched IP addresses; each alert's filter takes its lines only."""
    expected = {
        "dedup_below": ("deduplication below threshold", ["AddToCart", "Purchase"]),
        "coverage_below": ("event coverage below Meta's goal", ["Purchase"]),
        "ip_diagnostic": ("Meta IP diagnostic", ["Purchase"]),
    }
    for name, (message, event_names) in expected.items():
        hits = [r for r in quality_lines if matches(FILTERS[name], r)]
        assert [r["jsonPayload"]["message"] for r in hits] == [message] * len(event_names), name
        assert [r["jsonPayload"]["event_name"] for r in hits] == event_names, name
        assert all(r["jsonPayload"]["fix"] for r in hits)


@pytest.mark.emulator
def test_token_or_permission_refused(firestore_db: Any, graph: GraphServer, capsys: Any) -> None:
    graph.fake.down = "code:190"
    client = serve(emulator_app(firestore_db, graph))
    capsys.readouterr()
    assert client.post("/events", json=PURCHASE).status_code == 202
    records = captured(capsys, EVENTS)
    refused = only(records, "Meta refused capi's configuration")
    processed = only(records, "events processed")
    assert refused["severity"] == "ERROR" and refused["jsonPayload"]["meta_code"] == 190
    assert processed["severity"] == "WARNING" and processed["jsonPayload"]["error"] == "meta_config"
    assert matches(FILTERS["meta_config"], refused)
    # The 202 line says meta_config too, but at WARNING: one notification per refusal.
    assert not matches(FILTERS["meta_config"], processed)
    assert not any(matches(FILTERS["meta_config"], r) for r in records if r is not refused)


def test_events_by_name_and_match_keys(graph: GraphServer, make_client: Callable[..., Any], capsys: Any) -> None:
    client = make_client(base_env(graph))
    capsys.readouterr()
    second = {
        **PURCHASE,
        "event_id": "A-2",
        "user_data": {"phone_number": "+16505551212"},
        "x-fb-ck-fbp": "fb.1.1596403881668.1116446470",
    }
    too_old = {**PURCHASE, "event_id": "A-3", "event_time": int(time.time()) - 8 * 86400}
    answer = client.post("/events", json={"events": [PURCHASE, second, too_old]})
    assert answer.status_code == 200 and answer.get_json()["forwarded"] == 2
    records = captured(capsys, EVENTS)
    by_name = [r for r in records if r["jsonPayload"]["message"] == "events by name"]
    assert len(by_name) == 2  # outcomes with no event write no line
    ok = only(records, "events by name", outcome="forwarded")
    rejected = only(records, "events by name", outcome="rejected")
    assert ok["jsonPayload"]["count"] == 2 and rejected["jsonPayload"]["count"] == 1
    assert ok["jsonPayload"]["match_keys"] == {"client_user_agent": 2, "em": 1, "fbp": 1, "ph": 1}
    for record in (ok, rejected):
        assert matches(metric_filter("events"), record)
    assert labels("events", rejected) == {"event_name": "Purchase", "outcome": "rejected"}
    assert extract(METRICS["events"]["value_extractor"], ok) == 2
    assert matches(metric_filter("match_keys", each="em"), ok)
    assert extract(render(METRICS["match_keys"]["value_extractor"], each="fbp"), ok) == 1
    assert not matches(metric_filter("match_keys", each="em"), rejected)
    assert not matches(metric_filter("match_keys", each="external_id"), ok)  # no event had it


def test_secret_unavailable(capsys: Any) -> None:
    from google.api_core import exceptions as gexc

    from capi.errors import SecretUnavailable
    from capi.log import setup_logging
    from capi.secrets import SecretManagerSecret

    class NoVersion:
        def access_secret_version(self, **kwargs: Any) -> Any:
            raise gexc.NotFound("no version")

    setup_logging()
    capsys.readouterr()
    with pytest.raises(SecretUnavailable):
        SecretManagerSecret("projects/p/secrets/s/versions/latest", client=NoVersion).get()
    [line] = captured(capsys, EVENTS)
    assert line["severity"] == "ERROR" and matches(FILTERS["secret"], line)


def test_api_version_warning(graph: GraphServer, capsys: Any, monkeypatch: Any) -> None:
    from capi.delivery import graph as graph_module

    monkeypatch.setattr(graph_module, "_warned_versions", set())
    graph.fake.version_warning = "The call has been auto-upgraded to v26.0 as v24.0 has been deprecated."
    client = serve(make_app(graph, META_API_VERSION="v24.0"))
    capsys.readouterr()
    assert client.post("/events", json=PURCHASE).status_code == 200
    assert client.post("/events", json={**PURCHASE, "event_id": "A-2"}).status_code == 200
    lines = captured(capsys, EVENTS)
    line = only(lines, "Meta API version warning")
    assert line["severity"] == "WARNING" and matches(FILTERS["api_version"], line)
    assert matches(metric_filter("api_version_warnings"), line)
    assert labels("api_version_warnings", line) == {"api_version": "v24.0", "move_to": "v26.0"}
    assert [r for r in lines if matches(FILTERS["api_version"], r)] == [line]  # once, not per call


# -- the alerts are wired to those filters ----------------------------------------------------------


def condition(alert: str) -> dict[str, Any]:
    conditions = ALERTS[alert]["conditions"]
    return conditions[0] if isinstance(conditions, list) else conditions


def one(block: Any) -> dict[str, Any]:
    return block[0] if isinstance(block, list) else block


# Each alert policy, and the filter (or metric) whose test above proves it fires on its line.
ALERT_SOURCES = {
    "meta_config": ("log", "meta_config"),
    "secret": ("log", "secret"),
    "emq_below": ("log", "emq_below"),
    "quality_unavailable": ("log", "quality_unavailable"),
    "dedup_below": ("log", "dedup_below"),
    "coverage_below": ("log", "coverage_below"),
    "ip_diagnostic": ("log", "ip_diagnostic"),
    "stored_for_replay": ("metric", "stored_for_replay"),
    "replay_gave_up": ("metric", "replay_gave_up"),
    "nothing_forwarded": ("promql", ("requests", "forwarding_requests")),
    "api_version": ("metric", "api_version_warnings"),
}


def test_every_alert_uses_a_tested_filter() -> None:
    assert set(ALERTS) == set(ALERT_SOURCES)
    for alert, (kind, source) in ALERT_SOURCES.items():
        cond = condition(alert)
        assert ALERTS[alert]["notification_channels"] == "${local.notification_channels}", alert
        assert one(ALERTS[alert]["documentation"])["content"], alert
        if kind == "log":
            assert cond["condition_matched_log"][0]["filter"] == f"${{local.filters.{source}}}"
            assert one(ALERTS[alert]["alert_strategy"])["notification_rate_limit"], alert
        elif kind == "metric":
            threshold = one(cond["condition_threshold"])
            assert render(threshold["filter"]) == (
                f'metric.type="logging.googleapis.com/user/{NAME}/{source}" AND resource.type="cloud_run_revision"'
            )
            assert render(METRICS[source]["name"]) == f"{NAME}/{source}"
            assert threshold["comparison"] == "COMPARISON_GT" and threshold["threshold_value"] == 0
        else:
            query = render(one(cond["condition_prometheus_query_language"])["query"])
            hours = DEFAULTS["no_forward_alert_hours"]
            assert query == (
                f"sum(increase(logging_googleapis_com:user_{NAME}_requests[{hours}h])) > 0 unless"
                f" sum(increase(logging_googleapis_com:user_{NAME}_forwarding_requests[{hours}h])) > 0"
            )
            assert {render(METRICS[m]["name"]) for m in source} == {f"{NAME}/requests", f"{NAME}/forwarding_requests"}


# -- every field a filter or an extractor names is one the code writes ------------------------------


def dict_keys(tree: ast.AST) -> set[str]:
    """The string keys a module puts in dicts: literals and `d["key"] = ...`."""
    literal = {
        key.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        for key in node.keys
        if isinstance(key, ast.Constant) and isinstance(key.value, str)
    }
    assigned = {
        node.slice.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store)
        and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)
    }  # fmt: skip
    return literal | assigned


def written_fields() -> dict[str, set[str]]:
    """message -> the fields capi's log(...) calls write with it: the call's keywords and, when
    it expands `**` a dict built elsewhere, the string keys capi's modules put in dicts."""
    trees = [ast.parse(path.read_text()) for path in sorted(Path(ROOT / "capi").rglob("*.py"))]
    any_dict_key = set().union(*(dict_keys(tree) for tree in trees))
    found: dict[str, set[str]] = {}
    for tree in trees:
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for call in [n for n in ast.walk(tree) if isinstance(n, ast.Call)]:
            if not (isinstance(call.func, ast.Name) and call.func.id == "log" and len(call.args) >= 2):
                continue
            message = call.args[1]
            text = message.value if isinstance(message, ast.Constant) else constants.get(getattr(message, "id", ""))
            if not isinstance(text, str):
                continue
            names = {"message"} | {k.arg for k in call.keywords if k.arg}
            if any(k.arg is None for k in call.keywords):
                names |= any_dict_key
            found.setdefault(text, set()).update(names)
    return found


def all_queries() -> list[str]:
    queries = list(FILTERS.values())
    for name, metric in METRICS.items():
        keys = DEFAULTS["match_key_metrics"] if name == "match_keys" else [None]
        for key in keys:
            queries.append(metric_filter(name, key))
            for expression in [metric.get("value_extractor"), *(metric.get("label_extractors") or {}).values()]:
                if expression:
                    queries.append(render(expression, key).replace("EXTRACT(", "").split(")")[0].split(",")[0] + "=x")
    return queries


def test_every_field_a_filter_names_is_written_by_the_code() -> None:
    written = written_fields()
    every_field = set().union(*written.values())
    for query in all_queries():
        messages = set(re.findall(r'jsonPayload\.message="([^"]+)"', query)) or set(written)
        assert messages <= set(written), (query, messages - set(written))
        for path in fields(query):
            top, *rest = path.split(".")[1:]
            writers = [m for m in messages if top in written.get(m, set())]
            assert writers, f"{query}: no line with message {messages} writes {top}"
            if top == "match_keys":
                assert rest and rest[0] in USER_DATA_KEYS, path
    assert {"status", "forwarded", "stored", "meta_code", "score", "event_name", "outcome", "count"} <= every_field


def test_match_key_metrics_are_user_data_keys() -> None:
    assert set(DEFAULTS["match_key_metrics"]) <= USER_DATA_KEYS
