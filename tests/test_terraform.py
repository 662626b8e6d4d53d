"""The Terraform module, parsed with python-hcl2: its shape, and its agreement with the code.

`terraform validate` needs the Google provider, which cannot be downloaded here; these tests
and `make tf-check` (terraform fmt, checkov) check what can be checked offline.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from capi.config import ENV_VARS
from tests.conftest import ROOT

TF = ROOT / "terraform"

# Configuration variables the module leaves to capi's default on purpose, and why.
DELIBERATE_DEFAULTS = {
    "META_ACCESS_TOKEN": "a literal token is for local runs; the module uses META_ACCESS_TOKEN_SECRET",
    "META_APP_SECRET": "literal, local runs only; the module sets META_APP_SECRET_SECRET when asked",
    "INGEST_API_KEY": "literal, local runs only; the module sets INGEST_API_KEY_SECRET when asked",
    "INGEST_KEYS": "keys bound to destinations are opt-in, named by the deployer (docs: several pixels)",
    "SHOPIFY_SIGNING_KEY": "literal, local runs only; the module sets SHOPIFY_SIGNING_KEY_SECRET when asked",
    "WOOCOMMERCE_SIGNING_KEY": "literal, local runs only; the module sets WOOCOMMERCE_SIGNING_KEY_SECRET when asked",
    "META_API_BASE_URL": "Meta's own Graph API host",
    "META_TIMEOUT_SECONDS": "5 s per call fits the default 60 s function timeout",
    "META_RETRY_BUDGET_SECONDS": "10 s of retries fits the default 60 s function timeout",
    "META_MAX_ATTEMPTS": "one try and three retries (docs/configuration.md)",
    "FIRESTORE_TIMEOUT_SECONDS": "2 s: enrichment must never hold events back",
    "REPLAY_MAX_ATTEMPTS": "20 replays (5 h at the default schedule) before giving up",
    "SECRET_CACHE_SECONDS": "5 minutes (docs/configuration.md)",
    "DRY_RUN": "a deployed function sends",
    "CONSENT_REQUIRED": "off: events without any consent signal are forwarded, as before",
}
# Set by the module but read by functions-framework, not by capi's configuration.
FRAMEWORK_VARS = {"THREADS"}


def _unquote(value: Any) -> Any:
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return _unquote(hcl2.load(handle))


def resources(kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for block in load(TF / "main.tf")["resource"]:
        for name, body in block.get(kind, {}).items():
            found[name] = body
    return found


def one(block: Any) -> dict[str, Any]:
    return block[0] if isinstance(block, list) else block


@pytest.fixture(scope="module")
def functions() -> dict[str, dict[str, Any]]:
    return resources("google_cloudfunctions2_function")


def environment_names() -> set[str]:
    """Every variable name the module puts in the functions' environment."""
    local = load(TF / "main.tf")["locals"][0]
    names = set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", local["environment"]))
    assert "local.secret_env" in local["environment"]
    return names | set(local["secret_env_names"].values())


def test_module_files() -> None:
    for name in (
        "versions.tf",
        "variables.tf",
        "main.tf",
        "outputs.tf",
        "examples/basic/main.tf",
        "examples/basic/terraform.tfvars.example",
    ):
        assert (TF / name).is_file(), name


def test_versions_are_bounded() -> None:
    terraform = one(load(TF / "versions.tf")["terraform"])
    assert re.fullmatch(r">= ?[\d.]+, ?< ?[\d.]+", terraform["required_version"])
    providers = one(terraform["required_providers"])
    assert providers["google"]["source"] == "hashicorp/google"
    for provider in providers.values():
        assert re.fullmatch(r">= ?[\d.]+, ?< ?[\d.]+", provider["version"]), provider


def test_variables_are_typed_and_described() -> None:
    variables = {k: v for block in load(TF / "variables.tf")["variable"] for k, v in block.items()}
    for expected in (
        "project_id",
        "region",
        "pixel_id",
        "meta_token_secret_version",
        "forward_events",
        "profile_collection",
        "max_instance_request_concurrency",
        "max_instance_count",
        "public_access",
        "callers_inside_google_cloud",
        "create_ingest_key",
        "create_app_secret",
    ):
        assert expected in variables, expected
    for name, body in variables.items():
        assert body.get("description"), name
        assert body.get("type"), name
    assert "validation" in variables["pixel_id"]
    outputs = {k: v for block in load(TF / "outputs.tf")["output"] for k, v in block.items()}
    assert {"events_url", "replay_url", "runtime_service_account"} <= set(outputs)
    assert all(body.get("description") for body in outputs.values())


