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

import dataclasses
import getpass
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parent.parent
TF_DIR = "deploy/terraform"  # relative to ROOT, where every command runs

# Every API the deployment uses, enabled before Terraform runs (Terraform itself needs iam,
# cloudresourcemanager and storage before it can plan). terraform/main.tf enables the same list.
APIS = (
    "iam.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "run.googleapis.com",
    "cloudfunctions.googleapis.com",
    "secretmanager.googleapis.com",
    "firestore.googleapis.com",
    "cloudscheduler.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "storage.googleapis.com",
)


@dataclasses.dataclass(frozen=True)
class Option:
    """A make deploy variable that turns on a feature of the module (docs/deploy.md, Options).

    It is passed to Terraform as `variable` only when deploy/terraform/variables.tf declares it
    (and passes it to the module); otherwise the deploy says so before running anything. A
    feature that needs a secret of its own names it (`{NAME}-{secret}`, the module's name for
    it): the deploy asks for its value with the token, at a hidden prompt, while it has none.
    """

    env: str
    variable: str
    boolean: bool = False
    secret: str = ""
    prompt: str = ""


OPTIONS = (
    # Enhanced event coverage; the module adds the Firestore TTL policy on its expire_at field.
    Option("BROWSER_COLLECTION", "browser_collection"),
    Option("BROWSER_TTL_DAYS", "browser_ttl_days"),
    # Signed shop webhooks (POST /webhooks/shopify, /webhooks/woocommerce).
    Option(
        "SHOPIFY",
        "create_shopify_signing_key",
        boolean=True,
        secret="shopify-signing-key",
        prompt="Shopify webhook signing key (Shopify admin > Settings > Notifications > Webhooks:"
        " 'Your webhooks will be signed with ...'; typing is hidden): ",
    ),
    Option(
        "WOOCOMMERCE",
        "create_woocommerce_signing_key",
        boolean=True,
        secret="woocommerce-signing-key",
        prompt="WooCommerce webhook secret (WooCommerce > Settings > Advanced > Webhooks > your"
        " webhook: Secret; typing is hidden): ",
    ),
    # HOOK, issue 24: queued delivery (Pub/Sub topic, push subscription with OIDC to
    # capi_deliver, dead-letter topic), once the module has its variable.
    Option("DELIVERY", "delivery"),
)
TOKEN_PROMPT = (
    "Meta access token (Events Manager > your dataset > Settings > Conversions API >"
    " Generate access token; typing is hidden): "
)


