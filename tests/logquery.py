"""A small evaluator of the Cloud Logging query language, for the subset terraform/monitoring.tf uses.

Supported: comparisons `=`, `!=`, `>`, `>=`, `<`, `<=` and `:` (has) between a field path
(`severity`, `resource.labels.service_name`, `jsonPayload.match_keys.em`) and a quoted string
or a bare number/word; `AND`, `OR`, `NOT`, parentheses. Semantics as Cloud Logging documents
them (cloud.google.com/logging/docs/view/logging-query-language): a comparison on a missing
field is false (so `NOT f="x"` matches when f is missing), numbers compare as numbers,
`severity` compares by level, `:` is a case-insensitive substring test.

`entry(line, service)` turns a JSON line capi writes into the LogEntry Cloud Logging stores:
`severity`, `time` and `logging.googleapis.com/trace` are lifted out of the payload
(cloud.google.com/logging/docs/structured-logging, "Special JSON fields"), everything else,
`message` included, stays under `jsonPayload`.
"""

from __future__ import annotations

import re
from typing import Any

SEVERITIES = ["DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"]
TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>>=|<=|!=|=|>|<|:)|(?P<paren>[()])|(?P<word>[^\s()"=!<>:]+))'
)
LIFTED = {"severity", "time", "logging.googleapis.com/trace", "logging.googleapis.com/spanId"}


def entry(line: dict[str, Any], service: str) -> dict[str, Any]:
    payload = {k: v for k, v in line.items() if k not in LIFTED}
    return {
        "severity": line.get("severity", "DEFAULT"),
        "resource": {"type": "cloud_run_revision", "labels": {"service_name": service}},
        "jsonPayload": payload,
    }


def tokens(query: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    position = 0
    query = query.strip()
    while position < len(query):
        match = TOKEN.match(query, position)
        if not match or match.end() == position:
            raise ValueError(f"cannot read the query at {query[position:]!r}")
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


def _value(raw: str, kind: str) -> str:
    return raw[1:-1].replace('\\"', '"').replace("\\\\", "\\") if kind == "str" else raw


def _field(record: dict[str, Any], path: str) -> Any:
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _compare(actual: Any, op: str, expected: str, path: str) -> bool:
    if actual is None:
        return False
    if op == ":":
        return expected == "*" or expected.lower() in str(actual).lower()
    if path == "severity":
        left, right = SEVERITIES.index(str(actual)), SEVERITIES.index(expected.upper())
    elif isinstance(actual, int | float) and not isinstance(actual, bool):
        try:
            left, right = actual, float(expected)
        except ValueError:
            return op == "!="
    else:
        left, right = str(actual), expected
    return {
        "=": left == right,
        "!=": left != right,
        ">": left > right,
        ">=": left >= right,
        "<": left < right,
        "<=": left <= right,
    }[op]


class _Parser:
    def __init__(self, query: str, record: dict[str, Any]) -> None:
        self.items = tokens(query)
        self.at = 0
        self.record = record

    def peek(self) -> tuple[str, str] | None:
        return self.items[self.at] if self.at < len(self.items) else None

    def take(self) -> tuple[str, str]:
        item = self.items[self.at]
        self.at += 1
        return item

    def run(self) -> bool:
        result = self.or_()
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()}")
        return result

    def or_(self) -> bool:
        result = self.and_()
        while self.peek() == ("word", "OR"):
            self.take()
            right = self.and_()
            result = result or right
        return result

    def and_(self) -> bool:
        result = self.not_()
        while (item := self.peek()) is not None and item != ("word", "OR") and item != ("paren", ")"):
            if item == ("word", "AND"):
                self.take()
            right = self.not_()  # juxtaposition is AND too
            result = result and right
        return result

    def not_(self) -> bool:
        if self.peek() == ("word", "NOT"):
            self.take()
            return not self.not_()
        if self.peek() == ("paren", "("):
            self.take()
            result = self.or_()
            if self.take() != ("paren", ")"):
                raise ValueError("missing )")
            return result
        kind, path = self.take()
        if kind != "word":
            raise ValueError(f"expected a field, got {path!r}")
        op_kind, op = self.take()
        if op_kind != "op":
            raise ValueError(f"expected an operator after {path}, got {op!r}")
        value_kind, raw = self.take()
        return _compare(_field(self.record, path), op, _value(raw, value_kind), path)


def matches(query: str, record: dict[str, Any]) -> bool:
    """Whether the LogEntry `record` matches the Logging query."""
    return _Parser(query, record).run()


def fields(query: str) -> set[str]:
    """Every jsonPayload field path the query compares."""
    return {value for kind, value in tokens(query) if kind == "word" and value.startswith("jsonPayload.")}
