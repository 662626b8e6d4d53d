"""Consent Mode v2 and the other consent signals an event may carry (docs/api.md#consent).

Pure: no I/O. `decide(event)` reads every signal present and answers whether the event may go
to Meta and, when it may not, which signal said so. An event is refused when any signal says
ad_storage or ad_user_data is denied; a signal capi cannot read counts as denied, because
sending personal data the user refused is the worse mistake.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

GRANTED: Final = "granted"
DENIED: Final = "denied"
NOT_SET: Final = "not set"

# The signals, in the order they are read; each is the input key that carries it.
SIGNALS: tuple[str, ...] = ("consent", "consent_state", "x-ga-gcd", "x-ga-gcs")
REQUIRED: Final = "CONSENT_REQUIRED"  # the "signal" named when no signal at all was present

# x-ga-gcd letters: a base64url digit whose bits hold the default state ((v >> 2) & 3) and the
# update (v & 3), each 1 not set, 2 denied, 3 granted; the update wins when set. Only the nine
# letters the GA4 tag writes are listed (analytics-debugger's consent parser, template.tpl);
# any other character is unknown and counts as denied.
GCD_LETTERS: Mapping[str, str] = {
    "l": NOT_SET,  # not set, no update
    "p": DENIED,  # denied by default, no update
    "q": DENIED,  # denied by default, updated to denied
    "t": GRANTED,  # granted by default, no update
    "r": GRANTED,  # denied by default, updated to granted
    "m": DENIED,  # no default, updated to denied
    "n": GRANTED,  # no default, updated to granted
    "u": DENIED,  # granted by default, updated to denied
    "v": GRANTED,  # granted by default, updated to granted
}
# Positions of the state letters in gcd ("13r3r3r3r5l1"): ad_storage, analytics_storage,
# ad_user_data, ad_personalization. Only the two Meta depends on are read.
GCD_AD_STORAGE = 2
GCD_AD_USER_DATA = 6
# The shape the GA4 tag writes: "1", a digit, then letter-digit pairs, the four state letters
# first ("11p1p1p1p5", "13r3r3r3r5l1"). Anything else (a random string, a megabyte of "r") is
# not a gcd and counts as denied; the length is checked before the pattern is tried.
MAX_GCD_CHARS = 32
_GCD = re.compile(r"1[0-9](?:[A-Za-z][0-9]){4,15}")

# x-ga-gcs "G1xy": x (index 2) is ad_storage, y (index 3) analytics_storage.
GCS_AD_STORAGE: Mapping[str, str] = {"1": GRANTED, "0": DENIED}

# Keys of capi's own `consent` object (and the Measurement Protocol's) that gate forwarding.
_GATING = ("ad_user_data", "ad_storage")


def gcd_state(gcd: str, position: int) -> str:
    """The effective state of one gcd letter; a missing or unknown letter is denied."""
    if len(gcd) <= position:
        return DENIED
    return GCD_LETTERS.get(gcd[position], DENIED)


def _from_gcd(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_GCD_CHARS or not _GCD.fullmatch(value):
        return DENIED
    states = (gcd_state(value, GCD_AD_STORAGE), gcd_state(value, GCD_AD_USER_DATA))
    if DENIED in states:
        return DENIED
    return GRANTED if GRANTED in states else NOT_SET


def _from_gcs(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 4 or not value.startswith("G1") or value[3] not in "01":
        return DENIED
    return GCS_AD_STORAGE.get(value[2], DENIED)


def _from_consent(value: Any) -> str:
    """capi's `consent` and the Measurement Protocol's: "denied"/"DENIED" strings."""
    if not isinstance(value, Mapping):
        return DENIED
    states = [value.get(key) for key in _GATING if value.get(key) is not None]
    if not states:
        return NOT_SET
    for state in states:
        if not isinstance(state, str) or state.strip().lower() not in (GRANTED, DENIED):
            return DENIED
        if state.strip().lower() == DENIED:
            return DENIED
    return GRANTED


def _from_consent_state(value: Any) -> str:
    """Stape's `consent_state`: booleans (Stape's Data Tag writes true/false)."""
    if not isinstance(value, Mapping):
        return DENIED
    states = [value.get(key) for key in _GATING if value.get(key) is not None]
    if not states:
        return NOT_SET
    return GRANTED if all(state is True for state in states) else DENIED


_READERS = {
    "consent": _from_consent,
    "consent_state": _from_consent_state,
    "x-ga-gcd": _from_gcd,
    "x-ga-gcs": _from_gcs,
}


def decide(
    event: Mapping[str, Any], required: bool, request: Mapping[str, Any] | None = None
) -> tuple[bool, str | None]:
    """(allowed, signal): signal names what denied the event, or what was read when allowed.

    `request` holds the signals the request carried beside its events (the Measurement
    Protocol's `consent`, or any signal next to `events` / `data`): they are read as well as
    the event's own, never replaced by them, and any denial at either level wins.
    `required` is CONSENT_REQUIRED: with it, an event without any signal is not allowed.
    """
    seen: str | None = None
    for signals in (event, request) if request else (event,):
        for name in SIGNALS:
            value = signals.get(name)
            if value is None:
                continue
            state = _READERS[name](value)
            if state == DENIED:
                return False, name
            if state == GRANTED and seen is None:
                seen = name
    if seen is None and required:
        return False, REQUIRED
    return True, seen


def ad_user_data_granted(event: Mapping[str, Any], required: bool, request: Mapping[str, Any] | None = None) -> bool:
    """Whether consent lets capi remember and add customer data for the event's browser
    (enhanced event coverage, capi.browsers): a stricter question than `decide`'s.

    A signal, the event's or the request's, must grant ad_user_data itself: capi's
    `consent.ad_user_data`, Stape's `consent_state.ad_user_data`, or the third pair of
    `x-ga-gcd`. `x-ga-gcs` says nothing about ad_user_data, so it alone is not enough. With no
    signal at all, as the event's forwarding: allowed unless CONSENT_REQUIRED. Any denial was
    already applied by `decide`, which skips the event.
    """
    present = [
        (name, signals[name]) for signals in (event, request or {}) for name in SIGNALS if signals.get(name) is not None
    ]
    if not present:
        return not required
    for name, value in present:
        if name == "x-ga-gcd" and isinstance(value, str):
            if gcd_state(value, GCD_AD_USER_DATA) == GRANTED:
                return True
        elif name == "consent" and isinstance(value, Mapping):
            state = value.get("ad_user_data")
            if isinstance(state, str) and state.strip().lower() == GRANTED:
                return True
        elif name == "consent_state" and isinstance(value, Mapping) and value.get("ad_user_data") is True:
            return True
    return False
