"""Configuration: defaults, validation with one line naming the variable, start-up failure."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import pytest

from capi.config import DEFAULT_EVENT_MAP, ENV_VARS, SETTINGS, Config, load_config
from capi.errors import ConfigError
from tests.conftest import ROOT

BASE = {"META_PIXEL_ID": "123", "META_ACCESS_TOKEN": "t"}


def test_defaults() -> None:
    config = load_config(BASE)
    assert config.api_version == "v26.0"
    assert config.api_base_url == "https://graph.facebook.com"
    assert config.profile_collection == "users"
    assert config.firestore_database == "(default)"
    assert config.deadletter_collection == "capi_deadletter"
    assert config.secret_cache_seconds == 300
    assert config.allow_unauthenticated is False and config.dry_run is False
    assert config.event_name_map == DEFAULT_EVENT_MAP
    assert config.should_forward("purchase", "Purchase")
    assert not config.should_forward("page_view", "PageView")
    assert not config.should_forward("my_event", "my_event")


def test_token_never_in_repr() -> None:
    config = load_config({**BASE, "META_ACCESS_TOKEN": "SECRET-TOKEN", "INGEST_API_KEY": "SECRET-KEY"})
    assert "SECRET" not in repr(config)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"META_PIXEL_ID": ""}, "META_PIXEL_ID"),
        ({"META_PIXEL_ID": "abc"}, "META_PIXEL_ID"),
        ({"META_ACCESS_TOKEN": ""}, "META_ACCESS_TOKEN_SECRET"),
        ({"META_API_VERSION": "26"}, "META_API_VERSION"),
        ({"META_API_BASE_URL": "graph.facebook.com"}, "META_API_BASE_URL"),
        ({"DEFAULT_COUNTRY": "USA"}, "DEFAULT_COUNTRY"),
        ({"DEFAULT_COUNTRY": "XX"}, "DEFAULT_COUNTRY"),
        ({"ALLOW_UNAUTHENTICATED": "maybe"}, "ALLOW_UNAUTHENTICATED"),
        ({"DRY_RUN": "2"}, "DRY_RUN"),
        ({"EVENT_NAME_MAP": "{bad"}, "EVENT_NAME_MAP"),
        ({"EVENT_NAME_MAP": '{"a": 1}'}, "EVENT_NAME_MAP"),
        ({"FORWARD_EVENTS": " , "}, "FORWARD_EVENTS"),
        ({"SECRET_CACHE_SECONDS": "-1"}, "SECRET_CACHE_SECONDS"),
        ({"META_TIMEOUT_SECONDS": "soon"}, "META_TIMEOUT_SECONDS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"META_ACCESS_TOKEN_SECRET": "meta-token"}, "META_ACCESS_TOKEN_SECRET"),  # short name, no project
        ({"META_ACCESS_TOKEN_SECRET": "projects/p/nope"}, "META_ACCESS_TOKEN_SECRET"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({**BASE, **env})
    assert info.value.field == variable
    assert variable in info.value.message
    assert "\n" not in info.value.message


def test_forward_events_star_and_list_and_event_map_override() -> None:
    assert load_config({**BASE, "FORWARD_EVENTS": "*"}).forward_events is None
    config = load_config({**BASE, "FORWARD_EVENTS": "page_view, Lead", "EVENT_NAME_MAP": '{"x": "Lead"}'})
    assert config.should_forward("page_view", "PageView") and config.should_forward("x", "Lead")
    assert config.event_name_map["x"] == "Lead" and config.event_name_map["purchase"] == "Purchase"


def test_short_secret_names_need_a_project() -> None:
    config = load_config({"META_PIXEL_ID": "1", "META_ACCESS_TOKEN_SECRET": "tok", "GOOGLE_CLOUD_PROJECT": "p"})
    assert config.access_token_secret == "tok"


def test_start_up_fails_with_one_line(tmp_path: Any) -> None:
    # The real start-up path: functions-framework importing main.py with a bad variable.
    code = "import functions_framework; functions_framework.create_app('capi_events', 'main.py')"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "META_PIXEL_ID": "abc", "DRY_RUN": "true"},
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "META_PIXEL_ID" in lines[0]
    assert "Traceback" not in result.stderr


def _docs_table(page: str) -> list[list[str]]:
    """The rows of the first markdown table of `docs/{page}`, cells stripped, header left out."""
    lines = (ROOT / "docs" / page).read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_docs_configuration_table_lists_exactly_the_declared_settings() -> None:
    rows = _docs_table("configuration.md")
    assert [row[0] for row in rows] == [f"`{s.env}`" for s in SETTINGS]
    for row, setting in zip(rows, SETTINGS, strict=True):
        assert row[1:] == [setting.readme_cell(), setting.help], setting.env
    # A literal default in the table is the value capi really uses when the variable is unset.
    config = load_config(BASE)
    assert [row[1] for row in rows if row[0] == "`META_TIMEOUT_SECONDS`"] == ["`5`"]
    assert config.timeout_seconds == 5.0 and config.emq_alert_below == 6.0


def test_each_setting_declared_once_and_read_from_its_variable() -> None:
    assert len({s.env for s in SETTINGS}) == len({s.attr for s in SETTINGS}) == len(SETTINGS) == len(ENV_VARS)
    assert {f.name for f in dataclasses.fields(Config)} == {s.attr for s in SETTINGS}
    assert set(ENV_VARS) >= {"THREADS", "CONSENT_REQUIRED", "EMQ_ALERT_BELOW"}
    config = load_config({**BASE, "THREADS": "12", "CONSENT_REQUIRED": "true", "EMQ_ALERT_BELOW": "7.5"})
    assert (config.threads, config.consent_required, config.emq_alert_below) == (12, True, 7.5)
    defaults = load_config(BASE)
    assert (defaults.threads, defaults.consent_required, defaults.max_attempts) == (0, False, 4)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EMQ_ALERT_BELOW", "10.5", "EMQ_ALERT_BELOW must be a number between 0 and 10, got '10.5'"),
        ("EMQ_ALERT_BELOW", "-1", "EMQ_ALERT_BELOW must be a number between 0 and 10, got '-1'"),
        ("THREADS", "0", "THREADS must be a whole number >= 1, got '0'"),
        ("THREADS", "2.5", "THREADS must be a whole number >= 1, got '2.5'"),
        ("META_MAX_ATTEMPTS", "1.5", "META_MAX_ATTEMPTS must be a whole number >= 1, got '1.5'"),
        ("CONSENT_REQUIRED", "sometimes", "CONSENT_REQUIRED must be true or false, got 'sometimes'"),
        ("SECRET_CACHE_SECONDS", "inf", "SECRET_CACHE_SECONDS must be a number >= 0, got 'inf'"),
    ],
)
def test_new_and_numeric_settings_fail_with_one_exact_line(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({**BASE, name: value})
    assert (info.value.field, info.value.message) == (name, message)


def test_empty_profile_collection_turns_enrichment_off_while_unset_keeps_the_default() -> None:
    assert load_config({**BASE, "PROFILE_COLLECTION": ""}).profile_collection == ""
    assert load_config(BASE).profile_collection == "users"
    assert load_config({**BASE, "META_API_VERSION": " "}).api_version == "v26.0"
