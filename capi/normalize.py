"""Normalization and SHA-256 hashing of customer information, by Meta's published rules.

Pure: no I/O. The rules are those of Meta's customer-information parameters page
(docs/meta-capi.md §5), which differ from Meta's own Python SDK where the SDK falls short
(phones without country codes, "USA" rejected, dates not reformatted, external_id unhashed).
Where the page is silent, Meta's param-builder decides (whitespace and punctuation removed).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import unicodedata
from collections.abc import Callable
from datetime import date
from functools import lru_cache

import phonenumbers
import pycountry

# Keys Meta wants hashed, in the order we emit them.
HASHED_KEYS: tuple[str, ...] = (
    "em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id",
)  # fmt: skip

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_NON_DIGITS = re.compile(r"\D")
# The fast paths' patterns say [0-9], not \d: \d also matches other scripts' digits, which
# libphonenumber converts, ipaddress refuses and Meta does not match.
_E164_RE = re.compile(r"\+[1-9][0-9]{6,14}")
# A North American number written nationally: (650) 555-1212, 650.555.1212, 1-650-555-1212.
_NANP_RE = re.compile(r"(?:\+?1[\s.\-]?)?\(?([2-9][0-9]{2})\)?[\s.\-]?([0-9]{3})[\s.\-]?([0-9]{4})")
_NANP_REGIONS = frozenset({"US", "CA"})
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")
_WHITESPACE = re.compile(r"\s+")


class Dropped(ValueError):
    """A value that cannot be normalized; it is left out and the reason reported."""


def is_sha256(value: str) -> bool:
    """True when `value` already is a SHA-256 hex digest (any case)."""
    return len(value) == 64 and _SHA256_RE.fullmatch(value) is not None


def _letters_and_digits(value: str) -> str:
    """Lowercase, NFC, keep letters (every script), combining marks and digits only.

    NFC first so that "Valéry" typed with a combining accent hashes like the composed form,
    which is what browsers and Meta's examples use.
    """
    value = unicodedata.normalize("NFC", value).lower()
    if value.isascii():
        return "".join(ch for ch in value if ch.isalnum())
    return "".join(ch for ch in value if unicodedata.category(ch)[0] in "LMN")


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    if email.startswith("mailto:"):
        email = email[7:]
    if not _EMAIL_RE.fullmatch(email):
        raise Dropped("not an email address")
    return email


def normalize_phone(value: str, region: str | None) -> tuple[str, str | None]:
    """Digits with the country code (E.164 without '+'), plus a note when unsure.

    `region` is the alpha-2 country used to read a number written in national form.
    """
    text = value.strip()
    # Fast paths for the common shapes; libphonenumber gives the same digits for them
    # (tests/test_normalize.py checks it), at a tenth of the cost.
    if _E164_RE.fullmatch(text):
        return text[1:], None
    if region in _NANP_REGIONS and (nanp := _NANP_RE.fullmatch(text)):
        return "1" + nanp[1] + nanp[2] + nanp[3], None
    if text.startswith("00"):
        text = "+" + text[2:]
    digits = _NON_DIGITS.sub("", text)
    if not digits:
        raise Dropped("no digits in phone number")
    international = text.startswith("+")
    if not international and not region:
        return digits.lstrip("0") or digits, (
            "no country known to complete a national phone number; sent as digits only"
            " (set the event's country or DEFAULT_COUNTRY)"
        )
    try:
        number = phonenumbers.parse(text, None if international else region)
    except phonenumbers.NumberParseException as exc:
        raise Dropped(f"not a phone number ({exc.error_type!r})") from None
    if not phonenumbers.is_possible_number(number):
        raise Dropped("not a possible phone number for its country")
    # E.164 keeps a leading zero that belongs to the number (Italy's 06 ...), which
    # country_code + national_number would lose.
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:], None


def normalize_name(value: str) -> str:
    name = _letters_and_digits(value)
    if not name:
        raise Dropped("no letters")
    return name


normalize_city = normalize_name


# US states (and DC, territories) and Canadian provinces: Meta wants the 2-letter code.
_US_STATES = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca",
    "colorado": "co", "connecticut": "ct", "delaware": "de", "districtofcolumbia": "dc",
    "florida": "fl", "georgia": "ga", "hawaii": "hi", "idaho": "id", "illinois": "il",
    "indiana": "in", "iowa": "ia", "kansas": "ks", "kentucky": "ky", "louisiana": "la",
    "maine": "me", "maryland": "md", "massachusetts": "ma", "michigan": "mi",
    "minnesota": "mn", "mississippi": "ms", "missouri": "mo", "montana": "mt",
    "nebraska": "ne", "nevada": "nv", "newhampshire": "nh", "newjersey": "nj",
    "newmexico": "nm", "newyork": "ny", "northcarolina": "nc", "northdakota": "nd",
    "ohio": "oh", "oklahoma": "ok", "oregon": "or", "pennsylvania": "pa",
    "rhodeisland": "ri", "southcarolina": "sc", "southdakota": "sd", "tennessee": "tn",
    "texas": "tx", "utah": "ut", "vermont": "vt", "virginia": "va", "washington": "wa",
    "westvirginia": "wv", "wisconsin": "wi", "wyoming": "wy", "puertorico": "pr",
    "guam": "gu", "americansamoa": "as", "usvirginislands": "vi",
    "northernmarianaislands": "mp",
}  # fmt: skip
_CA_PROVINCES = {
    "alberta": "ab", "britishcolumbia": "bc", "manitoba": "mb", "newbrunswick": "nb",
    "newfoundlandandlabrador": "nl", "newfoundland": "nl", "novascotia": "ns",
    "ontario": "on", "princeedwardisland": "pe", "quebec": "qc", "saskatchewan": "sk",
    "northwestterritories": "nt", "nunavut": "nu", "yukon": "yt",
}  # fmt: skip
_STATE_CODES = {
    "us": frozenset(_US_STATES.values()),
    "ca": frozenset(_CA_PROVINCES.values()),
}


def _ascii_fold(value: str) -> str:
    """'Québec' -> 'quebec': only for table look-ups, never for what we hash."""
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def normalize_state(value: str, country: str | None) -> str:
    compact = _letters_and_digits(value)
    if not compact:
        raise Dropped("no letters")
    if country in (None, "us", "ca"):
        folded = _ascii_fold(compact)
        for code, table in (("us", _US_STATES), ("ca", _CA_PROVINCES)):
            if country in (None, code):
                if folded in table:
                    return table[folded]
                if len(compact) == 2 and compact in _STATE_CODES[code]:
                    return compact
    return compact


def normalize_zip(value: str, country: str | None) -> str:
    postal = value.lower()
    if not postal.isalnum():  # most postal codes already are: skip the per-character pass
        postal = "".join(ch for ch in postal if ch.isalnum())
    if not postal:
        raise Dropped("empty postal code")
    if country == "us":
        # ZIP+4 ("94025-1234", "940251234") -> the 5-digit ZIP Meta matches on.
        if len(postal) < 5 or not postal[:5].isdigit():
            raise Dropped("not a US ZIP code")
        return postal[:5]
    return postal


_COUNTRY_ALIASES = {
    "uk": "gb", "greatbritain": "gb", "england": "gb", "scotland": "gb", "wales": "gb",
    "northernireland": "gb", "britain": "gb", "unitedkingdom": "gb",
    "usa": "us", "america": "us", "unitedstatesofamerica": "us", "unitedstates": "us",
    "russia": "ru", "turkey": "tr", "deutschland": "de", "holland": "nl",
    "southkorea": "kr", "northkorea": "kp", "korea": "kr", "laos": "la", "syria": "sy",
    "moldova": "md", "macedonia": "mk", "ivorycoast": "ci", "capeverde": "cv",
    "espana": "es", "españa": "es", "italia": "it", "brasil": "br", "osterreich": "at",
    "schweiz": "ch", "suisse": "ch", "nederland": "nl", "polska": "pl", "mexique": "mx",
}  # fmt: skip


def normalize_country(value: str) -> str:
    """A country name, alpha-2 or alpha-3 code -> lowercase ISO 3166-1 alpha-2."""
    if len(value) > _MAX_COUNTRY_CHARS:  # no country is named so long; never into the cache
        raise Dropped("not a country")
    return _country(value)


_MAX_COUNTRY_CHARS = 64  # "The United Kingdom of Great Britain and Northern Ireland" is 56


@lru_cache(maxsize=1024)  # only short texts, and only valid ones (Dropped is not cached)
def _country(value: str) -> str:
    text = value.strip()
    letters = "".join(ch for ch in text.lower() if ch.isalpha())
    if not letters:
        raise Dropped("not a country")
    if letters in _COUNTRY_ALIASES:
        return _COUNTRY_ALIASES[letters]
    if len(letters) == 2 and pycountry.countries.get(alpha_2=letters.upper()):
        return letters
    if len(letters) == 3:
        found = pycountry.countries.get(alpha_3=letters.upper())
        if found:
            return found.alpha_2.lower()
    try:
        return pycountry.countries.lookup(text).alpha_2.lower()
    except LookupError:
        raise Dropped("unknown country") from None


_DATE_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ].*)?")
_DATE_YMD = re.compile(r"(\d{4})[/.](\d{1,2})[/.](\d{1,2})")
_DATE_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})")
_DATE_YEAR_LAST = re.compile(r"(\d{1,2})([/.\-])(\d{1,2})\2(\d{4})")


def normalize_dob(value: str, today: date | None = None) -> str:
    """A date of birth -> YYYYMMDD (year 1900..this year).

    Year-last forms: with '/' month first (US) unless the first number can only be a day;
    with '.' day first (European); with '-' whichever is unambiguous, else dropped.
    """
    text = value.strip()
    if m := _DATE_ISO.fullmatch(text) or _DATE_YMD.fullmatch(text) or _DATE_COMPACT.fullmatch(text):
        year, month, day = (int(g) for g in m.groups())
    elif m := _DATE_YEAR_LAST.fullmatch(text):
        first, sep, second, year_text = m.groups()
        a, b, year = int(first), int(second), int(year_text)
        if sep == "/":
            month, day = (b, a) if a > 12 else (a, b)
        elif sep == "." or a > 12 >= b:
            day, month = a, b
        elif b > 12 >= a:
            month, day = a, b
        else:
            raise Dropped("ambiguous date: write it as YYYY-MM-DD")
    else:
        raise Dropped("not a date (use YYYY-MM-DD)")
    this_year = (today or date.today()).year
    if not 1900 <= year <= this_year:
        raise Dropped("year outside 1900..now")
    try:
        date(year, month, day)
    except ValueError:
        raise Dropped("not a valid calendar date") from None
    return f"{year:04d}{month:02d}{day:02d}"


_GENDERS = {
    **dict.fromkeys(
        ("f", "female", "woman", "women", "w", "girl", "feminine", "femme", "frau",
         "weiblich", "mujer", "femenino", "feminino", "donna", "femmina"), "f"),
    **dict.fromkeys(
        ("m", "male", "man", "men", "boy", "masculine", "homme", "mann", "männlich",
         "maennlich", "hombre", "masculino", "uomo", "maschio"), "m"),
}  # fmt: skip


def normalize_gender(value: str) -> str:
    key = _WHITESPACE.sub("", value.lower()).strip(".")
    if key not in _GENDERS:
        raise Dropped("not a gender Meta accepts (f or m)")
    return _GENDERS[key]


def normalize_external_id(value: str) -> str:
    # As Meta's param-builder does: whitespace removed, lower-cased, then hashed. str.split()
    # splits on exactly what the regex \s matches (str.isspace), at a third of the cost.
    ext = "".join(value.split()).lower()
    if not ext:
        raise Dropped("empty")
    return ext


def normalize_ip(value: str) -> str:
    """First address of a list, port and brackets stripped; must parse as IPv4 or IPv6."""
    text = value.split(",")[0].strip()
    if _IPV4_RE.fullmatch(text):  # the common case, already canonical
        return text
    if text.startswith("["):  # [2001:db8::1]:443
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # 203.0.113.9:5678
        text = text.split(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise Dropped("not an IP address") from None


class FieldContext:
    """What the normalizers of one event need to know: the user's and the default country."""

    __slots__ = ("country", "notes", "region")

    def __init__(self, country: str | None, default_country: str | None) -> None:
        self.country = country  # lowercase alpha-2 from the event or profile, or None
        self.region = country or default_country  # the country rules are taken from
        self.notes: list[tuple[str, str]] = []


