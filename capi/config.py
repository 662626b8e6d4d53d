"""Configuration: read once from the environment into a frozen dataclass, validated at start-up.

Each setting is declared once, in `SETTINGS`: its variable, its attribute on `Config`, its
default (as it would be written in the environment), its parser and its help text. The
`Config` dataclass, `load_config`, `ENV_VARS`, the configuration table of docs/configuration.md (checked by
tests/test_config.py) and the Terraform consistency test all read that one list.

Every problem raises `ConfigError` with one line that names the variable.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, make_dataclass, replace
from types import MappingProxyType
from typing import Any

import pycountry

from capi import destinations as dest
from capi.auth import parse_bound_keys, split_keys
from capi.errors import ConfigError

# GA4 / server-side GTM event names -> Meta standard events (docs/meta-capi.md §10).
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

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class Invalid(ValueError):
    """Raised by a parser with the reason only; the loader adds the variable's name."""


# -- Parsers: the stripped text of a variable ("" when unset and without default) -> value.


def optional(text: str) -> str | None:
    return text or None


def text(text: str) -> str:
    return text


def boolean(text: str) -> bool:
    value = text.lower()
    if value in _TRUE:
        return True
    if value in _FALSE or not value:
        return False
    raise Invalid("must be true or false")


def number(*, minimum: float = 0, maximum: float = math.inf, whole: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        kind = "a whole number" if whole else "a number"
        try:
            value = float(text)
        except ValueError:
            raise Invalid(f"must be {kind}") from None
        bounds = f">= {minimum:g}" if maximum == math.inf else f"between {minimum:g} and {maximum:g}"
        if not minimum <= value <= maximum or math.isinf(value):
            raise Invalid(f"must be {kind} {bounds}")
        if whole and value != int(value):
            raise Invalid(f"must be {kind} {bounds}")
        return int(value) if whole else value

    return parse


def threads(text: str) -> int:
    """0 when unset: functions-framework then picks its own default (4 per CPU)."""
    return int(number(minimum=1, whole=True)(text)) if text else 0


def _bound_keys(text: str) -> tuple[Any, ...]:
    try:
        return parse_bound_keys(text)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def pixel_id(text: str) -> str | None:
    """Required unless META_DESTINATIONS is set (checked in `_check_destinations`)."""
    if not text:
        return None
    if not text.isdigit():
        raise Invalid("must be digits")
    return text


def api_version(text: str) -> str:
    if not re.fullmatch(r"v\d+\.\d+", text):
        raise Invalid("must look like v26.0")
    return text


def base_url(text: str) -> str:
    url = text.rstrip("/")
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise Invalid("must be an http(s) URL")
    return url


def country(text: str) -> str | None:
    if not text:
        return None
    if not (len(text) == 2 and pycountry.countries.get(alpha_2=text.upper())):
        raise Invalid("must be an ISO 3166 alpha-2 code such as US or GB")
    return text.lower()


LIMITED_DATA_USE = ("off", "geo")


def limited_data_use(text: str) -> str:
    if text.lower() not in LIMITED_DATA_USE:
        raise Invalid(f"must be one of {', '.join(LIMITED_DATA_USE)}")
    return text.lower()


def log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise Invalid(f"must be one of {', '.join(LOG_LEVELS)}")
    return text.upper()


def event_map(text: str) -> Mapping[str, str]:
    if not text:
        return DEFAULT_EVENT_MAP
    try:
        extra = json.loads(text)
    except ValueError:
        raise Invalid("must be a JSON object") from None
    if not isinstance(extra, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in extra.items()
    ):
        raise Invalid('must be a JSON object of names, e.g. {"lead_form": "Lead"}')
    return MappingProxyType({**DEFAULT_EVENT_MAP, **extra})


def mapped_conversions(names: Mapping[str, str]) -> frozenset[str]:
    """FORWARD_EVENTS' default: the mapped events (GA4 and Meta names), not page_view."""
    found = {k for k in names if k != "page_view"}
    found |= {v for k, v in names.items() if k != "page_view" and v != "PageView"}
    return frozenset(found)


def forward_events(text: str) -> frozenset[str] | None:
    """None forwards every event (`*`); "" is the default, completed from EVENT_NAME_MAP."""
    if not text:
        return mapped_conversions(DEFAULT_EVENT_MAP)
    names = {n.strip() for n in text.split(",") if n.strip()}
    if "*" in names:
        return None
    if not names:
        raise Invalid("is empty: list event names or use *")
    return frozenset(names)


DELIVERIES = ("direct", "queue")


def delivery(text: str) -> str:
    if text.lower() not in DELIVERIES:
        raise Invalid(f"must be one of {', '.join(DELIVERIES)}")
    return text.lower()


def pubsub_name(kind: str) -> Callable[[str], str | None]:
    """A Pub/Sub topic or subscription: its full name, or a short one completed at load time."""

    def parse(text: str) -> str | None:
        if not text:
            return None
        short = r"[A-Za-z][\w.~+%-]{2,254}"
        if not (re.fullmatch(short, text) or re.fullmatch(rf"projects/[^/]+/{kind}/{short}", text)):
            raise Invalid(f"must be projects/P/{kind}/NAME or a short NAME (3-255 letters, digits, -_.~+%)")
        return text

    return parse


def destinations(text: str) -> tuple[dest.Destination, ...]:
    """META_DESTINATIONS (capi.destinations); () when unset: META_PIXEL_ID's one destination."""
    try:
        return dest.parse(text, forward_events)
    except dest.Invalid as exc:
        raise Invalid(str(exc)) from None


@dataclass(frozen=True)
class Setting:
    env: str
    attr: str
    default: str  # as it would be written in the environment; "" is unset
    parse: Callable[[str], Any]
    help: str  # docs/configuration.md's "meaning" column, word for word
    secret: bool = False  # never in repr, never echoed in an error
    readme_default: str | None = None  # docs/configuration.md's words when the default is not a literal
    empty_is_value: bool = False  # set but empty means "" (off), not the default

    def readme_cell(self) -> str:
        if self.readme_default is not None:
            return self.readme_default
        return f"`{self.default}`" if self.default else ""


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "META_PIXEL_ID",
        "pixel_id",
        "",
        pixel_id,
        "the pixel / dataset id (one destination, named `default`)",
        readme_default="(required unless `META_DESTINATIONS`)",
    ),
    Setting(
        "META_DESTINATIONS",
        "destinations",
        "",
        destinations,
        "several pixels: a JSON array of destinations, each with its own token (see [Several pixels](#several-pixels));"
        " instead of `META_PIXEL_ID` and the `META_ACCESS_TOKEN*` / `META_APP_SECRET*` variables",
        secret=True,  # may hold literal tokens (local runs): never echoed in an error
    ),
    Setting(
        "META_ACCESS_TOKEN_SECRET",
        "access_token_secret",
        "",
        optional,
        "Secret Manager secret: `projects/P/secrets/S/versions/V`, or a short name `S` (project from"
        " `GOOGLE_CLOUD_PROJECT`, version `latest`)",
    ),
    Setting(
        "META_ACCESS_TOKEN",
        "access_token",
        "",
        optional,
        "a literal token, for local runs only; when both are set, the secret wins (logged once at start-up)",
        secret=True,
    ),
    Setting(
        "META_APP_SECRET_SECRET",
        "app_secret_secret",
        "",
        optional,
        "optional: the app secret in Secret Manager, to send `appsecret_proof`",
    ),
    Setting("META_APP_SECRET", "app_secret", "", optional, "the same as a literal, for local runs", secret=True),
    Setting("META_API_VERSION", "api_version", "v26.0", api_version, "Graph API version"),
    Setting(
        "META_API_BASE_URL",
        "api_base_url",
        "https://graph.facebook.com",
        base_url,
        "for a proxy, a gateway or tests",
    ),
    Setting(
        "META_TEST_EVENT_CODE",
        "test_event_code",
        "",
        optional,
        "sends every event as a test event (Meta does not drop test events: they count for targeting and"
        " measurement; a WARNING at start-up says so)",
    ),
    Setting(
        "LIMITED_DATA_USE",
        "limited_data_use",
        "off",
        limited_data_use,
        "`geo`: every event is sent with Meta's Limited Data Use, Meta geolocating the user"
        ' (`data_processing_options` `["LDU"]`, country and state `0`); an event asks for it itself with'
        " `restricted_data_processing: true` or its own `data_processing_options`",
    ),
    Setting(
        "META_TIMEOUT_SECONDS",
        "timeout_seconds",
        "5",
        number(minimum=0.01),
        "read timeout of one Graph API call",
    ),
    Setting(
        "META_RETRY_BUDGET_SECONDS",
        "retry_budget_seconds",
        "10",
        number(),
        "all attempts and backoff of one delivery fit in this",
    ),
    Setting(
        "META_MAX_ATTEMPTS",
        "max_attempts",
        "4",
        number(minimum=1, whole=True),
        "tries per delivery (the first and 3 retries)",
    ),
    Setting(
        "FORWARD_EVENTS",
        "forward_events",
        "",
        forward_events,
        "comma list of names, each matched against the incoming and the Meta name; `*` for all",
        readme_default="the mapped events except `page_view`",
    ),
    Setting(
        "EVENT_NAME_MAP",
        "event_name_map",
        "",
        event_map,
        "JSON object extending or overriding the GA4 → Meta map",
    ),
    Setting(
        "PROFILE_COLLECTION",
        "profile_collection",
        "users",
        text,
        "Firestore collection of user profiles; empty turns enrichment off",
        empty_is_value=True,
    ),
    Setting("FIRESTORE_DATABASE", "firestore_database", "(default)", text, "Firestore database id"),
    Setting(
        "FIRESTORE_TIMEOUT_SECONDS",
        "firestore_timeout_seconds",
        "2",
        number(minimum=0.05),
        "the profile lookup's whole budget; past it events go out unenriched",
    ),
    Setting(
        "DEFAULT_COUNTRY",
        "default_country",
        "",
        country,
        "alpha-2 region assumed when neither event nor profile gives a country: completes national phone"
        " numbers, picks the postal-code rule; never sent as the user's `country`",
    ),
    Setting(
        "INGEST_API_KEY_SECRET",
        "ingest_api_key_secret",
        "",
        optional,
        "Secret Manager secret(s) holding the caller key(s); several secrets comma-separated, or several"
        " keys in one secret (comma or newline)",
    ),
    Setting(
        "INGEST_API_KEY",
        "ingest_api_keys",
        "",
        split_keys,
        "caller key(s) as a literal, comma-separated (local runs)",
        secret=True,
    ),
    Setting(
        "INGEST_KEYS",
        "ingest_keys",
        "",
        _bound_keys,
        'ingest keys bound to destinations: a JSON array of `{"secret": name, "destinations": [names]}`'
        " (`key` instead of `secret` for local runs); a request with such a key sends only to those",
        secret=True,
    ),
    Setting(
        "ALLOW_UNAUTHENTICATED",
        "allow_unauthenticated",
        "false",
        boolean,
        "with no ingest key, every request is refused unless this is `true`",
    ),
    Setting(
        "CONSENT_REQUIRED",
        "consent_required",
        "false",
        boolean,
        "skip events that carry no consent signal at all",
    ),
    Setting(
        "DEADLETTER_COLLECTION",
        "deadletter_collection",
        "capi_deadletter",
        text,
        "Firestore collection for events that could not be delivered",
    ),
    Setting(
        "REPLAY_MAX_ATTEMPTS",
        "replay_max_attempts",
        "20",
        number(minimum=1, whole=True),
        "a dead letter is dropped (and logged) after this many failed replays",
    ),
    Setting(
        "IDEMPOTENCY_COLLECTION",
        "idempotency_collection",
        "",
        optional,
        "Firestore collection remembering delivered or stored (event_name, event_id) pairs for 48 h",
        readme_default="(off)",
    ),
    Setting(
        "BROWSER_COLLECTION",
        "browser_collection",
        "",
        optional,
        "Firestore collection of the hashed keys remembered per browser (`fbp`) for enhanced event"
        " coverage, only with ad_user_data consent; its TTL field is `expire_at`",
        readme_default="(off)",
    ),
    Setting(
        "BROWSER_TTL_DAYS",
        "browser_ttl_days",
        "90",
        number(minimum=1, maximum=400, whole=True),
        "days a browser's remembered keys live after its last new key (the `expire_at` TTL field)",
    ),
    Setting(
        "ORDER_DEDUP_HOURS",
        "order_dedup_hours",
        "48",
        number(minimum=1, maximum=672),
        "with `IDEMPOTENCY_COLLECTION`: a second Purchase for the same order (`transaction_id`) and pixel"
        " within this many hours is skipped as `duplicate_order`, whatever its `event_id` (at most 672: 28 days)",
    ),
    Setting(
        "SHOPIFY_SIGNING_KEY_SECRET",
        "shopify_signing_key_secret",
        "",
        optional,
        "Secret Manager secret holding the key Shopify signs webhooks with (`POST /webhooks/shopify`)",
    ),
    Setting(
        "SHOPIFY_SIGNING_KEY",
        "shopify_signing_keys",
        "",
        split_keys,
        "the same as a literal, comma-separated for rotation (local runs)",
        secret=True,
    ),
    Setting(
        "WOOCOMMERCE_SIGNING_KEY_SECRET",
        "woocommerce_signing_key_secret",
        "",
        optional,
        "Secret Manager secret holding the webhook secret WooCommerce signs with (`POST /webhooks/woocommerce`)",
    ),
    Setting(
        "WOOCOMMERCE_SIGNING_KEY",
        "woocommerce_signing_keys",
        "",
        split_keys,
        "the same as a literal, comma-separated for rotation (local runs)",
        secret=True,
    ),
    Setting(
        "SECRET_CACHE_SECONDS",
        "secret_cache_seconds",
        "300",
        number(),
        "how long a secret read from Secret Manager is kept in memory",
    ),
    Setting(
        "EMQ_ALERT_BELOW",
        "emq_alert_below",
        "6.0",
        number(minimum=0, maximum=10),
        "`capi_quality` logs a WARNING for an event name whose Event Match Quality is below this",
    ),
    Setting(
        "DEDUP_ALERT_BELOW",
        "dedup_alert_below",
        "50",
        number(minimum=0, maximum=100),
        "`capi_quality` logs a WARNING for an event name whose browser events Meta deduplicated against"
        " the server's are below this percentage",
    ),
    Setting(
        "DRY_RUN",
        "dry_run",
        "false",
        boolean,
        "build the payload but send nothing; the answer and the log give counts, not the payload"
        " (`POST /validate` shows it)",
    ),
    Setting(
        "DELIVERY",
        "delivery",
        "direct",
        delivery,
        "`direct`: `/events` sends to Meta and answers with Meta's result; `queue`: `/events` publishes the"
        " hashed events to `PUBSUB_TOPIC` and answers `202`, `capi_deliver` sends them in batches (docs/queue.md)",
    ),
    Setting(
        "PUBSUB_TOPIC",
        "pubsub_topic",
        "",
        pubsub_name("topics"),
        "with `DELIVERY=queue`: the topic `/events` publishes to, `projects/P/topics/T` or a short name `T`"
        " (project from `GOOGLE_CLOUD_PROJECT`)",
    ),
    Setting(
        "BATCH_WINDOW_MS",
        "batch_window_ms",
        "500",
        number(minimum=0, maximum=10_000, whole=True),
        "`capi_deliver` gathers the messages that arrive within this window into one Graph call per pixel"
        " (at most 1000 events)",
    ),
    Setting(
        "PUBSUB_DEADLETTER_SUBSCRIPTION",
        "pubsub_deadletter_subscription",
        "",
        pubsub_name("subscriptions"),
        "with `DELIVERY=queue`: the dead-letter topic's subscription that `capi_replay` drains,"
        " `projects/P/subscriptions/S` or a short name",
    ),
    Setting(
        "THREADS",
        "threads",
        "",
        threads,
        "concurrent requests per instance, read by functions-framework's gunicorn too; capi sizes its"
        " Graph API connection pool to it (at least 16)",
        readme_default="4 per CPU",
    ),
    Setting("LOG_LEVEL", "log_level", "INFO", log_level, "`DEBUG`, `INFO`, `WARNING`, `ERROR`"),
    Setting(
        "GOOGLE_CLOUD_PROJECT",
        "project",
        "",
        optional,
        "the project of short secret names and of Firestore; also names the trace in logs",
    ),
)

