"""The JSON log formatter (capi/log.py): the same lines, whatever encodes them."""

from __future__ import annotations

import json
import logging
from typing import Any

from capi.log import log, set_trace, setup_logging


def _line(capsys: Any) -> dict[str, Any]:
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def test_a_line_has_severity_message_time_logger_and_the_fields_not_none(capsys: Any) -> None:
    setup_logging("INFO")
    set_trace(None, None)
    log(logging.WARNING, "events stored for replay", stored=3, error="meta_unavailable", fbtrace_id=None)
    line = _line(capsys)
    time = line.pop("time")
    assert line == {
        "severity": "WARNING",
        "message": "events stored for replay",
        "logger": "capi",
        "stored": 3,
        "error": "meta_unavailable",
    }
    # RFC 3339 in UTC, as datetime.isoformat() writes it: Cloud Logging reads it as the entry's time.
    assert time[10] == "T" and time.endswith("+00:00"), time


def test_below_the_level_nothing_is_written(capsys: Any) -> None:
    setup_logging("WARNING")
    log(logging.INFO, "events processed", status=200)
    assert capsys.readouterr().out == ""
    setup_logging("INFO")


def test_values_orjson_refuses_still_make_a_line(capsys: Any) -> None:
    """An int beyond 64 bits, a non-string key, an object: the standard library's rules apply."""
    setup_logging("INFO")
    set_trace(None, None)
    log(logging.INFO, "probe", big=2**70, by={1: "x"}, other=object)
    line = _line(capsys)
    assert line["big"] == 2**70
    assert line["by"] == {"1": "x"}
    assert line["other"] == str(object)
    assert line["time"][10] == "T"


def test_unicode_is_written_as_is(capsys: Any) -> None:
    setup_logging("INFO")
    set_trace(None, None)
    log(logging.INFO, "events by name", event_name="Achat_é", outcome="forwarded", count=1, match_keys={"em": 1})
    out = capsys.readouterr().out
    assert "Achat_é" in out
    assert json.loads(out)["match_keys"] == {"em": 1}