def _phone(value: str, ctx: FieldContext) -> str:
    region = ctx.region
    digits, note = normalize_phone(value, region.upper() if region else None)
    if note:
        ctx.notes.append(("ph", note))
    return digits


def _state(value: str, ctx: FieldContext) -> str:
    return normalize_state(value, ctx.country)


def _zip(value: str, ctx: FieldContext) -> str:
    return normalize_zip(value, ctx.region)


# Normalizers that need nothing but the value, and those that also need the countries.
_SIMPLE_NORMALIZERS: dict[str, Callable[[str], str]] = {
    "em": normalize_email,
    "fn": normalize_name,
    "ln": normalize_name,
    "ge": normalize_gender,
    "db": normalize_dob,
    "ct": normalize_city,
    "country": normalize_country,
    "external_id": normalize_external_id,
}
_CONTEXT_NORMALIZERS: dict[str, Callable[[str, FieldContext], str]] = {"ph": _phone, "st": _state, "zp": _zip}


def normalize_value(key: str, value: str, ctx: FieldContext) -> str:
    """The plain normalized form of one value of a hashed key (before hashing)."""
    simple = _SIMPLE_NORMALIZERS.get(key)
    return simple(value) if simple is not None else _CONTEXT_NORMALIZERS[key](value, ctx)