def test_both_functions_match_main_py_entry_points(functions: dict[str, dict[str, Any]]) -> None:
    tree = ast.parse((ROOT / "main.py").read_text())
    defined = {  # the functions-framework entry points: functions decorated with @functions_framework.http
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any(ast.unparse(d) == "functions_framework.http" for d in node.decorator_list)
    }
    # capi_deliver is in queue.tf (delivery = "queue"; tests/test_terraform_queue.py).
    queued = {
        name: body
        for block in load(TF / "queue.tf")["resource"]
        for name, body in block.get("google_cloudfunctions2_function", {}).items()
    }
    functions = {**functions, **queued}
    entry_points = {one(f["build_config"])["entry_point"] for f in functions.values()}
    assert entry_points == {"capi_events", "capi_replay", "capi_quality", "capi_deliver"} == defined
    for function in functions.values():
        assert one(function["build_config"])["runtime"] == "python312"
        service = one(function["service_config"])
        for setting in (
            "max_instance_request_concurrency",
            "max_instance_count",
            "timeout_seconds",
            "available_memory",
            "ingress_settings",
            "service_account_email",
            "environment_variables",
        ):
            assert setting in service, setting
        assert "google_service_account.runtime.email" in service["service_account_email"]


def test_ingress(functions: dict[str, dict[str, Any]]) -> None:
    events = one(functions["events"]["service_config"])["ingress_settings"]
    assert "ALLOW_ALL" in events and "ALLOW_INTERNAL_AND_GCLB" in events and "callers_inside_google_cloud" in events
    assert one(functions["replay"]["service_config"])["ingress_settings"] == "ALLOW_INTERNAL_ONLY"
    assert one(functions["quality"]["service_config"])["ingress_settings"] == "ALLOW_INTERNAL_ONLY"


def test_every_config_variable_is_set_or_deliberately_defaulted() -> None:
    set_by_module = environment_names()
    missing = set(ENV_VARS) - set_by_module - set(DELIBERATE_DEFAULTS)
    assert not missing, f"config variables neither set in terraform/main.tf nor listed as deliberate: {missing}"
    unknown = set_by_module - set(ENV_VARS) - FRAMEWORK_VARS
    assert not unknown, f"terraform sets variables capi does not read: {unknown}"
    assert not set(DELIBERATE_DEFAULTS) & set_by_module
    assert set(DELIBERATE_DEFAULTS) <= set(ENV_VARS)


def test_secrets_least_privilege() -> None:
    secrets = resources("google_secret_manager_secret")
    assert secrets["capi"]["for_each"] == "${local.secrets}"
    local = load(TF / "main.tf")["locals"][0]
    assert set(local["secret_env_names"]) == {
        "meta_token",
        "app_secret",
        "ingest_key",
        "shopify_signing_key",
        "woocommerce_signing_key",
    }
    assert all("secret_data" not in body for body in secrets.values())  # values never in Terraform state
    assert not resources("google_secret_manager_secret_version")
    accessors = resources("google_secret_manager_secret_iam_member")
    assert [a["role"] for a in accessors.values()] == ["roles/secretmanager.secretAccessor"]
    project_roles = [m["role"] for m in resources("google_project_iam_member").values()]
    assert "roles/secretmanager.secretAccessor" not in project_roles
    assert "roles/datastore.user" in project_roles
    assert not any(re.search(r"owner|editor|admin", role, re.I) for role in project_roles)


def test_public_access_is_opt_in_and_needs_an_ingest_key(functions: dict[str, dict[str, Any]]) -> None:
    invokers = resources("google_cloud_run_service_iam_member")
    public = [body for body in invokers.values() if body["member"] == "allUsers"]
    assert len(public) == 1 and public[0]["count"] == "${var.public_access ? 1 : 0}"
    condition = one(one(functions["events"]["lifecycle"])["precondition"])["condition"]
    assert "public_access" in condition and "create_ingest_key" in condition


def test_source_bucket_hardened() -> None:
    buckets = resources("google_storage_bucket")
    for name, bucket in buckets.items():
        assert bucket["uniform_bucket_level_access"] is True, name
        assert bucket["public_access_prevention"] == "enforced", name
        assert one(bucket["versioning"])["enabled"] is True, name
    assert "google_storage_bucket.logs.name" in one(buckets["source"]["logging"])["log_bucket"]


def test_archive_holds_function_files_only() -> None:
    local = load(TF / "main.tf")["locals"][0]["function_files"]
    assert "main.py" in local and "requirements.txt" in local and "capi/**/*.py" in local
    assert "tests" not in local and "terraform" not in local


@pytest.mark.parametrize("job", ["replay", "quality"])
def test_scheduler_calls_replay_and_quality_with_oidc(job: str) -> None:
    scheduled = resources("google_cloud_scheduler_job")[job]
    target = one(scheduled["http_target"])
    token = one(target["oidc_token"])
    assert target["http_method"] == "POST"
    assert f"google_cloudfunctions2_function.{job}" in target["uri"] == token["audience"]
    assert "google_service_account.scheduler.email" in token["service_account_email"]
    invoker = resources("google_cloud_run_service_iam_member")[f"{job}_scheduler"]
    assert "google_service_account.scheduler.email" in invoker["member"]
    # capi_quality's values are multi-day aggregates: once a day.
    variables = {k: v for block in load(TF / "variables.tf")["variable"] for k, v in block.items()}
    assert re.fullmatch(r"\d+ \d+ \* \* \*", variables["quality_schedule"]["default"])


