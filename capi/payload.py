"""The Graph API request body (pure): what `/validate` shows and what the client sends."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from capi import __version__


def partner_agent(version: str) -> str:
    """capi's `partner_agent`, in the form Meta documents (docs/meta-capi.md §11): under 23
    characters, at least two letters, lowercase, so that the Dataset Quality API's `agent_name`
    filter (its lowercase form) is the very same string."""
    agent = f"capi-gcf-{version}".lower()
    if len(agent) >= 23 or sum(ch.isalpha() for ch in agent) < 2:
        raise ValueError(f"partner_agent {agent!r} is not in Meta's form (under 23 characters, two letters)")
    return agent


PARTNER_AGENT = partner_agent(__version__)
MAX_EVENTS_PER_REQUEST = 1000  # Meta's limit for one POST to /{pixel_id}/events


@dataclass
class GraphResult:
    """What Meta answered to an accepted POST."""

    events_received: int | None
    fbtrace_id: str | None
    messages: list[Any] = field(default_factory=list)
    attempts: int = 1


def request_body(events: list[dict[str, Any]], test_event_code: str | None) -> dict[str, Any]:
    """The body of one POST, without the access token (added only on the wire)."""
    body: dict[str, Any] = {"data": events, "partner_agent": PARTNER_AGENT}
    if test_event_code:
        body["test_event_code"] = test_event_code
    return body


def appsecret_proof(app_secret: str, access_token: str) -> str:
    """HMAC-SHA256 of the token keyed with the app secret, as Graph API expects it."""
    return hmac.new(app_secret.encode("utf-8"), access_token.encode("utf-8"), hashlib.sha256).hexdigest()
