"""The sGTM tag template (`sgtm/template.tpl`), end to end.

The template's sandboxed JavaScript runs under Node.js (`sgtm/test/run-template.mjs`) with
working sGTM APIs — `sendHttpRequest` makes a real HTTP request — against the real capi function
served by functions-framework on loopback, which forwards to the loopback fake Graph API. What
reaches the fake, the tag's outcome (gtmOnSuccess / gtmOnFailure) and its preview console are
asserted. The template's own GTM test scenarios (`___TESTS___`) run under Node as well.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EMULATOR_PROJECT, PIXEL_ID, TOKEN
from tests.fakes.emulator import clear, free_port
from tests.fakes.function import running_function
from tests.fakes.graph import GraphServer

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "sgtm" / "template.tpl"
NODE = shutil.which("node")
KEY = "sgtm-e2e-key-7f3a9c"
EMAIL = "Jane.Doe@Example.com"
PHONE = "+1 (650) 555-1212"
FBP = "fb.1.1700000000000.1234567890"
FBC = "fb.1.1700000000000.IwAR2xYz"
# Values that must never appear in the tag's console: the key and the raw personal data.
SECRETS = (KEY, EMAIL, EMAIL.lower(), "555-1212", "6505551212")
# Meta's tag's extendCookies attributes (its template.tpl, setFbCookie): first-party, 90 days,
# readable by the Pixel.
COOKIE_OPTIONS = {
    "domain": "auto",
    "path": "/",
    "secure": True,
    "samesite": "Lax",
    "max-age": 7776000,
    "httpOnly": False,
}
# Loopback is added to the template's send_http permission, as a user adds a custom domain.
LOOPBACK = ["http://127.0.0.1:*/*"]

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: the sGTM template tests need Node.js 18+")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def serve_capi(graph: GraphServer, **extra: str) -> Iterator[str]:
    """The real capi function (functions-framework) on a loopback port; yields its URL."""
    env = {
        "META_PIXEL_ID": PIXEL_ID,
        "META_ACCESS_TOKEN": TOKEN,
        "META_API_BASE_URL": graph.base_url,
        "META_TIMEOUT_SECONDS": "1",
        "META_RETRY_BUDGET_SECONDS": "2",
        "INGEST_API_KEY": KEY,
        "PROFILE_COLLECTION": "",
        **extra,
    }
    with running_function(env) as (port, _):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def capi() -> Iterator[tuple[str, GraphServer]]:
    """capi forwarding to a fake Graph API, Firestore unused (no profiles)."""
    with GraphServer() as graph, serve_capi(graph) as url:
        yield url, graph


def run_tag(
    url: str,
    event: dict[str, Any],
    *,
    preview: bool = True,
    cookies: dict[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """One run of the template for one event (the browser's cookies: `cookies`, by default _fbp
    and _fbc); returns the runner's JSON result."""
    data = {
        "url": url,
        "ingestKey": KEY,
        "testEventCode": "",
        "forwardCookies": True,
        "setCookies": True,
        "failOnRejected": True,
        "timeoutMs": "5000",
    }
    data.update(fields)
    scenario = {
        "data": data,
        "eventData": event,
        "cookies": {"_fbp": FBP, "_fbc": FBC} if cookies is None else cookies,
        "previewMode": preview,
        "extraAllowedUrls": LOOPBACK,
    }
    done = subprocess.run(
        [NODE, str(ROOT / "sgtm" / "test" / "run-template.mjs")],
        input=json.dumps(scenario),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result = json.loads(done.stdout)
    for line in result["attemptedConsole"]:
        for secret in SECRETS:
            assert secret not in line, f"the tag logged {secret!r}: {line}"
    return result


def ga4_event(event_id: str, **extra: Any) -> dict[str, Any]:
    """Event data as the GA4 client of a server container builds it (Google's common event data)."""
    event = {
        "event_name": "purchase",
        "event_id": event_id,
        "client_id": "1234567890.1700000000",
        "ip_override": "203.0.113.9",
        "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5)",
        "page_location": "https://shop.example.com/checkout/thanks",
        "language": "en-us",
        "value": 59.9,
        "currency": "EUR",
        "transaction_id": event_id,
        "items": [{"item_id": "SKU-1", "price": 29.95, "quantity": 2}],
        "user_data": {"email_address": EMAIL, "phone_number": PHONE},
        "x-ga-protocol_version": "2",
        "x-ga-page_id": 1187640455,
    }
    event.update(extra)
    return event


def sent_for(graph: GraphServer, event_id: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(request body, event) pairs the fake Graph API accepted for this event id."""
    return [(body, e) for body in graph.fake.bodies for e in body["data"] if e.get("event_id") == event_id]


def preview_lines(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result["console"]]


def test_success_reaches_meta_with_hashed_email_cookies_event_id_and_test_code(capi: Any) -> None:
    url, graph = capi
    result = run_tag(url, ga4_event("SGTM-OK-1"), testEventCode="TEST12345")

    assert result["outcome"] == "success"
    assert result["calls"] == ["success"]
    assert result["requests"] == [
        {
            "url": f"{url}/events",
            "method": "POST",
            "timeout": 5000,
            "headerNames": ["Content-Type", "X-Api-Key", "X-Capi-Set-Cookies"],
        }
    ]
    [(body, event)] = sent_for(graph, "SGTM-OK-1")
    assert body["test_event_code"] == "TEST12345"
    assert event["event_name"] == "Purchase"
    assert event["user_data"]["em"] == [sha256("jane.doe@example.com")]
    assert event["user_data"]["ph"] == [sha256("16505551212")]
    assert event["user_data"]["fbp"] == FBP
    assert event["user_data"]["fbc"] == FBC
    assert event["custom_data"]["order_id"] == "SGTM-OK-1"
    request, answer = preview_lines(result)
    assert request == {
        "tag": "capi",
        "request": f"{url}/events",
        "timeout_ms": 5000,
        "cookies_added": ["x-fb-ck-fbp", "x-fb-ck-fbc"],
        "cookies_minted": [],
        "event_name": "purchase",
        "event_id": "SGTM-OK-1",
    }
    assert answer["outcome"] == "success"
    assert answer["status"] == 200
    assert answer["forwarded"] == 1
    assert answer["event_ids"] == ["SGTM-OK-1"]
    assert answer["cookies_set"] == ["_fbp", "_fbc"]
    # The browser's own cookies, set again for 90 days with the values Meta got.
    assert result["cookiesSet"] == [
        {"name": "_fbp", "value": FBP, "options": COOKIE_OPTIONS},
        {"name": "_fbc", "value": FBC, "options": COOKIE_OPTIONS},
    ]


def test_event_data_cookies_win_over_the_request_cookies(capi: Any) -> None:
    url, graph = capi
    own_fbp = "fb.1.1600000000000.999"
    result = run_tag(url, ga4_event("SGTM-OWN-FBP", **{"x-fb-ck-fbp": own_fbp}), forwardCookies=True)
    assert result["outcome"] == "success"
    [(_, event)] = sent_for(graph, "SGTM-OWN-FBP")
    assert event["user_data"]["fbp"] == own_fbp
    assert event["user_data"]["fbc"] == FBC

    result = run_tag(url, ga4_event("SGTM-NO-COOKIES"), forwardCookies=False, setCookies=False)
    assert result["outcome"] == "success"
    [(body, event)] = sent_for(graph, "SGTM-NO-COOKIES")
    assert "fbp" not in event["user_data"]
    assert "fbc" not in event["user_data"]
    assert "test_event_code" not in body


def test_rejected_event_fails_the_tag_only_with_fail_on_rejected(capi: Any) -> None:
    url, graph = capi
    old = int(time.time()) - 8 * 86400
    result = run_tag(url, ga4_event("SGTM-OLD", event_time=old), failOnRejected=True)
    assert result["outcome"] == "failure"
    assert result["calls"] == ["failure"]
    [line] = [line for line in preview_lines(result) if "outcome" in line]
    assert line["status"] == 200
    assert line["rejected"] == [
        {
            "index": 0,
            "event_id": "SGTM-OLD",
            "field": "event_time",
            "message": "older than 7 days: Meta does not accept it",
            "problems": [{"field": "event_time", "message": "older than 7 days: Meta does not accept it"}],
        }
    ]
    assert "failOnRejected" in line["reason"]

    result = run_tag(url, ga4_event("SGTM-OLD", event_time=old), failOnRejected=False)
    assert result["outcome"] == "success"
    assert sent_for(graph, "SGTM-OLD") == []


@pytest.mark.parametrize(
    ("signal", "value"),
    [
        ("consent", {"ad_user_data": "denied"}),  # capi's own object
        ("x-ga-gcs", "G100"),  # what the GA4 client puts in event data: ad_storage denied
        ("x-ga-gcd", "13p3p3p2p5l1"),  # every state denied by default
    ],
)
def test_consent_skip_is_a_success_and_sends_nothing(capi: Any, signal: str, value: Any) -> None:
    url, graph = capi
    event_id = f"SGTM-CONSENT-{signal}"
    result = run_tag(url, ga4_event(event_id, **{signal: value}))
    assert result["outcome"] == "success"
    assert sent_for(graph, event_id) == []
    [line] = [line for line in preview_lines(result) if "outcome" in line]
    assert line["skipped"] == [{"index": 0, "event_id": event_id, "reason": "consent", "consent_signal": signal}]
    assert result["cookiesSet"] == []  # consent denied: not even the browser's own cookies are extended
    assert line["cookies_set"] == []


def test_set_cookies_mints_fbp_and_builds_fbc_with_the_values_meta_receives(capi: Any) -> None:
    """A first visit from an ad: no _fbp yet, an old _fbc, a new fbclid. The tag mints _fbp,
    builds _fbc from the new click, capi sends both to Meta and answers them, and the tag sets
    exactly those values."""
    url, graph = capi
    page = "https://shop.example.com/landing?utm_source=facebook&fbclid=IwAR3NewClick-x_Y"
    before = int(time.time() * 1000)
    result = run_tag(url, ga4_event("SGTM-MINT", page_location=page), cookies={"_fbc": FBC})
    after = int(time.time() * 1000)
    assert result["outcome"] == "success"
    [(_, event)] = sent_for(graph, "SGTM-MINT")
    fbp, fbc = event["user_data"]["fbp"], event["user_data"]["fbc"]
    minted = re.fullmatch(r"fb\.1\.(\d{13})\.(\d{10})", fbp)
    assert minted, fbp
    assert before <= int(minted[1]) <= after and 1000000000 <= int(minted[2]) <= 2147483647
    assert fbc == f"fb.1.{minted[1]}.IwAR3NewClick-x_Y"  # the new click replaced the old _fbc
    assert result["cookiesSet"] == [
        {"name": "_fbp", "value": fbp, "options": COOKIE_OPTIONS},
        {"name": "_fbc", "value": fbc, "options": COOKIE_OPTIONS},
    ]
    request, answer = preview_lines(result)
    assert request["cookies_minted"] == ["_fbp", "_fbc"]
    assert answer["cookies_set"] == ["_fbp", "_fbc"]


def test_set_cookies_off_sets_nothing(capi: Any) -> None:
    url, graph = capi
    result = run_tag(url, ga4_event("SGTM-NOSET"), cookies={}, setCookies=False)
    assert result["outcome"] == "success"
    [(_, event)] = sent_for(graph, "SGTM-NOSET")
    assert "fbp" not in event["user_data"]  # nothing minted either
    assert result["cookiesSet"] == []
    assert "X-Capi-Set-Cookies" not in result["requests"][0]["headerNames"]


def test_rejected_event_sets_no_cookie(capi: Any) -> None:
    """A minted _fbp capi did not send (the event is rejected) is never set."""
    url, graph = capi
    result = run_tag(url, ga4_event("SGTM-REJ", event_time=1), cookies={}, failOnRejected=False)
    assert result["outcome"] == "success"
    assert sent_for(graph, "SGTM-REJ") == []
    assert result["cookiesSet"] == []


def test_parameter_builder_ipv6_cookie_wins_over_the_ipv4_request(capi: Any) -> None:
    """The request came over IPv4 (ip_override); the page's Parameter Builder saw the browser's
    IPv6 address and kept it in _fbi with its appendix: Meta gets the IPv6 address."""
    url, graph = capi
    cookies = {"_fbp": FBP, "_fbi": "2a03:2880:f12f:83:face:b00c:0:25de.AQYCAQAA"}
    result = run_tag(url, ga4_event("SGTM-IPV6", ip_override="198.51.100.23"), cookies=cookies)
    assert result["outcome"] == "success"
    [(_, event)] = sent_for(graph, "SGTM-IPV6")
    assert event["user_data"]["client_ip_address"] == "2a03:2880:f12f:83:face:b00c:0:25de"
    # Without the cookie, the request's address.
    result = run_tag(url, ga4_event("SGTM-IPV4", ip_override="198.51.100.23"), cookies={"_fbp": FBP})
    [(_, event)] = sent_for(graph, "SGTM-IPV4")
    assert event["user_data"]["client_ip_address"] == "198.51.100.23"


def test_event_outside_forward_events_is_a_success(capi: Any) -> None:
    url, graph = capi
    result = run_tag(url, ga4_event("SGTM-PV", event_name="page_view"))
    assert result["outcome"] == "success"
    assert sent_for(graph, "SGTM-PV") == []
    [line] = [line for line in preview_lines(result) if "outcome" in line]
    assert line["skipped"] == [{"index": 0, "event_id": "SGTM-PV", "reason": "not in FORWARD_EVENTS"}]


@pytest.mark.emulator
def test_meta_down_stored_for_replay_is_a_success(firestore_emulator: str) -> None:
    """Meta answers 503 to every try: capi stores the event in Firestore (the emulator), answers 202."""
    clear(firestore_emulator, EMULATOR_PROJECT)
    with GraphServer() as graph:
        graph.fake.down = "503"
        with serve_capi(
            graph,
            FIRESTORE_EMULATOR_HOST=firestore_emulator,
            GOOGLE_CLOUD_PROJECT=EMULATOR_PROJECT,
            META_MAX_ATTEMPTS="2",
        ) as url:
            result = run_tag(url, ga4_event("SGTM-STORED"))
        assert graph.fake.requests == 2  # tried and retried
    assert graph.fake.bodies == []
    assert result["outcome"] == "success"
    [line] = [line for line in preview_lines(result) if "outcome" in line]
    assert line["status"] == 202
    assert line["stored"] == 1
    assert line["note"] == "Meta failed for now; capi stored the event and its replay will deliver it"
    # Stored for replay: Meta will get these values, so the cookies are set.
    assert [(c["name"], c["value"]) for c in result["cookiesSet"]] == [("_fbp", FBP), ("_fbc", FBC)]


def test_wrong_key_fails_the_tag(capi: Any) -> None:
    url, graph = capi
    result = run_tag(url, ga4_event("SGTM-BADKEY"), ingestKey="not-the-key")
    assert result["outcome"] == "failure"
    assert sent_for(graph, "SGTM-BADKEY") == []
    [line] = [line for line in preview_lines(result) if "outcome" in line]
    assert line["status"] == 401
    assert line["error"] == "unauthorized"
    assert "ingestKey" in line["reason"]
    assert all("not-the-key" not in raw for raw in result["attemptedConsole"])


def test_capi_down_fails_the_tag() -> None:
    result = run_tag(f"http://127.0.0.1:{free_port()}", ga4_event("SGTM-DOWN"))
    assert result["outcome"] == "failure"
    assert result["calls"] == ["failure"]
    [line] = [line for line in preview_lines(result) if "outcome" in line]
    assert line["reason"].startswith("could not reach capi (failed)")


def test_no_answer_within_timeout_ms_fails_the_tag() -> None:
    """A server that accepts the connection and never answers: the text field's 300 ms apply."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        accepted: list[socket.socket] = []
        threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
        started = time.monotonic()
        result = run_tag(f"http://127.0.0.1:{server.getsockname()[1]}", ga4_event("SGTM-SLOW"), timeoutMs="300")
        elapsed = time.monotonic() - started
        for connection in accepted:
            connection.close()
    assert result["outcome"] == "failure"
    assert result["requests"][0]["timeout"] == 300
    [line] = [line for line in preview_lines(result) if "outcome" in line]
    assert line["reason"] == "no answer within 300 ms (timeoutMs)"
    assert elapsed < 5


def test_nothing_is_logged_outside_preview(capi: Any) -> None:
    url, _ = capi
    result = run_tag(url, ga4_event("SGTM-QUIET", event_time=1), preview=False)
    assert result["outcome"] == "failure"  # rejected: event_time in 1970
    assert result["attemptedConsole"] == []


# -- the template file itself ----------------------------------------------------------------


def sections() -> dict[str, str]:
    parts = re.split(r"^___([A-Z_]+)___$", TEMPLATE.read_text(), flags=re.M)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_template_sections_parse_and_declare_a_server_tag() -> None:
    found = sections()
    assert list(found) == [
        "TERMS_OF_SERVICE",
        "INFO",
        "TEMPLATE_PARAMETERS",
        "SANDBOXED_JS_FOR_SERVER",
        "SERVER_PERMISSIONS",
        "TESTS",
        "NOTES",
    ]
    info = json.loads(found["INFO"])
    assert info["type"] == "TAG"
    assert info["containerContexts"] == ["SERVER"]
    params = json.loads(found["TEMPLATE_PARAMETERS"])
    assert [p["name"] for p in params] == [
        "url",
        "ingestKey",
        "testEventCode",
        "forwardCookies",
        "setCookies",
        "failOnRejected",
        "timeoutMs",
    ]
    assert all(p["help"] for p in params)
    by_name = {p["name"]: p for p in params}
    assert by_name["forwardCookies"]["type"] == by_name["failOnRejected"]["type"] == "CHECKBOX"
    assert by_name["forwardCookies"]["defaultValue"] is True
    assert by_name["setCookies"]["type"] == "CHECKBOX" and by_name["setCookies"]["defaultValue"] is True
    assert by_name["failOnRejected"]["defaultValue"] is True
    assert by_name["timeoutMs"]["type"] == "TEXT"


def test_timeout_ms_accepts_blank_as_its_help_says() -> None:
    """Issue 20 item 4: the help says blank means 15000, so the field's validator accepts blank."""
    params = {p["name"]: p for p in json.loads(sections()["TEMPLATE_PARAMETERS"])}
    field = params["timeoutMs"]
    assert "empty: 15000" in field["help"]
    [validator] = field["valueValidators"]
    assert validator["type"] == "REGEX"  # GTM's regex validators match the whole value
    pattern = re.compile(validator["args"][0])
    accepted = {text: bool(pattern.fullmatch(text)) for text in ("", " ", "15000", "300", "60001")}
    refused = {text: bool(pattern.fullmatch(text)) for text in ("0", "-5", "soon", "1.5", "15 000")}
    assert accepted == dict.fromkeys(accepted, True)
    assert refused == dict.fromkeys(refused, False)


def test_permissions_are_exactly_what_the_code_calls() -> None:
    """Each API the code requires has its permission, no permission is unused, all are narrow."""
    found = sections()
    needs = {
        "getAllEventData": "read_event_data",
        "getCookieValues": "get_cookies",
        "getContainerVersion": "read_container_data",
        "logToConsole": "logging",
        "sendHttpRequest": "send_http",
        "setCookie": "set_cookies",
    }
    required = set(re.findall(r"require\('(\w+)'\)", found["SANDBOXED_JS_FOR_SERVER"]))
    utilities = {"JSON", "getType", "makeInteger", "makeString", "computeEffectiveTldPlusOne", "decodeUriComponent"}
    utilities |= {"generateRandom", "getTimestampMillis", "parseUrl"}
    assert required == {*needs, *utilities}

    def value(v: dict[str, Any]) -> Any:
        if v["type"] == 3:
            return {value(k): value(x) for k, x in zip(v["mapKey"], v["mapValue"], strict=True)}
        return [value(x) for x in v["listItem"]] if v["type"] == 2 else v["string"]

    def cookie(name: str) -> dict[str, str]:
        return {"name": name, "domain": "*", "path": "*", "secure": "any", "session": "any"}

    declared = {
        p["instance"]["key"]["publicId"]: {q["key"]: value(q["value"]) for q in p["instance"]["param"]}
        for p in json.loads(found["SERVER_PERMISSIONS"])
    }
    assert declared == {
        "read_event_data": {"eventDataAccess": "any"},
        "send_http": {"allowedUrls": "specific", "urls": ["https://*.run.app/*", "https://*.cloudfunctions.net/*"]},
        "get_cookies": {"cookieAccess": "specific", "cookieNames": ["_fbp", "_fbc", "_fbi"]},
        "set_cookies": {"allowedCookies": [cookie("_fbp"), cookie("_fbc")]},  # these two only
        "read_container_data": {},
        "logging": {"environments": "debug"},
    }
    assert {needs[name] for name in required if name in needs} == set(declared)


def test_send_http_permission_admits_function_urls_only() -> None:
    script = (
        "import {urlAllowed} from './sgtm/test/sandbox.mjs';"
        "const p = ['https://*.run.app/*', 'https://*.cloudfunctions.net/*'];"
        "console.log(JSON.stringify(process.argv.slice(1).map((u) => urlAllowed(u, p))));"
    )
    urls = {
        "https://capi-events-abc123-ew.a.run.app/events": True,
        "https://europe-west1-shop.cloudfunctions.net/capi-events/events": True,
        "https://run.app/events": False,
        "http://capi-events-abc123-ew.a.run.app/events": False,
        "https://evil.example.com/events": False,
        "https://capi.run.app.example.com/events": False,
    }
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script, *urls], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert dict(zip(urls, json.loads(done.stdout), strict=True)) == urls


def test_gtm_test_scenarios_pass() -> None:
    """The ___TESTS___ scenarios, as GTM's "Run tests" runs them, each passes under Node."""
    done = subprocess.run(
        [NODE, str(ROOT / "sgtm" / "test" / "gtm-tests.mjs"), str(TEMPLATE)], capture_output=True, text=True, timeout=60
    )
    report = json.loads(done.stdout)
    failed = [s for s in report["scenarios"] if not s["passed"]]
    assert failed == [], failed
    names = " | ".join(s["name"] for s in report["scenarios"])
    for needed in ("Success", "Rejected event", "5xx", "Consent skip", "Cookies forwarded"):
        assert needed in names
    assert done.returncode == 0
    assert report["passed"] == len(report["scenarios"]) >= 5


@pytest.mark.parametrize(
    ("before", "after", "failing"),
    [
        # Cookies a browser would not keep or share with the Pixel (SameSite None, HttpOnly).
        ("samesite: 'Lax', 'max-age'", "samesite: 'None', 'max-age'", "with Meta's attributes"),
        ("'max-age': 7776000, httpOnly: false}", "'max-age': 7776000, httpOnly: true}", "with Meta's attributes"),
        # The tag deciding for itself: it sets what it sent, whatever capi answered.
        (
            "const entries = getType(answer.set_cookies) === 'array' ? answer.set_cookies : [];",
            "const entries = [{_fbp: body['x-fb-ck-fbp'], _fbc: body['x-fb-ck-fbc']}];",
            "skipped the event for consent",
        ),
    ],
)
def test_gtm_test_scenarios_catch_a_broken_set_cookies(tmp_path: Path, before: str, after: str, failing: str) -> None:
    """The ___TESTS___ can fail: each change to the tag's code (not to its tests) fails the
    scenario that guards it."""
    text = TEMPLATE.read_text()
    code, tests = text.split("___TESTS___", 1)
    assert code.count(before) == 1, before
    broken = tmp_path / "template.tpl"
    broken.write_text(code.replace(before, after) + "___TESTS___" + tests)
    done = subprocess.run(
        [NODE, str(ROOT / "sgtm" / "test" / "gtm-tests.mjs"), str(broken)], capture_output=True, text=True, timeout=60
    )
    report = json.loads(done.stdout)
    failed = [s["name"] for s in report["scenarios"] if not s["passed"]]
    assert any(failing in name for name in failed), failed
    assert done.returncode != 0


# -- the Community Template Gallery's layout ---------------------------------------------------


def metadata_versions(text: str) -> list[dict[str, str]]:
    """The `versions` list of metadata.yaml, in the one shape the Gallery documents (sha and
    changeNotes per entry); anything else is an error rather than a guess."""
    versions: list[dict[str, str]] = []
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "versions:", lines[0]
    for line in lines[1:]:
        item = re.fullmatch(r"  - (sha|changeNotes): (.+)", line) or re.fullmatch(r"    (sha|changeNotes): (.+)", line)
        assert item, line
        if line.startswith("  - "):
            versions.append({})
        versions[-1][item[1]] = item[2].strip()
    return versions


def test_folder_is_laid_out_for_the_community_template_gallery() -> None:
    """developers.google.com/tag-platform/tag-manager/templates/gallery: template.tpl with a
    categories entry and the Gallery's terms, metadata.yaml with versions, an Apache 2.0 LICENSE."""
    folder = ROOT / "sgtm"
    assert folder / "template.tpl" == TEMPLATE
    found = sections()
    assert "Community\nTemplate Gallery Developer Terms of Service" in found["TERMS_OF_SERVICE"]
    info = json.loads(found["INFO"])
    assert info["categories"] and info["id"] == "cvt_temp_public_id"
    license_text = (folder / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    versions = metadata_versions((folder / "metadata.yaml").read_text())
    assert versions, "metadata.yaml lists no version"
    for version in versions:
        assert re.fullmatch(r"[0-9a-f]{40}", version["sha"]) and set(version["sha"]) != {"0"}, version
        assert version["changeNotes"], version
    assert (folder / "README.md").is_file()
