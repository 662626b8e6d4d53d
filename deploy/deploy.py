"""`make deploy PROJECT=... REGION=... PIXEL_ID=...`: capi on Google Cloud in one command.

What it does, in order (docs/deploy.md says why each step is here and not elsewhere):

1. checks who deploys and that the project exists;
2. enables the APIs the project lacks (billing off is caught here);
3. creates the Firestore database when the project has none;
4. creates the bucket that keeps Terraform's state (versioned, never public);
5. asks for the Meta token (and a shop's signing key, with SHOPIFY=1 / WOOCOMMERCE=1) while its
   secret has no version, at a hidden prompt (or from stdin when stdin is not a terminal),
   before the long part, and keeps it in memory only;
6. applies deploy/terraform/ (the capi module: accounts, roles, secrets, functions, Scheduler jobs,
   metrics, alerts, dashboard), with gcloud's own access token in Terraform's environment, after
   importing what an earlier deployment (release 2's gcloud recipe) made under the same names;
7. adds what it asked for to the secrets, and a generated ingest key to its own when it has none;
8. prints what the sGTM tag needs.

Every step first looks, then acts only when something is missing, so a second run changes
nothing but what Terraform finds changed (the code). DRY_RUN=1 prints every command and runs
none. Secrets reach gcloud on stdin only: never in an argument, a file or a log line.
Standard library only: `make deploy` needs no virtualenv.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
import shlex
import shutil
import sys
import time
from collections.abc import Mapping

from deploy.errors import NOT_READY, DeployError
from deploy.runner import ROOT, Runner
from deploy.settings import APIS, OPTIONS, TOKEN_PROMPT, Settings

TF_DIR = "deploy/terraform"  # relative to ROOT
# In the state once DELIVERY=queue was applied: the push subscription that holds queued events.
QUEUE_ADDRESS = "module.capi.google_pubsub_subscription.deliver[0]"


def read_secret(secret: str, prompt: str) -> str:
    """A secret's value: from a hidden prompt in a terminal, else from the next line of stdin."""
    value = (getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.readline()).strip()
    if not value:
        raise DeployError(
            f"No value given for secret {secret}.",
            "Run make deploy in a terminal and paste it at the prompt, or give it on stdin, one "
            "line per secret asked for (`make deploy ... < file`, then delete the file): never "
            "on the command line, where your shell history keeps it.",
        )
    if re.search(r"\s", value):
        raise DeployError(f"The value for {secret} holds a space or line break.", "Paste it alone.")
    return value


def root_variables() -> set[str]:
    """The variables deploy/terraform declares: an option is passed on only when it is one."""
    return set(re.findall(r'variable\s+"(\w+)"', (ROOT / TF_DIR / "variables.tf").read_text()))


def option_vars(settings: Settings) -> list[str]:
    """-var arguments of the options the user set; an error for one not wired yet."""
    declared = root_variables()
    args = []
    for option in OPTIONS:
        if option.env not in settings.options:
            continue
        if option.variable not in declared:
            raise DeployError(
                f"{option.env} is not supported by this version of make deploy yet.",
                f"Remove {option.env}=..., or use the Terraform module once it has `{option.variable}` "
                "(docs/deploy.md, Options).",
            )
        args.append(f"-var={option.variable}={settings.options[option.env]}")
    return args


