"""SIGTERM with a delivery in flight (issue 10 finding 6), served as in production.

functions-framework's CLI runs gunicorn (an arbiter and a gthread worker); Cloud Run sends
SIGTERM to the arbiter and kills the instance 10 s later. The request waiting on a hung Meta
must get its answer inside that window, with its events stored for replay.
"""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from typing import Any

import pytest

from tests.conftest import EMULATOR_PROJECT, PIXEL_ID
from tests.fakes.function import running_function

pytestmark = pytest.mark.emulator
CLOUD_RUN_GRACE = 10.0  # seconds between SIGTERM and SIGKILL


@pytest.mark.parametrize("meta", ["hang", "drip"])
def test_sigterm_mid_delivery_stores_and_answers_within_the_grace_period(
    firestore_db: Any, firestore_emulator: str, graph: Any, meta: str
) -> None:
    # Meta hangs on every call: without SIGTERM the request would keep retrying (six tries of
    # 2 s, within a 20 s budget); with it, no new try starts once SIGTERM arrives.
    # "drip" (issue 19 F8): Meta sends its answer a byte every 0.2 s, so no read ever times out;
    # before the call was bounded in total, the request was held past SIGKILL and nothing stored.
    if meta == "hang":
        graph.fake.down = "hang"
    else:
        graph.fake.drip = 0.2
    env = {
        "META_PIXEL_ID": PIXEL_ID,
        "META_ACCESS_TOKEN": graph.fake.token,
        "META_API_BASE_URL": graph.base_url,
        "ALLOW_UNAUTHENTICATED": "true",
        "PROFILE_COLLECTION": "",
        "GOOGLE_CLOUD_PROJECT": EMULATOR_PROJECT,
        "FIRESTORE_EMULATOR_HOST": firestore_emulator,
        "THREADS": "4",
        "META_TIMEOUT_SECONDS": "2",
        "META_RETRY_BUDGET_SECONDS": "20",
        "META_MAX_ATTEMPTS": "6",
    }
    answer: dict[str, Any] = {}
    with running_function(env) as (port, proc):
        body = (
            b'{"event_name": "purchase", "event_id": "SIG-1", "page_location": "https://shop.example.com/ok",'
            b' "user_agent": "Mozilla/5.0", "value": 5, "currency": "USD", "user_data": {"em": "a@b.co"}}'
        )

        def call() -> None:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/events", data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=40) as response:
                    answer["status"], answer["body"] = response.status, response.read()
            except urllib.error.HTTPError as exc:
                answer["status"], answer["body"] = exc.code, exc.read()
            except OSError as exc:
                answer["error"] = repr(exc)
            answer["at"] = time.monotonic()

        caller = threading.Thread(target=call)
        caller.start()
        assert graph.fake.received.wait(20), "the request never reached Meta"
        time.sleep(0.5)
        terminated = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # to gunicorn's arbiter, as Cloud Run does to PID 1
        caller.join(timeout=30)
        assert "error" not in answer, answer
        assert answer["status"] == 202, answer
        assert answer["at"] - terminated < CLOUD_RUN_GRACE - 1.5
        assert graph.fake.requests == 1  # no new try after SIGTERM
        stored = [d.to_dict() for d in firestore_db.collection("capi_deadletter").stream()]
        assert [d["event_id"] for d in stored] == ["SIG-1"]
        proc.wait(timeout=15)  # and the server then stops


def test_handler_sets_the_flag_and_chains_to_the_previous_one() -> None:
    from capi import shutdown

    calls: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        shutdown.chain_sigterm()
        shutdown.chain_sigterm()  # a second import of main.py does not chain twice
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        handler(signal.SIGTERM, None)
        assert shutdown.stopping() and calls == [signal.SIGTERM]
    finally:
        shutdown.STOPPING.clear()
        signal.signal(signal.SIGTERM, previous)
