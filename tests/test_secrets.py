"""Secret Manager with the real client library against a loopback fake of its REST API."""

from __future__ import annotations

import time
from typing import Any

import pytest

from capi.app import Application
from capi.errors import SecretUnavailable
from capi.secrets import FAILURE_SECONDS, SecretManagerSecret, resource_name
from tests.conftest import EMULATOR_PROJECT, at_once, log_lines, make_app, serve

TOKEN_SECRET = f"projects/{EMULATOR_PROJECT}/secrets/meta-token"
UA = "Mozilla/5.0"


def lead(event_id: str = "L-1") -> dict[str, Any]:
    return {
        "event_name": "generate_lead",
        "event_id": event_id,
        "page_location": "https://x.example/",
        "user_agent": UA,
        "user_data": {"email_address": "a@b.co"},
    }


def build(secret_manager: Any, graph: Any, firestore: Any = None, **env: str) -> Application:
    """The token read from Secret Manager (META_ACCESS_TOKEN_SECRET), never from a literal."""
    return make_app(
        graph,
        firestore=firestore,
        secret_client=secret_manager.client(),
        META_ACCESS_TOKEN="",
        META_ACCESS_TOKEN_SECRET="meta-token",
        **env,
    )


def test_resource_names() -> None:
    assert resource_name("tok", "p") == "projects/p/secrets/tok/versions/latest"
    assert resource_name("projects/p/secrets/tok", None) == "projects/p/secrets/tok/versions/latest"
    assert resource_name("projects/p/secrets/tok/versions/3", None) == "projects/p/secrets/tok/versions/3"


def test_cached_within_ttl_and_reread_after(secret_manager: Any) -> None:
    secret_manager.fake.add_version(TOKEN_SECRET, "v1")
    now = [0.0]
    secret = SecretManagerSecret(
        f"{TOKEN_SECRET}/versions/latest", ttl=300, client=secret_manager.client, clock=lambda: now[0]
    )
    assert [secret.get(), secret.get()] == ["v1", "v1"]
    assert secret_manager.fake.accesses[TOKEN_SECRET] == 1
    secret_manager.fake.add_version(TOKEN_SECRET, "v2")
    now[0] = 299
    assert secret.get() == "v1"
    now[0] = 301
    # Past its TTL the value is served while one background read refreshes it (issue 19 F17).
    assert secret.get() == "v1"
    deadline = time.monotonic() + 5
    while secret.get() != "v2" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert secret.get() == "v2"
    assert secret_manager.fake.accesses[TOKEN_SECRET] == 2


def test_concurrent_first_calls_read_once(secret_manager: Any) -> None:
    secret_manager.fake.add_version(TOKEN_SECRET, "v1")
    secret_manager.fake.delay = 0.3
    secret = SecretManagerSecret(f"{TOKEN_SECRET}/versions/latest", client=secret_manager.client)
    results: list[str] = []
    at_once(*[lambda: results.append(secret.get())] * 16)
    assert results == ["v1"] * 16
    assert secret_manager.fake.accesses[TOKEN_SECRET] == 1


def test_failed_read_is_remembered_briefly(secret_manager: Any) -> None:
    now = [0.0]
    secret = SecretManagerSecret(f"{TOKEN_SECRET}/versions/latest", client=secret_manager.client, clock=lambda: now[0])
    with pytest.raises(SecretUnavailable):
        secret.get()
    secret_manager.fake.add_version(TOKEN_SECRET, "v1")
    now[0] = FAILURE_SECONDS - 0.1  # issue 19 F17: a failing Secret Manager is not asked by every request
    with pytest.raises(SecretUnavailable):
        secret.get()
    assert secret_manager.fake.accesses[TOKEN_SECRET] == 1
    now[0] = FAILURE_SECONDS
    assert secret.get() == "v1"
    assert secret_manager.fake.accesses[TOKEN_SECRET] == 2


