"""Meta's Parameter Builder's own test vectors, each run through capi's normalizer with its digest.

Source: facebook/capi-param-builder at the commit named in tests/payloads/param_builder_vectors.json,
nodejs/capi-param-builder/tests/*Util.test.js: every `expect(getNormalizedX(input))` with a
string input and the value it expects (null: the Parameter Builder refuses the value). capi must
send SHA-256 of that value, or nothing where it expects null.

Meta's published rule comes first (docs/meta-capi.md §5, Customer information parameters page);
the Parameter Builder decides only where that page is silent. Where the two disagree, capi follows
Meta, and the vector's entry in the file's `meta_rule` gives capi's value and one of the reasons
below, which says why.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from typing import Any

import pytest

from capi import normalize
from capi.normalize import Dropped, FieldContext, hash_value, is_sha256
from tests.conftest import ROOT

CORPUS: dict[str, Any] = json.loads((ROOT / "tests/payloads/param_builder_vectors.json").read_text())

# Why capi differs from the Parameter Builder, each with the rule that decides it.
REASONS = {
    "empty": "the Parameter Builder returns '' for a value with nothing left (capi's callers would hash it to "
    "e3b0c442..., which matches no one); Meta's keys are all optional, so capi leaves the key out instead",
    "phone-country-code": "Meta: a phone number includes its country code, leading zeros removed; these digits "
    "hold no possible number after an international prefix (00/000 then no country code, or too long), so "
    "capi drops them where the Parameter Builder strips zeros and sends what is left",
    "phone-extension": "Meta: the phone number's digits; an extension ('ext. 123') is not part of the number, "
    "the Parameter Builder appends its digits",
    "dob-text": "Meta: a date of birth in one of the usual written orders; capi refuses a value with other "
    "words or more numbers around the date ('Born: ...', '(mm/dd/yyyy)', a time) rather than guess which "
    "three numbers are the date, as the Parameter Builder does by taking the first three",
    "dob-year-range": "Meta: year from 1900 to the current year; the Parameter Builder accepts 1800 to next year",
    "dob-calendar": "Meta: YYYYMMDD of a real date; 1900 was no leap year, the Parameter Builder only checks day <= 31",
    "dob-fullwidth": "full-width digits (１２－３１－１９９０) are digits: capi reads them (Meta's rule is about the "
    "date, not the script it is typed in); the Parameter Builder refuses them",
    "gender-words": "Meta: f or m; capi maps the Parameter Builder's English word lists and also the same words "
    "in other languages (femme, Frau, mujer, uomo, ...), 'w' (weiblich) and a trailing dot",
    "zip-punctuation": "Meta: postal code lowercase with no spaces and no dash (US: the first 5 digits); capi "
    "removes the dash and other punctuation and keeps what follows it, the Parameter Builder cuts at the first "
    "dash and keeps other punctuation",
    "name-letters": "Meta: names lowercase with no punctuation, UTF-8 letters kept; capi keeps letters (every "
    "script) and digits only, so an en dash or an emoji goes too, which the Parameter Builder (ASCII "
    "punctuation only) keeps",
    "utf8-letters": "Meta: UTF-8 letters are kept (its own example hashes 'Valéry'); the Parameter Builder's "
    "city rule deletes every non-Latin letter ('Zürich' -> 'zrich', 'Москва' refused)",
    "city-digits": "Meta: city lowercase with no punctuation, special characters or spaces; digits are none "
    "of those, so capi keeps them, the Parameter Builder refuses a city that starts with a digit",
    "state-as-written": "Meta: US and Canadian states as their 2-letter code, others lowercase without "
    "punctuation or spaces; capi maps names and codes it knows and keeps any other value as written, where the "
    "Parameter Builder cuts it to its first two letters ('Tex.' -> 'te', 'Penn.' -> 'pe', no states) or maps "
    "by prefix ('Carolina' -> 'ca')",
    "country-no-guess": "Meta: ISO 3166-1 alpha-2; capi maps codes and names it knows and drops the rest, where "
    "the Parameter Builder maps by prefix or keeps the first two letters ('Germánia' -> 'ge', Georgia)",
    "country-iso": "Meta: ISO 3166-1 alpha-2; the United Kingdom's code is gb, not uk",
    "whitespace": "capi removes every Unicode whitespace from external_id (U+001F counts as whitespace in "
    "Python's str.split); the Parameter Builder removes JavaScript's \\s only",
}


def _cases() -> list[Any]:
    out = []
    for key, block in CORPUS["vectors"].items():
        for position, (text, expected) in enumerate(block["cases"]):
            out.append(pytest.param(key, text, expected, id=f"{key}-{position}"))
    return out


def digest_of(normalized: str | None) -> str | None:
    """What capi must send for a normalized value: its SHA-256, or a given digest lower-cased."""
    if normalized is None:
        return None
    if is_sha256(normalized):
        return normalized.lower()
    return hashlib.sha256(normalized.encode()).hexdigest()


@pytest.fixture(autouse=True)
def as_of(monkeypatch: pytest.MonkeyPatch) -> None:
    # The vectors' year bound is relative to the year they were written in (CORPUS["as_of"]).
    pinned = date.fromisoformat(CORPUS["as_of"])

    class Pinned(date):
        @classmethod
        def today(cls) -> date:
            return pinned

    monkeypatch.setattr(normalize, "date", Pinned)


@pytest.mark.parametrize(("key", "text", "expected"), _cases())
def test_param_builder_vector(key: str, text: str, expected: str | None) -> None:
    override = CORPUS["meta_rule"][key].get(text)
    if override is not None:
        assert override["why"] in REASONS, override
        expected = override["capi"]
    context = FieldContext(None, CORPUS["vectors"][key].get("capi_region"))
    try:
        got = hash_value(key, text, context)
    except Dropped:
        got = None
    assert got == digest_of(expected or None), (text, expected)


def test_every_meta_rule_entry_is_a_real_disagreement_with_a_reason() -> None:
    vectors = {key: dict(map(tuple, block["cases"])) for key, block in CORPUS["vectors"].items()}
    used = set()
    for key, overrides in CORPUS["meta_rule"].items():
        for text, override in overrides.items():
            assert text in vectors[key], (key, text)
            pb = vectors[key][text]
            if pb == "":  # "empty": the Parameter Builder's '' against capi's nothing
                assert override["capi"] is None and override["why"] == "empty", (key, text)
            else:
                assert digest_of(override["capi"]) != digest_of(pb), (key, text)
            used.add(override["why"])
    assert used == set(REASONS)  # every reason explains at least one vector, none is left over


def test_the_corpus_is_the_param_builders_and_capi_agrees_on_most_of_it() -> None:
    assert CORPUS["source"] == "https://github.com/facebook/capi-param-builder"
    assert len(CORPUS["commit"]) == 40
    total = sum(len(block["cases"]) for block in CORPUS["vectors"].values())
    differing = sum(len(overrides) for overrides in CORPUS["meta_rule"].values())
    assert set(CORPUS["vectors"]) == {"em", "ph", "db", "ge", "zp", "fn", "ct", "st", "country", "external_id"}
    assert total > 1800 and differing < total // 7, (total, differing)
