"""The lenient reading of a request body that orjson refused only for unpaired surrogate
escapes: the standard library's parser with orjson's rules on numbers and constants, and the
path of the first string that holds one (capi.http parses, capi.inputs rejects those events)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# A code point of the surrogate range left in a str: the JSON escape of half a pair ("\ud800").
# orjson refuses such a body whole; Meta cannot take such text either.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
UNPAIRED = "holds an unpaired UTF-16 surrogate escape (such as \\ud800): not valid Unicode text"


@dataclass(frozen=True)
class Lenient:
    """A body orjson refused only for unpaired surrogate escapes, parsed by the standard
    library instead (`parse`). capi.inputs.read rejects each event that holds one and reads
    the others, so one such string costs its own event, not the request (issue 19 finding 2)."""

    value: Any


def _int(text: str) -> int | float:
    """Integers as orjson reads them: 64-bit ones exactly, larger ones as floats, never int()
    of a long digit string (Python refuses more than 4,300 digits)."""
    if len(text) <= 20:
        value = int(text)
        if -(2**63) <= value < 2**64:
            return value
    return _float(text)


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number is infinity when parsed as double")
    return value


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def parse(text: str) -> Lenient:
    """The standard library's reading of a body, with orjson's rules on numbers and constants.
    Raises ValueError (or RecursionError) when it is not JSON either."""
    return Lenient(json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_refuse))


def unpaired(value: Any) -> str | None:
    """The path (`.key`, `[i]`) of the first string or key holding a lone surrogate, or None.
    Iterative: the standard parser nests as deep as its recursion limit allows."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if _LONE_SURROGATE.search(key):
                    return f"{path}.{key.encode('utf-8', 'backslashreplace').decode()}"
                stack.append((f"{path}.{key}", child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(item))))
    return None
