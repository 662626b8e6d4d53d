"""Structure and logging promises: a pure core, JSON logs with the trace, start-up notices."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from typing import Any

import pytest

from capi.log import log, set_trace
from tests.conftest import ROOT, base_env, log_lines, serve

TRACE_ID = "105445aa7843bc8bf206b12000100000"  # the example of Google's trace-context page


def _modules_loaded_after(setup: str, watched: tuple[str, ...]) -> list[str]:
    """Which of `watched` a fresh interpreter has imported once `setup` ran."""
    code = f"import sys\n{setup}\nprint([m for m in {watched!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


def test_pure_core_imports_no_io_library() -> None:
    setup = "import capi.service, capi.events, capi.normalize, capi.payload, capi.config"
    io_libraries = ("requests", "urllib3", "flask", "google.cloud.firestore", "google.cloud.secretmanager", "grpc")
    assert _modules_loaded_after(setup, io_libraries) == []


def test_google_clients_not_imported_at_start_up() -> None:
    setup = (
        "import os; os.environ.update(META_PIXEL_ID='1', DRY_RUN='true', ALLOW_UNAUTHENTICATED='true')\n"
        "import functions_framework; functions_framework.create_app('capi_events', 'main.py')"
    )
    assert _modules_loaded_after(setup, ("google.cloud.firestore", "google.cloud.secretmanager")) == []


def test_requests_not_imported_at_start_up_even_with_a_token() -> None:
    # `requests` (17 ms of a 3.12 cold start) serves the CA bundle and proxy lookup of the first
    # Graph send and the daily quality job: loaded there, not by a cold instance's first answer.
    setup = (
        "import os; os.environ.update(META_PIXEL_ID='1', META_ACCESS_TOKEN='t', ALLOW_UNAUTHENTICATED='true')\n"
        "import functions_framework; functions_framework.create_app('capi_events', 'main.py')"
    )
    assert _modules_loaded_after(setup, ("requests",)) == []


def test_start_up_freezes_what_it_loaded_and_raises_the_collection_threshold() -> None:
    code = (
        "import gc, os; os.environ.update(META_PIXEL_ID='1', DRY_RUN='true', ALLOW_UNAUTHENTICATED='true')\n"
        "import functions_framework; functions_framework.create_app('capi_events', 'main.py')\n"
        "print(gc.get_threshold()[0], gc.get_freeze_count() > 1000)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.split() == ["50000", "True"]


LEAD = {
    "event_name": "generate_lead",
    "event_id": "t-1",
    "page_location": "https://x.example/",
    "user_agent": "UA",
    "user_data": {"em": "a@b.co"},
}


def test_log_lines_are_json_with_the_request_trace(graph: Any, make_client: Any, capsys: Any) -> None:
    client = make_client(base_env(graph, GOOGLE_CLOUD_PROJECT="my-proj"))
    capsys.readouterr()
    headers = {"X-Cloud-Trace-Context": f"{TRACE_ID}/42;o=1"}
    assert client.post("/events", json=LEAD, headers=headers).status_code == 200
    [summary] = log_lines(capsys.readouterr().out, "events processed")
    assert summary["severity"] == "INFO"
    assert summary["logging.googleapis.com/trace"] == f"projects/my-proj/traces/{TRACE_ID}"
    assert (summary["received"], summary["forwarded"], summary["fbtrace_id"]) == (1, 1, "AbCdEf123")


def test_both_token_settings_secret_wins_and_is_said_once(secret_manager: Any, graph: Any, capsys: Any) -> None:
    from capi.app import application_from_env

    secret_manager.fake.add_version("projects/p/secrets/tok", graph.fake.token)
    app = application_from_env(
        {
            "META_PIXEL_ID": "1",
            "META_ACCESS_TOKEN": "literal-token",
            "META_ACCESS_TOKEN_SECRET": "tok",
            "GOOGLE_CLOUD_PROJECT": "p",
            "META_API_BASE_URL": graph.base_url,
            "ALLOW_UNAUTHENTICATED": "true",
            "PROFILE_COLLECTION": "",
        },
        secret_client=secret_manager.client(),
    )
    warnings = [line for line in capsys.readouterr().out.splitlines() if "secret wins" in line]
    assert len(warnings) == 1 and "literal-token" not in warnings[0]
    # and the secret's token is the one Meta receives
    assert serve(app).post("/events", json=LEAD).status_code == 200
    assert graph.fake.bodies[0]["access_token"] == graph.fake.token != "literal-token"


@pytest.mark.parametrize(
    ("header", "trace"),
    [
        (f"{TRACE_ID}/1;o=1", f"projects/p/traces/{TRACE_ID}"),
        (TRACE_ID, f"projects/p/traces/{TRACE_ID}"),
        (f"{TRACE_ID};o=0", f"projects/p/traces/{TRACE_ID}"),
        ("a" * 8000, None),  # long enough to bloat every line of the request
        ("ÿÿÿ", None),  # latin-1 bytes, as WSGI hands non-ASCII header bytes over
        (f"{TRACE_ID[:31]}ÿ/1", None),
        (TRACE_ID.upper(), None),
        (f"{TRACE_ID}0/1", None),  # 33 digits
        (f"{TRACE_ID}/1;o=1 x", None),
        (f"{TRACE_ID}/span", None),
        ("abc123def/42;o=1", None),  # alphanumeric, but not a trace id
        ("", None),
        (None, None),
    ],
)
def test_only_a_well_formed_trace_header_reaches_the_log(header: str | None, trace: str | None, capsys: Any) -> None:
    from capi.log import setup_logging

    setup_logging()
    set_trace(f"{TRACE_ID}/9", "p")  # a previous request's trace must not leak into this one
    set_trace(header, "p")
    log(20, "probe")
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert line.get("logging.googleapis.com/trace") == trace
    assert len(json.dumps(line)) < 300


def test_every_cited_section_of_the_meta_notes_exists() -> None:
    """Code cites `docs/meta-capi.md §N`: each N must be a heading there."""
    headings = set(re.findall(r"^## §(\d+) ", (ROOT / "docs" / "meta-capi.md").read_text(), re.MULTILINE))
    assert headings == {str(n) for n in range(1, 13)}
    cited = {
        (path.name, number)
        for path in [ROOT / "main.py", *ROOT.glob("capi/**/*.py"), *ROOT.glob("tests/**/*.py")]
        for number in re.findall(r"docs/meta-capi\.md §(\d+)", path.read_text())
    }
    assert cited, "no code cites docs/meta-capi.md"
    assert {number for _, number in cited} <= headings, cited
