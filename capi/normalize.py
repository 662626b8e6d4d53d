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
    # String tests, not two regular-expression searches (each tried its alternatives at every
    # position): normalize_email 1.75 -> 1.21 ms per 1000 addresses on 3.12, the pipeline 327 ->
    # 317 M instructions per 1000 events. The same decisions as those expressions, checked over
    # random strings (tests/test_normalize.py).
    if email[0] == "." or email[-1] == "." or ".." in email or ".@" in email or "@." in email:
        # As Meta's Parameter Builder decides (emailUtil.js): a local part or domain that starts
        # or ends with a dot, or has two in a row, is not an address.
        raise Dropped("not an email address (a dot at the start or end of a part, or two dots in a row)")
    domain = email[email.index("@") + 1 :]  # _EMAIL_RE let exactly one "@" through
    labels = domain.replace(".", "").replace("-", "")
    if not _SPECIALS.isdisjoint(email) or (labels and not labels.isalnum()):
        # Nor is one with RFC 5322's specials outside quotes, or a domain that is not labels of
        # letters, digits and hyphens (emailUtil.js); letters of every script stay allowed.
        raise Dropped("not an email address (a character an address cannot hold)")
    return email


_SPECIALS = frozenset('()<>[]:;,\\"')


def normalize_phone(value: str, region: str | None) -> tuple[str, str | None]:
    """Digits with the country code (E.164 without '+'), plus a note when unsure.

    `region` is the alpha-2 country used to read a number written in national form. Meta asks
    for digits "without leading zeros, with the country code": international prefixes ("+",
    "+00", "00" and more zeros, "011" where North American numbers are read), a national trunk
    0 before a number that already carries its country code ("01 650 ..."), and zeros written
    after the country code ("+44 000 20 ...") are all read as that.
    """
    text = value.strip()
    # Fast paths for the common shapes; libphonenumber gives the same digits for them
    # (tests/test_normalize.py checks it), at a tenth of the cost.
    if _E164_RE.fullmatch(text):
        return text[1:], None
    if region in _NANP_REGIONS and (nanp := _NANP_RE.fullmatch(text)):
        return "1" + nanp[1] + nanp[2] + nanp[3], None
    digits = _NON_DIGITS.sub("", text)
    if not digits.strip("0"):
        raise Dropped("no digits in phone number" if not digits else "only zeros: not a phone number")
    prefix = _IDD_RE.match(text)
    if prefix is None and region in _NANP_REGIONS:
        prefix = _NANP_IDD_RE.match(text)  # 011: North America's international prefix
    elif prefix is None and not region and (nanp_idd := _NANP_IDD_RE.match(text)):
        # No country known: 011 is read as North America's prefix only when what follows is a
        # possible international number ("011 44 20 ..."), not a national one ("0114 496 ...").
        number = _parse_phone("+" + text[nanp_idd.end() :], None, quiet=True)
        if number is not None and phonenumbers.is_possible_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:], None
    if prefix is None and not region:
        return digits.lstrip("0") or digits, (
            "no country known to complete a national phone number; sent as digits only"
            " (set the event's country or DEFAULT_COUNTRY)"
        )
    if prefix is not None:
        number = _parse_phone("+" + text[prefix.end() :], None)
    else:
        number = _parse_phone(text, region)
        if not phonenumbers.is_possible_number(number) and digits[0] == "0":
            # A trunk 0 before a number that carries its own country code: "01 (650) 123-4567".
            number = _parse_phone("+" + digits.lstrip("0"), None, quiet=True) or number
    if not phonenumbers.is_possible_number(number) and number.italian_leading_zero:
        # Zeros written after the country code ("+44 000 20 7946 0958") that do not belong to
        # the number; a zero that does (Italy's 06 ...) leaves it possible and is kept.
        number.italian_leading_zero = None
        number.number_of_leading_zeros = None
    if not phonenumbers.is_possible_number(number):
        raise Dropped("not a possible phone number for its country")
    # E.164 keeps a leading zero that belongs to the number (Italy's 06 ...), which
    # country_code + national_number would lose.
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:], None


# International prefixes before a country code: "+", "+00 ...", "00 ...", "000 ..." (separators
# between the zeros allowed), and North America's "011".
_IDD_RE = re.compile(r"\+[\s().\-]*(?:0[\s().\-]*)*|(?:0[\s().\-]*){2,}(?=[1-9])")
_NANP_IDD_RE = re.compile(r"0[\s().\-]*1[\s().\-]*1[\s().\-]*(?=[1-9])")


