"""A loopback fake of Secret Manager's REST API: GET /v1/projects/P/secrets/S/versions/V:access.

The real `google-cloud-secret-manager` client talks to it with transport="rest".
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import google_crc32c
from google.auth.credentials import AnonymousCredentials

ACCESS = re.compile(r"/v1/(projects/[^/]+/secrets/[^/]+)/versions/([^/:]+):access")


class FakeSecretManager:
    def __init__(self) -> None:
        self.secrets: dict[str, list[str]] = {}  # projects/P/secrets/S -> versions (1-based)
        self.denied: set[str] = set()
        self.accesses: Counter = Counter()
        self.delay = 0.0
        self.corrupt = False
        self.lock = threading.Lock()

    def add_version(self, secret: str, value: str) -> None:
        with self.lock:
            self.secrets.setdefault(secret, []).append(value)

    def access(self, path: str) -> tuple[int, dict[str, Any]]:
        match = ACCESS.fullmatch(path)
        if not match:
            return 404, {"error": {"code": 404, "message": "no such method", "status": "NOT_FOUND"}}
        secret, version = match.groups()
        with self.lock:
            self.accesses[secret] += 1
        if self.delay:
            time.sleep(self.delay)
        if secret in self.denied:
            return 403, {"error": {"code": 403, "message": "Permission denied", "status": "PERMISSION_DENIED"}}
        versions = self.secrets.get(secret)
        if not versions:
            return 404, {"error": {"code": 404, "message": f"Secret [{secret}] not found", "status": "NOT_FOUND"}}
        number = len(versions) if version == "latest" else int(version)
        if not 1 <= number <= len(versions):
            return 404, {"error": {"code": 404, "message": "version not found", "status": "NOT_FOUND"}}
        data = versions[number - 1].encode()
        crc = google_crc32c.value(data) + (1 if self.corrupt else 0)
        return 200, {
            "name": f"{secret}/versions/{number}",
            "payload": {"data": base64.b64encode(data).decode(), "dataCrc32c": str(crc)},
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        status, body = self.server.fake.access(self.path.split("?")[0])  # type: ignore[attr-defined]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class SecretManagerServer:
    def __init__(self) -> None:
        self.fake = FakeSecretManager()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self.fake  # type: ignore[attr-defined]
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def client(self) -> Any:
        from google.cloud import secretmanager

        return secretmanager.SecretManagerServiceClient(
            transport="rest", client_options={"api_endpoint": self.endpoint}, credentials=AnonymousCredentials()
        )

    def __enter__(self) -> SecretManagerServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