# Every environment variable the code reads. tests/test_terraform.py checks that the
# Terraform module sets each one or leaves it to its default on purpose.
ENV_VARS: tuple[str, ...] = tuple(s.env for s in SETTINGS)


def _should_forward(self: Any, incoming: str, meta_name: str) -> bool:
    if self.forward_events is None:
        return True
    return incoming in self.forward_events or meta_name in self.forward_events


def _field(setting: Setting) -> tuple[Any, ...]:
    try:
        default = setting.parse(setting.default)
    except Invalid:  # required: no default
        return (setting.attr, Any)
    return (setting.attr, Any, field(default_factory=lambda: default, repr=not setting.secret))


# One attribute per setting (required ones first, as a dataclass needs), its default parsed
# from the declaration; secrets stay out of repr. `forward_events` is None for "*" (every
# event), otherwise names matched against the input and the Meta name; `default_country` is
# lowercase alpha-2.
Config = make_dataclass(
    "Config",
    sorted((_field(s) for s in SETTINGS), key=len),
    frozen=True,
    namespace={"should_forward": _should_forward, "__module__": __name__},
)


def _read(setting: Setting, env: Mapping[str, str]) -> Any:
    raw = env.get(setting.env)
    value = raw.strip() if raw is not None else None
    if value is None or (not value and not setting.empty_is_value):
        value = setting.default
    try:
        return setting.parse(value)
    except Invalid as exc:
        shown = "" if setting.secret or not value else f", got {value!r}"
        raise ConfigError(f"{setting.env} {exc}{shown}", field=setting.env) from None


