"""The HTTP edge: what is refused before any work (job routing, early 401/413, bounded reads)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import base_env

NO_TOKEN_DRY_RUN = {"DRY_RUN": "true", "META_ACCESS_TOKEN": ""}


def test_replay_runs_on_post_to_its_url(make_client: Any) -> None:
    client = make_client(base_env(**NO_TOKEN_DRY_RUN), target="capi_replay")
    for path in ("/", "/replay"):
        response = client.post(path)
        assert response.status_code == 200, path
        assert response.get_json() == {"message": "DRY_RUN without a token: nothing to replay to"}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_replay_refuses_other_methods_with_405_and_allow(make_client: Any, method: str) -> None:
    client = make_client(base_env(**NO_TOKEN_DRY_RUN), target="capi_replay")
    response = client.open("/", method=method, data=b"anything")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.get_json() == {"error": "method_not_allowed", "message": "use POST to run the replay job"}


@pytest.mark.parametrize("path", ["/events", "/replay/now", "/healthz", "/wp-login.php"])
def test_replay_refuses_other_paths_with_404_json(make_client: Any, path: str) -> None:
    client = make_client(base_env(**NO_TOKEN_DRY_RUN), target="capi_replay")
    for method in ("POST", "GET"):
        response = client.open(path, method=method)
        assert response.status_code == 404, (method, path)
        assert response.get_json() == {
            "error": "not_found",
            "message": "unknown path: the replay job answers POST / only",
            "field": "path",
        }
