"""The remembered digests (capi/normalize.py `_remembered`, one functools.lru_cache): keyed by
the country, bounded, and holding only short, valid values of the keys that repeat.

They replace tests/test_normalize.py's two tests of the hand-written dict it replaced
(issue 15 item 6: the dict was no faster than lru_cache, 95 against 96 ns per hit).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from capi import normalize
from capi.normalize import Dropped, FieldContext, hash_value, normalize_country


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    normalize._remembered.cache_clear()
    yield
    normalize._remembered.cache_clear()


def _remembered_keys() -> int:
    return normalize._remembered.cache_info().currsize


def test_remembered_digests_depend_on_the_country() -> None:
    # The same text is a US state in the US and a plain region elsewhere: one entry each.
    assert hash_value("st", "California", FieldContext("us", None)) == hashlib.sha256(b"ca").hexdigest()
    assert hash_value("st", "California", FieldContext("fr", None)) == hashlib.sha256(b"california").hexdigest()
    assert hash_value("st", "California", FieldContext("us", "fr")) == hashlib.sha256(b"ca").hexdigest()
    assert normalize._remembered.cache_info().hits == 1
    assert _remembered_keys() == 2


def test_the_cache_is_bounded() -> None:
    assert normalize._remembered.cache_info().maxsize == 16384
    for n in range(16384 + 100):
        assert hash_value("fn", f"Name{n}", FieldContext(None, None)) == hashlib.sha256(f"name{n}".encode()).hexdigest()
    assert _remembered_keys() == 16384


def test_dropped_unique_and_long_values_are_never_remembered() -> None:
    with pytest.raises(Dropped):  # a dropped value is not remembered as anything
        hash_value("ge", "unknown", FieldContext(None, None))
    hash_value("em", "someone@example.com", FieldContext(None, None))  # nearly unique: not remembered
    hash_value("zp", "94025", FieldContext("us", None))
    long_name = "Jane" * 100  # 400 characters: hashed, not remembered
    assert (
        hash_value("fn", long_name, FieldContext(None, None)) == hashlib.sha256(long_name.lower().encode()).hexdigest()
    )
    assert _remembered_keys() == 0
    assert hash_value("fn", "Jane", FieldContext(None, None)) == hashlib.sha256(b"jane").hexdigest()
    assert _remembered_keys() == 1


def test_long_countries_never_reach_the_country_cache() -> None:
    before = normalize._country.cache_info().currsize
    with pytest.raises(Dropped):
        normalize_country("United States" * 10)
    assert normalize._country.cache_info().currsize == before
    assert normalize_country("United States") == "us"