def test_monitoring_is_in_the_module() -> None:
    monitoring = load(TF / "monitoring.tf")
    kinds = {kind for block in monitoring["resource"] for kind in block}
    assert {
        "google_logging_metric",
        "google_monitoring_alert_policy",
        "google_monitoring_notification_channel",
        "google_monitoring_dashboard",
    } <= kinds
    channel = next(
        b["google_monitoring_notification_channel"]["email"]
        for b in monitoring["resource"]
        if "google_monitoring_notification_channel" in b
    )
    assert channel["type"] == "email" and "var.alert_email" in channel["labels"]["email_address"]
    variables = {k: v for block in load(TF / "variables.tf")["variable"] for k, v in block.items()}
    assert variables["emq_alert_below"]["default"] == 6.0 and variables["alert_email"]["default"] == ""
    assert "monitoring.googleapis.com" in load(TF / "main.tf")["locals"][0]["apis"]


def test_example_creates_firestore_and_reads_the_ingest_key() -> None:
    example = load(TF / "examples/basic/main.tf")["module"][0]["capi"]
    assert example["create_firestore_database"] == "${var.create_firestore_database}"
    assert example["create_ingest_key"] == "${var.public_access}" and example["alert_email"] == "${var.alert_email}"
    outputs = {k: v for block in load(TF / "examples/basic/outputs.tf")["output"] for k, v in block.items()}
    assert "gcloud secrets versions access latest --secret=" in outputs["read_ingest_key_command"]["value"]
    assert "gcloud secrets versions add" in outputs["add_ingest_key_command"]["value"]
    assert "gcloud scheduler jobs run" in outputs["replay_now_command"]["value"]


def test_gcloudignore_keeps_only_the_function() -> None:
    """What `gcloud functions deploy --source=.` would upload, as the installed gcloud computes it."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.skip("the gcloud CLI is not installed")
    listed = subprocess.run(
        [gcloud, "meta", "list-files-for-upload", str(ROOT)], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    expected = {"main.py", "requirements.txt"} | {
        str(path.relative_to(ROOT)) for path in (ROOT / "capi").rglob("*.py") if "__pycache__" not in path.parts
    }
    assert set(listed) == expected
    # The trial found these shipped: a new top-level file or folder never is.
    for name in ("CHANGELOG.md", "LICENSE", "README.md", "docs/meta-capi.md", "deploy/deploy.py", ".git"):
        assert name not in listed


def test_every_output_the_docs_read_from_the_example_exists() -> None:
    """docs/terraform.md and docs/orders.md run `terraform output ... NAME` in
    terraform/examples/basic: each NAME is an output there, and each example output reads a
    module output that exists."""
    example = ROOT / "terraform" / "examples" / "basic"
    outputs = {k: v for block in load(example / "outputs.tf")["output"] for k, v in block.items()}
    cited = set()
    for page in ("terraform.md", "orders.md", "deploy.md", "sgtm.md"):
        cited |= set(re.findall(r"terraform output (?:-raw |-json )?([a-z_]+)", (ROOT / "docs" / page).read_text()))
    assert {"meta_token_secret", "shopify_signing_key_secret"} <= cited
    assert cited - set(outputs) == set()
    module_outputs = {k for block in load(TF / "outputs.tf")["output"] for k in block}
    read = set(re.findall(r"module\.capi\.(\w+)", (example / "outputs.tf").read_text()))
    assert read - module_outputs == set()


def test_browser_collection_gets_a_ttl_policy_on_the_field_capi_writes() -> None:
    """Issue 22: BROWSER_COLLECTION's documents are deleted by a Firestore TTL policy on the field
    capi.browsers writes, created with the collection (make deploy passes browser_collection to
    this module: tests/test_deploy.py) and only when the feature is on."""
    from capi.browsers import TTL_FIELD

    [ttl] = resources("google_firestore_field").values()
    assert ttl["count"] == '${var.browser_collection != "" ? 1 : 0}'
    assert ttl["collection"] == "${var.browser_collection}" and ttl["database"] == "${var.firestore_database}"
    assert ttl["field"] == TTL_FIELD and ttl["ttl_config"] == [{}]
    deploy = load(ROOT / "deploy/terraform/main.tf")["module"][0]["capi"]
    assert deploy["browser_collection"] == "${var.browser_collection}"
    assert deploy["browser_ttl_days"] == "${var.browser_ttl_days}"