def adoptable(s: Settings) -> list[tuple[str, str, list[str]]]:
    """What release 2's gcloud recipe (or the Terraform example, on a state of its own) created
    under the names the module uses: Terraform would stop at "409 already exists", so each one
    found outside the state is imported into it. (Terraform address, import id, describe command.)
    """
    p, r = s.project, s.region
    where = f"projects/{p}/locations/{r}"
    account = {who: f"{s.name}-{who}@{p}.iam.gserviceaccount.com" for who in ("runtime", "scheduler")}
    found = []
    for who, email in account.items():
        describe = ["gcloud", "iam", "service-accounts", "describe", email, "--format=value(email)"]
        found.append((f"google_service_account.{who}", f"projects/{p}/serviceAccounts/{email}", describe))
    for key, secret in (("meta_token", s.token_secret), ("ingest_key", s.ingest_secret)):
        describe = ["gcloud", "secrets", "describe", secret, "--format=value(name)"]
        found.append((f'google_secret_manager_secret.capi["{key}"]', f"projects/{p}/secrets/{secret}", describe))
    for key in ("events", "replay", "quality"):
        name = f"{s.name}-{key}"
        describe = ["gcloud", "functions", "describe", name, f"--region={r}", "--format=value(name)"]
        found.append(
            (f"google_cloudfunctions2_function.{key}", f"projects/{p}/locations/{r}/functions/{name}", describe)
        )
    for key in ("replay", "quality"):
        name = f"{s.name}-{key}"
        describe = ["gcloud", "scheduler", "jobs", "describe", name, f"--location={r}", "--format=value(name)"]
        found.append((f"google_cloud_scheduler_job.{key}", f"{where}/jobs/{name}", describe))
    return [(f"module.capi.{address}", import_id, describe) for address, import_id, describe in found]


def has_version(run: Runner, secret: str, note: str) -> bool:
    return run.exists(
        [
            "gcloud",
            "secrets",
            "versions",
            "list",
            secret,
            "--filter=state:enabled",
            "--limit=1",
            "--format=value(name)",
        ],
        note=note,
    )


def deploy(s: Settings, run: Runner) -> None:
    """Every step, in order; each looks first and acts only on what is missing."""
    extra_vars = option_vars(s)
    if s.dry_run:
        run.say("DRY_RUN=1: every command is printed, none is run; every check answers 'missing'.")
    check_account_and_project(s, run)
    enable_apis(run)
    create_database(s, run)
    create_state_bucket(s, run)
    asked = ask_secrets(s, run)
    outputs = apply_terraform(s, run, extra_vars)
    key = fill_secrets(s, run, asked)
    print_settings(s, run, outputs.get("events_url"), key)


def check_account_and_project(s: Settings, run: Runner) -> None:
    if not s.dry_run:
        for tool, how in (
            ("gcloud", "https://cloud.google.com/sdk/docs/install (Cloud Shell has it)"),
            ("terraform", "https://developer.hashicorp.com/terraform/install, 1.5 or later (Cloud Shell has it)"),
        ):
            if shutil.which(tool) is None:
                raise DeployError(f"{tool} is not installed.", f"Install it: {how}.")
    run.say("== who deploys, and where")
    account = run.capture(["gcloud", "auth", "list", "--filter=status:ACTIVE", "--format=value(account)"])
    if not s.dry_run and not account:
        raise DeployError("gcloud has no active account.", "Run `gcloud auth login`, then make deploy again.")
    try:
        run.capture(["gcloud", "projects", "describe", s.project, "--format=value(projectId)"])
    except DeployError as error:  # Google answers 403 for a project that does not exist, too
        raise DeployError(
            f"Project {s.project} does not exist, or {account} cannot see it.",
            "Check PROJECT (`gcloud projects list` shows yours), or ask an owner of the project "
            f"for access. {error.fix}",
        ) from error


def enable_apis(run: Runner) -> None:
    run.say("== APIs")
    enabled = run.capture(["gcloud", "services", "list", "--enabled", "--format=value(config.name)"]).split()
    missing = [api for api in APIS if api not in enabled]
    if missing:
        run.act(["gcloud", "services", "enable", *missing], note="a few minutes the first time")
    else:
        run.say("all enabled")


def create_database(s: Settings, run: Runner) -> None:
    run.say("== Firestore")
    database = ["gcloud", "firestore", "databases"]
    if run.exists([*database, "describe", "--database=(default)", "--format=value(name)"]):
        run.say("the (default) database exists")
        return
    location = f"--location={s.firestore_location}"
    run.act(
        [*database, "create", location, "--type=firestore-native", "--delete-protection"],
        note="its location cannot change later",
    )


