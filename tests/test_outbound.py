"""The Graph client's transport (capi/delivery/graph.py `_new_pool`): urllib3 directly, with the
configuration `requests` would have read (proxy variables, CA bundle), and kept-alive connections."""

from __future__ import annotations

import time
from typing import Any

import pytest
import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from capi.delivery.graph import GraphClient, RetryPolicy, _new_pool
from capi.errors import MetaError
from capi.secrets import StaticSecret
from tests.conftest import PIXEL_ID, TOKEN

URL = "https://graph.facebook.com/v26.0/1234567890/events"


def _client(graph: Any) -> GraphClient:
    return GraphClient(
        base_url=graph.base_url,
        api_version="v26.0",
        pixel_id=PIXEL_ID,
        token=StaticSecret(TOKEN),
        timeout=1.0,
        policy=RetryPolicy(max_attempts=1),
        sleep=lambda _: None,
    )


def _body() -> dict[str, Any]:
    event = {
        "event_name": "Lead",
        "event_id": "e1",
        "event_time": int(time.time()),
        "action_source": "system_generated",
        "user_data": {"em": ["a" * 64]},
    }
    return {"data": [event], "partner_agent": "test"}


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
                 "NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_direct_pool_with_certifis_bundle_no_retries_sized_for_the_instance(no_proxy_env: Any) -> None:
    pool = _new_pool(URL, 24)
    assert type(pool) is urllib3.PoolManager
    assert pool.connection_pool_kw["ca_certs"] == DEFAULT_CA_BUNDLE_PATH
    assert pool.connection_pool_kw["maxsize"] == 24
    assert pool.connection_pool_kw["retries"].total is False  # retrying is GraphClient.send's job


def test_https_proxy_is_honoured_as_requests_would(no_proxy_env: Any) -> None:
    no_proxy_env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    pool = _new_pool(URL, 16)
    assert isinstance(pool, urllib3.ProxyManager)
    assert pool.proxy is not None and (pool.proxy.host, pool.proxy.port) == ("proxy.internal", 3128)


def test_no_proxy_for_the_graph_host_means_direct(no_proxy_env: Any) -> None:
    no_proxy_env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    no_proxy_env.setenv("NO_PROXY", "graph.facebook.com")
    assert type(_new_pool(URL, 16)) is urllib3.PoolManager


def test_requests_ca_bundle_is_honoured(no_proxy_env: Any) -> None:
    no_proxy_env.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/corp.pem")
    assert _new_pool(URL, 16).connection_pool_kw["ca_certs"] == "/etc/ssl/corp.pem"


def test_sequential_sends_reuse_one_connection(graph: Any) -> None:
    client = _client(graph)
    for _ in range(5):
        assert client.send(_body()).events_received == 1
    assert graph.fake.accepted_requests == 5
    assert graph.fake.connections == 1


def test_after_an_answer_left_unread_the_next_send_opens_a_new_connection(graph: Any) -> None:
    client = _client(graph)
    graph.fake.huge_bytes = 16 * 1024 * 1024
    graph.fake.fail_next("huge_trace")
    with pytest.raises(MetaError):
        client.send(_body())
    assert client.send(_body()).events_received == 1
    assert graph.fake.connections == 2
