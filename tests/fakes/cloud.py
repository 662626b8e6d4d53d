"""A recording fake of the `gcloud` and `terraform` commands `make deploy` runs, with state.

`tests/test_deploy.py` puts two wrappers first on PATH, `gcloud` and `terraform`, each running
`python cloud.py <tool> ARGS...`. The fake keeps a project in `$FAKE_CLOUD/state.json` (APIs,
the Firestore database, buckets, what Terraform created and with which variables and code) and
its Secret Manager in `$FAKE_CLOUD/secrets.json`, so a resource exists after it is created and
a second run sees it. Every call is appended to `$FAKE_CLOUD/calls.jsonl`: its argv, whether it
got stdin, and whether Terraform got gcloud's access token in its environment (never the value).

Errors are Google's own texts (their stable parts), injected with state["faults"]: a command
prefix such as "gcloud services enable" -> the error text it prints, exit status 1 (every time;
state["faults_once"]: the first time only). Only what
`make deploy` runs is implemented; anything else exits 2, so a new command fails the test until
the fake learns it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

ACCESS_TOKEN = "ya29.fake-access-token-0123456789"
EVENTS_URL = "https://capi-events-abc123-ew.a.run.app"
# The APIs each fake command needs, as the real services do (a disabled API is SERVICE_DISABLED).
NEEDS = {
    "firestore": "firestore.googleapis.com",
    "secrets": "secretmanager.googleapis.com",
    "storage": "storage.googleapis.com",
}
TERRAFORM_NEEDS = (
    "iam.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudscheduler.googleapis.com",
    "monitoring.googleapis.com",
    "logging.googleapis.com",
)


def initial_state(project: str) -> dict[str, Any]:
    """An empty project with billing, as `gcloud projects create` leaves it."""
    return {
        "account": "owner@example.com",
        "project": project,
        "billing": True,
        "enabled": ["logging.googleapis.com", "storage.googleapis.com"],
        "firestore": None,
        "buckets": {},
        # What exists in the project, by the id `terraform import` takes (projects/P/secrets/S, ...).
        "resources": [],
        # Terraform's state: the addresses it manages, and the last apply's variables and code.
        "terraform": {"initialized": None, "addresses": [], "applied": None, "applies": []},
        "faults": {},
    }


class Fail(Exception):
    def __init__(self, text: str, status: int = 1) -> None:
        super().__init__(text)
        self.text = text
        self.status = status


class Cloud:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.state = json.loads((home / "state.json").read_text())
        path = home / "secrets.json"
        self.secrets: dict[str, list[str]] = json.loads(path.read_text()) if path.exists() else {}

    def save(self) -> None:
        (self.home / "state.json").write_text(json.dumps(self.state, indent=1))
        (self.home / "secrets.json").write_text(json.dumps(self.secrets))

    def need(self, api: str) -> None:
        if api not in self.state["enabled"]:
            raise Fail(
                f"ERROR: (gcloud) PERMISSION_DENIED: {api.split('.')[0]} API has not been used in project "
                f"{self.state['project']} before or it is disabled. reason: SERVICE_DISABLED"
            )

    # -- gcloud ---------------------------------------------------------------------------------

    def gcloud(self, argv: list[str], stdin: str) -> str:
        flags = {a.split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else "" for a in argv if a.startswith("--")}
        words = [a for a in argv if not a.startswith("--")]
        if flags.get("--project") != self.state["project"]:
            raise Fail(f"fake gcloud: --project={self.state['project']} missing from {argv}", 2)
        command = " ".join(words[:3])
        project = f"projects/{self.state['project']}"
        if words[0] in NEEDS:
            self.need(NEEDS[words[0]])
        if command == "auth list":
            return self.state["account"]
        if command == "auth print-access-token":
            return ACCESS_TOKEN
        if command.startswith("projects describe"):
            if words[2] != self.state["project"]:
                raise Fail(f"ERROR: (gcloud.projects.describe) NOT_FOUND: Project {words[2]} not found")
            return words[2]
        if command == "services list" and "--enabled" in flags:
            return "\n".join(sorted(self.state["enabled"]))
        if command.startswith("services enable"):
            if not self.state["billing"]:
                raise Fail(
                    "ERROR: (gcloud.services.enable) FAILED_PRECONDITION: Billing account for project "
                    "'123456789012' is not found. Billing must be enabled for activation of service(s) "
                    "'cloudbuild.googleapis.com' to proceed."
                )
            self.state["enabled"] = sorted({*self.state["enabled"], *words[2:]})
            return "Operation finished successfully."
        if command == "firestore databases describe":
            if not self.state["firestore"]:
                raise Fail(
                    "ERROR: (gcloud.firestore.databases.describe) NOT_FOUND: Project or database does not exist."
                )
            return f"projects/{self.state['project']}/databases/(default)"
        if command == "firestore databases create":
            if self.state["firestore"]:
                raise Fail("ERROR: (gcloud.firestore.databases.create) ALREADY_EXISTS: Database already exists.")
            self.state["firestore"] = flags["--location"]
            return "Success! Created database (default)"
        if command.startswith("storage buckets"):
            bucket = words[3].removeprefix("gs://")
            if words[2] == "describe":
                if bucket not in self.state["buckets"]:
                    raise Fail(f"ERROR: (gcloud.storage.buckets.describe) gs://{bucket} not found: 404.")
                return f"gs://{bucket}"
            if words[2] == "create":
                if bucket in self.state["buckets"]:
                    raise Fail(f"ERROR: (gcloud.storage.buckets.create) HTTPError 409: {bucket} already exists")
                self.state["buckets"][bucket] = {"location": flags["--location"], "versioning": False}
                return f"Creating gs://{bucket}/..."
            if words[2] == "update" and "--versioning" in flags:
                self.state["buckets"][bucket]["versioning"] = True
                return f"Updating gs://{bucket}/..."
        if command == "secrets versions list":
            if self.secret_id(words[3]) not in self.state["resources"]:
                raise Fail(f"ERROR: (gcloud.secrets.versions.list) NOT_FOUND: Secret [{words[3]}] not found.")
            return str(len(self.secrets[words[3]])) if self.secrets.get(words[3]) else ""
        if command == "secrets versions add":
            if self.secret_id(words[3]) not in self.state["resources"]:
                raise Fail(f"ERROR: (gcloud.secrets.versions.add) NOT_FOUND: Secret [{words[3]}] not found.")
            if flags.get("--data-file") != "-" or not stdin:
                raise Fail("fake gcloud: a secret version must come on stdin", 2)
            self.secrets.setdefault(words[3], []).append(stdin)
            return f"Created version [{len(self.secrets[words[3]])}] of the secret [{words[3]}]."
        describe = {
            "iam service-accounts describe": lambda: f"{project}/serviceAccounts/{words[3]}",
            "secrets describe": lambda: self.secret_id(words[2]),
            "functions describe": lambda: f"{project}/locations/{flags['--region']}/functions/{words[2]}",
            "scheduler jobs describe": lambda: f"{project}/locations/{flags['--location']}/jobs/{words[3]}",
        }
        for prefix, resource_id in describe.items():
            if command.startswith(prefix):
                if resource_id() not in self.state["resources"]:
                    raise Fail(f"ERROR: (gcloud.{prefix.replace(' ', '.')}) NOT_FOUND: {resource_id()} not found")
                return resource_id()
        if command == "secrets versions access" and words[3] == "latest":
            return self.secrets[flags["--secret"]][-1]
        raise Fail(f"fake gcloud: unknown command {argv}", 2)

    def secret_id(self, name: str) -> str:
        return f"projects/{self.state['project']}/secrets/{name}"

    # -- terraform ------------------------------------------------------------------------------

    def module_resources(self, variables: dict[str, str]) -> dict[str, str]:
        """The module's resources that have a name of their own: Terraform address -> import id."""
        project, name, region = variables["project_id"], variables["name"], variables["region"]
        where = f"projects/{project}/locations/{region}"
        email = "{}-{}@{}.iam.gserviceaccount.com"
        found = {
            f"google_service_account.{who}": f"projects/{project}/serviceAccounts/{email.format(name, who, project)}"
            for who in ("runtime", "scheduler", "build")
        }
        secrets = ["meta_token", "ingest_key"]
        secrets += [
            k for k in ("shopify_signing_key", "woocommerce_signing_key") if variables.get(f"create_{k}") == "true"
        ]
        for key in secrets:
            found[f'google_secret_manager_secret.capi["{key}"]'] = self.secret_id(f"{name}-{key.replace('_', '-')}")
        for key in ("events", "replay", "quality"):
            found[f"google_cloudfunctions2_function.{key}"] = f"{where}/functions/{name}-{key}"
        for key in ("replay", "quality"):
            found[f"google_cloud_scheduler_job.{key}"] = f"{where}/jobs/{name}-{key}"
        if variables.get("delivery") == "queue":  # terraform/queue.tf, counted resources
            found["google_pubsub_topic.events[0]"] = f"projects/{project}/topics/{name}-events"
            found["google_pubsub_subscription.deliver[0]"] = f"projects/{project}/subscriptions/{name}-deliver"
        return {f"module.capi.{address}": resource_id for address, resource_id in found.items()}

    def terraform(self, argv: list[str], env_token: bool) -> str:
        chdir = next(a.split("=", 1)[1] for a in argv if a.startswith("-chdir="))
        words = [a for a in argv if not a.startswith("-")]
        tf = self.state["terraform"]
        if not env_token:
            raise Fail("Error: storage.NewClient() failed: dialing: google: could not find default credentials.")
        if words[0] == "init":
            config = dict(
                a.removeprefix("-backend-config=").split("=", 1) for a in argv if a.startswith("-backend-config=")
            )
            if config.get("bucket") not in self.state["buckets"]:
                raise Fail(
                    "Error: Failed to get existing workspaces: querying Cloud Storage failed: bucket does not exist"
                )
            tf["initialized"] = config
            return "Terraform has been successfully initialized!"
        if not tf["initialized"]:
            raise Fail('Error: Backend initialization required, please run "terraform init"')
        if words[0] == "apply":
            for api in TERRAFORM_NEEDS:
                self.need(api)
            variables = dict(a.removeprefix("-var=").split("=", 1) for a in argv if a.startswith("-var="))
            applied = {"variables": variables, "code": code_hash(Path.cwd() / chdir / "../.."), "config": chdir}
            created = 0
            for address, resource_id in self.module_resources(variables).items():
                if address in tf["addresses"]:
                    continue
                if resource_id in self.state["resources"]:  # made outside this state
                    raise Fail(f"Error: Error creating {address}: googleapi: Error 409: {resource_id} already exists")
                self.state["resources"].append(resource_id)
                tf["addresses"].append(address)
                created += 1
            changed = applied != tf["applied"]
            tf["applied"] = applied
            tf["applies"].append({"changed": changed, "created": created})
            if changed:
                return f"Apply complete! Resources: {created} added, 0 changed, 0 destroyed."
            return "No changes. Your infrastructure matches the configuration."
        if words[0] == "state" and words[1] == "list":
            return "\n".join(tf["addresses"])
        if words[0] == "import":
            address, resource_id = words[1], words[2]
            if resource_id not in self.state["resources"]:
                raise Fail(f"Error: Cannot import non-existent remote object {resource_id}")
            if address in tf["addresses"]:
                raise Fail(f"Error: Resource already managed by Terraform: {address}")
            tf["addresses"].append(address)
            return "Import successful!"
        if words[0] == "output":
            name = tf["applied"]["variables"]["name"]
            values = {
                "events_url": EVENTS_URL,
                "meta_token_secret": f"{name}-meta-token",
                "ingest_key_secret": f"{name}-ingest-key",
            }
            return json.dumps({key: {"value": value, "type": "string"} for key, value in values.items()})
        raise Fail(f"fake terraform: unknown command {argv}", 2)

    def run(self, tool: str, argv: list[str], stdin: str) -> int:
        env_token = os.environ.get("GOOGLE_OAUTH_ACCESS_TOKEN") == ACCESS_TOKEN
        with (self.home / "calls.jsonl").open("a") as calls:
            calls.write(json.dumps({"argv": [tool, *argv], "stdin": bool(stdin), "env_token": env_token}) + "\n")
        try:
            command = " ".join([tool, *(a for a in argv if not a.startswith("-"))])
            for prefix, text in self.state["faults"].items():
                if command.startswith(prefix):
                    raise Fail(text)
            for prefix, text in list(self.state.get("faults_once", {}).items()):
                if command.startswith(prefix):
                    del self.state["faults_once"][prefix]
                    raise Fail(text)
            output = self.gcloud(argv, stdin) if tool == "gcloud" else self.terraform(argv, env_token)
        except Fail as failure:
            print(failure.text, file=sys.stderr)
            return failure.status
        finally:
            self.save()
        print(output)
        return 0


def code_hash(root: Path) -> str:
    """What makes Terraform redeploy the functions: the content of the files it zips."""
    files = [root / "main.py", root / "requirements.txt", *sorted((root / "capi").rglob("*.py"))]
    return hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()


if __name__ == "__main__":
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    sys.exit(Cloud(Path(os.environ["FAKE_CLOUD"])).run(sys.argv[1], sys.argv[2:], stdin))