class DeployError(Exception):
    """A step failed: what happened, and what to do about it."""

    def __init__(self, what: str, fix: str, output: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix
        self.output = output  # what the failed command printed


# An API enabled moments ago, or an account created moments ago, that has not reached every
# Google service yet: the same apply works a minute later.
NOT_READY = (
    r"SERVICE_DISABLED|has not been used in project|API has not been used|[Ss]ervice agent"
    r"|[Ss]ervice account .* does not exist"
)

# What a first deploy meets, recognised in gcloud's or Terraform's error text, most specific
# first. {project} is filled in. The texts are Google's error messages (their stable parts).
FIXES: Sequence[tuple[str, str]] = (
    (
        r"allowedPolicyMemberDomains|allowedPolicyMembers|do(es)? not belong to a permitted customer",
        "An organization policy (iam.allowedPolicyMemberDomains, or iam.managed.allowedPolicyMembers) "
        "forbids allUsers, which the sGTM path needs: Google must let the tag's request through to "
        "capi's own ingest-key check. Ask an organization policy administrator to exempt this "
        "project, e.g. `gcloud org-policies reset iam.allowedPolicyMemberDomains --project={project}`, "
        "then run make deploy again.",
    ),
    (
        r"[Bb]illing (account )?(for project .* )?(is )?(not|disabled)|BILLING_DISABLED|billing must be enabled"
        r"|[Bb]illing to be enabled|billing account .* (closed|disabled)",
        "Billing is off for project {project}. Link a billing account (list yours with "
        "`gcloud billing accounts list`): `gcloud billing projects link {project} "
        "--billing-account=XXXXXX-XXXXXX-XXXXXX`, then run make deploy again.",
    ),
    (
        r"SERVICE_DISABLED|has not been used in project|it is disabled|API has not been used"
        r"|is not enabled for project|service .* is not enabled",
        "An API the deploy has just enabled is not ready yet (enabling takes a few minutes to "
        "reach every Google service). Wait two minutes and run make deploy again: it goes on "
        "where it stopped.",
    ),
    (
        r"PERMISSION_DENIED|[Pp]ermission denied|does not have (the )?(required )?permission"
        r"|[Pp]ermission '[\w.]+' denied|AUTH_PERMISSION_DENIED|Error 403|status code 403|\b403\b.*[Ff]orbidden",
        "Your account lacks a permission this step needs (the line above names it). Ask a "
        "project owner to grant you roles/owner on {project}, or the roles docs/deploy.md lists "
        "(Before you start): `gcloud projects add-iam-policy-binding {project} --member=user:YOU "
        "--role=ROLE`. Then run make deploy again.",
    ),
    (
        r"Error 409|[Aa]lready exists|ALREADY_EXISTS",
        "A resource with capi's name exists but is not in make deploy's Terraform state, and is not "
        "one it adopts by itself (docs/deploy.md, Upgrade). Import it (`terraform -chdir=deploy/terraform "
        "import -var=... ADDRESS ID`), delete it, or deploy beside it with another NAME=.",
    ),
    (
        r"You do not currently have an active account|gcloud auth login|Reauthentication required"
        r"|invalid_grant|credentials .* (invalid|expired)",
        "gcloud has no valid login: run `gcloud auth login`, then make deploy again.",
    ),
)


def diagnose(text: str, project: str) -> str:
    """The fix for an error text, or a pointer to the output when it is none of the known ones."""
    for pattern, fix in FIXES:
        if re.search(pattern, text):
            return fix.format(project=project)
    return "The output above says why. Fix it and run make deploy again: every step that is done is skipped."


@dataclasses.dataclass(frozen=True)
class Settings:
    """make deploy's variables (docs/deploy.md, Options), checked before any command runs."""

    project: str
    region: str
    pixel_id: str
    name: str = "capi"
    firestore_location: str = ""
    default_country: str = ""
    alert_email: str = ""
    state_bucket: str = ""
    dry_run: bool = False
    show_key: bool = False
    new_token: bool = False
    retry_wait: int = 60  # seconds before an apply that met NOT_READY runs again (twice at most)
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)  # Option.env -> value

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def get(key: str, default: str = "") -> str:
            return env.get(key, "").strip() or default

        def flag(key: str) -> bool:
            return get(key, "0").lower() in {"1", "true", "yes"}

        project, region, pixel_id = get("PROJECT"), get("REGION"), get("PIXEL_ID")
        name = get("NAME", "capi")
        checks = (
            # Loose on purpose (DRY_RUN=1 PROJECT=p works): the module checks the length.
            ("PROJECT", project, r"[a-z][a-z0-9-]{0,29}", "a project id, e.g. my-shop-prod"),
            ("REGION", region, r"[a-z]+-[a-z]+[0-9]+", "a Cloud Run region, e.g. europe-west1"),
            ("PIXEL_ID", pixel_id, r"[0-9]+", "digits: Events Manager > your dataset > Settings"),
            ("NAME", name, r"[a-z][a-z0-9-]{1,20}", "2-21 lowercase letters, digits or hyphens"),
        )
        for key, value, pattern, what in checks:
            if not re.fullmatch(pattern, value):
                raise DeployError(
                    f"{key}={value!r} is not {what}.",
                    "make deploy PROJECT=<project id> REGION=<region> PIXEL_ID=<pixel id> (docs/deploy.md).",
                )
        country = get("DEFAULT_COUNTRY").upper()
        if country and not re.fullmatch(r"[A-Z]{2}", country):
            raise DeployError(f"DEFAULT_COUNTRY={country!r} is not a 2-letter code.", "e.g. DEFAULT_COUNTRY=DE")
        retry_wait = get("RETRY_WAIT", "60")
        if not retry_wait.isdigit():
            raise DeployError(f"RETRY_WAIT={retry_wait!r} is not a number of seconds.", "e.g. RETRY_WAIT=120")
        options = {}
        for option in OPTIONS:
            if option.boolean and flag(option.env):
                options[option.env] = "true"
            elif not option.boolean and get(option.env):
                options[option.env] = get(option.env)
        return cls(
            project=project,
            region=region,
            pixel_id=pixel_id,
            name=name,
            firestore_location=get("FIRESTORE_LOCATION", firestore_location_for(region)),
            default_country=country,
            alert_email=get("ALERT_EMAIL"),
            state_bucket=get("STATE_BUCKET", f"{project}-{name}-tfstate"),
            dry_run=flag("DRY_RUN"),
            show_key=flag("SHOW_KEY"),
            new_token=flag("NEW_TOKEN"),
            retry_wait=int(retry_wait),
            options=options,
        )

    @property
    def token_secret(self) -> str:
        return f"{self.name}-meta-token"  # the module's name for it (terraform/main.tf)

    @property
    def ingest_secret(self) -> str:
        return f"{self.name}-ingest-key"


