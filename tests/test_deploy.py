"""`make deploy`, run for real against a recording fake of gcloud and Terraform (tests/fakes/cloud.py).

The fakes are first on PATH and keep state, so the second run finds what the first created.
The tests run the Makefile target itself, as a user does (the options test alone runs the
steps in-process, to wire module variables other features bring); the gcloud commands it ran
are checked against the installed Cloud SDK's command tree (tests/test_readme_commands.py),
its Terraform flags against the installed terraform's help.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deploy.deploy import deploy, option_vars
from deploy.errors import DeployError, diagnose
from deploy.runner import Runner
from deploy.settings import APIS, OPTIONS, Settings
from tests.conftest import ROOT
from tests.fakes.cloud import ACCESS_TOKEN, EVENTS_URL, initial_state
from tests.test_readme_commands import check, cli_tree
from tests.test_terraform import load

PROJECT = "shop-prod-1"
REGION = "europe-west1"
PIXEL = "123456789012345"
META_TOKEN = "EAAGm0PX4ZCpsBAFakeMetaToken1234567890"


class Cloud:
    """The fake project's files, and `make deploy` run against them."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.bin = home / "bin"
        self.tmp = home / "tmp"
        self.bin.mkdir()
        self.tmp.mkdir()
        for tool in ("gcloud", "terraform"):
            wrapper = self.bin / tool
            fake = ROOT / "tests" / "fakes" / "cloud.py"
            wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(fake))} {tool} "$@"\n')
            wrapper.chmod(0o755)
        self.write(initial_state(PROJECT))

    def state(self) -> dict[str, Any]:
        return json.loads((self.home / "state.json").read_text())

    def write(self, state: dict[str, Any]) -> None:
        (self.home / "state.json").write_text(json.dumps(state))

    def secrets(self) -> dict[str, list[str]]:
        path = self.home / "secrets.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def calls(self) -> list[dict[str, Any]]:
        path = self.home / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def deploy(self, stdin: str = "", **variables: str) -> subprocess.CompletedProcess[str]:
        """`make deploy` with the fakes first on PATH; stdin is not a terminal, so it holds the token."""
        self.mark = len(self.calls())
        args = {"PROJECT": PROJECT, "REGION": REGION, "PIXEL_ID": PIXEL, **variables}
        env = {
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "HOME": str(self.home),
            "FAKE_CLOUD": str(self.home),
            "TMPDIR": str(self.tmp),
            "RETRY_WAIT": "0",  # an apply that meets an API not ready yet is retried at once
        }
        return subprocess.run(
            ["make", "--no-print-directory", "deploy", *(f"{k}={v}" for k, v in args.items())],
            cwd=ROOT,
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    def commands(self) -> list[str]:
        """The calls of the last run, each as its command words (no flags, no values)."""
        return [command_name(call["argv"]) for call in self.calls()[self.mark :]]


def command_name(argv: list[str]) -> str:
    """`gcloud storage buckets create gs://b --location=x` -> `gcloud storage buckets create`
    (the SDK's command tree says where the command ends); `terraform -chdir=d apply ...` -> `terraform apply`."""
    words = [w for w in argv if not w.startswith("-")]
    if words[0] == "terraform":
        return " ".join(words[:2])
    node, path = cli_tree(), ["gcloud"]
    for word in words[1:]:
        if word not in node["commands"]:
            break
        node = node["commands"][word]
        path.append(word)
    return " ".join(path)


@pytest.fixture
def cloud(tmp_path: Path) -> Cloud:
    return Cloud(tmp_path)


# Made before make deploy managed them? (release 2's gcloud recipe, the Terraform example)
ADOPTION_CHECKS = [
    "gcloud iam service-accounts describe",
    "gcloud iam service-accounts describe",
    "gcloud secrets describe",
    "gcloud secrets describe",
    "gcloud functions describe",
    "gcloud functions describe",
    "gcloud functions describe",
    "gcloud scheduler jobs describe",
    "gcloud scheduler jobs describe",
]
FIRST_RUN = [
    "gcloud auth list",
    "gcloud projects describe",
    "gcloud services list",
    "gcloud services enable",
    "gcloud firestore databases describe",
    "gcloud firestore databases create",
    "gcloud storage buckets describe",
    "gcloud storage buckets create",
    "gcloud storage buckets update",
    "gcloud secrets versions list",
    "gcloud auth print-access-token",
    "terraform init",
    "terraform state",
    *ADOPTION_CHECKS,
    "terraform apply",
    "terraform output",
    "gcloud secrets versions add",
    "gcloud secrets versions list",
    "gcloud secrets versions add",
]
SECOND_RUN = [
    "gcloud auth list",
    "gcloud projects describe",
    "gcloud services list",
    "gcloud firestore databases describe",
    "gcloud storage buckets describe",
    "gcloud secrets versions list",
    "gcloud auth print-access-token",
    "terraform init",
    "terraform state",
    "terraform apply",
    "terraform output",
    "gcloud secrets versions list",
]


def test_an_empty_project_is_deployed_then_a_second_run_changes_nothing(cloud: Cloud) -> None:
    first = cloud.deploy(stdin=META_TOKEN + "\n", DEFAULT_COUNTRY="de")
    assert first.returncode == 0, first.stdout + first.stderr
    assert cloud.commands() == FIRST_RUN
    state, stored = cloud.state(), cloud.secrets()
    assert set(APIS) <= set(state["enabled"])
    assert state["firestore"] == "eur3"  # the multi-region around europe-west1
    assert state["buckets"] == {f"{PROJECT}-capi-tfstate": {"location": REGION, "versioning": True}}
    assert state["terraform"]["initialized"] == {"bucket": f"{PROJECT}-capi-tfstate", "prefix": "capi"}
    applied = state["terraform"]["applied"]
    assert applied["config"] == "deploy/terraform"
    assert applied["variables"] == {
        "project_id": PROJECT,
        "region": REGION,
        "name": "capi",
        "pixel_id": PIXEL,
        "default_country": "DE",
        "alert_email": "",
    }
    # The token as typed, and a 64-hex-digit ingest key, one version each, on stdin only.
    assert stored["capi-meta-token"] == [META_TOKEN]
    (key,) = stored["capi-ingest-key"]
    assert len(key) == 64 and int(key, 16) >= 0
    adds = [call for call in cloud.calls() if call["argv"][1:4] == ["secrets", "versions", "add"]]
    assert [call["stdin"] for call in adds] == [True, True]
    # The tag's settings end the output; the key is not in it, only where to read it.
    assert f"  url        {EVENTS_URL}" in first.stdout
    assert f"gcloud secrets versions access latest --secret=capi-ingest-key --project={PROJECT}" in first.stdout
    assert key not in first.stdout + first.stderr

    second = cloud.deploy(DEFAULT_COUNTRY="de")  # no token this time: none is asked for
    assert second.returncode == 0, second.stdout + second.stderr
    assert cloud.commands() == SECOND_RUN
    state = cloud.state()
    assert state["terraform"]["applied"] == applied  # the same variables: Terraform plans nothing
    assert state["terraform"]["applies"] == [{"changed": True, "created": 10}, {"changed": False, "created": 0}]
    assert cloud.secrets() == stored
    assert "capi-meta-token has a version" in second.stdout and "capi-ingest-key has a key" in second.stdout


def test_secrets_never_reach_an_argument_a_log_or_tmp(cloud: Cloud) -> None:
    first = cloud.deploy(stdin=META_TOKEN + "\n")
    second = cloud.deploy(NEW_TOKEN="1", stdin="EAAGsecondTokenAbc\n")
    assert first.returncode == second.returncode == 0, second.stderr
    key = cloud.secrets()["capi-ingest-key"][0]
    assert cloud.secrets()["capi-meta-token"] == [META_TOKEN, "EAAGsecondTokenAbc"]
    outputs = first.stdout + first.stderr + second.stdout + second.stderr
    for secret in (META_TOKEN, "EAAGsecondTokenAbc", key, ACCESS_TOKEN):
        assert secret not in outputs
        # Every file the fake keeps but its Secret Manager: the argv of every call, Terraform's state.
        for path in cloud.home.rglob("*"):
            if path.is_file() and path.name != "secrets.json":
                assert secret not in path.read_text(), path
    # Terraform got gcloud's access token in its environment, on every call.
    assert all(call["env_token"] for call in cloud.calls() if call["argv"][0] == "terraform")
    assert list(cloud.tmp.iterdir()) == []  # nothing kept in TMPDIR


def test_show_key_prints_the_ingest_key_when_asked(cloud: Cloud) -> None:
    assert cloud.deploy(stdin=META_TOKEN).returncode == 0
    shown = cloud.deploy(SHOW_KEY="1")
    key = cloud.secrets()["capi-ingest-key"][0]
    assert shown.returncode == 0 and f"the key (SHOW_KEY=1): {key}" in shown.stdout
    assert cloud.commands()[-1] == "gcloud secrets versions access"


def test_every_command_has_the_project_and_real_flags(cloud: Cloud) -> None:
    assert cloud.deploy(stdin=META_TOKEN, SHOW_KEY="1").returncode == 0
    tree = cli_tree()
    gcloud = [call["argv"] for call in cloud.calls() if call["argv"][0] == "gcloud"]
    assert len(gcloud) > 12
    for argv in gcloud:
        assert f"--project={PROJECT}" in argv, argv
        check(tree, shlex.join(argv))


def test_every_terraform_flag_exists(cloud: Cloud) -> None:
    assert cloud.deploy(stdin=META_TOKEN).returncode == 0
    assert terraform_commands_checked(cloud) == {"init", "state list", "apply", "output"}


def terraform_commands_checked(cloud: Cloud) -> set[str]:
    """Each flag of each Terraform command the deploy ran is one `terraform <command> -help` lists."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed")
    env = {**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null"}
    seen = set()
    for call in cloud.calls():
        argv = call["argv"]
        if argv[0] != "terraform":
            continue
        assert argv[1] == "-chdir=deploy/terraform"  # a global option: terraform -help lists it
        command = [w for w in argv[2:] if not w.startswith("-")][: 2 if argv[2] == "state" else 1]
        usage = subprocess.run([terraform, *command, "-help"], capture_output=True, text=True, env=env).stdout
        for flag in (w.split("=")[0] for w in argv[2:] if w.startswith("-")):
            assert re.search(rf"^\s+{re.escape(flag)}\b", usage, re.M), f"terraform {' '.join(command)}: no {flag}"
        seen.add(" ".join(command))
    return seen


def test_dry_run_prints_every_command_and_runs_none(cloud: Cloud) -> None:
    dry = cloud.deploy(DRY_RUN="1")
    assert dry.returncode == 0, dry.stderr
    assert cloud.calls() == []
    printed = [line[2:].split("    # ")[0] for line in dry.stdout.splitlines() if line.startswith("$ ")]
    # A fresh project: every check answers "missing", so every creating command is printed.
    assert [command_name(shlex.split(line)) for line in printed] == FIRST_RUN
    assert "DRY_RUN=1: nothing was run" in dry.stdout


# Each fault, the fix its answer must hold, and how many applies ran: Terraform is never
# reached before billing, the project or the bucket is right; only an API (or account) not
# ready yet is worth trying again (twice, then the fix).
@pytest.mark.parametrize(
    ("fault", "expected", "applies"),
    [
        ("billing", "gcloud billing projects link shop-prod-1 --billing-account=", 0),
        ("org_policy", "gcloud org-policies reset iam.allowedPolicyMemberDomains --project=shop-prod-1", 1),
        ("permission", "roles/owner on shop-prod-1", 0),
        ("api_not_ready", "Wait two minutes and run make deploy again", 3),
        ("no_project", "Check PROJECT (`gcloud projects list` shows yours)", 0),
        ("bucket_taken", "STATE_BUCKET=<globally unique name>", 0),
    ],
)
def test_first_deploy_errors_are_answered_with_their_fix(cloud: Cloud, fault: str, expected: str, applies: int) -> None:
    state = cloud.state()
    if fault == "billing":
        state["billing"] = False
    elif fault == "org_policy":
        # Google's answer to an allUsers binding under iam.allowedPolicyMemberDomains.
        state["faults"]["terraform apply"] = (
            'Error: Error applying IAM policy for cloudrun service "capi-events": googleapi: Error 400: '
            "One or more users named in the policy do not belong to a permitted customer, perhaps due "
            "to an organization policy."
        )
    elif fault == "permission":
        state["faults"]["gcloud storage buckets create"] = (
            "ERROR: (gcloud.storage.buckets.create) HTTPError 403: owner@example.com does not have "
            "storage.buckets.create access to the Google Cloud project. Permission 'storage.buckets.create' denied"
        )
    elif fault == "no_project":
        state["faults"]["gcloud projects describe"] = (
            "ERROR: (gcloud.projects.describe) [owner@example.com] does not have permission to access "
            "projects instance [shop-prod-1] (or it may not exist): The caller does not have permission."
        )
    elif fault == "bucket_taken":
        state["faults"]["gcloud storage buckets describe"] = (
            "ERROR: (gcloud.storage.buckets.describe) HTTPError 403: owner@example.com does not have "
            "storage.buckets.get access to the Google Cloud Storage bucket. Permission 'storage.buckets.get' "
            "denied on resource (or it may not exist)."
        )
    else:
        state["faults"]["terraform apply"] = (
            "Error: Error creating Secret: googleapi: Error 403: Secret Manager API has not been used in project "
            "123456789012 before or it is disabled. reason: SERVICE_DISABLED"
        )
    cloud.write(state)
    failed = cloud.deploy(stdin=META_TOKEN)
    assert failed.returncode != 0
    assert "make deploy stopped" in failed.stderr and expected in failed.stderr, failed.stderr
    assert META_TOKEN not in failed.stdout + failed.stderr
    assert cloud.commands().count("terraform apply") == applies


def test_an_api_not_ready_yet_is_waited_for(cloud: Cloud) -> None:
    state = cloud.state()
    state["faults_once"] = {
        "terraform apply": "Error: Error creating Job: googleapi: Error 403: Cloud Scheduler API has not been used "
        "in project 123456789012 before or it is disabled. reason: SERVICE_DISABLED"
    }
    cloud.write(state)
    done = cloud.deploy(stdin=META_TOKEN)
    assert done.returncode == 0, done.stderr
    assert cloud.commands().count("terraform apply") == 2
    assert "Google has not finished enabling an API or account yet: trying again in 0 s." in done.stdout


def test_a_run_that_stopped_goes_on_where_it_stopped(cloud: Cloud) -> None:
    state = cloud.state()
    state["faults"]["terraform apply"] = "Error: SERVICE_DISABLED"
    cloud.write(state)
    assert cloud.deploy(stdin=META_TOKEN).returncode != 0
    assert cloud.secrets() == {}  # the token waits in memory only; nothing half-written
    state = cloud.state()
    state["faults"] = {}
    cloud.write(state)
    again = cloud.deploy(stdin=META_TOKEN)
    assert again.returncode == 0, again.stderr
    assert "gcloud services enable" not in cloud.commands()
    assert cloud.secrets()["capi-meta-token"] == [META_TOKEN]


def test_no_token_on_stdin_stops_before_terraform(cloud: Cloud) -> None:
    failed = cloud.deploy(stdin="")
    assert failed.returncode != 0 and "No value given for secret capi-meta-token" in failed.stderr
    assert "terraform apply" not in cloud.commands()


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"PROJECT": ""}, "PROJECT"),
        ({"REGION": "europe"}, "REGION"),
        ({"PIXEL_ID": "px-1"}, "PIXEL_ID"),
        ({"DEFAULT_COUNTRY": "Germany"}, "DEFAULT_COUNTRY"),
        ({"ALERT_EMAIL": "ops"}, "ALERT_EMAIL"),
        ({"RETRY_WAIT": "soon"}, "RETRY_WAIT"),
        ({"DELIVERY": "later"}, "DELIVERY='later' is not direct or queue"),
    ],
)
def test_bad_variables_are_named_before_any_command(cloud: Cloud, variables: dict[str, str], named: str) -> None:
    failed = cloud.deploy(**variables)
    assert failed.returncode != 0 and named in failed.stderr
    assert cloud.calls() == []


def test_settings_defaults() -> None:
    settings = Settings.from_env({"PROJECT": "p", "REGION": "us-central1", "PIXEL_ID": "1", "NAME": "shop"})
    assert settings.firestore_location == "nam5"
    assert settings.state_bucket == "p-shop-tfstate"
    assert (settings.token_secret, settings.ingest_secret) == ("shop-meta-token", "shop-ingest-key")
    asia = Settings.from_env({"PROJECT": "p", "REGION": "asia-east1", "PIXEL_ID": "1"})
    assert asia.firestore_location == "asia-east1"
    with pytest.raises(DeployError, match="NAME"):
        Settings.from_env({"PROJECT": "p", "REGION": "us-central1", "PIXEL_ID": "1", "NAME": "Shop"})


@pytest.mark.parametrize(
    ("text", "fix"),
    [
        # The stable parts of Google's own answers, as gcloud and Terraform print them.
        (
            "ERROR: (gcloud.auth.print-access-token) You do not currently have an active account selected.",
            "gcloud auth login",
        ),
        (
            "Error: Error creating Secret: googleapi: Error 409: Secret [capi-meta-token] already exists.",
            "another NAME",
        ),
        (
            "Error 403: This API method requires billing to be enabled. reason: BILLING_DISABLED",
            "billing projects link",
        ),
        ("Error 403: Cloud Run Admin API has not been used in project 1 before or it is disabled.", "Wait two minutes"),
        ("Error 403: Permission 'iam.serviceAccounts.create' denied on resource (or it may not exist).", "roles/owner"),
        (
            "Error 400: One or more users named in the policy do not belong to a permitted customer.",
            "org-policies reset",
        ),
        (
            "Error: locked provider hashicorp/google 5.40.0 does not match configured version constraint",
            "-upgrade",
        ),
        ("Error: Error acquiring the state lock", "force-unlock"),
    ],
)
def test_each_known_error_has_its_fix(text: str, fix: str) -> None:
    assert fix in diagnose(text, "p")


def test_an_unknown_error_points_at_the_output() -> None:
    assert diagnose("Error: something new", "p").startswith("The output above says why")


def test_the_deploy_and_the_module_agree_on_names_and_apis() -> None:
    """The secret names deploy.py checks before Terraform runs are the module's own."""
    main = (ROOT / "terraform" / "main.tf").read_text()
    assert 'meta_token = "${var.name}-meta-token"' in main
    assert 'ingest_key = "${var.name}-ingest-key"' in main
    for api in APIS:
        assert f'"{api}"' in main, api


def test_make_deploy_applies_the_module_for_the_sgtm_path() -> None:
    """deploy/terraform/: the module, public with an ingest key, the database and APIs left to deploy.py."""
    root = ROOT / "deploy" / "terraform"
    module = load(root / "main.tf")["module"][0]["capi"]
    assert module["source"] == "../../terraform"
    assert module["public_access"] is True and module["create_ingest_key"] is True
    # Created by deploy.py when missing: were Terraform to create it on the first run only, the
    # second run (create_firestore_database = false) would plan to destroy it.
    assert module["create_firestore_database"] is False and module["enable_apis"] is False
    backend = load(root / "main.tf")["terraform"][0]["backend"][0]
    assert "gcs" in backend
    declared = {name for block in load(root / "variables.tf")["variable"] for name in block}
    module_variables = {name for block in load(ROOT / "terraform" / "variables.tf")["variable"] for name in block}
    assert set(module) - {"source", "__comments__"} <= module_variables
    # Every -var deploy.py passes is declared (the dry run prints them).
    settings = Settings.from_env({"PROJECT": "p", "REGION": "europe-west1", "PIXEL_ID": "1", "DRY_RUN": "1"})
    passed = set()
    for line in run_dry(settings).splitlines():
        passed |= {word.split("=")[1] for word in line.split() if word.startswith("-var=")}
    # ... and each declared one is passed, but the options' (passed only when set).
    assert passed <= declared and declared - passed <= {option.variable for option in OPTIONS}
    outputs = {name for block in load(root / "outputs.tf")["output"] for name in block}
    assert {"events_url", "meta_token_secret", "ingest_key_secret"} <= outputs


def run_dry(settings: Settings) -> str:
    out = io.StringIO()
    deploy(settings, Runner(settings, out=out))
    return out.getvalue()


def test_the_functions_build_as_their_own_account() -> None:
    """A new project's default build account may lack the roles (or be disabled): the module brings one."""
    main = load(ROOT / "terraform" / "main.tf")
    functions = [
        body
        for block in main["resource"]
        for kind, named in block.items()
        if kind == "google_cloudfunctions2_function"
        for body in named.values()
    ]
    assert len(functions) == 3
    for function in functions:
        assert function["build_config"][0]["service_account"] == "${google_service_account.build.id}"
    roles = next(
        named["build"]
        for block in main["resource"]
        for kind, named in block.items()
        if "build" in named and kind == "google_project_iam_member"
    )
    assert "roles/logging.logWriter" in roles["for_each"] and "roles/artifactregistry.writer" in roles["for_each"]


def test_a_release_2_gcloud_deployment_is_adopted_and_upgraded(cloud: Cloud) -> None:
    """A project deployed with release 2's README recipe: same names, no Terraform state, IAM-only."""
    state = cloud.state()
    where = f"projects/{PROJECT}/locations/{REGION}"
    state["enabled"] += ["cloudfunctions.googleapis.com", "run.googleapis.com", "secretmanager.googleapis.com"]
    state["firestore"] = "eur3"
    state["resources"] = [
        f"projects/{PROJECT}/serviceAccounts/capi-runtime@{PROJECT}.iam.gserviceaccount.com",
        f"projects/{PROJECT}/serviceAccounts/capi-scheduler@{PROJECT}.iam.gserviceaccount.com",
        f"projects/{PROJECT}/secrets/capi-meta-token",
        f"{where}/functions/capi-events",
        f"{where}/functions/capi-replay",
        f"{where}/functions/capi-quality",
        f"{where}/jobs/capi-replay",
        f"{where}/jobs/capi-quality",
    ]
    cloud.write(state)
    (cloud.home / "secrets.json").write_text(json.dumps({"capi-meta-token": ["EAAGreleaseTwoToken"]}))

    upgraded = cloud.deploy()  # the token secret has a version: nothing is asked
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    imports = [call["argv"] for call in cloud.calls() if command_name(call["argv"]) == "terraform import"]
    assert [argv[-1] for argv in imports] == state["resources"]
    assert imports[0][-2] == "module.capi.google_service_account.runtime"
    assert f"-var=project_id={PROJECT}" in imports[0]  # import needs the apply's variables
    terraform = cloud.state()["terraform"]
    assert terraform["applies"] == [{"changed": True, "created": 2}]  # the build account, the ingest-key secret
    assert cloud.secrets()["capi-meta-token"] == ["EAAGreleaseTwoToken"]
    assert len(cloud.secrets()["capi-ingest-key"]) == 1

    assert "import" in terraform_commands_checked(cloud)
    again = cloud.deploy()
    assert again.returncode == 0 and cloud.commands() == SECOND_RUN


def test_options_pass_their_variables_and_ask_for_their_secrets(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """SHOPIFY, WOOCOMMERCE and BROWSER_COLLECTION: deploy/terraform passes the module's variables
    on (create_shopify_signing_key, ...), and the shops' signing keys are read like the token."""
    wired = {"create_shopify_signing_key", "create_woocommerce_signing_key", "browser_collection"}
    wired |= {"idempotency_collection"}
    assert wired <= load_root_variables()
    monkeypatch.setenv("PATH", f"{cloud.bin}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CLOUD", str(cloud.home))
    env = {"PROJECT": PROJECT, "REGION": REGION, "PIXEL_ID": PIXEL, "SHOPIFY": "1", "WOOCOMMERCE": "yes"}
    settings = Settings.from_env({**env, "BROWSER_COLLECTION": "browsers"})
    # Not a terminal: one line per secret, in the order asked (token, Shopify, WooCommerce).
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{META_TOKEN}\nshpss_shopkey123\nwc_secret_456\n"))
    out = io.StringIO()
    deploy(settings, Runner(settings, out=out))
    applied = cloud.state()["terraform"]["applied"]["variables"]
    assert applied["create_shopify_signing_key"] == applied["create_woocommerce_signing_key"] == "true"
    assert applied["browser_collection"] == "browsers"
    # Shops retry their webhooks for hours: a shop webhook turns the order key on.
    assert applied["idempotency_collection"] == "capi_idempotency"
    stored = cloud.secrets()
    assert stored["capi-shopify-signing-key"] == ["shpss_shopkey123"]
    assert stored["capi-woocommerce-signing-key"] == ["wc_secret_456"]
    assert "shpss_shopkey123" not in out.getvalue() and "wc_secret_456" not in out.getvalue()
    for call in cloud.calls():  # on stdin only: never in a command's arguments
        assert "shpss_shopkey123" not in " ".join(call["argv"]) and "wc_secret_456" not in " ".join(call["argv"])
    assert f"Shopify webhook (Event: Order payment, Format: JSON): {EVENTS_URL}/webhooks/shopify " in out.getvalue()
    assert (
        f"WooCommerce webhooks (Topics: Order created, Order updated): {EVENTS_URL}/webhooks/woocommerce "
        in out.getvalue()
    )

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # a second run asks for nothing
    again = io.StringIO()
    deploy(settings, Runner(settings, out=again))
    assert "capi-shopify-signing-key has a version" in again.getvalue()
    assert cloud.secrets() == stored


def test_queued_delivery_is_an_option_with_the_guard_it_needs(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """DELIVERY=queue passes `delivery` to the module (terraform/queue.tf builds the topic, capi_deliver and
    its push subscription) and turns the idempotency guard on: Pub/Sub may redeliver a message to another
    instance, and the guard is what keeps that from reaching Meta twice."""
    assert {"delivery", "idempotency_collection"} <= load_root_variables()
    monkeypatch.setenv("PATH", f"{cloud.bin}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CLOUD", str(cloud.home))
    settings = Settings.from_env({"PROJECT": PROJECT, "REGION": REGION, "PIXEL_ID": PIXEL, "DELIVERY": "queue"})
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{META_TOKEN}\n"))
    out = io.StringIO()
    deploy(settings, Runner(settings, out=out))
    applied = cloud.state()["terraform"]["applied"]["variables"]
    assert (applied["delivery"], applied["idempotency_collection"]) == ("queue", "capi_idempotency")
    assert "Delivery: queued on Pub/Sub" in out.getvalue()
    direct = Settings.from_env({"PROJECT": PROJECT, "REGION": REGION, "PIXEL_ID": PIXEL})
    assert "DELIVERY" not in direct.options and "IDEMPOTENCY_COLLECTION" not in direct.options
    # An upgrade that forgets DELIVERY=queue stops before the apply: it would delete the queue and
    # the events it holds. DELIVERY=direct, said on purpose, goes back.
    applies = len(cloud.state()["terraform"]["applies"])
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(DeployError) as info:
        deploy(direct, Runner(direct, out=io.StringIO()))
    assert "DELIVERY=queue" in info.value.what and "DELIVERY=direct" in info.value.fix
    assert len(cloud.state()["terraform"]["applies"]) == applies
    back = Settings.from_env({"PROJECT": PROJECT, "REGION": REGION, "PIXEL_ID": PIXEL, "DELIVERY": "direct"})
    deploy(back, Runner(back, out=io.StringIO()))
    assert cloud.state()["terraform"]["applied"]["variables"]["delivery"] == "direct"


def load_root_variables() -> set[str]:
    return {name for block in load(ROOT / "deploy" / "terraform" / "variables.tf")["variable"] for name in block}


def test_a_shop_webhook_turns_on_the_order_key_unless_a_collection_is_given() -> None:
    base = {"PROJECT": "p", "REGION": "europe-west1", "PIXEL_ID": "1"}
    assert "IDEMPOTENCY_COLLECTION" not in Settings.from_env(base).options
    assert Settings.from_env({**base, "WOOCOMMERCE": "1"}).options["IDEMPOTENCY_COLLECTION"] == "capi_idempotency"
    given = Settings.from_env({**base, "SHOPIFY": "1", "IDEMPOTENCY_COLLECTION": "sent"})
    assert given.options["IDEMPOTENCY_COLLECTION"] == "sent"
    assert "-var=idempotency_collection=sent" in option_vars(given)
