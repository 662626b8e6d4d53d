"""Internal events (the GA4 / sGTM event model, Meta's names accepted too) -> Meta server events.

Every input dialect is read into this one form by `capi.inputs`; nothing here knows which
dialect an event came from. Pure: no I/O. Two steps, because the Firestore profiles of a whole
request are read in one batch between them:

1. `prepare(raw, index, ...)` validates one event and maps everything but the customer
   information, which it only collects (`Draft`), or returns a `Skip` (FORWARD_EVENTS, consent
   by `capi.consent`) or a `Rejection` listing every problem of the event.
2. `finish(draft, profile, ...)` merges the profile, normalizes and hashes `user_data`, and
   returns the Meta event, or a `Rejection` when no customer information is left.

One bad event never affects another: every problem is reported for its own index. Every bound
(docs/delivery.md#bounds) is checked here, before a value reaches a cache, the Graph body or the answer.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pycountry

from capi import clientip, consent
from capi.config import Config
from capi.normalize import (
    HASHED_KEYS,
    Dropped,
    FieldContext,
    hash_value,
    is_sha256,
    normalize_country,
    normalize_ip,
)

MAX_AGE_SECONDS = 7 * 24 * 3600  # Meta rejects the whole request for an older event
MAX_FUTURE_SECONDS = 60

# Bounds (docs/delivery.md#bounds). Each keeps one event's work linear and small, and keeps every value
# that reaches the Graph body or the answer encodable (orjson refuses ints beyond 64 bits and
# nesting deeper than 254).
MAX_MONEY = 1e15  # value, prices, predicted_ltv: |x| below this (Meta's own accounts stop far below)
MAX_COUNT = 2**31 - 1  # quantities (1..), num_items (0..), data_processing_options_* (0..)
MAX_DEPTH = 16  # nesting of passed-through objects: custom_data, app_data, original_event_data
MAX_VALUES_PER_KEY = 16  # values of one user_data key taken from an event (all its input names)
# Characters of one customer value, by Meta key, before normalization. Every bound is at least 64
# so an already hashed value (64 hex digits) always fits.
MAX_CHARS: Mapping[str, int] = {
    "em": 254,  # RFC 5321: a forward path is at most 256 octets with its angle brackets
    "ph": 64,  # E.164 has at most 15 digits; room for spaces, punctuation and an extension
    "fn": 256, "ln": 256, "ct": 256, "st": 256,  # longer than any real name or place
    "zp": 64, "country": 64, "db": 64, "ge": 64,  # short by nature; 64 lets a digest through
    "external_id": 512,  # an id of the caller's own, as long as event_id may be
}  # fmt: skip
MAX_PLAIN_CHARS: Mapping[str, int] = {
    "client_ip_address": 1024,  # X-Forwarded-For lists; the first address is taken
    "client_user_agent": 2048,  # real user agents stay below 512
    "fbc": 512,
    "fbp": 512,
}
MAX_ID_CHARS = 512  # event_id, order ids, and the never-hashed Meta ids
MAX_MICROS_DIGITS = 19  # timestamp_micros: int64 microseconds (a longer string is never made an int)
# The answer's notes (docs/delivery.md#bounds): an event names at most MAX_IGNORED_NAMED keys it does
# not use (each cut to MAX_NAME_CHARS) and counts the rest; it carries at most
# MAX_NOTES_PER_EVENT notes, the rest counted in one more. A 1 MiB body can then never make an
# answer many times its size (issue 19 findings 3 and 4).
MAX_IGNORED_NAMED = 20
MAX_NAME_CHARS = 100
MAX_NOTES_PER_EVENT = 20

# Meta's values (docs/meta-capi.md §6, §11). Anything else is dropped with a message: Meta
# refuses the request for an unknown one.
DELIVERY_CATEGORIES = frozenset({"in_store", "curbside", "home_delivery"})
CUSTOMER_SEGMENTS = frozenset(
    {"new_customer_to_business", "new_customer_to_business_line", "new_customer_to_product_area",
     "new_customer_to_medium", "existing_customer_to_business", "existing_customer_to_business_line",
     "existing_customer_to_product_area", "existing_customer_to_medium", "customer_in_loyalty_program"}
)  # fmt: skip
# Limited Data Use (docs/meta-capi.md §11): country 1 (USA) or 0 (Meta geolocates); state 0
# (geolocate) or one of the US states with a privacy law, 1000 (California) to 1013.
LDU_COUNTRIES = frozenset({0, 1})
LDU_STATES = frozenset({0, *range(1000, 1014)})
# Customer information that Meta's best practices call invalid when it is all an event has
# (docs/meta-capi.md §11): an event with two keys or more, all inside one of these, is refused.
INVALID_COMBINATIONS: tuple[tuple[frozenset[str], str], ...] = tuple(
    (frozenset(keys), "+".join(keys))
    for keys in (
        ("ct", "country", "st", "zp", "ge", "client_user_agent"),
        ("db", "client_user_agent"),
        ("fn", "ge"),
        ("ln", "ge"),
    )
)
_COMBINATION_KEYS = frozenset().union(*(keys for keys, _ in INVALID_COMBINATIONS))
# Keys of the event (any dialect) that belong in custom_data, where Meta's example puts them.
_CUSTOM_DATA_KEYS = ("net_revenue", "predicted_ltv", "customer_segmentation", "delivery_category")
_CUSTOM_DATA_SET = frozenset(_CUSTOM_DATA_KEYS)

ACTION_SOURCES = frozenset(
    {"email", "website", "app", "phone_call", "chat", "physical_store",
     "system_generated", "business_messaging", "other"}
)  # fmt: skip

# Input names for each hashed Meta key: (where, name). "user" = user_data, "address" =
# user_data.address (a dict or a list of dicts), "top" = the event itself.
_USER_SOURCES: dict[str, tuple[tuple[str, str], ...]] = {
    "em": (("user", "email_address"), ("user", "em"), ("user", "email"), ("user", "sha256_email_address")),
    "ph": (("user", "phone_number"), ("user", "ph"), ("user", "phone"), ("user", "sha256_phone_number")),
    "fn": (("address", "first_name"), ("user", "fn"), ("user", "first_name"), ("address", "sha256_first_name"),
           ("user", "sha256_first_name")),
    "ln": (("address", "last_name"), ("user", "ln"), ("user", "last_name"), ("address", "sha256_last_name"),
           ("user", "sha256_last_name")),
    "ct": (("address", "city"), ("user", "ct"), ("user", "city")),
    "st": (("address", "region"), ("user", "st"), ("user", "state"), ("user", "region")),
    "zp": (("address", "postal_code"), ("user", "zp"), ("user", "zip"), ("user", "postal_code")),
    "country": (("address", "country"), ("user", "country")),
    "db": (("user", "db"), ("user", "date_of_birth")),
    "ge": (("user", "ge"), ("user", "gender")),
    "external_id": (("top", "user_id"), ("top", "external_id"), ("user", "external_id")),
}  # fmt: skip


# Where a customer value came from: (the Meta key it feeds, the path messages name it by).
# A plain tuple, not a NamedTuple: the hot loops unpack it, and CPython unpacks an exact tuple
# about three times faster than a subclass (15 ns against 45 here).
Source = tuple[str, str]
Input = tuple[Source, str]  # one customer value to hash

_PATH_PREFIX = {"top": "", "user": "user_data.", "address": "user_data.address."}


def _names(where: str) -> dict[str, Source]:
    """Input name -> its Source, for one place in the event."""
    return {
        name: (key, _PATH_PREFIX[where] + name)
        for key, sources in _USER_SOURCES.items()
        for place, name in sources
        if place == where
    }


_TOP_NAMES = _names("top")
_USER_NAMES = _names("user")
_ADDRESS_NAMES = _names("address")
# GA4 hashes phones with their leading '+': Meta's digest of the same number differs.
_GA4_HASHED_PHONE = _USER_NAMES["sha256_phone_number"]

# Never hashed: (meta key, input names in order of preference, at the top or in user_data).
_PLAIN_SOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("client_ip_address", ("ip_override", "client_ip_address")),
    ("client_user_agent", ("user_agent", "client_user_agent")),
    ("fbc", ("x-fb-ck-fbc", "fbc")),
    ("fbp", ("x-fb-ck-fbp", "fbp")),
)

# Meta's never-hashed ids, read from user_data and passed through as they are.
PASSTHROUGH_USER_KEYS: tuple[str, ...] = (
    "fb_login_id", "subscription_id", "lead_id", "anon_id", "madid", "ctwa_clid", "page_id",
    "page_scoped_user_id", "ig_account_id", "ig_sid",
)  # fmt: skip
# Objects of Meta's server event passed through (checked for depth and numbers only).
PASSTHROUGH_OBJECTS: tuple[str, ...] = ("app_data", "original_event_data")

# Every key of the internal event that capi reads; any other is named in the event's
# "ignored" message. `destinations` is read by delivery; the consent signals by capi.consent.
USED_KEYS = frozenset(
    {"event_name", "event_id", "event_time", "action_source", "page_location", "event_source_url",
     "page_referrer", "referrer_url", "user_data", "value", "currency", "transaction_id", "items",
     "search_term", "ecommerce", "custom_data", "opt_out", "data_processing_options",
     "data_processing_options_country", "data_processing_options_state", "user_id", "external_id",
     "messaging_channel", "destinations", "test_event_code", "restricted_data_processing",
     "timestamp_micros", clientip.COOKIE_KEY, *_CUSTOM_DATA_KEYS, *PASSTHROUGH_OBJECTS, *consent.SIGNALS}
    | {name for _, names in _PLAIN_SOURCES for name in names}
)  # fmt: skip
_USED_USER_KEYS = frozenset(
    {*_USER_NAMES, "address", *PASSTHROUGH_USER_KEYS} | {name for _, names in _PLAIN_SOURCES for name in names}
)
_USED_ECOMMERCE_KEYS = frozenset({"value", "currency", "transaction_id", "items"})
_USED_ITEM_KEYS = frozenset({"item_id", "id", "item_name", "quantity", "price", "item_price", "delivery_category"})
_PASSTHROUGH_SET = frozenset(PASSTHROUGH_USER_KEYS)
# What capi reads in user_data and in each of its addresses (capi.inputs filters request-level
# user_data with them).
USER_DATA_KEYS = _USED_USER_KEYS
ADDRESS_KEYS = frozenset(_ADDRESS_NAMES)


def _cut(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else f"{name[:MAX_NAME_CHARS]}…"


def ignored_message(names: Sequence[str], message: str, index: int | None = None) -> dict[str, Any]:
    """The note naming input keys capi does not use: the first MAX_IGNORED_NAMED of them, each
    cut to MAX_NAME_CHARS, and `ignored_count` (all of them) when some are not named."""
    note: dict[str, Any] = {} if index is None else {"index": index}
    note["ignored"] = [_cut(name) for name in names[:MAX_IGNORED_NAMED]]
    note["message"] = message
    if len(names) > MAX_IGNORED_NAMED:
        note["ignored_count"] = len(names)
    return note


# fbc / fbp: fb.{subdomain index}.{creation ms}.{click id or random}, and param-builder's
# optional fifth segment (docs/meta-capi.md §9).
_FB_COOKIE = re.compile(r"fb\.[0-9]\.[0-9]{10,13}\.[^\s.]+(\.[^\s.]+)?")

# Firestore profile field -> Meta key (docs/api.md#firestore-user-profiles).
PROFILE_FIELDS: Mapping[str, str] = {
    "email": "em", "phone": "ph", "first_name": "fn", "last_name": "ln", "city": "ct",
    "state": "st", "zip": "zp", "country": "country", "date_of_birth": "db", "gender": "ge",
    "external_id": "external_id",
}  # fmt: skip
_PROFILE_NAME = {v: k for k, v in PROFILE_FIELDS.items()}


@dataclass(frozen=True)
class Skip:
    index: int
    event_id: str | None
    reason: str  # "not in FORWARD_EVENTS", "consent", "duplicate"
    consent_signal: str | None = None  # with reason "consent": the signal that said so (capi.consent.SIGNALS)
    event_name: str | None = None  # the Meta name, else the input name (for logs; not in the answer)

    def to_json(self) -> dict[str, Any]:
        body = {"index": self.index, "event_id": self.event_id, "reason": self.reason}
        if self.consent_signal is not None:
            body["consent_signal"] = self.consent_signal
        return body


@dataclass(frozen=True)
class Rejection:
    index: int
    event_id: str | None
    field: str  # the first problem's field and message, kept for callers reading one
    message: str
    problems: tuple[tuple[str, str], ...] = ()  # every (field, message), the first included
    event_name: str | None = None  # the Meta name, else the input name (for logs; not in the answer)

    def to_json(self) -> dict[str, Any]:
        problems = self.problems or ((self.field, self.message),)
        return {
            "index": self.index,
            "event_id": self.event_id,
            "field": self.field,
            "message": self.message,
            "problems": [{"field": f, "message": m} for f, m in problems],
        }


@dataclass(slots=True)
class Draft:
    """A valid event whose customer information is collected but not yet hashed."""

    index: int
    event: dict[str, Any]  # the Meta server event; its user_data is filled by finish()
    given_id: str | None  # the caller's event_id; None when capi minted one
    hashed_inputs: Sequence[Input] = ()  # the customer values to hash, in input order
    plain: dict[str, Any] = field(default_factory=dict)  # client_ip_address, ..., and the never-hashed ids
    user_id: str | None = None
    notes: list[dict[str, Any]] | None = None  # made by the first note: most events have none
    dialect: str = "ga4"  # set by the caller (capi.inputs); prepare does not know it
    consent_signal: str | None = None  # the signal that allowed the event, when there was one
    omitted: dict[str, Any] | None = None  # the note counting the notes past MAX_NOTES_PER_EVENT

    def note(self, field_name: str, message: str) -> None:
        notes = self.notes
        if notes is None:
            notes = self.notes = []
        if self.omitted is not None:
            self.omitted["omitted"] += 1
        elif len(notes) < MAX_NOTES_PER_EVENT:
            notes.append({"index": self.index, "field": field_name, "message": message})
        else:
            self.omitted = {"index": self.index, "message": "more notes on this event, not shown", "omitted": 1}
            notes.append(self.omitted)


@dataclass(slots=True)
class Finished:
    """A Meta server event ready to send, and which of its match keys the profile gave."""

    index: int
    event: dict[str, Any]
    from_profile: tuple[str, ...]
    dialect: str = "ga4"  # the input dialect it was read from (capi.inputs)

    @property
    def from_event(self) -> list[str]:
        if not self.from_profile:
            return list(self.event["user_data"])
        return [key for key in self.event["user_data"] if key not in self.from_profile]


@dataclass(frozen=True)
class Unreadable:
    """An event capi.inputs could not hand on (a string in it holds an unpaired surrogate):
    prepare rejects it with this field and message."""

    field: str
    message: str
    event_id: str | None = None


class _Invalid(Exception):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


def _scalar_text(value: Any) -> str | None:
    """A string or number as text; anything else is not a usable scalar."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return str(int(value))
    return None


