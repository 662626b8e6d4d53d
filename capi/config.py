"""Configuration: read once from the environment into a frozen dataclass, validated at start-up.

Every problem raises `ConfigError` with one line that names the variable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import pycountry

from capi.auth import split_keys
from capi.errors import ConfigError

# GA4 / server-side GTM event names -> Meta standard events (design.md).
DEFAULT_EVENT_MAP: Mapping[str, str] = MappingProxyType(
    {
        "page_view": "PageView",
        "view_item": "ViewContent",
        "add_to_cart": "AddToCart",
        "add_to_wishlist": "AddToWishlist",
        "begin_checkout": "InitiateCheckout",
        "add_payment_info": "AddPaymentInfo",
        "purchase": "Purchase",
        "sign_up": "CompleteRegistration",
        "generate_lead": "Lead",
        "search": "Search",
    }
)

# Every environment variable the code reads. tests/test_terraform.py checks that the
# Terraform module sets each one or leaves it to its default on purpose.
ENV_VARS: tuple[str, ...] = (
    "META_PIXEL_ID",
    "META_ACCESS_TOKEN_SECRET",
    "META_ACCESS_TOKEN",
    "META_APP_SECRET_SECRET",
    "META_APP_SECRET",
    "META_API_VERSION",
    "META_API_BASE_URL",
    "META_TEST_EVENT_CODE",
    "META_TIMEOUT_SECONDS",
    "META_RETRY_BUDGET_SECONDS",
    "META_MAX_ATTEMPTS",
    "FORWARD_EVENTS",
    "EVENT_NAME_MAP",
    "PROFILE_COLLECTION",
    "FIRESTORE_DATABASE",
    "FIRESTORE_TIMEOUT_SECONDS",
    "DEFAULT_COUNTRY",
    "INGEST_API_KEY_SECRET",
    "INGEST_API_KEY",
    "ALLOW_UNAUTHENTICATED",
    "DEADLETTER_COLLECTION",
    "REPLAY_MAX_ATTEMPTS",
    "IDEMPOTENCY_COLLECTION",
    "SECRET_CACHE_SECONDS",
    "DRY_RUN",
    "CONSENT_REQUIRED",
    "LOG_LEVEL",
    "GOOGLE_CLOUD_PROJECT",
    "EMQ_ALERT_BELOW",
)

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class Config:
    pixel_id: str
    access_token_secret: str | None = None
    access_token: str | None = field(default=None, repr=False)
    app_secret_secret: str | None = None
    app_secret: str | None = field(default=None, repr=False)
    api_version: str = "v26.0"
    api_base_url: str = "https://graph.facebook.com"
    test_event_code: str | None = None
    timeout_seconds: float = 5.0
    retry_budget_seconds: float = 10.0
    max_attempts: int = 4
    # None forwards every event ("*"); otherwise names matched against input and Meta name.
    forward_events: frozenset[str] | None = None
    event_name_map: Mapping[str, str] = field(default_factory=lambda: DEFAULT_EVENT_MAP)
    profile_collection: str = "users"
    firestore_database: str = "(default)"
    firestore_timeout_seconds: float = 2.0
    default_country: str | None = None  # lowercase alpha-2
    ingest_api_key_secret: str | None = None
    ingest_api_keys: tuple[str, ...] = field(default=(), repr=False)
    allow_unauthenticated: bool = False
    deadletter_collection: str = "capi_deadletter"
    replay_max_attempts: int = 20
    idempotency_collection: str | None = None
    secret_cache_seconds: float = 300.0
    dry_run: bool = False
    consent_required: bool = False  # skip events that carry no consent signal at all
    log_level: str = "INFO"
    project: str | None = None
    # capi_quality logs a WARNING for each event name whose Event Match Quality is below this.
    emq_alert_below: float = 6.0

    def should_forward(self, incoming: str, meta_name: str) -> bool:
        if self.forward_events is None:
            return True
        return incoming in self.forward_events or meta_name in self.forward_events


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}", field=name)


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}", field=name) from None
    if not value >= minimum or value == float("inf"):
        raise ConfigError(f"{name} must be a number >= {minimum}, got {raw!r}", field=name)
    return value


def _opt(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _event_map(raw: str | None) -> Mapping[str, str]:
    if not raw:
        return DEFAULT_EVENT_MAP
    try:
        extra = json.loads(raw)
    except ValueError:
        raise ConfigError("EVENT_NAME_MAP must be a JSON object", field="EVENT_NAME_MAP") from None
    if not isinstance(extra, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in extra.items()
    ):
        raise ConfigError(
            'EVENT_NAME_MAP must be a JSON object of names, e.g. {"lead_form": "Lead"}',
            field="EVENT_NAME_MAP",
        )
    return MappingProxyType({**DEFAULT_EVENT_MAP, **extra})


def _forward_events(raw: str | None, event_map: Mapping[str, str]) -> frozenset[str] | None:
    if raw is None:
        # Default: the mapped conversion events (GA4 and Meta names), not page_view.
        names = {k for k in event_map if k != "page_view"}
        names |= {v for k, v in event_map.items() if k != "page_view" and v != "PageView"}
        return frozenset(names)
    names = {n.strip() for n in raw.split(",") if n.strip()}
    if "*" in names:
        return None
    if not names:
        raise ConfigError("FORWARD_EVENTS is empty: list event names or use *", field="FORWARD_EVENTS")
    return frozenset(names)


def load_config(env: Mapping[str, str]) -> Config:
    """Build and validate the configuration from environment variables.

    Raises:
        ConfigError: one line naming the variable that is missing or wrong.
    """
    pixel_id = env.get("META_PIXEL_ID", "").strip()
    if not pixel_id:
        raise ConfigError("META_PIXEL_ID is required (your pixel / dataset id)", field="META_PIXEL_ID")
    if not pixel_id.isdigit():
        raise ConfigError(f"META_PIXEL_ID must be digits, got {pixel_id!r}", field="META_PIXEL_ID")

    version = env.get("META_API_VERSION", "").strip() or "v26.0"
    if not re.fullmatch(r"v\d+\.\d+", version):
        raise ConfigError(f"META_API_VERSION must look like v26.0, got {version!r}", field="META_API_VERSION")
    base_url = (env.get("META_API_BASE_URL", "").strip() or "https://graph.facebook.com").rstrip("/")
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", base_url):
        raise ConfigError(f"META_API_BASE_URL must be an http(s) URL, got {base_url!r}", field="META_API_BASE_URL")

    default_country = _opt(env, "DEFAULT_COUNTRY")
    if default_country is not None:
        if not (len(default_country) == 2 and pycountry.countries.get(alpha_2=default_country.upper())):
            raise ConfigError(
                f"DEFAULT_COUNTRY must be an ISO 3166 alpha-2 code such as US or GB, got {default_country!r}",
                field="DEFAULT_COUNTRY",
            )
        default_country = default_country.lower()

    log_level = (env.get("LOG_LEVEL", "").strip() or "INFO").upper()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {log_level!r}", field="LOG_LEVEL")

    max_attempts = _number(env, "META_MAX_ATTEMPTS", 4, minimum=1)
    replay_max_attempts = _number(env, "REPLAY_MAX_ATTEMPTS", 20, minimum=1)
    if max_attempts != int(max_attempts) or replay_max_attempts != int(replay_max_attempts):
        raise ConfigError("META_MAX_ATTEMPTS and REPLAY_MAX_ATTEMPTS must be whole numbers", field="META_MAX_ATTEMPTS")

    emq_alert_below = _number(env, "EMQ_ALERT_BELOW", 6.0)
    if emq_alert_below > 10:
        raise ConfigError(
            f"EMQ_ALERT_BELOW must be 0..10 (Meta's scale), got {emq_alert_below}", field="EMQ_ALERT_BELOW"
        )

    event_map = _event_map(_opt(env, "EVENT_NAME_MAP"))
    keys = split_keys(env.get("INGEST_API_KEY", ""))
    dry_run = _bool(env, "DRY_RUN", False)
    config = Config(
        pixel_id=pixel_id,
        access_token_secret=_opt(env, "META_ACCESS_TOKEN_SECRET"),
        access_token=_opt(env, "META_ACCESS_TOKEN"),
        app_secret_secret=_opt(env, "META_APP_SECRET_SECRET"),
        app_secret=_opt(env, "META_APP_SECRET"),
        api_version=version,
        api_base_url=base_url,
        test_event_code=_opt(env, "META_TEST_EVENT_CODE"),
        timeout_seconds=_number(env, "META_TIMEOUT_SECONDS", 5.0, minimum=0.01),
        retry_budget_seconds=_number(env, "META_RETRY_BUDGET_SECONDS", 10.0),
        max_attempts=int(max_attempts),
        forward_events=_forward_events(env.get("FORWARD_EVENTS"), event_map),
        event_name_map=event_map,
        profile_collection=env.get("PROFILE_COLLECTION", "users").strip(),
        firestore_database=env.get("FIRESTORE_DATABASE", "").strip() or "(default)",
        firestore_timeout_seconds=_number(env, "FIRESTORE_TIMEOUT_SECONDS", 2.0, minimum=0.05),
        default_country=default_country,
        ingest_api_key_secret=_opt(env, "INGEST_API_KEY_SECRET"),
        ingest_api_keys=keys,
        allow_unauthenticated=_bool(env, "ALLOW_UNAUTHENTICATED", False),
        deadletter_collection=env.get("DEADLETTER_COLLECTION", "").strip() or "capi_deadletter",
        replay_max_attempts=int(replay_max_attempts),
        idempotency_collection=_opt(env, "IDEMPOTENCY_COLLECTION"),
        secret_cache_seconds=_number(env, "SECRET_CACHE_SECONDS", 300.0),
        dry_run=dry_run,
        consent_required=_bool(env, "CONSENT_REQUIRED", False),
        log_level=log_level,
        project=_opt(env, "GOOGLE_CLOUD_PROJECT"),
        emq_alert_below=emq_alert_below,
    )
    if not dry_run and not (config.access_token or config.access_token_secret):
        raise ConfigError(
            "META_ACCESS_TOKEN_SECRET is required (or META_ACCESS_TOKEN for local runs, or DRY_RUN=true)",
            field="META_ACCESS_TOKEN_SECRET",
        )
    secrets = [
        ("META_ACCESS_TOKEN_SECRET", config.access_token_secret),
        ("META_APP_SECRET_SECRET", config.app_secret_secret),
        # Several ingest-key secrets may be listed, comma-separated, for rotation.
        *(("INGEST_API_KEY_SECRET", part) for part in split_keys(config.ingest_api_key_secret or "")),
    ]
    for name, value in secrets:
        if value and "/" not in value and not config.project:
            raise ConfigError(
                f"{name} is a short secret name, so GOOGLE_CLOUD_PROJECT must be set"
                " (or give projects/P/secrets/S/versions/V)",
                field=name,
            )
        if value and "/" in value and not re.fullmatch(r"projects/[^/]+/secrets/[^/]+(/versions/[^/]+)?", value):
            raise ConfigError(f"{name} must be projects/P/secrets/S/versions/V or a short name", field=name)
    return config
