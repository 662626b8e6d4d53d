"""A small Pub/Sub client on the REST API: publish, pull, acknowledge (DELIVERY=queue).

REST over urllib3 rather than google-cloud-pubsub: capi needs three calls, each bounded in
time by one urllib3 timeout; the gRPC client would add its own threads, a streaming channel
and about 40 MiB and 0.3 s to every cold start (it imports grpc and its protobufs), for
nothing capi uses (docs/queue.md, "Why REST"). The emulator speaks the same REST API
(`PUBSUB_EMULATOR_HOST`), so the tests run the same code as production.

Credentials: the runtime service account's, from google-auth (already installed with the
Firestore client), refreshed under a lock when they expire. Against the emulator, none.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import orjson
import urllib3

from capi.errors import QueueUnavailable
from capi.lazy import Lazy

API = "https://pubsub.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/pubsub"
CONNECT_SECONDS = 1.0
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # a pull of 1000 messages of a few KiB each, with room


def full_name(name: str, kind: str, project: str | None) -> str:
    """`projects/P/{kind}/NAME` for a short NAME (the configuration checked that a project is set)."""
    return name if "/" in name else f"projects/{project}/{kind}/{name}"


class _Credentials:
    """Application default credentials with the Pub/Sub scope, refreshed when stale."""

    def __init__(self, http: urllib3.PoolManager) -> None:
        import google.auth
        from google.auth.transport.urllib3 import Request

        self._credentials, _ = google.auth.default(scopes=[SCOPE])
        self._request = Request(http)
        self._lock = threading.Lock()

    def header(self) -> str:
        if not self._credentials.valid:
            with self._lock:
                if not self._credentials.valid:
                    self._credentials.refresh(self._request)
        return f"Bearer {self._credentials.token}"


class PubSubClient:
    """Pub/Sub's REST API at `base_url` (Google's, or the emulator's when PUBSUB_EMULATOR_HOST is set)."""

    def __init__(
        self,
        *,
        emulator_host: str | None = None,
        base_url: str | None = None,
        authorization: Callable[[], str] | None = None,
        pool_size: int = 16,
    ) -> None:
        emulator_host = emulator_host if emulator_host is not None else os.environ.get("PUBSUB_EMULATOR_HOST")
        self.base_url = base_url or (f"http://{emulator_host}" if emulator_host else API)
        self._http = Lazy(lambda: urllib3.PoolManager(maxsize=pool_size, retries=False))
        if authorization is not None or emulator_host or base_url:
            self._authorization = authorization
        else:
            credentials = Lazy(lambda: _Credentials(self._http()))
            self._authorization = lambda: credentials().header()

    def call(self, path: str, body: dict[str, Any], *, seconds: float) -> dict[str, Any]:
        """POST `body` to `/v1/{path}` and return the JSON answer; everything within `seconds`.

        Raises:
            QueueUnavailable: Pub/Sub could not be reached, refused, or did not answer in time
                (the message names the HTTP status or the exception type, never a token).
        """
        headers = {"Content-Type": "application/json"}
        try:
            if self._authorization is not None:
                headers["Authorization"] = self._authorization()
            response = self._http().request(
                "POST",
                f"{self.base_url}/v1/{path}",
                body=orjson.dumps(body),
                headers=headers,
                timeout=urllib3.Timeout(total=seconds, connect=min(CONNECT_SECONDS, seconds)),
                retries=False,
                redirect=False,
                preload_content=False,
            )
            try:
                raw = response.read(MAX_ANSWER_BYTES + 1)
            finally:
                response.release_conn()
        except Exception as exc:  # noqa: BLE001 - any failure to reach Pub/Sub (or to get a token)
            raise QueueUnavailable(f"Pub/Sub could not be reached ({type(exc).__name__})") from None
        if not 200 <= response.status < 300:
            raise QueueUnavailable(f"Pub/Sub answered HTTP {response.status}")
        if len(raw) > MAX_ANSWER_BYTES:
            raise QueueUnavailable("Pub/Sub's answer was too long")
        try:
            answer = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError:
            raise QueueUnavailable("Pub/Sub's answer was not JSON") from None
        return answer if isinstance(answer, dict) else {}

    def publish(self, topic: str, messages: list[dict[str, Any]], *, seconds: float) -> list[str]:
        """Publish in one call; returns the message ids. Pub/Sub takes all or none of them."""
        answer = self.call(f"{topic}:publish", {"messages": messages}, seconds=seconds)
        ids = answer.get("messageIds")
        if not isinstance(ids, list) or len(ids) != len(messages):
            raise QueueUnavailable("Pub/Sub did not confirm every message")
        return [str(i) for i in ids]

    def pull(self, subscription: str, max_messages: int, *, seconds: float) -> list[dict[str, Any]]:
        answer = self.call(
            f"{subscription}:pull", {"maxMessages": max_messages, "returnImmediately": True}, seconds=seconds
        )
        received = answer.get("receivedMessages")
        return received if isinstance(received, list) else []

    def acknowledge(self, subscription: str, ack_ids: list[str], *, seconds: float) -> None:
        if ack_ids:
            self.call(f"{subscription}:acknowledge", {"ackIds": ack_ids}, seconds=seconds)

    def release(self, subscription: str, ack_ids: list[str], *, seconds: float) -> None:
        """Give messages back at once (ack deadline 0), for the next run to take."""
        if ack_ids:
            self.call(
                f"{subscription}:modifyAckDeadline", {"ackIds": ack_ids, "ackDeadlineSeconds": 0}, seconds=seconds
            )