def _event_id(text: str | None) -> str:
    """The caller's event_id (as text, or None when it is not a string or number), checked."""
    if text is None or not text.strip():
        raise _Invalid("event_id", "must be a non-empty string")
    text = text.strip()
    if len(text) > 512:
        raise _Invalid("event_id", "longer than 512 characters")
    return text


def parse_event_time(value: Any, now: float) -> int:
    """Unix seconds or ISO 8601 -> unix seconds inside Meta's window (7 days back, 1 minute ahead)."""
    if type(value) is int and now - MAX_AGE_SECONDS <= value <= now + MAX_FUTURE_SECONDS:
        return value  # the common case
    if value is None or value == "":
        return int(now)
    if isinstance(value, bool):
        raise _Invalid("event_time", "must be unix seconds or an ISO 8601 date-time")
    numeric = True  # a number can be milliseconds by mistake; a date-time cannot
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _Invalid("event_time", "must be a finite number")
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
            if not math.isfinite(seconds):
                raise ValueError
        except ValueError:
            numeric = False
            try:
                parsed = datetime.fromisoformat(text.replace("z", "Z"))
            except ValueError:
                raise _Invalid("event_time", "must be unix seconds or an ISO 8601 date-time") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
    else:
        raise _Invalid("event_time", "must be unix seconds or an ISO 8601 date-time")
    if numeric and seconds > 1e11:
        raise _Invalid("event_time", "looks like milliseconds; send unix seconds")
    if seconds < now - MAX_AGE_SECONDS:
        raise _Invalid("event_time", "older than 7 days: Meta does not accept it")
    if seconds > now + MAX_FUTURE_SECONDS:
        raise _Invalid("event_time", "more than a minute in the future")
    return int(seconds)