def create_state_bucket(s: Settings, run: Runner) -> None:
    run.say("== Terraform state bucket")
    bucket = f"gs://{s.state_bucket}"
    try:
        found = run.exists(["gcloud", "storage", "buckets", "describe", bucket, "--format=value(name)"])
    except DeployError as error:  # bucket names are global: another project may own this one
        raise DeployError(
            f"{bucket} cannot be read: another project may own this name.",
            f"Choose a name of your own: STATE_BUCKET=<globally unique name>. {error.fix}",
        ) from error
    if found:
        run.say(f"{bucket} exists")
        return
    access = ["--uniform-bucket-level-access", "--public-access-prevention"]
    run.act(["gcloud", "storage", "buckets", "create", bucket, f"--location={s.region}", *access])
    run.act(["gcloud", "storage", "buckets", "update", bucket, "--versioning"], note="old states are kept")


def ask_secrets(s: Settings, run: Runner) -> list[tuple[str, str]]:
    """(secret, value) of each secret without a version: read now, before the long part, and
    added once Terraform has created the secrets. In memory only."""
    run.say("== secrets to ask for")
    wanted = [(s.token_secret, TOKEN_PROMPT, s.new_token)]
    wanted += [(f"{s.name}-{o.secret}", o.prompt, False) for o in OPTIONS if o.secret and o.env in s.options]
    asked = []
    for secret, prompt, again in wanted:
        if not again and has_version(run, secret, "does it have a version?"):
            run.say(f"{secret} has a version" + (" (NEW_TOKEN=1 replaces it)" if secret == s.token_secret else ""))
        elif s.dry_run:
            run.say(f"(the value of {secret} would be read here, at a hidden prompt or from stdin)")
            asked.append((secret, ""))
        else:
            asked.append((secret, read_secret(secret, prompt)))
    return asked


def apply_terraform(s: Settings, run: Runner, extra_vars: list[str]) -> dict[str, str]:
    """Init on the state bucket, adopt what exists under capi's names, apply; the outputs."""
    run.say("== Terraform: accounts, roles, secrets, functions, Scheduler jobs, metrics, alerts, dashboard")
    access_token = run.capture(
        ["gcloud", "auth", "print-access-token"],
        note="passed to Terraform as GOOGLE_OAUTH_ACCESS_TOKEN, never printed",
    )
    env = {"GOOGLE_OAUTH_ACCESS_TOKEN": access_token, "TF_IN_AUTOMATION": "1"}
    tf = ["terraform", f"-chdir={TF_DIR}"]
    backend = [f"-backend-config=bucket={s.state_bucket}", f"-backend-config=prefix={s.name}"]
    run.act(
        [*tf, "init", "-input=false", "-reconfigure", *backend],
        env=env,
        note="Terraform's commands get GOOGLE_OAUTH_ACCESS_TOKEN in their environment",
    )
    variables = [
        f"-var=project_id={s.project}",
        f"-var=region={s.region}",
        f"-var=name={s.name}",
        f"-var=pixel_id={s.pixel_id}",
        f"-var=default_country={s.default_country}",
        f"-var=alert_email={s.alert_email}",
        *extra_vars,
    ]
    in_state = set(run.capture([*tf, "state", "list"], env=env, note="what Terraform manages already").split())
    if QUEUE_ADDRESS in in_state and "DELIVERY" not in s.options:
        # Options are not remembered between runs: an upgrade without DELIVERY=queue would go back
        # to direct, and Terraform would delete the topic and subscriptions with the events they hold.
        raise DeployError(
            "This deployment delivers through Pub/Sub (DELIVERY=queue); without DELIVERY this run would "
            "go back to direct and delete the queue with the events it holds.",
            "Run again with DELIVERY=queue. To go back to direct on purpose, wait until the push "
            "subscription is empty (docs/queue.md, Deploying), then run with DELIVERY=direct.",
        )
    for address, import_id, describe in adoptable(s):
        if address not in in_state and run.exists(describe, note="made before make deploy managed it?"):
            run.act([*tf, "import", "-input=false", *variables, address, import_id], env=env, note="adopted")
    for attempt in range(3):
        try:
            run.act([*tf, "apply", "-input=false", "-auto-approve", *variables], env=env, note="builds take minutes")
            break
        except DeployError as error:
            if attempt == 2 or not re.search(NOT_READY, error.output):
                raise
            run.say(f"Google has not finished enabling an API or account yet: trying again in {s.retry_wait} s.")
            time.sleep(s.retry_wait)
    printed = json.loads(run.capture([*tf, "output", "-json"], env=env) or "{}")
    outputs = {key: value.get("value") for key, value in printed.items()}
    for key, expected in (("meta_token_secret", s.token_secret), ("ingest_key_secret", s.ingest_secret)):
        if not s.dry_run and outputs.get(key) != expected:
            raise DeployError(f"Terraform's {key} is {outputs.get(key)!r}, not {expected!r}.", "Report this: a bug.")
    return outputs