def load_config(env: Mapping[str, str]) -> Config:
    """Build and validate the configuration from environment variables.

    Raises:
        ConfigError: one line naming the variable that is missing or wrong.
    """
    values = {s.attr: _read(s, env) for s in SETTINGS}
    # The one default that depends on another setting: the events EVENT_NAME_MAP maps.
    if not env.get("FORWARD_EVENTS", "").strip():
        values["forward_events"] = mapped_conversions(values["event_name_map"])
    _check_destinations(env, values)
    # META_PIXEL_ID alone is one destination, `default`; a destination without its own
    # forward_events takes FORWARD_EVENTS.
    values["destinations"] = tuple(
        d if not isinstance(d.forward_events, dest.Inherit) else replace(d, forward_events=values["forward_events"])
        for d in values["destinations"] or (_default_destination(values),)
    )
    config = Config(**values)
    _check_together(config)
    return config


def _default_destination(values: Mapping[str, Any]) -> dest.Destination:
    return dest.Destination(
        name=dest.DEFAULT,
        pixel_id=values["pixel_id"],
        access_token_secret=values["access_token_secret"],
        access_token=values["access_token"],
        app_secret_secret=values["app_secret_secret"],
        app_secret=values["app_secret"],
        implicit=True,
    )


def _check_destinations(env: Mapping[str, str], values: Mapping[str, Any]) -> None:
    """Exactly one of META_PIXEL_ID and META_DESTINATIONS; the single-pixel token variables
    only with META_PIXEL_ID (each destination names its own)."""
    if values["destinations"]:
        single = [s.env for s in SETTINGS if s.attr in _SINGLE_PIXEL and env.get(s.env, "").strip()]
        if single:
            raise ConfigError(
                f"{single[0]} cannot be used with META_DESTINATIONS: give each destination its pixel_id and token",
                field=single[0],
            )
    elif not values["pixel_id"]:
        raise ConfigError(
            "META_PIXEL_ID is required (your pixel / dataset id), or META_DESTINATIONS for several",
            field="META_PIXEL_ID",
        )