def _from_micros(value: Any, now: float) -> int:
    """The Measurement Protocol's timestamp_micros -> unix seconds, checked as event_time is.
    A numeric string longer than an int64 is refused before int() sees it: int() of 4,301
    digits raises (Python's integer string limit), and one such event must not sink the rest."""
    if type(value) is int:
        micros = value
    elif (type(value) is float and value.is_integer() and abs(value) < 1e19) or (  # JSON may write 1.79e15
        isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= MAX_MICROS_DIGITS
    ):
        micros = int(value)
    else:
        raise _Invalid("timestamp_micros", "must be a whole number of microseconds since 1970")
    try:
        return parse_event_time(micros // 1_000_000, now)
    except _Invalid as exc:
        raise _Invalid("timestamp_micros", exc.message) from None


def _http_url(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or len(value) > 8192:
        raise _Invalid(name, "must be an http(s) URL")
    return value


def _fbclid(url: str | None) -> str | None:
    if not url or "fbclid=" not in url:
        return None
    try:
        query = urlsplit(url).query
    except ValueError:
        return None
    for key, value in parse_qsl(query, keep_blank_values=False):
        if key == "fbclid" and value:
            return value
    return None


def _number(value: Any, name: str) -> float | int:
    kind = type(value)
    if kind is int or (kind is float and math.isfinite(value)):  # the common case, first
        return value
    if isinstance(value, bool):
        raise _Invalid(name, "must be a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(name, "must be a finite number")
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Invalid(name, "must be a number") from None
        if not math.isfinite(number):
            raise _Invalid(name, "must be a finite number")
        return int(number) if number == int(number) and "." not in value else number
    raise _Invalid(name, "must be a number")


def _money(value: Any, name: str) -> float | int:
    """A value or price: a finite number below 1e15 either way (docs/delivery.md#bounds)."""
    kind = type(value)
    if (kind is float or kind is int) and -MAX_MONEY < value < MAX_MONEY:  # the common case (NaN fails it)
        return value
    number = _number(value, name)
    if not -MAX_MONEY < number < MAX_MONEY:
        raise _Invalid(name, "must be below 1e15 (and above -1e15)")
    return number


def _count(value: Any, name: str, minimum: int) -> int:
    """A whole number from `minimum` to 2**31 - 1 (docs/delivery.md#bounds)."""
    if type(value) is int and minimum <= value <= MAX_COUNT:  # the common case
        return value
    number = _number(value, name)
    if number != int(number) or not minimum <= number <= MAX_COUNT:
        raise _Invalid(name, f"must be a whole number from {minimum} to {MAX_COUNT}")
    return int(number)


def _currency(value: Any, name: str) -> str:
    # Only short strings reach the cache: it must never keep large or invalid input.
    code = _currency_code(value) if isinstance(value, str) and len(value) <= 8 else None
    if code is None:
        if not isinstance(value, str) or len(value.strip()) != 3 or not value.strip().isalpha():
            raise _Invalid(name, "must be an ISO 4217 currency code such as USD")
        raise _Invalid(name, f"{value.strip().upper()} is not an ISO 4217 currency code")
    return code


@lru_cache(maxsize=512)
def _currency_code(value: str) -> str | None:
    """' USD ' -> 'usd'; None when not an ISO 4217 code. Cached: a shop sends a handful of codes,
    and pycountry takes a lock and checks its lazy load on every call. Callers pass at most 8
    characters, so the cache stays small whatever arrives."""
    code = value.strip().upper()
    if len(code) != 3 or not code.isalpha() or pycountry.currencies.get(alpha_3=code) is None:
        return None
    return code.lower()


def _json_problem(value: Any, depth: int) -> tuple[str, str] | None:
    """(path below `value`, message) of the first thing JSON cannot carry to Meta, or None.

    Passed-through objects may nest MAX_DEPTH levels (`value` itself is level `depth`) and hold
    integers of at most 64 bits, which is what orjson encodes.
    """
    kind = type(value)
    if kind is int:
        return None if -(2**63) <= value < 2**64 else ("", "integer larger than 64 bits")
    if kind is dict:
        items: Iterable[tuple[Any, Any]] = value.items()
    elif kind is list:
        items = enumerate(value)
    else:
        return None
    if depth > MAX_DEPTH:
        return "", f"nested deeper than {MAX_DEPTH} levels"
    for key, item in items:
        if type(item) in (dict, list, int):
            found = _json_problem(item, depth + 1)
            if found is not None:
                return (f"[{key}]" if kind is list else f".{key}") + found[0], found[1]
    return None


def _passthrough(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(name, "must be an object")
    problem = _json_problem(value, 1)
    if problem is not None:
        raise _Invalid(name + problem[0], problem[1])
    return value


NO_CONTENT_ID = "no id: Meta refuses contents without an id (since April 2026); this item is not sent"
NO_ITEM_ID = "no item_id or item_name: Meta refuses contents without an id (since April 2026); this item is not sent"


def _contents(items: Any, name: str, ignored: list[str], notes: list[tuple[str, str]]) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        raise _Invalid(name, "must be a list of items")
    contents = []
    unused: dict[str, None] = {}
    for position, item in enumerate(items):
        try:
            content = _content(item)
        except _Invalid as exc:  # the item's own problem, named by its place in the list
            raise _Invalid(f"{name}[{position}]{exc.field}", exc.message) from None
        if content is None:
            notes.append((f"{name}[{position}]", NO_ITEM_ID))
            continue
        if "delivery_category" in content:
            _drop_bad_category(content, f"{name}[{position}].", notes)
        contents.append(content)
        if not _USED_ITEM_KEYS.issuperset(item):  # one C-level test: items rarely carry other keys
            unused.update((key, None) for key in item if key not in _USED_ITEM_KEYS)
    if unused:
        ignored.extend(f"{name}[].{key}" for key in unused)
    return contents


def _one_of(value: Any, allowed: frozenset[str]) -> bool:
    """`value` is one of Meta's closed list (a list or an object is never, and is not hashable)."""
    return isinstance(value, str) and value in allowed


def _drop_bad_category(data: dict[str, Any], prefix: str, notes: list[tuple[str, str]]) -> None:
    """Drop, with a message, a delivery_category Meta does not know (an item's or the event's)."""
    category = data.get("delivery_category")
    if category is not None and not _one_of(category, DELIVERY_CATEGORIES):
        del data["delivery_category"]
        shown = f"{category!r}"[:40]
        notes.append(
            (f"{prefix}delivery_category", f"{shown} is not one of {', '.join(sorted(DELIVERY_CATEGORIES))}; not sent")
        )


def _content(item: Any) -> dict[str, Any] | None:
    """One GA4 item -> one Meta content, None without an id. Errors name the field relative to the item."""
    if not isinstance(item, dict):
        raise _Invalid("", "must be an object")
    item_id = item.get("item_id")
    if type(item_id) is not str or not item_id:  # the common case is a plain item_id string
        item_id = _scalar_text(item_id) or _scalar_text(item.get("id")) or _scalar_text(item.get("item_name")) or ""
    item_id = item_id.strip()
    if not item_id:
        return None
    if len(item_id) > MAX_ID_CHARS:
        raise _Invalid(".item_id", f"longer than {MAX_ID_CHARS} characters")
    quantity = _count(item.get("quantity", 1), ".quantity", 1)
    content: dict[str, Any] = {"id": item_id, "quantity": quantity}
    price = item.get("price")
    if price is None:
        price = item.get("item_price")
    if price is not None:
        content["item_price"] = _money(price, ".price")
    category = item.get("delivery_category")
    if category is not None:
        content["delivery_category"] = category  # checked by _contents, which notes a bad one
    return content


def _explicit_custom_data(
    explicit: Any, problems: list[tuple[str, str]], notes: list[tuple[str, str]]
) -> dict[str, Any] | None:
    """Meta's own custom_data object: its numbers and Meta's closed lists checked, the rest passed through."""
    if not isinstance(explicit, dict):
        problems.append(("custom_data", "must be an object"))
        return None
    checked = dict(explicit)
    checks: tuple[tuple[str, Callable[[Any, str], Any]], ...] = (
        ("value", _money),
        ("currency", _currency),
        ("predicted_ltv", _money),
        ("net_revenue", _money),
        ("num_items", lambda v, n: _count(v, n, 0)),
    )
    for key, check in checks:
        if checked.get(key) is not None:
            try:
                checked[key] = check(checked[key], f"custom_data.{key}")
            except _Invalid as exc:
                problems.append((exc.field, exc.message))
    contents = checked.get("contents")
    if contents is not None:
        try:
            if not isinstance(contents, list) or not all(isinstance(c, dict) for c in contents):
                raise _Invalid("custom_data.contents", "must be a list of objects")
            kept = []
            for i, content in enumerate(contents):
                if not (_scalar_text(content.get("id")) or "").strip():
                    notes.append((f"custom_data.contents[{i}]", NO_CONTENT_ID))
                    continue
                kept.append(_meta_content(content, f"custom_data.contents[{i}]", notes))
            if kept:
                checked["contents"] = kept
            else:
                del checked["contents"]
        except _Invalid as exc:
            problems.append((exc.field, exc.message))
    _closed_lists(checked, "custom_data.", notes)
    try:
        return _passthrough(checked, "custom_data")
    except _Invalid as exc:
        problems.append((exc.field, exc.message))
        return None


def _meta_content(content: dict[str, Any], name: str, notes: list[tuple[str, str]]) -> dict[str, Any]:
    checked = dict(content)
    if checked.get("quantity") is not None:
        checked["quantity"] = _count(checked["quantity"], f"{name}.quantity", 1)
    if checked.get("item_price") is not None:
        checked["item_price"] = _money(checked["item_price"], f"{name}.item_price")
    _drop_bad_category(checked, f"{name}.", notes)
    return checked


def _closed_lists(data: dict[str, Any], prefix: str, notes: list[tuple[str, str]]) -> None:
    """Drop, with a message, a delivery_category or customer_segmentation Meta does not know."""
    _drop_bad_category(data, prefix, notes)
    segment = data.get("customer_segmentation")
    if segment is not None and not _one_of(segment, CUSTOMER_SEGMENTS):
        del data["customer_segmentation"]
        shown = f"{segment!r}"[:60]
        notes.append((f"{prefix}customer_segmentation", f"{shown} is not one of Meta's nine segments; not sent"))


def _pick(raw: Mapping[str, Any], ecommerce: Mapping[str, Any], key: str) -> tuple[Any, str]:
    """The event's value of `key`, else its ecommerce object's, and the name to report it by.
    A module function, not a closure: a closure is made per event and turns the event and its
    ecommerce object into cells that every read in _custom_data pays for."""
    value = raw.get(key)
    if value is not None or not ecommerce:
        return value, key
    return ecommerce.get(key), f"ecommerce.{key}"


def _custom_data(
    raw: Mapping[str, Any],
    meta_name: str,
    problems: list[tuple[str, str]],
    ignored: list[str],
    notes: list[tuple[str, str]],
) -> dict[str, Any] | None:
    ecommerce = raw.get("ecommerce")
    if ecommerce is not None and not isinstance(ecommerce, dict):
        problems.append(("ecommerce", "must be an object"))
        ecommerce = None
    ecommerce = ecommerce or {}
    if ecommerce:
        ignored.extend(f"ecommerce.{key}" for key in ecommerce if key not in _USED_ECOMMERCE_KEYS)

    data: dict[str, Any] = {}
    try:
        value, where = _pick(raw, ecommerce, "value")
        if value is not None:
            data["value"] = _money(value, where)
    except _Invalid as exc:
        problems.append((exc.field, exc.message))
    try:
        currency, where = _pick(raw, ecommerce, "currency")
        if currency is not None:
            data["currency"] = _currency(currency, where)
    except _Invalid as exc:
        problems.append((exc.field, exc.message))
    order, where = _pick(raw, ecommerce, "transaction_id")
    if order is not None:
        text = _scalar_text(order)
        if text is None or not text.strip():
            problems.append((where, "must be a string"))
        elif len(text.strip()) > MAX_ID_CHARS:
            problems.append((where, f"longer than {MAX_ID_CHARS} characters"))
        else:
            data["order_id"] = text.strip()
    items, where = _pick(raw, ecommerce, "items")
    if items is not None:
        try:
            contents = _contents(items, where, ignored, notes)
        except _Invalid as exc:
            problems.append((exc.field, exc.message))
            contents = []
        if contents:
            data["contents"] = contents
            ids: list[str] = []
            quantity = 0
            for content in contents:  # one plain loop, not two comprehensions (a frame each, every event)
                ids.append(content["id"])
                quantity += content["quantity"]
            data["content_ids"] = ids
            data["content_type"] = "product"
            data["num_items"] = min(quantity, MAX_COUNT)
    search = raw.get("search_term")
    if search is not None:
        if not isinstance(search, str):
            problems.append(("search_term", "must be a string"))
        else:
            data["search_string"] = search

    # Meta's newer fields given on the event itself, in any dialect (Meta's parameter table puts
    # customer_segmentation on the server event, its example in custom_data: capi sends it there).
    if not _CUSTOM_DATA_SET.isdisjoint(raw):  # one C-level test: most events carry none of them
        for key in _CUSTOM_DATA_KEYS:
            extra = raw.get(key)
            if extra is None:
                continue
            if key in ("net_revenue", "predicted_ltv"):
                try:
                    data[key] = _money(extra, key)
                except _Invalid as exc:
                    problems.append((exc.field, exc.message))
            else:
                data[key] = extra
        _closed_lists(data, "", notes)

    explicit = raw.get("custom_data")
    if explicit is not None:
        checked = _explicit_custom_data(explicit, problems, notes)
        if checked:
            data.update(checked)
    if "net_revenue" in data and "currency" not in data:
        notes.append(("net_revenue", "Meta reads net_revenue in the event's currency: send currency too"))

    if (
        meta_name == "Purchase"
        and ("value" not in data or "currency" not in data)  # the common Purchase has both: no scan
        and not any(p[0].endswith(("value", "currency")) for p in problems)
    ):
        for key in ("value", "currency"):
            if key not in data:
                problems.append((key, "Meta requires value and currency for Purchase"))
    return data or None


MAX_DPO_OPTIONS = 4  # Meta knows one option, LDU: a few leave room, a long list is a mistake


def _dpo(raw: Mapping[str, Any], event: dict[str, Any]) -> None:
    options = raw.get("data_processing_options")
    if options is None:
        return
    if (
        not isinstance(options, list)
        or len(options) > MAX_DPO_OPTIONS
        or not all(isinstance(o, str) and len(o) <= 16 for o in options)
    ):
        raise _Invalid("data_processing_options", 'must be a list such as ["LDU"] or [] (at most 4 short strings)')
    event["data_processing_options"] = options
    for key, allowed, words in (
        ("data_processing_options_country", LDU_COUNTRIES, "0 (Meta geolocates) or 1 (USA)"),
        ("data_processing_options_state", LDU_STATES, "0 (Meta geolocates) or a state code from 1000 to 1013"),
    ):
        if raw.get(key) is not None:
            value = raw[key]
            if type(value) is not int or value not in allowed:
                raise _Invalid(key, f"must be {words}")
            event[key] = value


def _restricted(value: Any) -> bool | None:
    """GA4's restricted_data_processing (true / false, or "1" / "0" as gtag sends it), else None."""
    if isinstance(value, bool):
        return value
    if value in ("1", "true") or (type(value) is int and value == 1):
        return True
    if value in ("0", "false") or (type(value) is int and value == 0):
        return False
    return None


def _limited_data_use(raw: Mapping[str, Any], event: dict[str, Any], setting: str) -> None:
    """Limited Data Use with Meta geolocating the user (docs/meta-capi.md §11), asked by the event
    (GA4's `restricted_data_processing`) or by LIMITED_DATA_USE=geo for every event.

    An event's own ["LDU"] keeps its country and state; LIMITED_DATA_USE=geo is the site's
    choice, so an event cannot turn it off (`[]` or `restricted_data_processing: false`).
    """
    options = event.get("data_processing_options")
    if options is not None and "LDU" in options:
        return
    restricted = None
    asked = raw.get("restricted_data_processing")
    if asked is not None:
        restricted = _restricted(asked)
        if restricted is None:
            raise _Invalid("restricted_data_processing", "must be true or false")
    if restricted or setting == "geo":
        event["data_processing_options"] = ["LDU"]
        event["data_processing_options_country"] = 0
        event["data_processing_options_state"] = 0


def _values(value: Any) -> Iterable[Any]:
    return value if isinstance(value, list) else (value,)


def _clean_inputs(found: list[tuple[Source, Any]], draft: Draft) -> list[Input]:
    """Values as strings (lists flattened, numbers as text), blanks and nulls left out, at most
    MAX_VALUES_PER_KEY values per Meta key (the excess said once per input name)."""
    out: list[Input] = []
    taken: dict[str, int] = {}
    for source, value in found:
        if value is None:
            continue
        key, path = source
        if source is _GA4_HASHED_PHONE:
            draft.note(path, "GA4 hashes phones with the leading '+', which Meta does not match; send phone_number too")
        dropped = 0
        unusable = False
        for item in _values(value):
            text = _scalar_text(item)
            if text is None:
                unusable = unusable or item is not None
            elif text.strip():
                if taken.get(key, 0) >= MAX_VALUES_PER_KEY:
                    dropped += 1
                    continue
                taken[key] = taken.get(key, 0) + 1
                out.append((source, text))
        if unusable:  # once per input name, however many values were not strings
            draft.note(path, "must be a string or a list of strings; ignored")
        if dropped:
            draft.note(path, f"{dropped} values over the limit of {MAX_VALUES_PER_KEY} per key; not sent")
    return out


def _passthrough_id(value: Any) -> str | int | None:
    """A never-hashed Meta id as Meta takes it (a string or an integer), or None."""
    if type(value) is int:
        return value if 0 <= value < 2**63 else None
    if isinstance(value, str) and value.strip() and len(value) <= MAX_ID_CHARS:
        return value.strip()
    return None


def _collect_user(raw: Mapping[str, Any], draft: Draft, ignored: list[str]) -> None:
    user = raw.get("user_data")
    if user is None:
        user = {}
    if not isinstance(user, dict):
        raise _Invalid("user_data", "must be an object")
    address = user.get("address")
    if type(address) is dict:  # the common case
        addresses: Sequence[dict[str, Any]] = (address,)
    else:
        addresses = [a for a in _values(address) if isinstance(a, dict)] if address is not None else []
        if len(addresses) > MAX_VALUES_PER_KEY:
            draft.note("user_data.address", f"more than {MAX_VALUES_PER_KEY} addresses; the rest not read")
            addresses = addresses[:MAX_VALUES_PER_KEY]
    if address is not None and not addresses:
        raise _Invalid("user_data.address", "must be an object or a list of objects")

    # Only the names present are visited: an event carries a handful of the many accepted names.
    # Plain loops, not comprehensions: in Python 3.11 each comprehension is a frame per event.
    found: list[tuple[Source, Any]] = []
    for name, source in _TOP_NAMES.items():
        if name in raw:
            found.append((source, raw[name]))
    for name, value in user.items():
        source = _USER_NAMES.get(name)
        if source is not None:
            found.append((source, value))
        elif name in _PASSTHROUGH_SET:
            if value is None:
                continue
            plain = _passthrough_id(value)
            if plain is None:
                draft.note(
                    f"user_data.{name}", f"must be a string or an integer (at most {MAX_ID_CHARS} characters); ignored"
                )
            else:
                draft.plain[name] = plain
        elif name not in _USED_USER_KEYS:
            ignored.append(f"user_data.{name}")
    unknown: set[str] | None = None  # a set: one event may carry thousands of unknown keys
    for entry in addresses:
        for name, value in entry.items():
            source = _ADDRESS_NAMES.get(name)
            if source is not None:
                found.append((source, value))
            else:
                if unknown is None:
                    unknown = set()
                if name not in unknown:
                    unknown.add(name)
                    ignored.append(f"user_data.address.{name}")
    for source, value in found:
        if type(value) is not str or not value or value.isspace() or source is _GA4_HASHED_PHONE:
            found = _clean_inputs(found, draft)  # not only plain strings: the slow path
            break
    draft.hashed_inputs = found

    for key, names in _PLAIN_SOURCES:
        for name in names:
            value = raw.get(name)
            if value is None and user:
                value = user.get(name)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                draft.note(name, "must be a string; ignored")
                continue
            if len(value) > MAX_PLAIN_CHARS[key]:
                draft.note(name, f"longer than {MAX_PLAIN_CHARS[key]} characters; ignored")
                continue
            if key == "client_ip_address":
                try:
                    value = normalize_ip(value)
                except Dropped as exc:
                    draft.note(name, f"{exc}; ignored")
                    continue
            elif key in ("fbc", "fbp") and not _FB_COOKIE.fullmatch(value.strip()):
                # Meta refuses the whole request for a malformed click id (error 2804001).
                draft.note(name, "not fb.{subdomain}.{ms}.{value}; ignored")
                continue
            draft.plain[key] = value.strip()
            break
    if raw.get(clientip.COOKIE_KEY) not in (None, ""):
        _ip_from_cookie(raw[clientip.COOKIE_KEY], draft)

    user_id = _scalar_text(raw.get("user_id")) or _scalar_text(raw.get("external_id"))
    draft.user_id = user_id.strip() if user_id and user_id.strip() and len(user_id) <= MAX_ID_CHARS else None


def _ip_from_cookie(value: Any, draft: Draft) -> None:
    """Meta's Parameter Builder's `_fbi` (forwarded by the sGTM tag): its address, IPv6
    preferred, becomes client_ip_address over the request's (capi.clientip)."""
    name = clientip.COOKIE_KEY
    if not isinstance(value, str) or len(value) > MAX_PLAIN_CHARS["client_ip_address"]:
        draft.note(name, f"must be a string of at most {MAX_PLAIN_CHARS['client_ip_address']} characters; ignored")
        return
    address = clientip.from_cookie(value)
    if address is None:
        draft.note(name, "not the Parameter Builder's _fbi (an IP address and its appendix); ignored")
        return
    draft.plain["client_ip_address"] = clientip.prefer(address, draft.plain.get("client_ip_address"))


def _skip_id(raw: Mapping[str, Any], given_id: str | None, meta_name: str) -> str | None:
    """The id a skipped event is listed by: its own event_id, else, for a Purchase, the order id
    it would have been sent with (FROM_ORDER), so the caller can tell which order was skipped."""
    if given_id is not None or meta_name != "Purchase":
        return given_id
    ecommerce = raw.get("ecommerce")
    order, _ = _pick(raw, ecommerce if isinstance(ecommerce, dict) else {}, "transaction_id")
    text = _scalar_text(order)
    if text is None or not text.strip() or len(text.strip()) > MAX_ID_CHARS:
        return None
    return text.strip()


MINTED = "minted: Meta cannot deduplicate it against the Pixel; send the Pixel's eventID as event_id"
FROM_ORDER = "taken from the order id (transaction_id), as a Pixel Purchase with eventID = the order id"


def prepare(
    raw: Any,
    index: int,
    config: Config,
    now: float,
    mint: Callable[[], str] = lambda: str(uuid.uuid4()),
    ignored: Sequence[str] = (),
    request_consent: Mapping[str, Any] | None = None,
) -> Draft | Skip | Rejection:
    """Validate and map one internal event (capi.inputs made it), collecting its customer
    information. `ignored` names the input keys the dialect's adapter already left out;
    `request_consent` the consent signals the request carried beside its events.

    Every problem of the event is collected, so a rejection lists them all.
    """
    if not isinstance(raw, dict):
        if isinstance(raw, Unreadable):
            return Rejection(index, raw.event_id, raw.field, raw.message)
        return Rejection(index, None, "event", "must be a JSON object")
    name = raw.get("event_name")
    raw_id = raw.get("event_id")
    given_id = raw_id if type(raw_id) is str else _scalar_text(raw_id)
    problems: list[tuple[str, str]] = []
    signal = None
    if not isinstance(name, str) or not name.strip():
        problems.append(("event_name", "is required (a GA4 or Meta event name)"))
        meta_name = name if isinstance(name, str) else None
    else:
        name = name.strip()
        meta_name = config.event_name_map.get(name, name)
        if len(meta_name) > 100:
            problems.append(("event_name", "longer than 100 characters"))
        elif not config.should_forward(name, meta_name):
            return Skip(index, _skip_id(raw, given_id, meta_name), "not in FORWARD_EVENTS", event_name=meta_name)
        allowed, signal = consent.decide(raw, config.consent_required, request_consent)
        if not allowed:
            skip_id = _skip_id(raw, given_id, meta_name)
            return Skip(index, skip_id, "consent", consent_signal=signal, event_name=meta_name)
    # One C-level set test for the common event, whose every key is used; the walk names the others.
    unused = [] if USED_KEYS.issuperset(raw) else [key for key in raw if key not in USED_KEYS]
    if ignored:
        unused[:0] = ignored
    if "destinations" in raw and len(config.destinations) <= 1:
        unused.append("destinations")  # one pixel: routing is not read (a GA4 parameter may share the name)

    minted = raw_id is None or raw_id == ""
    event_id = ""
    if not minted:
        try:
            event_id = _event_id(given_id)
        except _Invalid as exc:
            problems.append((exc.field, exc.message))
    event: dict[str, Any] = {"event_name": meta_name, "event_time": 0, "event_id": event_id}
    try:
        if "timestamp_micros" in raw and raw.get("event_time") is None:
            event["event_time"] = _from_micros(raw["timestamp_micros"], now)
        else:
            event["event_time"] = parse_event_time(raw.get("event_time"), now)
    except _Invalid as exc:
        problems.append((exc.field, exc.message))
    action_source = raw.get("action_source", "website")
    if not isinstance(action_source, str) or action_source not in ACTION_SOURCES:
        problems.append(("action_source", f"must be one of {', '.join(sorted(ACTION_SOURCES))}"))
    event["action_source"] = action_source
    url_name = "page_location" if raw.get("page_location") else "event_source_url"
    url = None
    try:
        url = _http_url(raw.get(url_name), url_name)
        if url:
            event["event_source_url"] = url
        elif action_source == "website":
            problems.append(("page_location", "Meta requires event_source_url (page_location) for website events"))
    except _Invalid as exc:
        problems.append((exc.field, exc.message))
    ref_name = "page_referrer" if raw.get("page_referrer") else "referrer_url"
    try:
        referrer = _http_url(raw.get(ref_name), ref_name)
        if referrer:
            event["referrer_url"] = referrer
    except _Invalid as exc:
        problems.append((exc.field, exc.message))
    event["user_data"] = None  # filled by finish(); its place keeps Meta's field order
    notes: list[tuple[str, str]] = []  # (field, message) about values left out; the event goes on
    custom = _custom_data(raw, meta_name or "", problems, unused, notes)
    if custom:
        event["custom_data"] = custom
    if raw.get("opt_out") is not None:
        if not isinstance(raw["opt_out"], bool):
            problems.append(("opt_out", "must be true or false"))
        else:
            event["opt_out"] = raw["opt_out"]
    try:
        if "data_processing_options" in raw:
            _dpo(raw, event)
        if config.limited_data_use == "geo" or "restricted_data_processing" in raw:
            _limited_data_use(raw, event, config.limited_data_use)
    except _Invalid as exc:
        problems.append((exc.field, exc.message))
    for key in PASSTHROUGH_OBJECTS:
        if raw.get(key) is not None:
            try:
                event[key] = _passthrough(raw[key], key)
            except _Invalid as exc:
                problems.append((exc.field, exc.message))
    channel = raw.get("messaging_channel")
    if channel is not None:
        if not isinstance(channel, str) or not channel or len(channel) > 64:
            problems.append(("messaging_channel", "must be a string such as whatsapp"))
        else:
            event["messaging_channel"] = channel
    draft = Draft(index, event, None if minted else event_id, consent_signal=signal)
    for field_name, message in notes:
        draft.note(field_name, message)
    try:
        _collect_user(raw, draft, unused)
    except _Invalid as exc:
        problems.append((exc.field, exc.message))
    if action_source == "website" and "client_user_agent" not in draft.plain:
        problems.append(("user_agent", "Meta requires client_user_agent (user_agent) for website events"))
    if problems:
        field_name, message = problems[0]
        return Rejection(index, given_id, field_name, message, tuple(problems), event_name=meta_name)

    if minted:
        order = custom.get("order_id") if custom and meta_name == "Purchase" else None
        if isinstance(order, str) and order and len(order) <= MAX_ID_CHARS:
            event["event_id"] = draft.given_id = order
            draft.note("event_id", FROM_ORDER)
        else:
            event["event_id"] = mint()
            draft.note("event_id", MINTED)
    if unused:
        if draft.notes is None:
            draft.notes = []
        draft.notes.append(ignored_message(unused, "input keys capi does not use", index))
    if "fbc" not in draft.plain and (fbclid := _fbclid(url)):
        # Built from the landing URL's click id, case kept (docs/meta-capi.md §9); the
        # event time stands in for the click time so retries and replays build the same fbc.
        draft.plain["fbc"] = f"fb.1.{event['event_time'] * 1000}.{fbclid}"
    return draft


def _profile_inputs(profile: Mapping[str, Any], keys: Iterable[str]) -> list[Input]:
    out = []
    for key in keys:
        name = _PROFILE_NAME[key]
        for item in _values(profile.get(name)):
            text = _scalar_text(item)
            if text and text.strip():
                out.append(((key, f"profile.{name}"), text))
    return out


def _country_of(inputs: Iterable[Input]) -> str | None:
    for (key, _), text in inputs:
        if key == "country" and len(text) <= MAX_CHARS["country"]:  # never a long value into the cache
            try:
                return normalize_country(text)
            except Dropped:
                continue
    return None


def finish(draft: Draft, profile: Mapping[str, Any] | None, default_country: str | None) -> Finished | Rejection:
    """Merge the profile into a draft, normalize and hash its customer information."""
    inputs = draft.hashed_inputs
    country = _country_of(inputs) or (_country_of(_profile_inputs(profile, ("country",))) if profile else None)
    ctx = FieldContext(country, default_country)
    # The event's keys in the order they were collected, then the profile's, then the unhashed ones.
    user_data: dict[str, Any] = {}
    _hash_into(user_data, inputs, ctx, draft)
    from_profile: tuple[str, ...] = ()
    if profile:
        # The event's own values win; the profile only fills the keys the event left empty.
        missing = [key for key in HASHED_KEYS if key not in user_data]
        _hash_into(user_data, _profile_inputs(profile, missing), ctx, draft)
        from_profile = tuple(key for key in missing if key in user_data)
    for field_name, message in ctx.notes:
        draft.note(f"user_data.{field_name}", message)
    user_data.update(draft.plain)
    event = draft.event
    if not user_data:
        return Rejection(
            draft.index, draft.given_id, "user_data", "no customer information left to match on",
            event_name=event["event_name"],
        )  # fmt: skip
    # Two keys or more: a single key is no combination (capi already refuses an event with none).
    # The first test fails at once for the common event, which has em, ph, fbp or an IP.
    for keys, rule in INVALID_COMBINATIONS if len(user_data) > 1 and _COMBINATION_KEYS.issuperset(user_data) else ():
        if keys.issuperset(user_data):
            return Rejection(
                draft.index, draft.given_id, "user_data",
                f"customer information is only {'+'.join(user_data)}, inside the combination {rule} that"
                " Meta's best practices call invalid: add em, ph, external_id, fbp, fbc or the client IP",
                event_name=event["event_name"],
            )  # fmt: skip
    event["user_data"] = user_data
    return Finished(draft.index, event, from_profile, draft.dialect)


def _hash_into(digests: dict[str, list[str]], inputs: Iterable[Input], ctx: FieldContext, draft: Draft) -> None:
    """Add the distinct digests of `inputs` to `digests` (meta key -> digests, in input order),
    at most MAX_VALUES_PER_KEY per key, each value at most MAX_CHARS[key] characters long."""
    full: set[str] | None = None
    for (key, path), text in inputs:
        found = digests.get(key)
        if found is not None and len(found) >= MAX_VALUES_PER_KEY:
            if full is None or key not in full:
                full = (full or set()) | {key}
                draft.note(path, f"more than {MAX_VALUES_PER_KEY} values for {key}; the rest not sent")
            continue
        if len(text) > MAX_CHARS[key] and not is_sha256(text.strip()):  # before normalizing: never into a cache
            # A digest with spaces around it is trimmed first (hash_value does), whatever the bound.
            draft.note(path, f"longer than {MAX_CHARS[key]} characters; not sent")
            continue
        try:
            digest = hash_value(key, text, ctx)
        except Dropped as exc:
            draft.note(path, f"{exc}; not sent")
            continue
        if found is None:
            digests[key] = [digest]
        elif digest not in found:  # at most MAX_VALUES_PER_KEY long: linear overall
            found.append(digest)
