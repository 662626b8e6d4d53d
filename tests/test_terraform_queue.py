"""terraform/queue.tf (delivery = "queue"), parsed with python-hcl2 like the rest of the module:
the topic, the push subscription with OIDC to capi_deliver, the dead-letter topic and its
subscription, the IAM of the Pub/Sub service agent, the retry policy, and its agreement with
the code (entry point, environment, bounds)."""

from __future__ import annotations

import re
from typing import Any

from capi.config import SETTINGS
from capi.delivery.publish import MAX_EVENTS
from tests.test_terraform import TF, environment_names, load, one

QUEUE = load(TF / "queue.tf")
VARIABLES = {k: v for block in load(TF / "variables.tf")["variable"] for k, v in block.items()}


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {name: body for block in QUEUE["resource"] for name, body in block.get(kind, {}).items()}


def test_everything_exists_only_with_delivery_queue() -> None:
    for block in QUEUE["resource"]:
        for kind, named in block.items():
            for name, body in named.items():
                assert body["count"] == "${local.queued ? 1 : 0}", (kind, name)
    assert VARIABLES["delivery"]["default"] == "direct"
    assert 'var.delivery == "queue"' in load(TF / "main.tf")["locals"][0]["queued"]


def test_the_push_subscription_calls_capi_deliver_with_oidc_and_backs_off_then_dead_letters() -> None:
    subscription = resources("google_pubsub_subscription")["deliver"]
    assert subscription["topic"] == "${google_pubsub_topic.events[0].id}"
    push = one(subscription["push_config"])
    token = one(push["oidc_token"])
    assert "google_cloudfunctions2_function.deliver[0]" in push["push_endpoint"] == token["audience"]
    assert token["service_account_email"] == "${google_service_account.pusher[0].email}"
    retry = one(subscription["retry_policy"])
    assert (retry["minimum_backoff"], retry["maximum_backoff"]) == (
        "${var.queue_minimum_backoff}",
        "${var.queue_maximum_backoff}",
    )
    assert VARIABLES["queue_maximum_backoff"]["default"] == "600s"  # Pub/Sub's maximum
    dead = one(subscription["dead_letter_policy"])
    assert dead["dead_letter_topic"] == "${google_pubsub_topic.deadletter[0].id}"
    assert dead["max_delivery_attempts"] == "${var.queue_max_delivery_attempts}"
    assert 5 <= VARIABLES["queue_max_delivery_attempts"]["default"] <= 100
    # Seven days: Meta's own window for an event; a subscription that never expires.
    assert subscription["message_retention_duration"] == "604800s"
    assert one(subscription["expiration_policy"])["ttl"] == ""
    assert subscription["ack_deadline_seconds"] <= 600


def test_the_dead_letter_topic_has_a_subscription_capi_replay_drains() -> None:
    drained = resources("google_pubsub_subscription")["deadletter"]
    assert drained["topic"] == "${google_pubsub_topic.deadletter[0].id}"
    assert "push_config" not in drained  # pulled by capi_replay
    assert drained["message_retention_duration"] == "604800s"
    env = load(TF / "main.tf")["locals"][0]["environment"]
    assert 'PUBSUB_DEADLETTER_SUBSCRIPTION = "projects/${var.project_id}/subscriptions/${var.name}-deadletter"' in env
    assert 'PUBSUB_TOPIC = "projects/${var.project_id}/topics/${var.name}-events"' in env
    assert drained["name"] == "${var.name}-deadletter"
    assert resources("google_pubsub_topic")["events"]["name"] == "${var.name}-events"


