"""capi_quality: Meta's Dataset Quality API read for each destination, summarized and logged.

`GET /{version}/dataset_quality?dataset_id=...&agent_name=...&fields=web{...}` answers, per
event name, multi-day aggregates: the composite Event Match Quality (0..10), how many events
carried each match key, how many server events carried each dedupe key, Meta's diagnostics.
capi logs one `"dataset quality"` line per event name (metrics are built on it) and one
`"Event Match Quality below threshold"` WARNING per event name under `EMQ_ALERT_BELOW`
(the alert is built on that). Sources: developers.facebook.com/docs/marketing-api/
conversions-api/dataset-quality-api; /work/shared/clients.md section 8.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from urllib3.exceptions import HTTPError as TransportError

from capi.delivery.graph import CONNECT_TIMEOUT, classify
from capi.delivery.watchdog import bounded_call, guarded_pool
from capi.errors import MetaAuthError, MetaError, SecretUnavailable
from capi.lazy import Lazy
from capi.log import log
from capi.payload import PARTNER_AGENT
from capi.secrets import SecretSource

if TYPE_CHECKING:
    import requests

FIELDS = (
    "web{event_name,"
    "event_match_quality{composite_score,match_key_feedback{identifier,coverage{percentage}},"
    "diagnostics{name,description,solution,percentage,affected_event_count,total_event_count}},"
    "event_coverage{percentage,goal_percentage,description},"
    "dedupe_key_feedback{dedupe_key,browser_events_with_dedupe_key{percentage,description},"
    "server_events_with_dedupe_key{percentage,description},"
    "overall_browser_coverage_from_dedupe_key{percentage,description}},"
    "data_freshness{upload_frequency,description},"
    "acr{percentage,description}}"
)
# The events capi sends carry `partner_agent`; Meta filters the quality data on its lowercase
# form, which is the same string (capi.payload.partner_agent makes it lowercase).
AGENT_NAME = PARTNER_AGENT
MAX_ANSWER_BYTES = 1024 * 1024  # a few dozen event names answer in a few kB
TIMEOUT_SECONDS = 20.0  # read timeout of the one GET per destination
FETCH_SECONDS = 30.0  # the whole GET of one destination, however its answer trickles in
RUN_SECONDS = 90.0  # the whole run, every destination (capi_quality's timeout is 120 s)

# What to do when Meta refuses the read: the Dataset Quality API needs more than sending does.
_FIX_TOKEN = (
    "the token is invalid or expired: add a new version to the token secret"
    " (docs/operations.md#rotate-the-token-and-recover-the-events-stored-while-it-was-refused)"
)
_FIX_PERMISSION = (
    "the token may send events but not read quality: its (system) user needs 'Use events dataset' on the"
    " dataset and the app ads_read; a token generated in Events Manager before July 2025 needs Meta's opt-in"
)


@dataclass(frozen=True)
class Destination:
    """A pixel capi sends to, and the token it sends with (today one: `default`)."""

    name: str
    pixel_id: str
    token: SecretSource


class QualityUnavailable(MetaError):
    """Meta answered, but with no quality data (`no_data`) or nothing readable (`meta_unreadable`)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, transient=False)
        self.reason = reason


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _percentage(node: Any) -> float | None:
    return _number(node.get("percentage")) if isinstance(node, dict) else None


def _list(value: Any) -> list[Any]:
    """A list from Meta's answer, or none: every field is type-checked before use."""
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def summarize(entry: dict[str, Any], threshold: float) -> dict[str, Any]:
    """One event name's quality, flat enough to log and to read at a glance."""
    emq = entry.get("event_match_quality") if isinstance(entry.get("event_match_quality"), dict) else {}
    score = _number(emq.get("composite_score"))
    match_keys = {
        item["identifier"]: _percentage(item.get("coverage"))
        for item in _list(emq.get("match_key_feedback"))
        if isinstance(item, dict) and _text(item.get("identifier"))
    }
    dedupe = {
        item["dedupe_key"]: {
            "server": _percentage(item.get("server_events_with_dedupe_key")),
            "browser": _percentage(item.get("browser_events_with_dedupe_key")),
            "deduplicated": _percentage(item.get("overall_browser_coverage_from_dedupe_key")),
        }
        for item in _list(entry.get("dedupe_key_feedback"))
        if isinstance(item, dict) and _text(item.get("dedupe_key"))
    }
    diagnostics = [
        {
            "name": _text(item.get("name")),
            "solution": _text(item.get("solution")),
            "percentage": _number(item.get("percentage")),
            "affected_event_count": _number(item.get("affected_event_count")),
            "total_event_count": _number(item.get("total_event_count")),
        }
        for item in _list(emq.get("diagnostics"))
        if isinstance(item, dict)
    ]
    freshness = entry.get("data_freshness")
    return {
        "event_name": _text(entry.get("event_name")) or "",
        "score": score,
        "below_threshold": score is not None and score < threshold,
        "match_keys": match_keys,
        "dedupe": dedupe,
        "event_coverage": _percentage(entry.get("event_coverage")),
        "acr": _percentage(entry.get("acr")),
        "data_freshness": _text(freshness.get("upload_frequency")) if isinstance(freshness, dict) else None,
        "diagnostics": diagnostics,
    }


