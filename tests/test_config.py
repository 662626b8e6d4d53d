"""Configuration: defaults, validation with one line naming the variable, start-up failure."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from capi.config import DEFAULT_EVENT_MAP, load_config
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


def test_frozen() -> None:
    config = load_config(BASE)
    with pytest.raises(AttributeError):
        config.pixel_id = "x"  # type: ignore[misc]


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