def hash_value(key: str, value: str, ctx: FieldContext) -> str:
    """Normalize then SHA-256 one value; an existing SHA-256 digest is only lower-cased.

    Raises:
        Dropped: the value cannot be normalized (the reason says why).
    """
    if key not in _REPEATING_KEYS or len(value) > _MEMO_MAX_CHARS:
        return _digest(key, value, ctx)
    return _remembered(key, value, ctx.country)  # st is read by the country; no cached key uses the region


def _digest(key: str, value: str, ctx: FieldContext) -> str:
    text = value.strip()
    if not text:
        raise Dropped("empty")
    if len(text) == 64 and is_sha256(text):  # the length first: most values are not digests
        return text.lower()
    # normalize_value() inlined: this runs for every unique value of every event.
    simple = _SIMPLE_NORMALIZERS.get(key)
    normal = simple(text) if simple is not None else _CONTEXT_NORMALIZERS[key](text, ctx)
    return hashlib.sha256(normal.encode()).hexdigest()


# Keys whose values repeat across customers (first names, cities, states, ...): their digests
# are remembered. Emails, phones, ids and postal codes are nearly unique: remembering them
# would only cost. Only short values are remembered (a name, a city), so the cache stays small
# whatever arrives: at most 16384 entries of at most 256 characters. A dropped value raises,
# and lru_cache never remembers a call that raised.
_REPEATING_KEYS = frozenset({"fn", "ln", "ct", "st", "country", "ge", "db"})
_MEMO_MAX_CHARS = 256


@lru_cache(maxsize=16384)
def _remembered(key: str, value: str, country: str | None) -> str:
    return _digest(key, value, FieldContext(country, None))