# Release 3: what capi_quality also warns about, per event name, each line with its fix.
DEDUP_BELOW = "deduplication below threshold"
COVERAGE_BELOW = "event coverage below Meta's goal"
IP_DIAGNOSTIC = "Meta IP diagnostic"
_FIX_DEDUP_SERVER = (
    "server events lack the Pixel's event id: send the Pixel's eventID as event_id"
    " (docs/sgtm.md#5-deduplicate-with-the-browser-pixel); an event_id capi mints cannot match any Pixel event"
)
_FIX_DEDUP_BROWSER = (
    "Pixel events lack an eventID: pass {eventID: ...} to fbq('track', ...) and send the same value as the"
    " server's event_id (docs/sgtm.md#5-deduplicate-with-the-browser-pixel)"
)
_FIX_DEDUP_MISMATCH = (
    "both sides send ids that do not match: the Pixel's eventID and the server's event_id must be the same"
    " value for the same Meta event name, sent within 48 h (docs/sgtm.md#5-deduplicate-with-the-browser-pixel)"
)
_FIX_COVERAGE = (
    "Meta gets fewer server events than Pixel events for this name: send every event the Pixel sends through"
    " capi as well (the sGTM tag's trigger, FORWARD_EVENTS), with the Pixel's eventID as event_id"
)
_FIX_IP = (
    "run Meta's Parameter Builder on the site: its _fbi cookie carries the browser's own (IPv6) address, which"
    " the sGTM tag forwards and capi sends as client_ip_address (docs/matching.md); without it, make sure the"
    " tag forwards the browser's address (ip_override), never your server's"
)
# Meta's IP diagnostics ("Server sending IPv4 ...", "Server sending mismatched IP addresses").
_IP_DIAGNOSTIC = re.compile(r"\bIP(v4|v6)?\b|\bIP address", re.IGNORECASE)


def quality_warnings(entry: dict[str, Any], dedup_below: float) -> list[dict[str, Any]]:
    """What to warn about for one event name of Meta's answer, each with its fix: browser and
    server events not deduplicated (Meta's `overall_browser_coverage_from_dedupe_key` under
    DEDUP_ALERT_BELOW percent), event coverage under Meta's own goal, and Meta's IP diagnostics."""
    name = _text(entry.get("event_name")) or ""
    found: list[dict[str, Any]] = []
    for item in _list(entry.get("dedupe_key_feedback")):
        if not isinstance(item, dict) or not _text(item.get("dedupe_key")):
            continue
        deduplicated = _percentage(item.get("overall_browser_coverage_from_dedupe_key"))
        if deduplicated is None or deduplicated >= dedup_below:
            continue
        server = _percentage(item.get("server_events_with_dedupe_key"))
        browser = _percentage(item.get("browser_events_with_dedupe_key"))
        if server is not None and server < 100:
            fix = _FIX_DEDUP_SERVER
        elif browser is not None and browser < 100:
            fix = _FIX_DEDUP_BROWSER
        else:
            fix = _FIX_DEDUP_MISMATCH
        found.append(
            {
                "kind": "dedup",
                "message": DEDUP_BELOW,
                "event_name": name,
                "dedupe_key": str(item["dedupe_key"]),
                "deduplicated": deduplicated,
                "server": server,
                "browser": browser,
                "threshold": dedup_below,
                "fix": fix,
            }
        )
    coverage = entry.get("event_coverage") if isinstance(entry.get("event_coverage"), dict) else {}
    percentage, goal = _percentage(coverage), _number(coverage.get("goal_percentage"))
    if percentage is not None and goal is not None and percentage < goal:
        found.append(
            {
                "kind": "coverage",
                "message": COVERAGE_BELOW,
                "event_name": name,
                "percentage": percentage,
                "goal": goal,
                "fix": _FIX_COVERAGE,
            }
        )
    emq = entry.get("event_match_quality") if isinstance(entry.get("event_match_quality"), dict) else {}
    for item in _list(emq.get("diagnostics")):
        if isinstance(item, dict) and isinstance(item.get("name"), str) and _IP_DIAGNOSTIC.search(item["name"]):
            found.append(
                {
                    "kind": "ip",
                    "message": IP_DIAGNOSTIC,
                    "event_name": name,
                    "diagnostic": item["name"][:200],
                    "percentage": _number(item.get("percentage")),
                    "affected_event_count": _number(item.get("affected_event_count")),
                    "solution": (_text(item.get("solution")) or "")[:500],
                    "fix": _FIX_IP,
                }
            )
    return found