def fill_secrets(s: Settings, run: Runner, asked: list[tuple[str, str]]) -> str:
    """Adds the values asked for, and a new ingest key when there is none; the key when it is
    to be shown (new, or SHOW_KEY=1), else ""."""
    run.say("== secrets")
    add = ["gcloud", "secrets", "versions", "add"]
    for secret, value in asked:
        run.act([*add, secret, "--data-file=-"], stdin=value, note="stdin: the value you gave")
    if has_version(run, s.ingest_secret, "does the ingest key secret have a version?"):
        run.say(f"{s.ingest_secret} has a key")
        if not s.show_key or s.dry_run:
            return ""
        access = ["gcloud", "secrets", "versions", "access", "latest", f"--secret={s.ingest_secret}"]
        return run.capture(access, note="SHOW_KEY=1")
    key = secrets.token_hex(32)
    run.act([*add, s.ingest_secret, "--data-file=-"], stdin=key, note="stdin: a new random key")
    return key


def print_settings(s: Settings, run: Runner, events_url: str | None, key: str) -> None:
    """What the sGTM tag needs, and how to check it."""
    url = events_url or "<events_url: printed here after a real run>"
    read_key = shlex.join(
        ["gcloud", "secrets", "versions", "access", "latest", f"--secret={s.ingest_secret}", f"--project={s.project}"]
    )
    run.say("")
    done = "DRY_RUN=1: nothing was run. After a real run" if s.dry_run else "capi is deployed"
    run.say(f"{done}, the capi tag of the server container (sgtm/; docs/deploy.md, The tag's settings) needs:")
    run.say(f"  url        {url}")
    run.say(f"  ingestKey  in Secret Manager, secret {s.ingest_secret}; print it with:")
    run.say(f"             {read_key}")
    if s.show_key and key:
        run.say(f"             the key (SHOW_KEY=1): {key}")
    run.say("Check it without sending anything to Meta (a 200 with a payload: URL and key are right):")
    run.say(
        f'  curl -s -X POST {shlex.quote(url + "/validate")} -H "X-Api-Key: $({read_key})" '
        '-H \'Content-Type: application/json\' -d \'{"event_name": "purchase", "event_id": "check-1", '
        '"page_location": "https://shop.example.com/thanks", "user_agent": "Mozilla/5.0", "value": 1, '
        '"currency": "USD", "user_data": {"email_address": "check@example.com"}}\''
    )
    webhooks = (
        ("SHOPIFY", "Shopify webhook (Event: Order payment, Format: JSON)", "/webhooks/shopify"),
        ("WOOCOMMERCE", "WooCommerce webhooks (Topics: Order created, Order updated)", "/webhooks/woocommerce"),
    )
    for option, what, path in webhooks:
        if option in s.options:
            run.say(f"{what}: {url}{path}  (docs/orders.md)")
    if s.options.get("DELIVERY") == "queue":
        run.say("Delivery: queued on Pub/Sub; capi_events answers 202, capi_deliver sends in batches (docs/queue.md).")
    channel = f"to {s.alert_email}" if s.alert_email else "without a channel (ALERT_EMAIL=you@example.com adds one)"
    run.say(f"Alerts: Cloud Monitoring > Alerting, {channel}; dashboard: Monitoring > Dashboards > capi.")


def main(env: Mapping[str, str] = os.environ) -> int:
    try:
        settings = Settings.from_env(env)
        deploy(settings, Runner(settings))
    except DeployError as error:
        print(f"\nmake deploy stopped: {error.what}\nFix: {error.fix}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nmake deploy interrupted: run it again to go on where it stopped.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # its output piped to a reader that stopped (`| head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0