_SINGLE_PIXEL = ("pixel_id", "access_token_secret", "access_token", "app_secret_secret", "app_secret")


def _check_together(config: Config) -> None:
    """The checks that involve more than one setting."""
    implicit = config.destinations[0].implicit
    if implicit and not config.dry_run and not (config.access_token or config.access_token_secret):
        raise ConfigError(
            "META_ACCESS_TOKEN_SECRET is required (or META_ACCESS_TOKEN for local runs, or DRY_RUN=true)",
            field="META_ACCESS_TOKEN_SECRET",
        )
    if config.delivery == "queue" and not config.pubsub_topic:
        raise ConfigError("PUBSUB_TOPIC is required with DELIVERY=queue", field="PUBSUB_TOPIC")
    for name, value in (
        ("PUBSUB_TOPIC", config.pubsub_topic),
        ("PUBSUB_DEADLETTER_SUBSCRIPTION", config.pubsub_deadletter_subscription),
    ):
        if value and "/" not in value and not config.project:
            raise ConfigError(f"{name} is a short name, so GOOGLE_CLOUD_PROJECT must be set", field=name)
    secrets = [
        ("META_ACCESS_TOKEN_SECRET", config.access_token_secret),
        ("META_APP_SECRET_SECRET", config.app_secret_secret),
        *(
            (f"META_DESTINATIONS {d.name!r} {key}", getattr(d, key))
            for d in config.destinations
            if not d.implicit
            for key in ("access_token_secret", "app_secret_secret")
        ),
        # Several ingest-key secrets may be listed, comma-separated, for rotation.
        *(("INGEST_API_KEY_SECRET", part) for part in split_keys(config.ingest_api_key_secret or "")),
        *(("INGEST_KEYS", bound.secret) for bound in config.ingest_keys),
        ("SHOPIFY_SIGNING_KEY_SECRET", config.shopify_signing_key_secret),
        ("WOOCOMMERCE_SIGNING_KEY_SECRET", config.woocommerce_signing_key_secret),
    ]
    names = {d.name for d in config.destinations}
    for bound in config.ingest_keys:
        unknown = sorted(bound.destinations - names)
        if unknown:
            raise ConfigError(
                f"INGEST_KEYS names destination(s) {', '.join(map(repr, unknown[:5]))} that are not configured;"
                f" known: {', '.join(sorted(names))}",
                field="INGEST_KEYS",
            )
    for name, value in secrets:
        if value and "/" not in value and not config.project:
            raise ConfigError(
                f"{name} is a short secret name, so GOOGLE_CLOUD_PROJECT must be set"
                " (or give projects/P/secrets/S/versions/V)",
                field=name.split()[0],
            )
        if value and "/" in value and not re.fullmatch(r"projects/[^/]+/secrets/[^/]+(/versions/[^/]+)?", value):
            raise ConfigError(f"{name} must be projects/P/secrets/S/versions/V or a short name", field=name.split()[0])