def _guarded_session(session: requests.Session | None) -> requests.Session:
    """`session`, or a new one, with every pool's GET bounded in total (FETCH_SECONDS)."""
    import requests  # here, not at import: see DatasetQualityClient.__init__

    session = session or requests.Session()
    for adapter in session.adapters.values():
        if isinstance(adapter, requests.adapters.HTTPAdapter):
            guarded_pool(adapter.poolmanager)
    return session


class DatasetQualityClient:
    """Reads one dataset's quality: one GET, bounded in time and size, token never logged."""

    def __init__(
        self,
        *,
        base_url: str,
        api_version: str,
        session: requests.Session | None = None,
        timeout: float = TIMEOUT_SECONDS,
        max_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/{api_version}/dataset_quality"
        # Built on first use: `requests` is imported there, not at start-up (it cost 17 ms of capi's
        # 64 ms import on Python 3.12, and only this daily job uses it).
        self._session = Lazy(lambda: _guarded_session(session))
        self._timeout = timeout
        self._max_bytes = max_bytes

    def fetch(self, destination: Destination, deadline: float | None = None) -> list[dict[str, Any]]:
        """Meta's `web` list for the destination's pixel, read by `deadline` (monotonic; at most
        FETCH_SECONDS from now): past it, the GET is cut whatever its answer is doing.

        Raises:
            MetaError: Meta refused (`meta_code` says why), could not be reached, or answered
                something unreadable or empty (`QualityUnavailable`).
            SecretUnavailable: the token could not be read.
        """
        end = min(deadline or float("inf"), time.monotonic() + FETCH_SECONDS)
        try:
            return self._bounded(destination, end, refresh=False)
        except MetaAuthError:
            # The token may have been rotated since it was cached: read it again, once (as delivery does).
            return self._bounded(destination, end, refresh=True)

    def _bounded(self, destination: Destination, end: float, *, refresh: bool) -> list[dict[str, Any]]:
        with bounded_call(end) as call:
            try:
                return self._fetch(destination, refresh=refresh)
            except MetaError as exc:
                error = exc
        if not call.cut:  # known once the call is over: the watchdog's verdict
            raise error
        raise MetaError(f"Meta's answer took over {FETCH_SECONDS:.0f} s in total; cut", transient=True)

    def _fetch(self, destination: Destination, *, refresh: bool) -> list[dict[str, Any]]:
        params = {"dataset_id": destination.pixel_id, "agent_name": AGENT_NAME, "fields": FIELDS}
        # The token goes in a header, so no URL capi or `requests` might log ever holds it.
        headers = {"Authorization": f"Bearer {destination.token.get(refresh=refresh)}"}
        import requests  # loaded with the session already: a lookup in sys.modules

        try:
            with self._session().get(
                self.url, params=params, headers=headers, timeout=(CONNECT_TIMEOUT, self._timeout), stream=True
            ) as response:
                raw = response.raw.read(self._max_bytes + 1, decode_content=True)
                status = response.status_code
        except (requests.ConnectionError, requests.Timeout, TransportError) as exc:
            # TransportError: the body is read from the socket here (stream=True), past requests' wrapping.
            raise MetaError(f"could not reach Meta ({type(exc).__name__})", transient=True) from None
        if len(raw) > self._max_bytes:
            raise QualityUnavailable(f"Meta's answer is over {self._max_bytes} bytes", "meta_unreadable")
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            # Not Meta speaking (a proxy's error page, a captive portal): nothing to classify.
            raise QualityUnavailable(
                f"Meta answered HTTP {status} with something that is not JSON", "meta_unreadable"
            ) from None
        if not 200 <= status < 300 or (isinstance(payload, dict) and "error" in payload):
            raise classify(status, payload)
        if not isinstance(payload, dict) or not isinstance(payload.get("web", []), list):
            raise QualityUnavailable(
                f"Meta answered HTTP {status} with something that is not quality data", "meta_unreadable"
            )
        web = [entry for entry in payload.get("web") or [] if isinstance(entry, dict)]
        if not web:
            raise QualityUnavailable(
                f"Meta has no quality data for dataset {destination.pixel_id} and agent {AGENT_NAME}: no web events"
                " sent through capi in the last days, or the data is not ready yet",
                "no_data",
            )
        return web


def _permission(error: MetaError) -> bool:
    """A permission code (3, 10, 200-299): reading quality needs more than sending does."""
    code = error.meta_code or 0
    return code in (3, 10) or 200 <= code < 300


def _error_code(error: MetaError) -> str:
    if isinstance(error, QualityUnavailable):
        return error.reason
    if error.kind == "config":  # the classification delivery uses (capi.delivery.graph.classify)
        return "meta_config"
    if error.transient:
        return "meta_unavailable"
    return "meta_unreadable" if error.meta_code is None else "meta_refused"


def _fix(error: MetaError) -> str | None:
    if error.kind != "config":
        return None
    if error.meta_code == 190:
        return _FIX_TOKEN
    return _FIX_PERMISSION if _permission(error) else error.fix


def _failed(destination: Destination, code: str, message: str) -> dict[str, Any]:
    return {"name": destination.name, "pixel_id": destination.pixel_id, "error": code, "message": message}


class QualityReport:
    """Reads every destination, answers one summary, logs per event name and per failure."""

    def __init__(
        self,
        client: DatasetQualityClient,
        destinations: list[Destination],
        threshold: float,
        dedup_below: float = 50.0,
    ) -> None:
        self._client = client
        self._destinations = destinations
        self._threshold = threshold
        self._dedup_below = dedup_below

    def run(self) -> tuple[int, dict[str, Any]]:
        """(status, body): 200 when every destination answered, 502 when any did not. Each
        destination's failure is its own (a bug included); the run ends by RUN_SECONDS."""
        end = time.monotonic() + RUN_SECONDS
        results = []
        for destination in self._destinations:
            if time.monotonic() >= end:
                results.append(
                    _failed(destination, "meta_unavailable", f"not read: the run's {RUN_SECONDS:.0f} s ran out")
                )
                continue
            try:
                results.append(self._one(destination, end))
            except Exception as exc:  # noqa: BLE001 - one destination's surprise never fails the others
                log(logging.ERROR, "dataset quality unavailable", destination=destination.name, error="internal",
                    detail=type(exc).__name__)  # fmt: skip
                results.append(
                    _failed(destination, "internal", f"capi could not read Meta's answer ({type(exc).__name__})")
                )
        status = 502 if any("error" in result for result in results) else 200
        return status, {"threshold": self._threshold, "agent_name": AGENT_NAME, "destinations": results}

    def _one(self, destination: Destination, end: float) -> dict[str, Any]:
        where = {"destination": destination.name, "pixel_id": destination.pixel_id}
        try:
            web = self._client.fetch(destination, end)
        except SecretUnavailable as exc:
            log(logging.ERROR, "dataset quality unavailable", **where, error="secret_unavailable", detail=exc.message)
            return {"name": destination.name, "pixel_id": destination.pixel_id, **exc.to_body()}
        except MetaError as exc:
            code, fix = _error_code(exc), _fix(exc)
            log(
                logging.ERROR if code == "meta_config" else logging.WARNING,
                "dataset quality unavailable",
                **where,
                error=code,
                meta_code=exc.meta_code,
                meta_subcode=exc.meta_subcode,
                fbtrace_id=exc.fbtrace_id,
                fix=fix,
                detail=exc.message[:300],
            )
            body = {"name": destination.name, "pixel_id": destination.pixel_id, "error": code, "message": exc.message}
            body.update({k: v for k, v in (("meta_code", exc.meta_code), ("fix", fix)) if v is not None})
            return body
        events = sorted((summarize(entry, self._threshold) for entry in web), key=lambda e: e["event_name"])
        for event in events:
            log(
                logging.INFO,
                "dataset quality",
                **where,
                event_name=event["event_name"],
                score=event["score"],
                match_keys=event["match_keys"],
                dedupe=event["dedupe"],
                event_coverage=event["event_coverage"],
                diagnostics=[d["name"] for d in event["diagnostics"]],
            )
            if event["below_threshold"]:
                log(
                    logging.WARNING,
                    "Event Match Quality below threshold",
                    **where,
                    event_name=event["event_name"],
                    score=event["score"],
                    threshold=self._threshold,
                )
        warnings = self._warn(web, where)
        return {
            "name": destination.name,
            "pixel_id": destination.pixel_id,
            "events": events,
            "below_threshold": [e["event_name"] for e in events if e["below_threshold"]],
            "warnings": warnings,
        }

    def _warn(self, web: list[dict[str, Any]], where: dict[str, str]) -> list[dict[str, Any]]:
        """One WARNING line per deduplication, coverage or IP problem of an event name (the
        Terraform alerts are built on them), each with its fix; the same in the answer."""
        warnings = sorted(
            (w for entry in web for w in quality_warnings(entry, self._dedup_below)),
            key=lambda w: (w["event_name"], w["kind"]),
        )
        for w in warnings:
            fields = {k: v for k, v in w.items() if k not in ("kind", "message")}
            if w["kind"] == "dedup":
                log(logging.WARNING, "deduplication below threshold", **where, **fields)
            elif w["kind"] == "coverage":
                log(logging.WARNING, "event coverage below Meta's goal", **where, **fields)
            else:
                log(logging.WARNING, "Meta IP diagnostic", **where, **fields)
        return warnings