def _parse_phone(text: str, region: str | None, quiet: bool = False) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        if quiet:
            return None
        raise Dropped(f"not a phone number ({exc.error_type!r})") from None


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
    if (country is None or country == "us") and _ZIP_PLUS4.fullmatch(postal.strip()):
        return postal.strip()[:5]  # a US ZIP+4 whatever the country known: the 5-digit ZIP
    if not postal.isalnum():  # most postal codes already are: skip the per-character pass
        postal = "".join(ch for ch in postal if ch.isalnum())
    if not postal:
        raise Dropped("empty postal code")
    if country == "us":
        if postal.isdigit() and len(postal) in (3, 4, 7, 8):
            # A ZIP read as a number lost its leading zeros (02134 -> 2134, New England; 00501
            # -> 501): Meta matches the 5-digit ZIP, so they are put back.
            postal = postal.zfill(5 if len(postal) < 5 else 9)
        # ZIP+4 ("94025-1234", "940251234") -> the 5-digit ZIP Meta matches on.
        if len(postal) < 5 or not postal[:5].isdigit():
            raise Dropped("not a US ZIP code")
        return postal[:5]
    if len(postal) < 2:  # as Meta's Parameter Builder (zipCodeUtil.js): no postal code is shorter
        raise Dropped("not a postal code (one character)")
    return postal


_ZIP_PLUS4 = re.compile(r"[0-9]{5}-[0-9]{4}")


_COUNTRY_ALIASES = {
    "uk": "gb", "greatbritain": "gb", "england": "gb", "scotland": "gb", "wales": "gb",
    "northernireland": "gb", "britain": "gb", "unitedkingdom": "gb",
    "usa": "us", "america": "us", "unitedstatesofamerica": "us", "unitedstates": "us",
    "russia": "ru", "turkey": "tr", "deutschland": "de", "holland": "nl",
    "southkorea": "kr", "northkorea": "kp", "korea": "kr", "laos": "la", "syria": "sy",
    "moldova": "md", "macedonia": "mk", "ivorycoast": "ci", "capeverde": "cv",
    "espana": "es", "españa": "es", "italia": "it", "brasil": "br", "osterreich": "at",
    "schweiz": "ch", "suisse": "ch", "nederland": "nl", "polska": "pl", "mexique": "mx",
    # Short forms of names ISO writes long (Meta's Parameter Builder knows them: countryUtil).
    "vatican": "va", "vaticancity": "va", "palestine": "ps", "micronesia": "fm",
    "democraticrepublicofthecongo": "cd", "drcongo": "cd", "republicofthecongo": "cg",
    "macedoniatheformeryugoslavrepublicof": "mk", "taiwan": "tw", "iran": "ir", "venezuela": "ve",
    "bolivia": "bo", "vietnam": "vn", "tanzania": "tz", "brunei": "bn",
}  # fmt: skip


@lru_cache(maxsize=1)
def _country_names() -> dict[str, str]:
    """Every ISO name, official name and common name, letters only ("Korea, Republic of" ->
    "korearepublicof"), so a name written without ISO's commas and brackets is found."""
    names: dict[str, str] = {}
    for country in pycountry.countries:
        for attr in ("name", "official_name", "common_name"):
            name = getattr(country, attr, None)
            if name:
                names.setdefault("".join(ch for ch in name.lower() if ch.isalpha()), country.alpha_2.lower())
    return names


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
    if letters in _country_names():
        return _country_names()[letters]
    try:
        return pycountry.countries.lookup(text).alpha_2.lower()
    except LookupError:
        raise Dropped("unknown country") from None


_DATE_ISO = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ].*)?")
_DATE_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})")
# Three numbers with any separators between them ("1985 12 31", "12:31:1990", "16–2–1997"),
# as Meta's page ("many input orders, with or without punctuation") and its Parameter Builder
# (dobUtil.js) read them.
_DATE_PARTS = re.compile(r"(\d{1,4})(\D{1,3})(\d{1,2})(\D{1,3})(\d{1,4})")
# Countries that write the month first (02/16/1997): the US and its territories, and the
# countries that took the US convention. Everywhere else an ambiguous date is read day first.
MONTH_FIRST_COUNTRIES = frozenset({"us", "as", "gu", "mp", "pr", "vi", "um", "ph", "fm", "mh", "pw"})


