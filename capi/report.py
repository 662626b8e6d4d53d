"""The `"events by name"` log lines (pure, apart from `log_by_name`): what metrics per event name need.

A log-based metric takes its labels from fields, never from the keys of a map, so the
request line's `by_event` map (`{"Purchase": {"forwarded": 2, ...}}`) cannot become a metric
labelled by event name. One compact line per event name and outcome can:

    {"message": "events by name", "event_name": "Purchase", "outcome": "forwarded", "count": 2,
     "match_keys": {"em": 2, "ph": 1}}

`match_keys` (forwarded lines only) counts the forwarded events of that name that carried each
`user_data` key: the match-key coverage metrics of terraform/monitoring.tf divide it by `count`.
A request with one event writes one such line; a 1000-event request one per name and outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from capi.log import log

BY_NAME = "events by name"
OUTCOMES = ("forwarded", "stored", "skipped", "rejected", "failed")


def match_keys_by_name(events: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """For Graph API events (hashed, as sent): per event name, how many carried each user_data key."""
    found: dict[str, dict[str, int]] = {}
    for event in events:
        user = event.get("user_data")
        if isinstance(user, Mapping):
            counts = found.setdefault(str(event.get("event_name")), {})
            for key, value in user.items():
                if value not in (None, "", []):
                    counts[key] = counts.get(key, 0) + 1
    return found


def by_name_lines(
    by_event: Mapping[str, Mapping[str, int]], forwarded: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The fields of each `"events by name"` line: one per event name and outcome with a count."""
    keys = match_keys_by_name(forwarded)
    lines: list[dict[str, Any]] = []
    for name in sorted(by_event):
        for outcome in OUTCOMES:
            count = by_event[name].get(outcome, 0)
            if count:
                line: dict[str, Any] = {"event_name": name, "outcome": outcome, "count": count}
                if outcome == "forwarded":
                    line["match_keys"] = dict(sorted(keys.get(name, {}).items()))
                lines.append(line)
    return lines


def log_by_name(by_event: Mapping[str, Mapping[str, int]], forwarded: Iterable[Mapping[str, Any]]) -> None:
    """Write the lines, at INFO, after the request's `"events processed"` line."""
    for fields in by_name_lines(by_event, forwarded):
        log(logging.INFO, BY_NAME, **fields)
