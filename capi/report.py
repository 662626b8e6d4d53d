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
from collections.abc import Mapping
from typing import Any

from capi.log import log

BY_NAME = "events by name"
OUTCOMES = ("forwarded", "stored", "skipped", "rejected", "failed")


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