def normalize_dob(value: str, today: date | None = None, region: str | None = None) -> str:
    """A date of birth -> YYYYMMDD (year 1900..this year).

    Year first: year, month, day. Year last: a first number above 12 can only be a day, a
    second above 12 only a day too; when both could be the month, the order of `region` (the
    event's country, the profile's, or DEFAULT_COUNTRY) decides for '/', '-' and spaces: month
    first in MONTH_FIRST_COUNTRIES, day first elsewhere. With no country known, '/' is read
    month first (Meta's example 2/16/1997), '.' day first (European), and others are dropped.
    A '.' date is always read day first.
    """
    text = value.strip().rstrip("年日")  # 1990年12月31日: the CJK markers after the last number
    if m := _DATE_ISO.fullmatch(text) or _DATE_COMPACT.fullmatch(text):
        year, month, day = (int(g) for g in m.groups())
        if month > 12 >= day:  # year, day, month ("1990-15-06"), as the Parameter Builder reads it
            month, day = day, month
    elif m := _DATE_PARTS.fullmatch(text):
        first, sep1, second, sep2, third = m.groups()
        a, b, c = int(first), int(second), int(third)
        separators = sep1 + sep2
        if len(first) == 4 and len(third) <= 2:
            year, month, day = (a, c, b) if b > 12 >= c else (a, b, c)
        elif len(third) == 4 and len(first) <= 2:
            year = c
            if a > 12 >= b:
                day, month = a, b
            elif b > 12 >= a:
                month, day = a, b
            elif "." in separators:
                day, month = a, b
            elif region is not None:
                month, day = (a, b) if region in MONTH_FIRST_COUNTRIES else (b, a)
            elif "/" in separators:
                month, day = a, b
            else:
                raise Dropped("ambiguous date: write it as YYYY-MM-DD, or set the country or DEFAULT_COUNTRY")
        else:
            raise Dropped("not a date (use YYYY-MM-DD)")
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


# Meta's Parameter Builder's word lists (genderUtil.js, MALE_SET / FEMALE_SET), and the same
# words in the languages capi's users write them in.
_GENDERS = {
    **dict.fromkeys(
        ("f", "female", "woman", "women", "w", "girl", "feminine", "femme", "frau",
         "weiblich", "mujer", "femenino", "feminino", "donna", "femmina",
         "lady", "miss", "ms", "mrs", "madam", "ma'am", "daughter", "mother", "mom", "mama",
         "mommy", "aunt", "niece", "sister", "wife", "girlfriend", "bride", "widow", "queen",
         "princess", "duchess", "countess", "empress", "goddess", "maiden", "lass", "gal",
         "chick", "dame", "belle", "she", "her", "hers", "herself"), "f"),
    **dict.fromkeys(
        ("m", "male", "man", "men", "boy", "masculine", "homme", "mann", "männlich",
         "maennlich", "hombre", "masculino", "uomo", "maschio",
         "gentleman", "guy", "sir", "mister", "mr", "son", "father", "dad", "daddy", "papa",
         "uncle", "nephew", "brother", "husband", "boyfriend", "groom", "widower", "king",
         "prince", "duke", "count", "emperor", "god", "lord", "lad", "fellow", "chap", "bloke",
         "dude", "he", "him", "his", "himself"), "m"),
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


def _dob(value: str, ctx: FieldContext) -> str:
    return normalize_dob(value, region=ctx.region)


# Normalizers that need nothing but the value, and those that also need the countries.
_SIMPLE_NORMALIZERS: dict[str, Callable[[str], str]] = {
    "em": normalize_email,
    "fn": normalize_name,
    "ln": normalize_name,
    "ge": normalize_gender,
    "ct": normalize_city,
    "country": normalize_country,
    "external_id": normalize_external_id,
}
_CONTEXT_NORMALIZERS: dict[str, Callable[[str, FieldContext], str]] = {
    "ph": _phone, "st": _state, "zp": _zip, "db": _dob,
}  # fmt: skip


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
    # st is read by the country, db by the region (the country, else DEFAULT_COUNTRY).
    return _remembered(key, value, ctx.country, ctx.region if key == "db" else None)


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
def _remembered(key: str, value: str, country: str | None, region: str | None) -> str:
    return _digest(key, value, FieldContext(country, region))
