"""The `"events by name"` log lines (pure, apart from `log_by_name`): what metrics per event name need.

A log-based metric takes its labels from fields, never from the keys of a map, so the
request line's `by_event` map (`{"Purchase": {"forwarded": 2, ...}}`) cannot become a metric
labelled by event name. One compact line per event name and outcome can:

    {"message": "events by name", "event_name": "Purchase", "outcome": "forwarded", "count": 2,
     "match_keys": {"em": 2, "ph": 1}}

`match_keys` (forwarded lines only) counts the forwarded events of that name that carried each
`user_data` key: the match-key coverage metrics of terraform/monitoring.tf divide it by `count`.
A request with one event writes one such line; a 1000-event request one per name and outcome.

The names are bounded (issue 19 finding 22: 1000 distinct names in one 108 KB request wrote
1,001 lines and made 1,000 new metric label values; sGTM's "All events" trigger lets any
browser do that). A name is written as itself only when capi knows it: one of Meta's standard
events, or a name the configuration lists (EVENT_NAME_MAP, FORWARD_EVENTS, a destination's
forward_events). Every other name is counted as `other`. So the label values of every
per-name metric, and the lines per request, are bounded by the configuration, not the input.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from capi.config import Config
from capi.destinations import Inherit
from capi.log import log
from capi.service import NO_NAME  # the name of an event without a usable one: a bounded label too

BY_NAME = "events by name"
OUTCOMES = ("forwarded", "stored", "skipped", "rejected", "failed")
OTHER = "other"  # every name capi does not know, as one label value
# Meta's standard events (developers.facebook.com/docs/meta-pixel/reference), and PageView.
STANDARD_EVENTS = frozenset(
    {"AddPaymentInfo", "AddToCart", "AddToWishlist", "CompleteRegistration", "Contact", "CustomizeProduct",
     "Donate", "FindLocation", "InitiateCheckout", "Lead", "PageView", "Purchase", "Schedule", "Search",
     "StartTrial", "SubmitApplication", "Subscribe", "ViewContent"}
)  # fmt: skip


def known_names(config: Config) -> frozenset[str]:
    """The event names written as themselves: Meta's standard events, and every name the
    configuration lists (each is bounded by the configuration's own size)."""
    names = set(STANDARD_EVENTS) | {NO_NAME} | set(config.event_name_map.values())
    for listed in (config.forward_events, *(d.forward_events for d in config.destinations)):
        if listed is not None and not isinstance(listed, Inherit):
            names |= listed
    return frozenset(names)


def fold_names(
    by_event: Mapping[str, Mapping[str, int]], keys_by_name: Mapping[str, Mapping[str, int]], known: frozenset[str]
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """`by_event` and `keys_by_name` with every name not in `known` summed under OTHER."""
    if known.issuperset(by_event):  # the common request: nothing to fold
        return dict(by_event), dict(keys_by_name)  # type: ignore[arg-type]
    folded: dict[str, dict[str, int]] = {}
    for name, counts in by_event.items():
        _add(folded, name if name in known else OTHER, counts)
    keys: dict[str, dict[str, int]] = {}
    for name, counts in keys_by_name.items():
        _add(keys, name if name in known else OTHER, counts)
    return folded, keys


def _add(into: dict[str, dict[str, int]], name: str, counts: Mapping[str, int]) -> None:
    entry = into.setdefault(name, {})
    for key, count in counts.items():
        entry[key] = entry.get(key, 0) + count


def by_name_lines(
    by_event: Mapping[str, Mapping[str, int]], keys_by_name: Mapping[str, Mapping[str, int]]
) -> list[dict[str, Any]]:
    """The fields of each `"events by name"` line: one per event name and outcome with a count.

    `keys_by_name` (capi.service.Outcome.log_summary): per event name, how many of its forwarded
    events carried each user_data key, counted in the same pass as the request's line.
    """
    lines: list[dict[str, Any]] = []
    for name in sorted(by_event):
        for outcome in OUTCOMES:
            count = by_event[name].get(outcome, 0)
            if count:
                line: dict[str, Any] = {"event_name": name, "outcome": outcome, "count": count}
                if outcome == "forwarded":
                    line["match_keys"] = dict(sorted(keys_by_name.get(name, {}).items()))
                lines.append(line)
    return lines


def log_by_name(by_event: Mapping[str, Mapping[str, int]], keys_by_name: Mapping[str, Mapping[str, int]]) -> None:
    """Write the lines, at INFO, after the request's `"events processed"` line."""
    for fields in by_name_lines(by_event, keys_by_name):
        log(logging.INFO, BY_NAME, **fields)