def test_checksum_mismatch_is_refused(secret_manager: Any) -> None:
    secret_manager.fake.add_version(TOKEN_SECRET, "v1")
    secret_manager.fake.corrupt = True
    with pytest.raises(SecretUnavailable, match="checksum"):
        SecretManagerSecret(f"{TOKEN_SECRET}/versions/1", client=secret_manager.client).get()


@pytest.mark.emulator
def test_190_rereads_the_secret_once_and_retries_once(secret_manager: Any, graph: Any, firestore_db: Any) -> None:
    secret_manager.fake.add_version(TOKEN_SECRET, "old-token")
    graph.fake.token = "new-token"
    client = serve(build(secret_manager, graph, firestore=firestore_db))
    # Warm the cache with the old token through a first delivery that fails with 190 twice:
    # capi's configuration is wrong, the event is kept for replay (202 meta_config).
    response = client.post("/events", json=lead("L-0"))
    assert (response.status_code, response.get_json()["error"]) == (202, "meta_config")
    assert graph.fake.requests == 2 and secret_manager.fake.accesses[TOKEN_SECRET] == 2
    # Rotation: a new version is added; the next 190 re-reads it and the retry succeeds.
    secret_manager.fake.add_version(TOKEN_SECRET, "new-token")
    response = client.post("/events", json=lead("L-1"))
    assert response.status_code == 200
    assert graph.fake.requests == 4 and secret_manager.fake.accesses[TOKEN_SECRET] == 3
    assert graph.fake.delivered[("Lead", "L-1")] == 1
    # and the replay delivers the event kept while the token was wrong
    assert client.post("/replay").get_json()["delivered"] == 1
    assert graph.fake.delivered[("Lead", "L-0")] == 1


@pytest.mark.parametrize(
    ("setup", "problem", "fix"),
    [
        ("missing", "not found", "create it or add a version: gcloud secrets versions add ..."),
        (
            "denied",
            "permission denied",
            "grant roles/secretmanager.secretAccessor on this secret to the function's service account",
        ),
    ],
)
@pytest.mark.emulator
def test_unreadable_token_secret_stores_for_replay_naming_the_resource_never_the_value(
    secret_manager: Any,
    graph: Any,
    firestore_db: Any,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
    setup: str,
    problem: str,
    fix: str,
) -> None:
    monkeypatch.setattr("capi.secrets.FAILURE_SECONDS", 0.0)  # the replay below reads again at once
    # Issue 19 F18: sGTM does not retry a 503, so an unreadable token stores like a refused one.
    if setup == "denied":
        secret_manager.fake.add_version(TOKEN_SECRET, "s3cr3t-value")
        secret_manager.fake.denied.add(TOKEN_SECRET)
    client = serve(build(secret_manager, graph, firestore=firestore_db))
    response = client.post("/events", json=lead())
    assert response.status_code == 202
    body = response.get_json()
    assert (body["error"], body["stored"], body["fix"]) == ("secret_unavailable", 1, fix)
    assert f"{TOKEN_SECRET}/versions/latest" in body["message"] and problem in body["message"]
    assert [d.to_dict()["event_id"] for d in firestore_db.collection("capi_deadletter").stream()] == ["L-1"]
    logged = capsys.readouterr().out
    assert "s3cr3t-value" not in logged and "s3cr3t-value" not in response.get_data(as_text=True)
    [line] = log_lines(logged, "secret unavailable")
    assert (line["severity"], line["secret"], line["problem"], line["fix"]) == (
        "ERROR",
        f"{TOKEN_SECRET}/versions/latest",
        problem,
        fix,
    )
    [stored] = log_lines(logged, "the token could not be read; events stored for replay")
    assert (stored["severity"], stored["fix"], stored["stored"]) == ("ERROR", fix, 1)
    assert graph.fake.requests == 0
    # Once the secret is readable again, the replay delivers the event.
    secret_manager.fake.denied.clear()
    secret_manager.fake.add_version(TOKEN_SECRET, graph.fake.token)
    assert client.post("/replay").get_json()["delivered"] == 1
    assert graph.fake.delivered == {("Lead", "L-1"): 1}


