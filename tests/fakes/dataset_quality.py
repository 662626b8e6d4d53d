"""A fake of Meta's Dataset Quality API, `GET /{version}/dataset_quality`, served by the fake
Graph API (`tests/fakes/graph.py` delegates its GETs here), as one real Graph host answers both.

The answers follow the samples on developers.facebook.com/docs/marketing-api/conversions-api/
dataset-quality-api ("API Response" of the EMQ, EMQ diagnostics and event deduplication
examples): `{"web": [{"event_name", "event_match_quality": {"composite_score",
"match_key_feedback": [{"identifier", "coverage": {"percentage"}}], "diagnostics": [...]},
"dedupe_key_feedback": [...], ...}]}`.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

# Meta's documented sample answers, merged per event name.
SAMPLE_WEB: list[dict[str, Any]] = [
    {
        "event_name": "Purchase",
        "event_match_quality": {
            "composite_score": 7.2,
            "match_key_feedback": [
                {"identifier": "email", "coverage": {"percentage": 100}},
                {"identifier": "ip_address", "coverage": {"percentage": 99.9}},
            ],
            "diagnostics": [
                {
                    "name": "Server sending mismatched IP addresses",
                    "description": "Your server is sending client IP addresses that do not match those from"
                    " Meta Pixel.",
                    "solution": "In your server payload, send the client_ip_address retrieved from customer"
                    " interactions.",
                    "percentage": 61.5,
                    "affected_event_count": 19567,
                    "total_event_count": 31830,
                }
            ],
        },
        "event_coverage": {"percentage": 34.1, "goal_percentage": 75, "description": "..."},
        "dedupe_key_feedback": [
            {
                "dedupe_key": "event_id",
                "browser_events_with_dedupe_key": {"percentage": 100, "description": "..."},
                "server_events_with_dedupe_key": {"percentage": 100, "description": "..."},
                "overall_browser_coverage_from_dedupe_key": {"percentage": 14.8, "description": "..."},
            }
        ],
        "data_freshness": {"upload_frequency": "real_time", "description": "..."},
        "acr": {"percentage": 37.9, "description": "..."},
    },
    {
        "event_name": "AddToCart",
        "event_match_quality": {
            "composite_score": 4.1,
            "match_key_feedback": [
                {"identifier": "user_agent", "coverage": {"percentage": 100}},
                {"identifier": "external_id", "coverage": {"percentage": 12.5}},
            ],
        },
        "dedupe_key_feedback": [
            {
                "dedupe_key": "event_id",
                "browser_events_with_dedupe_key": {"percentage": 100, "description": "..."},
                "server_events_with_dedupe_key": {"percentage": 0, "description": "..."},
                "overall_browser_coverage_from_dedupe_key": {"percentage": 0, "description": "..."},
            }
        ],
    },
]


@dataclass
class FakeDatasetQuality:
    """Answers per pixel id; `mode` fails on demand: ok, code:<n>, empty, html, garbage, big, hang, stall,
    drip (the whole answer, one byte every 50 ms)."""

    token: str = "test-token"
    web: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # pixel id -> web list
    mode: str = "ok"
    requests: list[dict[str, Any]] = field(default_factory=list)  # query parameters and auth of each GET

    def handle(self, path: str, query: str, headers: Any, stop: threading.Event) -> tuple[int, Any]:
        params = {k: v[0] for k, v in parse_qs(query).items()}
        auth = headers.get("Authorization") or ""
        self.requests.append({**params, "authorization": auth})
        if not re.fullmatch(r"/v\d+\.\d+/dataset_quality", path):
            return 400, _error(100, f"Unknown path components: {path}", "GraphMethodException")
        if self.mode == "hang":
            stop.wait(30)
        if self.mode == "stall":
            return 200, lambda handler: _stall(handler, stop)
        if self.mode == "drip":
            return 200, lambda handler: _drip(handler, stop, b'{"web": []}' + b" " * 1000)
        if self.mode == "html":
            return 502, "<html><body>Bad Gateway</body></html>"
        if self.mode == "garbage":
            return 200, "<html>not json</html>"
        if self.mode.startswith("code:"):
            code = int(self.mode[5:])
            return (400 if code != 2 else 500), _error(code, f"error code {code}")
        if auth.removeprefix("Bearer ") != self.token and params.get("access_token") != self.token:
            return 400, _error(190, "Invalid OAuth access token - Cannot parse access token")
        if not params.get("fields", "").startswith("web{"):
            return 400, _error(100, "(#100) The web field is required")
        if self.mode == "empty":
            return 200, {"web": []}
        if self.mode == "big":
            return 200, {"web": [{"event_name": "x" * 2_000_000}]}
        return 200, {"web": self.web.get(params.get("dataset_id", ""), [])}


def _error(code: int, message: str, etype: str = "OAuthException") -> dict[str, Any]:
    # The shape of every Graph API error (docs/meta-capi.md §7).
    return {"error": {"message": message, "type": etype, "code": code, "fbtrace_id": f"QTRACE{code}"}}


def _stall(handler: Any, stop: threading.Event) -> None:
    """Headers and half a body, then nothing: the client's read timeout must end it."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "100")
    handler.end_headers()
    handler.wfile.write(b'{"web": [')
    handler.wfile.flush()
    stop.wait(30)


def _drip(handler: Any, stop: threading.Event, body: bytes) -> None:
    """A well-formed answer one byte at a time: every read is quick, the whole answer is not."""
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    handler.close_connection = True
    for byte in head.encode() + body:
        if stop.wait(0.05):
            return
        try:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
        except OSError:
            return