def test_iam_least_privilege_on_these_resources_only() -> None:
    agent = "${local.pubsub_agent}"
    assert "gcp-sa-pubsub.iam.gserviceaccount.com" in one(QUEUE["locals"])["pubsub_agent"]
    token = resources("google_service_account_iam_member")["pubsub_agent_token"]
    assert (token["role"], token["member"]) == ("roles/iam.serviceAccountTokenCreator", agent)
    assert token["service_account_id"] == "${google_service_account.pusher[0].name}"
    topics = resources("google_pubsub_topic_iam_member")
    assert (topics["pubsub_agent_deadletter"]["role"], topics["pubsub_agent_deadletter"]["member"]) == (
        "roles/pubsub.publisher",
        agent,
    )
    assert topics["pubsub_agent_deadletter"]["topic"] == "${google_pubsub_topic.deadletter[0].name}"
    assert topics["runtime_publish"]["topic"] == "${google_pubsub_topic.events[0].name}"
    assert topics["runtime_publish"]["role"] == "roles/pubsub.publisher"
    subscriptions = resources("google_pubsub_subscription_iam_member")
    assert subscriptions["pubsub_agent_deliver"]["role"] == "roles/pubsub.subscriber"
    assert subscriptions["pubsub_agent_deliver"]["member"] == agent
    assert subscriptions["runtime_drain"]["subscription"] == "${google_pubsub_subscription.deadletter[0].name}"
    invoker = resources("google_cloud_run_service_iam_member")["deliver_pusher"]
    assert (invoker["role"], invoker["member"]) == (
        "roles/run.invoker",
        "serviceAccount:${google_service_account.pusher[0].email}",
    )
    assert not resources("google_project_iam_member")  # nothing project-wide


def test_capi_deliver_is_sized_for_gathering() -> None:
    deliver = resources("google_cloudfunctions2_function")["deliver"]
    assert one(deliver["build_config"])["entry_point"] == "capi_deliver"
    assert one(deliver["build_config"])["runtime"] == "python312"
    service = one(deliver["service_config"])
    assert service["max_instance_request_concurrency"] == "${var.deliver_request_concurrency}"
    assert service["available_cpu"] == "${var.deliver_available_cpu}"
    assert service["ingress_settings"] == "ALLOW_INTERNAL_ONLY"
    assert "THREADS = tostring(var.deliver_request_concurrency)" in service["environment_variables"]
    assert VARIABLES["deliver_request_concurrency"]["default"] > 1  # gen2's default of 1 would gather nothing
    assert float(VARIABLES["deliver_available_cpu"]["default"]) >= 1  # Cloud Run: concurrency > 1 needs a CPU
    assert service["timeout_seconds"] > resources("google_pubsub_subscription")["deliver"]["ack_deadline_seconds"]


def test_queue_settings_are_set_by_the_module() -> None:
    names = environment_names()
    assert {"DELIVERY", "PUBSUB_TOPIC", "BATCH_WINDOW_MS", "PUBSUB_DEADLETTER_SUBSCRIPTION"} <= names
    window = next(s for s in SETTINGS if s.env == "BATCH_WINDOW_MS")
    assert VARIABLES["batch_window_ms"]["default"] == int(window.default)
    assert MAX_EVENTS == 1000
    monitoring = load(TF / "monitoring.tf")["locals"][0]["capi_logs"]
    assert re.search(r"service_name=\\?\"\$\{var.name\}-deliver", monitoring)  # its lines count in the metrics
    assert "pubsub.googleapis.com" in load(TF / "main.tf")["locals"][0]["apis"]


def test_every_module_variable_is_in_the_docs_variables_table_with_its_default() -> None:
    """docs/terraform.md "Variables" is where a Terraform user looks for `delivery` and the
    queue's knobs: each variable has its row, and the row's default is the module's."""
    page = (TF.parent / "docs" / "terraform.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| ([^|]*) \|", page, re.MULTILINE))
    missing = sorted(set(VARIABLES) - set(rows))
    assert not missing, f"docs/terraform.md has no row for {missing}"
    for name in ("delivery", "batch_window_ms", "queue_max_delivery_attempts", "queue_maximum_backoff"):
        assert rows[name].strip() == f"`{VARIABLES[name]['default']}`", name


def test_delivery_queue_turns_the_idempotency_guard_on_when_none_is_named() -> None:
    """Pub/Sub may push a message to two instances at once: without the guard both would send it.
    make deploy names capi_idempotency for the queue (tests/test_deploy.py); the module does the
    same (NAME_idempotency, capi_idempotency for the default name) for a Terraform user."""
    env = load(TF / "main.tf")["locals"][0]["environment"]
    text = str(env)
    assert 'var.idempotency_collection == "" && local.queued' in text
    assert "${var.name}_idempotency" in text
    assert VARIABLES["name"]["default"] == "capi"