def test_app_secret_from_secret_manager(secret_manager: Any, graph: Any) -> None:
    secret_manager.fake.add_version(TOKEN_SECRET, graph.fake.token)
    secret_manager.fake.add_version(f"projects/{EMULATOR_PROJECT}/secrets/app-secret", "the-app-secret")
    graph.fake.app_secret = "the-app-secret"
    client = serve(
        build(
            secret_manager,
            graph,
            META_APP_SECRET_SECRET=f"projects/{EMULATOR_PROJECT}/secrets/app-secret/versions/1",
        )
    )
    assert client.post("/events", json=lead()).status_code == 200
    assert "appsecret_proof" in graph.fake.bodies[0]


def test_ingest_keys_from_secret_versions_for_rotation(secret_manager: Any, graph: Any) -> None:
    secret_manager.fake.add_version(TOKEN_SECRET, graph.fake.token)
    secret_manager.fake.add_version(f"projects/{EMULATOR_PROJECT}/secrets/ingest", "key-one\nkey-two")
    secret_manager.fake.add_version(f"projects/{EMULATOR_PROJECT}/secrets/ingest2", "key-three")
    client = serve(
        build(
            secret_manager,
            graph,
            INGEST_API_KEY_SECRET=f"ingest,projects/{EMULATOR_PROJECT}/secrets/ingest2/versions/1",
        )
    )
    assert client.post("/events", json=lead(), headers={"X-Api-Key": "key-two"}).status_code == 200
    assert client.post("/events", json=lead(), headers={"Authorization": "Bearer key-three"}).status_code == 200
    assert client.post("/events", json=lead(), headers={"X-Api-Key": "key-four"}).status_code == 401
    assert secret_manager.fake.accesses[f"projects/{EMULATOR_PROJECT}/secrets/ingest"] == 1  # cached across requests


def test_unreadable_ingest_keys_answer_503_naming_the_secret_and_send_nothing(
    secret_manager: Any, graph: Any, capsys: Any
) -> None:
    # Unlike the token (stored, 202), nothing can be accepted without the keys: the caller retries.
    secret_manager.fake.add_version(TOKEN_SECRET, graph.fake.token)
    ingest = f"projects/{EMULATOR_PROJECT}/secrets/ingest"
    secret_manager.fake.add_version(ingest, "key-one")
    secret_manager.fake.denied.add(ingest)
    client = serve(build(secret_manager, graph, INGEST_API_KEY_SECRET="ingest"))
    response = client.post("/events", json=lead(), headers={"X-Api-Key": "key-one"})
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"] == "secret_unavailable" and f"{ingest}/versions/latest" in body["message"]
    assert "key-one" not in response.get_data(as_text=True) and "key-one" not in capsys.readouterr().out
    assert graph.fake.requests == 0


def test_secrets_share_one_lazily_built_client(monkeypatch: Any, secret_manager: Any) -> None:
    # Without a client passed in, every secret of the instance reads through one client of
    # the library, built on the first read: the library's class is replaced to count them.
    from google.cloud import secretmanager

    built: list[int] = []

    def build(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return client

    client = secret_manager.client()  # made before the library's class is replaced
    monkeypatch.setattr(secretmanager, "SecretManagerServiceClient", build)
    secret_manager.fake.add_version(TOKEN_SECRET, "token")
    secret_manager.fake.add_version(f"projects/{EMULATOR_PROJECT}/secrets/app", "app")
    token = SecretManagerSecret(f"{TOKEN_SECRET}/versions/latest")
    app_secret = SecretManagerSecret(f"projects/{EMULATOR_PROJECT}/secrets/app/versions/latest")
    assert built == []  # nothing built before the first read
    assert (token.get(), app_secret.get()) == ("token", "app")
    assert built == [1]
