"""Input events (GA4 / server-side GTM model, or Meta's own names) -> Meta server events.

Pure: no I/O. Two steps, because the Firestore profiles of a whole request are read in one
batch between them:

1. `prepare(raw, index, ...)` validates one input event and maps everything but the
   customer information, which it only collects (`Draft`), or returns a `Skip`/`Rejection`.
2. `finish(draft, profile, ...)` merges the profile, normalizes and hashes `user_data`, and
   returns the Meta event, or a `Rejection` when no customer information is left.

One bad event never affects another: every problem is reported for its own index.
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

from capi.config import Config
from capi.normalize import HASHED_KEYS, Dropped, FieldContext, hash_value, normalize_country, normalize_ip

MAX_AGE_SECONDS = 7 * 24 * 3600  # Meta rejects the whole request for an older event
MAX_FUTURE_SECONDS = 60

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

# fbc / fbp: fb.{subdomain index}.{creation ms}.{click id or random}, and param-builder's
# optional fifth segment (capi-spec.md section 9).
_FB_COOKIE = re.compile(r"fb\.[0-9]\.[0-9]{10,13}\.[^\s.]+(\.[^\s.]+)?")

# Firestore profile field -> Meta key (design.md "Firestore user profiles").
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
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "event_id": self.event_id, "reason": self.reason}


@dataclass(frozen=True)
class Rejection:
    index: int
    event_id: str | None
    field: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "event_id": self.event_id, "field": self.field, "message": self.message}


@dataclass(slots=True)
class Draft:
    """A valid event whose customer information is collected but not yet hashed."""

    index: int
    event: dict[str, Any]  # the Meta server event; its user_data is filled by finish()
    given_id: str | None  # the caller's event_id; None when capi minted one
    hashed_inputs: Sequence[Input] = ()  # the customer values to hash, in input order
    plain: dict[str, str] = field(default_factory=dict)  # client_ip_address, client_user_agent, fbc, fbp
    user_id: str | None = None
    notes: list[dict[str, Any]] | None = None  # made by the first note: most events have none

    def note(self, field_name: str, message: str) -> None:
        if self.notes is None:
            self.notes = []
        self.notes.append({"index": self.index, "field": field_name, "message": message})


@dataclass(slots=True)
class Finished:
    """A Meta server event ready to send, and which of its match keys the profile gave."""

    index: int
    event: dict[str, Any]
    from_profile: tuple[str, ...]

    @property
    def from_event(self) -> list[str]:
        if not self.from_profile:
            return list(self.event["user_data"])
        return [key for key in self.event["user_data"] if key not in self.from_profile]


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
            try:
                parsed = datetime.fromisoformat(text.replace("z", "Z"))
            except ValueError:
                raise _Invalid("event_time", "must be unix seconds or an ISO 8601 date-time") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
    else:
        raise _Invalid("event_time", "must be unix seconds or an ISO 8601 date-time")
    if seconds > 1e11:
        raise _Invalid("event_time", "looks like milliseconds; send unix seconds")
    if seconds < now - MAX_AGE_SECONDS:
        raise _Invalid("event_time", "older than 7 days: Meta does not accept it")
    if seconds > now + MAX_FUTURE_SECONDS:
        raise _Invalid("event_time", "more than a minute in the future")
    return int(seconds)


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


def _currency(value: Any, name: str) -> str:
    code = _currency_code(value) if isinstance(value, str) else None
    if code is None:
        if not isinstance(value, str) or len(value.strip()) != 3 or not value.strip().isalpha():
            raise _Invalid(name, "must be an ISO 4217 currency code such as USD")
        raise _Invalid(name, f"{value.strip().upper()} is not an ISO 4217 currency code")
    return code


@lru_cache(maxsize=512)
def _currency_code(value: str) -> str | None:
    """' USD ' -> 'usd'; None when not an ISO 4217 code. Cached: a shop sends a handful of codes,
    and pycountry takes a lock and checks its lazy load on every call."""
    code = value.strip().upper()
    if len(code) != 3 or not code.isalpha() or pycountry.currencies.get(alpha_3=code) is None:
        return None
    return code.lower()


def _contents(items: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        raise _Invalid(name, "must be a list of items")
    contents = []
    for position, item in enumerate(items):
        try:
            contents.append(_content(item))
        except _Invalid as exc:  # the item's own problem, named by its place in the list
            raise _Invalid(f"{name}[{position}]{exc.field}", exc.message) from None
    return contents


def _content(item: Any) -> dict[str, Any]:
    """One GA4 item -> one Meta content. Errors name the field relative to the item."""
    if not isinstance(item, dict):
        raise _Invalid("", "must be an object")
    item_id = item.get("item_id")
    if type(item_id) is not str or not item_id:  # the common case is a plain item_id string
        item_id = _scalar_text(item_id) or _scalar_text(item.get("id")) or _scalar_text(item.get("item_name")) or ""
    item_id = item_id.strip()
    if not item_id:
        raise _Invalid("", "needs item_id or item_name")
    quantity = item.get("quantity", 1)
    if type(quantity) is not int or quantity < 0:
        number = _number(quantity, ".quantity")
        if number != int(number) or number < 0:
            raise _Invalid(".quantity", "must be a whole number >= 0")
        quantity = int(number)
    content: dict[str, Any] = {"id": item_id, "quantity": quantity}
    price = item.get("price")
    if price is None:
        price = item.get("item_price")
    if price is not None:
        content["item_price"] = _number(price, ".price")
    return content


def _custom_data(raw: Mapping[str, Any], meta_name: str) -> dict[str, Any] | None:
    ecommerce = raw.get("ecommerce")
    if ecommerce is not None and not isinstance(ecommerce, dict):
        raise _Invalid("ecommerce", "must be an object")
    ecommerce = ecommerce or {}

    def pick(key: str) -> tuple[Any, str]:
        value = raw.get(key)
        if value is not None or not ecommerce:
            return value, key
        return ecommerce.get(key), f"ecommerce.{key}"

    data: dict[str, Any] = {}
    value, where = pick("value")
    if value is not None:
        data["value"] = _number(value, where)
    currency, where = pick("currency")
    if currency is not None:
        data["currency"] = _currency(currency, where)
    order, where = pick("transaction_id")
    if order is not None:
        text = _scalar_text(order)
        if text is None or not text.strip():
            raise _Invalid(where, "must be a string")
        data["order_id"] = text.strip()
    items, where = pick("items")
    if items is not None:
        contents = _contents(items, where)
        if contents:
            data["contents"] = contents
            data["content_ids"] = [c["id"] for c in contents]
            data["content_type"] = "product"
            data["num_items"] = sum([c["quantity"] for c in contents])
    search = raw.get("search_term")
    if search is not None:
        if not isinstance(search, str):
            raise _Invalid("search_term", "must be a string")
        data["search_string"] = search

    explicit = raw.get("custom_data")
    if explicit is not None:
        if not isinstance(explicit, dict):
            raise _Invalid("custom_data", "must be an object")
        if "value" in explicit:
            explicit = {**explicit, "value": _number(explicit["value"], "custom_data.value")}
        if "currency" in explicit:
            explicit = {**explicit, "currency": _currency(explicit["currency"], "custom_data.currency")}
        data.update(explicit)

    if meta_name == "Purchase" and ("value" not in data or "currency" not in data):
        raise _Invalid("value" if "value" not in data else "currency", "Meta requires value and currency for Purchase")
    return data or None


def _dpo(raw: Mapping[str, Any], event: dict[str, Any]) -> None:
    options = raw.get("data_processing_options")
    if options is None:
        return
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise _Invalid("data_processing_options", 'must be a list such as ["LDU"] or []')
    event["data_processing_options"] = options
    for key in ("data_processing_options_country", "data_processing_options_state"):
        if raw.get(key) is not None:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Invalid(key, "must be an integer (0 lets Meta geolocate)")
            event[key] = value


def _consent_denied(raw: Mapping[str, Any]) -> bool:
    consent = raw.get("consent")
    if not isinstance(consent, dict):
        return False
    return any(
        isinstance(consent.get(k), str) and consent[k].strip().lower() == "denied"
        for k in ("ad_user_data", "ad_storage")
    )


def _values(value: Any) -> Iterable[Any]:
    return value if isinstance(value, list) else (value,)


def _clean_inputs(found: list[tuple[Source, Any]], draft: Draft) -> list[Input]:
    """Values as strings (lists flattened, numbers as text), blanks and nulls left out."""
    out: list[Input] = []
    for source, value in found:
        if value is None:
            continue
        path = source[1]
        if source is _GA4_HASHED_PHONE:
            draft.note(path, "GA4 hashes phones with the leading '+', which Meta does not match; send phone_number too")
        for item in _values(value):
            text = _scalar_text(item)
            if text is None:
                if item is not None:
                    draft.note(path, "must be a string or a list of strings; ignored")
            elif text.strip():
                out.append((source, text))
    return out


def _collect_user(raw: Mapping[str, Any], draft: Draft) -> None:
    user = raw.get("user_data")
    if user is None:
        user = {}
    if not isinstance(user, dict):
        raise _Invalid("user_data", "must be an object")
    address = user.get("address")
    if type(address) is dict:  # the common case
        addresses: Iterable[dict[str, Any]] = (address,)
    else:
        addresses = [a for a in _values(address) if isinstance(a, dict)] if address is not None else []
    if address is not None and not addresses:
        raise _Invalid("user_data.address", "must be an object or a list of objects")

    # Only the names present are visited: an event carries a handful of the many accepted names.
    found = [(source, raw[name]) for name, source in _TOP_NAMES.items() if name in raw]
    found += [(_USER_NAMES[name], value) for name, value in user.items() if name in _USER_NAMES]
    for entry in addresses:
        found += [(_ADDRESS_NAMES[name], value) for name, value in entry.items() if name in _ADDRESS_NAMES]
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

    user_id = _scalar_text(raw.get("user_id")) or _scalar_text(raw.get("external_id"))
    draft.user_id = user_id.strip() if user_id and user_id.strip() else None


def prepare(
    raw: Any,
    index: int,
    config: Config,
    now: float,
    mint: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> Draft | Skip | Rejection:
    """Validate and map one input event, collecting its customer information."""
    if not isinstance(raw, dict):
        return Rejection(index, None, "event", "must be a JSON object")
    name = raw.get("event_name")
    raw_id = raw.get("event_id")
    given_id = raw_id if type(raw_id) is str else _scalar_text(raw_id)
    if not isinstance(name, str) or not name.strip():
        return Rejection(index, given_id, "event_name", "is required (a GA4 or Meta event name)")
    name = name.strip()
    meta_name = config.event_name_map.get(name, name)
    if len(meta_name) > 100:
        return Rejection(index, given_id, "event_name", "longer than 100 characters")
    if not config.should_forward(name, meta_name):
        return Skip(index, given_id, "not in FORWARD_EVENTS")
    if "consent" in raw and _consent_denied(raw):
        return Skip(index, given_id, "consent")
    try:
        minted = raw_id is None or raw_id == ""
        event_id = mint() if minted else _event_id(given_id)
        event: dict[str, Any] = {
            "event_name": meta_name,
            "event_time": parse_event_time(raw.get("event_time"), now),
            "event_id": event_id,
        }
        action_source = raw.get("action_source", "website")
        if not isinstance(action_source, str) or action_source not in ACTION_SOURCES:
            raise _Invalid("action_source", f"must be one of {', '.join(sorted(ACTION_SOURCES))}")
        event["action_source"] = action_source
        url_name = "page_location" if raw.get("page_location") else "event_source_url"
        url = _http_url(raw.get(url_name), url_name)
        if url:
            event["event_source_url"] = url
        elif action_source == "website":
            raise _Invalid("page_location", "Meta requires event_source_url (page_location) for website events")
        ref_name = "page_referrer" if raw.get("page_referrer") else "referrer_url"
        referrer = _http_url(raw.get(ref_name), ref_name)
        if referrer:
            event["referrer_url"] = referrer
        event["user_data"] = None  # filled by finish(); its place keeps Meta's field order
        custom = _custom_data(raw, meta_name)
        if custom:
            event["custom_data"] = custom
        if raw.get("opt_out") is not None:
            if not isinstance(raw["opt_out"], bool):
                raise _Invalid("opt_out", "must be true or false")
            event["opt_out"] = raw["opt_out"]
        if "data_processing_options" in raw:
            _dpo(raw, event)
        draft = Draft(index, event, None if minted else event_id)
        _collect_user(raw, draft)
    except _Invalid as exc:
        return Rejection(index, given_id, exc.field, exc.message)
    if action_source == "website" and "client_user_agent" not in draft.plain:
        return Rejection(
            index, draft.given_id, "user_agent", "Meta requires client_user_agent (user_agent) for website events"
        )
    if "fbc" not in draft.plain and (fbclid := _fbclid(url)):
        # Built from the landing URL's click id, case kept (capi-spec.md section 9); the
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
        if key == "country":
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
    if not user_data:
        return Rejection(draft.index, draft.given_id, "user_data", "no customer information left to match on")
    event = draft.event
    event["user_data"] = user_data
    return Finished(draft.index, event, from_profile)


def _hash_into(digests: dict[str, list[str]], inputs: Iterable[Input], ctx: FieldContext, draft: Draft) -> None:
    """Add the distinct digests of `inputs` to `digests` (meta key -> digests, in input order)."""
    for (key, path), text in inputs:
        try:
            digest = hash_value(key, text, ctx)
        except Dropped as exc:
            draft.note(path, f"{exc}; not sent")
            continue
        found = digests.get(key)
        if found is None:
            digests[key] = [digest]
        elif digest not in found:
            found.append(digest)
