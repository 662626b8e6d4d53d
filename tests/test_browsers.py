"""Enhanced event coverage (`BROWSER_COLLECTION`, capi/browsers.py) against the Firestore emulator.

One browser's funnel, one request per event as the sGTM tag sends them: PageView, ViewContent,
a sign-up carrying email and phone, AddToCart, Purchase. Only the sign-up carries customer
information; what Meta receives is read at the fake Graph API.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from capi.browsers import (
    MAX_DIGESTS_PER_KEY,
    TTL_FIELD,
    document_id,
    learned,
    merged,
)
from capi.consent import ad_user_data_granted
from tests.conftest import CountingFirestore, make_app, serve
from tests.fakes.emulator import emulator_process, firestore_client_at

FBP = "fb.1.1700000000000.1234567890"
EMAIL = "Jane.Doe@Example.com"
PHONE = "+1 (650) 555-1212"
EM = hashlib.sha256(b"jane.doe@example.com").hexdigest()
PH = hashlib.sha256(b"16505551212").hexdigest()
# x-ga-gcd as the GA4 client writes it: ad_storage, analytics_storage, ad_user_data and
# ad_personalization each denied by default, updated to granted (clients.md §2).
GRANTED = "13r3r3r3r5l1"
# ad_user_data (third pair) denied, the rest granted: capi skips such events altogether.
USER_DATA_DENIED = "13r3r3q3r5l1"
FUNNEL = ("page_view", "view_item", "sign_up", "add_to_cart", "purchase")
ENV = {"BROWSER_COLLECTION": "capi_browsers", "FORWARD_EVENTS": "*"}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def funnel_event(name: str, n: int, *, fbp: str = FBP, **extra: Any) -> dict[str, Any]:
    """A GA4 event of the browser; only the sign-up carries email and phone."""
    event: dict[str, Any] = {
        "event_name": name,
        "event_id": f"{name}-{n}",
        "page_location": "https://shop.example.com/p",
        "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5)",
        "ip_override": "198.51.100.23",
        "x-fb-ck-fbp": fbp,
        "x-ga-gcd": GRANTED,
    }
    if name == "sign_up":
        event["user_data"] = {"email_address": EMAIL, "phone_number": PHONE}
    if name in ("add_to_cart", "purchase"):
        event.update(value=10, currency="EUR", transaction_id=f"T-{n}")
    event.update(extra)
    return event


def sent_user_data(graph: Any) -> dict[str, dict[str, Any]]:
    """user_data of each event Meta received, by event_id."""
    return {e["event_id"]: e["user_data"] for body in graph.fake.bodies for e in body["data"]}


def replay(client: Any, run: int = 0, **extra: Any) -> None:
    for n, name in enumerate(FUNNEL):
        response = client.post("/events", json=funnel_event(name, n + 10 * run, **extra))
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["forwarded"] == 1, response.get_json()


def em_share(graph: Any) -> float:
    sent = sent_user_data(graph)
    return sum(1 for user_data in sent.values() if "em" in user_data) / len(sent)


@pytest.mark.emulator
def test_funnel_after_sign_up_every_event_carries_em_and_ph(firestore_db: Any, graph: Any) -> None:
    client = serve(make_app(graph, firestore=firestore_db, **ENV))
    replay(client)
    sent = sent_user_data(graph)
    # Before the sign-up capi knows nothing of the browser; from it on, every event has both.
    for event_id in ("page_view-0", "view_item-1"):
        assert "em" not in sent[event_id] and "ph" not in sent[event_id]
    for event_id in ("sign_up-2", "add_to_cart-3", "purchase-4"):
        assert sent[event_id]["em"] == [EM] and sent[event_id]["ph"] == [PH], event_id
        assert sent[event_id]["fbp"] == FBP
    # One document, named by the digest of the browser id, holding digests only.
    [doc] = list(firestore_db.collection("capi_browsers").stream())
    assert doc.id == document_id(FBP) == sha256(FBP)
    record = doc.to_dict()
    assert record["keys"] == {"em": [EM], "ph": [PH]}
    expires = record[TTL_FIELD]
    assert abs(expires - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
    assert FBP not in str(record) and "jane" not in str(record).lower()


@pytest.mark.emulator
def test_a_known_browser_costs_no_write(firestore_db: Any, graph: Any) -> None:
    client = serve(make_app(graph, firestore=firestore_db, **ENV))
    client.post("/events", json=funnel_event("sign_up", 1))
    ref = firestore_db.collection("capi_browsers").document(document_id(FBP))
    written = ref.get().update_time
    for n, name in enumerate(("add_to_cart", "purchase", "sign_up"), start=2):  # the same email again, too
        assert client.post("/events", json=funnel_event(name, n)).get_json()["forwarded"] == 1
    assert ref.get().update_time == written
    # Something new (a first name) is written, merged with what was known.
    client.post("/events", json=funnel_event("view_item", 9, user_data={"first_name": "Jane"}))
    assert ref.get().update_time > written
    assert ref.get().to_dict()["keys"] == {"em": [EM], "ph": [PH], "fn": [sha256("jane")]}


@pytest.mark.emulator
def test_share_of_events_with_em_on_a_replayed_funnel(firestore_db: Any, graph: Any) -> None:
    """The figure of docs/matching.md: the same funnel replayed without and with BROWSER_COLLECTION."""
    client = serve(make_app(graph, firestore=firestore_db, FORWARD_EVENTS="*"))
    replay(client)
    without = em_share(graph)
    graph.fake.bodies.clear()
    client = serve(make_app(graph, firestore=firestore_db, **ENV))
    replay(client, run=1)
    with_coverage = em_share(graph)
    assert (without, with_coverage) == (1 / 5, 3 / 5)  # 20 % -> 60 % of the funnel's events


@pytest.mark.emulator
@pytest.mark.parametrize(
    "signals",
    [
        {"x-ga-gcd": USER_DATA_DENIED},  # denied: capi skips the events themselves
        {"x-ga-gcd": None, "x-ga-gcs": "G111"},  # ad_storage granted, ad_user_data never stated
        {"x-ga-gcd": None, "consent": {"ad_storage": "granted", "ad_user_data": "denied"}},
    ],
)
def test_without_ad_user_data_consent_nothing_is_stored_or_added(
    firestore_db: Any, graph: Any, signals: dict[str, Any]
) -> None:
    client = serve(make_app(graph, firestore=firestore_db, **ENV))
    extra = {k: v for k, v in signals.items() if v is not None}
    drop = [k for k, v in signals.items() if v is None]

    def event(name: str, n: int) -> dict[str, Any]:
        e = funnel_event(name, n, **extra)
        for key in drop:
            e.pop(key)
        return e

    for n, name in enumerate(FUNNEL):
        client.post("/events", json=event(name, n))
    assert list(firestore_db.collection("capi_browsers").stream()) == []
    for event_id, user_data in sent_user_data(graph).items():
        assert ("em" in user_data) == event_id.startswith("sign_up"), event_id
    # A browser remembered under consent gets nothing added to an event without it.
    client.post("/events", json=funnel_event("sign_up", 20))
    assert len(list(firestore_db.collection("capi_browsers").stream())) == 1
    graph.fake.bodies.clear()
    client.post("/events", json=event("add_to_cart", 21))
    assert all("em" not in user_data for user_data in sent_user_data(graph).values())


@pytest.mark.emulator
def test_validate_names_from_browser_never_the_values(firestore_db: Any, graph: Any) -> None:
    client = serve(make_app(graph, firestore=firestore_db, **ENV))
    client.post("/events", json=funnel_event("sign_up", 1))
    body = client.post("/validate", json=funnel_event("purchase", 2)).get_json()
    [match] = body["match_keys"]
    assert match["from_browser"] == ["em", "ph"]
    user_data = body["payload"]["data"][0]["user_data"]
    assert user_data["em"] == user_data["ph"] == ["(remembered for this browser: not shown)"]
    assert EM not in str(body) and PH not in str(body)
    assert {
        "message": "values remembered for the browser are not shown (placeholder instead);"
        " match_keys.from_browser names their keys"
    } in body["messages"]
    # /validate reads but never writes; nor does a dry run.
    other = "fb.1.1700000000001.999"
    client.post("/validate", json=funnel_event("sign_up", 3, fbp=other))
    dry = serve(make_app(None, firestore=firestore_db, **ENV))
    assert dry.post("/events", json=funnel_event("sign_up", 4, fbp=other)).get_json()["dry_run"] is True
    assert firestore_db.collection("capi_browsers").document(document_id(other)).get().exists is False


@pytest.mark.emulator
def test_stored_keys_are_only_what_capi_writes(firestore_db: Any, graph: Any) -> None:
    """A hand-edited or foreign document: only 64-hex digests under Meta's hashed keys are used;
    an expired one (past expire_at, not yet deleted by the TTL policy) is ignored."""
    client = serve(make_app(graph, firestore=firestore_db, **ENV))
    docs = firestore_db.collection("capi_browsers")
    future = datetime.now(UTC) + timedelta(days=1)
    docs.document(document_id(FBP)).set(
        {"keys": {"em": [EM, "not-a-digest"], "client_ip_address": ["1.2.3.4"], "ph": "x"}, TTL_FIELD: future}
    )
    other = "fb.1.1700000000002.42"
    docs.document(document_id(other)).set({"keys": {"em": [EM]}, TTL_FIELD: datetime.now(UTC) - timedelta(hours=1)})
    client.post("/events", json=funnel_event("add_to_cart", 1))
    client.post("/events", json=funnel_event("add_to_cart", 2, fbp=other))
    sent = sent_user_data(graph)
    assert sent["add_to_cart-1"]["em"] == [EM] and "ph" not in sent["add_to_cart-1"]
    assert sent["add_to_cart-1"]["client_ip_address"] == "198.51.100.23"
    assert "em" not in sent["add_to_cart-2"]


@pytest.mark.emulator
def test_profiles_and_browsers_are_read_in_one_firestore_call(firestore_db: Any, graph: Any) -> None:
    """The issue: browser keys are read in the same batched lookup and deadline as the profiles.
    A request whose events name a user and a known browser costs one get_all, holding both
    kinds of documents, and each kind fills its events."""
    client = serve(make_app(graph, firestore=firestore_db, PROFILE_COLLECTION="users", **ENV))
    client.post("/events", json=funnel_event("sign_up", 1))  # the browser is known from now on
    firestore_db.collection("users").document("u1").set({"first_name": "Jane", "city": "London"})
    counting = CountingFirestore(firestore_db)
    client = serve(make_app(graph, firestore=counting, PROFILE_COLLECTION="users", **ENV))
    graph.fake.bodies.clear()
    other = "fb.1.1700000000005.9"
    events = [
        funnel_event("add_to_cart", 2, user_id="u1"),
        funnel_event("purchase", 3),
        funnel_event("page_view", 4, fbp=other, user_id="u2"),  # neither is known: read, not found
    ]
    assert client.post("/events", json={"events": events}).get_json()["forwarded"] == 3
    assert (counting.get_all_calls, counting.documents_read) == (1, 4)  # u1, u2 and the two browsers
    sent = sent_user_data(graph)
    assert sent["add_to_cart-2"]["fn"] == [sha256("jane")] and sent["add_to_cart-2"]["em"] == [EM]
    assert sent["purchase-3"]["em"] == [EM] and "fn" not in sent["purchase-3"]
    assert "em" not in sent["page_view-4"] and "fn" not in sent["page_view-4"]


def test_consent_reading() -> None:
    assert ad_user_data_granted({"x-ga-gcd": GRANTED}, True)
    assert not ad_user_data_granted({"x-ga-gcs": "G111"}, False)
    assert ad_user_data_granted({"consent": {"ad_user_data": "GRANTED"}}, True)
    assert ad_user_data_granted({"consent_state": {"ad_user_data": True}}, True)
    assert not ad_user_data_granted({"consent_state": {"ad_user_data": "true"}}, False)
    # No signal at all: as the event itself, allowed unless CONSENT_REQUIRED.
    assert ad_user_data_granted({}, False)
    assert not ad_user_data_granted({}, True)
    # The request's signals count as the event's (the Measurement Protocol's request-level consent).
    assert ad_user_data_granted({}, True, {"consent": {"ad_user_data": "GRANTED"}})
    assert not ad_user_data_granted({"x-ga-gcs": "G111"}, False, {"consent": {"ad_storage": "GRANTED"}})


def test_merge_keeps_the_newest_few_and_reports_nothing_new() -> None:
    known = {"em": [sha256(f"{n}@x.com") for n in range(MAX_DIGESTS_PER_KEY)]}
    assert merged(known, {"em": [known["em"][2]]}) is None
    fresh = sha256("new@x.com")
    update = merged(known, {"em": [fresh], "ph": [PH]})
    assert update == {"em": [fresh, *known["em"][:-1]], "ph": [PH]}
    assert learned({"em": [EM], "fbp": FBP, "ph": []}, ["em", "ph", "fbp"]) == {"em": [EM]}


# -- a stalled Firestore -------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_emulator() -> Iterator[tuple[str, subprocess.Popen]]:
    """An emulator for this module only: it gets paused."""
    with emulator_process() as started:
        yield started


@pytest.mark.emulator
def test_stalled_firestore_still_answers_within_the_bound(own_emulator: Any, graph: Any) -> None:
    """SIGSTOP on the emulator (as tests/test_firestore_faults.py): the one read of profiles and
    browsers gives up at FIRESTORE_TIMEOUT_SECONDS, and no write follows; the event goes out
    unenriched."""
    host, proc = own_emulator
    db = firestore_client_at(host)
    db.collection("capi_browsers").document("warm").set({"x": 1})  # the connection is up
    client = serve(make_app(graph, firestore=db, FIRESTORE_TIMEOUT_SECONDS="1", PROFILE_COLLECTION="users", **ENV))
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = client.post("/events", json=funnel_event("sign_up", 1, user_id="u1"))
        elapsed = time.monotonic() - started
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    # The read's deadline (one second) and the delivery on loopback (1.0 s measured); no write
    # is attempted after a failed read (it would replace what is remembered, and Firestore is
    # not answering): a write would spend its own second (2.0 s measured before that rule).
    assert elapsed < 1.8, elapsed
    body = response.get_json()
    assert response.status_code == 200 and body["forwarded"] == 1
    # The profiles and the browsers share the one read that failed: both say so.
    assert {"message": "browser lookup failed; events sent without remembered keys"} in body["messages"]
    assert {"message": "profile lookup failed; events sent without enrichment"} in body["messages"]
    assert sent_user_data(graph)["sign_up-1"]["em"] == [EM]


@pytest.mark.emulator
def test_forget_a_user_or_a_browser(firestore_db: Any, graph: Any, capsys: Any) -> None:
    """docs/matching.md: `python -m capi.browsers` deletes a user's browsers (found by the digest
    of their email or phone) or one browser's document."""
    from capi.browsers import main

    client = serve(make_app(graph, firestore=firestore_db, **ENV))
    laptop, phone, other = FBP, "fb.1.1700000000003.7", "fb.1.1700000000004.8"
    client.post("/events", json=funnel_event("sign_up", 1, fbp=laptop))
    client.post("/events", json=funnel_event("sign_up", 2, fbp=phone, user_data={"email_address": EMAIL}))
    client.post("/events", json=funnel_event("sign_up", 3, fbp=other, user_data={"email_address": "x@example.com"}))
    docs = firestore_db.collection("capi_browsers")
    assert len(list(docs.stream())) == 3
    args = ["--collection", "capi_browsers"]
    capsys.readouterr()
    # By the phone's digest: only the laptop remembered the phone.
    assert main([*args, "--phone", PH], client=lambda: firestore_db) == 0
    assert capsys.readouterr().out.strip() == "forgot 1 browser(s)"
    assert sorted(d.id for d in docs.stream()) == sorted(map(document_id, (phone, other)))
    # By the email as typed (normalized and hashed as capi does): the user's other browser.
    client.post("/events", json=funnel_event("sign_up", 4, fbp=laptop, user_data={"email_address": EMAIL}))
    capsys.readouterr()  # the request's log lines
    assert main([*args, "--email", " JANE.DOE@example.com "], client=lambda: firestore_db) == 0
    assert capsys.readouterr().out.strip() == "forgot 2 browser(s)"
    assert [d.id for d in docs.stream()] == [document_id(other)]
    with pytest.raises(SystemExit):  # not an email: a usage error, nothing deleted
        main([*args, "--email", "not an email"], client=lambda: firestore_db)
    assert "--email" in capsys.readouterr().err
    main([*args, "--fbp", other], client=lambda: firestore_db)
    assert capsys.readouterr().out.strip() == "forgot 1 browser(s)"
    assert list(docs.stream()) == []
