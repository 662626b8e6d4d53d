"""Caller authentication through the HTTP function."""

from __future__ import annotations

from typing import Any

import pytest

from capi.auth import Authenticator
from capi.errors import Unauthorized
from tests.conftest import base_env

EVENT = {
    "event_name": "generate_lead",
    "page_location": "https://x.example/",
    "user_agent": "UA",
    "user_data": {"em": "a@b.co"},
}


def client_with(make_client: Any, **env: str) -> Any:
    values = base_env(DRY_RUN="true", **env)
    if "ALLOW_UNAUTHENTICATED" not in env:
        values.pop("ALLOW_UNAUTHENTICATED")
    return make_client(values)


def test_closed_by_default(make_client: Any) -> None:
    response = client_with(make_client).post("/events", json=EVENT)
    assert response.status_code == 401
    assert "INGEST_API_KEY_SECRET" in response.get_json()["message"]
    assert "ALLOW_UNAUTHENTICATED" in response.get_json()["message"]


def test_open_when_allowed(make_client: Any) -> None:
    assert client_with(make_client, ALLOW_UNAUTHENTICATED="true").post("/events", json=EVENT).status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"X-Api-Key": "wrong"}, 401),
        ({"Authorization": "Basic key-one"}, 401),
        ({"Authorization": "Bearer key-one"}, 200),
        ({"Authorization": "bearer key-two"}, 200),
        ({"X-Api-Key": "key-two"}, 200),
        # IAM in front: the ID token is in Authorization, the ingest key in X-Api-Key.
        ({"Authorization": "Bearer eyJhbGciOi.id.token", "X-Api-Key": "key-one"}, 200),
    ],
)
def test_keys(make_client: Any, headers: dict[str, str], status: int) -> None:
    client = client_with(make_client, INGEST_API_KEY="key-one, key-two")
    response = client.post("/events", json=EVENT, headers=headers)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    if status == 401:
        assert "key-one" not in response.get_data(as_text=True)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_key_required_even_when_allow_unauthenticated(make_client: Any) -> None:
    client = client_with(make_client, INGEST_API_KEY="k", ALLOW_UNAUTHENTICATED="true")
    assert client.post("/events", json=EVENT).status_code == 401


def test_auth_checked_before_the_body_is_read(make_client: Any) -> None:
    response = client_with(make_client, INGEST_API_KEY="k").post("/events", data="not json")
    assert response.status_code == 401


def test_health_needs_no_key(make_client: Any) -> None:
    assert client_with(make_client).get("/healthz").status_code == 200


def test_validate_needs_a_key(make_client: Any) -> None:
    assert client_with(make_client, INGEST_API_KEY="k").post("/validate", json=EVENT).status_code == 401


def test_compares_every_key() -> None:
    calls: list[int] = []

    def keys() -> tuple[str, ...]:
        calls.append(1)
        return ("a", "b")

    auth = Authenticator(keys, allow_unauthenticated=False)
    auth.check({"X-Api-Key": "b"})
    with pytest.raises(Unauthorized):
        auth.check({"X-Api-Key": "c"})
    assert len(calls) == 2