def firestore_location_for(region: str) -> str:
    """Firestore's multi-region around the functions' region (it cannot change later)."""
    if region.startswith("europe-"):
        return "eur3"
    if region.startswith(("us-", "northamerica-")):
        return "nam5"
    return region


class Runner:
    """Runs (or, in a dry run, only prints) each command, and turns a failure into a DeployError."""

    def __init__(self, settings: Settings, out: TextIO | None = None) -> None:
        self.settings = settings
        self.out = out or sys.stdout

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def show(self, argv: Sequence[str], note: str = "") -> None:
        line = "$ " + shlex.join(argv)
        self.say(f"{line}    # {note}" if note else line)

    def _project_flag(self, argv: Sequence[str]) -> list[str]:
        if argv[0] == "gcloud":
            return [*argv, f"--project={self.settings.project}"]
        return list(argv)

    def _read(self, argv: list[str], env: Mapping[str, str] | None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=ROOT,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
        )

    def capture(self, argv: Sequence[str], *, note: str = "", env: Mapping[str, str] | None = None) -> str:
        """Runs a command that reads something and answers its stdout, never shown ("" in a dry run)."""
        argv = self._project_flag(argv)
        self.show(argv, note)
        if self.settings.dry_run:
            return ""
        done = self._read(argv, env)
        if done.returncode != 0:
            self.say(done.stderr.rstrip())
            raise DeployError(f"{shlex.join(argv[:4])} failed.", diagnose(done.stderr, self.settings.project))
        return done.stdout.strip()

    def exists(self, argv: Sequence[str], *, note: str = "") -> bool:
        """Runs a describe/list command: False when Google answers that the thing is not there."""
        argv = self._project_flag(argv)
        self.show(argv, note)
        if self.settings.dry_run:
            return False
        done = self._read(argv, None)
        if done.returncode == 0:
            return bool(done.stdout.strip())
        if re.search(r"NOT_FOUND|[Nn]ot [Ff]ound|does not exist|\b404\b", done.stderr):
            return False
        self.say(done.stderr.rstrip())
        raise DeployError(f"{shlex.join(argv[:4])} failed.", diagnose(done.stderr, self.settings.project))

    def act(
        self,
        argv: Sequence[str],
        *,
        note: str = "",
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Runs a command that changes something, its output streamed to the user as it comes."""
        argv = self._project_flag(argv)
        self.show(argv, note)
        if self.settings.dry_run:
            return
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env} if env else None,
        )
        if stdin is not None:
            assert process.stdin is not None
            process.stdin.write(stdin)
            process.stdin.close()
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            self.out.write(line)
            self.out.flush()
        if process.wait() != 0:
            output = "".join(lines)
            raise DeployError(f"{shlex.join(argv[:4])} failed.", diagnose(output, self.settings.project), output)


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
    for option, path in (("SHOPIFY", "/webhooks/shopify"), ("WOOCOMMERCE", "/webhooks/woocommerce")):
        if option in s.options:
            run.say(f"{option.title()} webhook (order payment / order updated, JSON): {url}{path}")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
