"""make deploy's variables, read and checked before any command runs (docs/deploy.md, Options)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from deploy.errors import DeployError

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
    # The idempotency guard and the order key (one Purchase per order). SHOPIFY / WOOCOMMERCE
    # and DELIVERY=queue turn it on with SHOP_IDEMPOTENCY_COLLECTION when it is not given: shops
    # retry their webhooks for hours, Pub/Sub redelivers a message to another instance, and the
    # guard is what makes a retry harmless.
    Option("IDEMPOTENCY_COLLECTION", "idempotency_collection"),
    # Queued delivery (terraform/queue.tf: the topic, capi_deliver and its push subscription with
    # OIDC, the dead-letter topic that capi_replay drains).
    Option("DELIVERY", "delivery"),
)
SHOP_IDEMPOTENCY_COLLECTION = "capi_idempotency"
TOKEN_PROMPT = (
    "Meta access token (Events Manager > your dataset > Settings > Conversions API >"
    " Generate access token; typing is hidden): "
)


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
        # Every value reaches a command line (and the commands printed to copy): only the
        # characters its kind of name can hold, so no shell metacharacter gets that far.
        if get("ALERT_EMAIL") and not re.fullmatch(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+", get("ALERT_EMAIL")):
            raise DeployError(
                f"ALERT_EMAIL={get('ALERT_EMAIL')!r} is not an email address.", "e.g. ALERT_EMAIL=ops@example.com"
            )
        names = (
            ("STATE_BUCKET", r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", "a Cloud Storage bucket name"),
            ("FIRESTORE_LOCATION", r"[a-z0-9-]{2,40}", "a Firestore location, e.g. eur3"),
        )
        for key, pattern, what in names:
            if get(key) and not re.fullmatch(pattern, get(key)):
                raise DeployError(
                    f"{key}={get(key)!r} is not {what}.", "Leave it out for the default (docs/deploy.md)."
                )
        retry_wait = get("RETRY_WAIT", "60")
        if not retry_wait.isdigit():
            raise DeployError(f"RETRY_WAIT={retry_wait!r} is not a number of seconds.", "e.g. RETRY_WAIT=120")
        options = {}
        for option in OPTIONS:
            if option.boolean and flag(option.env):
                options[option.env] = "true"
            elif not option.boolean and get(option.env):
                options[option.env] = get(option.env)
        for key, value in options.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", value):
                raise DeployError(
                    f"{key}={value!r} is not a name (letters, digits, '_', '.', '-').", "docs/deploy.md, Options."
                )
        if options.get("DELIVERY", "direct") not in ("direct", "queue"):
            raise DeployError(
                f"DELIVERY={options['DELIVERY']!r} is not direct or queue.",
                "DELIVERY=queue: queued delivery on Pub/Sub (docs/queue.md); leave it out for direct.",
            )
        if {"SHOPIFY", "WOOCOMMERCE"} & options.keys() or options.get("DELIVERY") == "queue":
            options.setdefault("IDEMPOTENCY_COLLECTION", SHOP_IDEMPOTENCY_COLLECTION)
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
