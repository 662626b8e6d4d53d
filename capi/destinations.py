"""Several pixels: the destinations an event goes to (docs/destinations.md).

`META_DESTINATIONS` is parsed here into `Destination`s; `route` says which of them one event
belongs to: the ones it names itself (`"destinations": [...]`), else every destination whose
`hosts` match the host of its `event_source_url`, or that has no `hosts`. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

MAX_DESTINATIONS = 20  # one Graph call (and one thread) per destination per request
MAX_HOSTS = 100  # per destination
DEFAULT = "default"  # the one destination of META_PIXEL_ID alone
NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")
# A host name, or `*.` and a host name (its subdomains, not itself): letters, digits, hyphens.
HOST_PATTERN = re.compile(r"(\*\.)?([a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?)*")
KEYS = frozenset(
    {"name", "pixel_id", "access_token_secret", "access_token", "app_secret_secret", "app_secret",
     "test_event_code", "forward_events", "hosts"}
)  # fmt: skip


class Invalid(ValueError):
    """Raised with the reason only; the configuration loader names the variable."""


class Inherit:
    """`forward_events` left out: the destination takes `FORWARD_EVENTS` (completed at load)."""

    def __repr__(self) -> str:
        return "INHERIT"


INHERIT = Inherit()


@dataclass(frozen=True)
class Destination:
    """One Meta dataset (pixel) capi sends to, with its own token and filters.

    `forward_events` is None for every event (`*`), else the names it takes (input or Meta
    name). `implicit` marks the `default` destination made from META_PIXEL_ID alone.
    """

    name: str
    pixel_id: str
    access_token_secret: str | None = None
    access_token: str | None = field(default=None, repr=False)
    app_secret_secret: str | None = None
    app_secret: str | None = field(default=None, repr=False)
    test_event_code: str | None = None
    forward_events: frozenset[str] | None | Inherit = INHERIT
    hosts: tuple[str, ...] = ()
    implicit: bool = False

    def takes(self, incoming: str, meta_name: str) -> bool:
        names = self.forward_events
        if names is None or isinstance(names, Inherit):
            return True
        return incoming in names or meta_name in names

    def serves(self, host: str | None) -> bool:
        """Whether an event from `host` belongs here by its URL (no `hosts`: every event)."""
        if not self.hosts:
            return True
        return host is not None and any(host_matches(pattern, host) for pattern in self.hosts)


def host_matches(pattern: str, host: str) -> bool:
    """`shop.example.com` matches itself only; `*.example.com` matches `a.example.com` and
    `a.b.example.com` (any depth, unlike a TLS wildcard), not `example.com` itself (list both
    for both)."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


# What a browser drops before parsing a URL (WHATWG URL Standard, "basic URL parser"): C0
# controls and spaces at either end, and tabs and newlines anywhere.
_URL_EDGES = "".join(chr(c) for c in range(0x21))
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")
_AUTHORITY_END = re.compile(r"[/?#]")


def event_host(url: Any) -> str | None:
    """The lowercase host of an event's `event_source_url` (no port), read as a browser reads
    it, or None (not an http(s) URL, or no valid host).

    Python's `urlsplit` is not a browser: for `https://evil.example\\@shop-b.example.com/` it
    says shop-b.example.com, where a browser (the WHATWG URL Standard: a backslash ends the
    host of an http(s) URL, as a slash does) goes to evil.example. Routing follows the browser.
    """
    if not isinstance(url, str):
        return None
    text = url.strip(_URL_EDGES).translate(_TAB_NEWLINE)
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() not in ("http", "https"):
        return None
    rest = rest.replace("\\", "/").lstrip("/")  # a special scheme takes any run of slashes
    authority = _AUTHORITY_END.split(rest, maxsplit=1)[0]
    host = authority.rpartition("@")[2]  # the last "@" ends the credentials
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1].lower() if end > 0 else None
    host = unquote(host.rpartition(":")[0] if ":" in host else host).lower()
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    host = host.rstrip(".")
    return host if host and HOST_PATTERN.fullmatch(host) else None


# -- parsing META_DESTINATIONS ------------------------------------------------------------


def parse(text: str, forward_events: Callable[[str], frozenset[str] | None]) -> tuple[Destination, ...]:
    """The destinations of `META_DESTINATIONS` (empty when unset); `forward_events` parses
    one entry's `forward_events` the way FORWARD_EVENTS is parsed.

    Raises:
        Invalid: the first problem, naming the entry (never a token's value).
    """
    if not text:
        return ()
    try:
        entries = json.loads(text)
    except ValueError:
        raise Invalid("must be a JSON array of destinations") from None
    if not isinstance(entries, list) or not entries:
        raise Invalid("must be a non-empty JSON array of destinations")
    if len(entries) > MAX_DESTINATIONS:
        raise Invalid(f"has {len(entries)} destinations; at most {MAX_DESTINATIONS}")
    found: list[Destination] = []
    for position, entry in enumerate(entries):
        destination = _entry(entry, position, forward_events)
        if any(d.name == destination.name for d in found):
            raise Invalid(f"names the destination {destination.name!r} twice")
        found.append(destination)
    return tuple(found)


def _entry(entry: Any, position: int, forward_events: Callable[[str], Any]) -> Destination:
    where = f"entry {position}"
    if not isinstance(entry, dict):
        raise Invalid(f"{where} must be a JSON object")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise Invalid(f"{where}: name must be 1-64 letters, digits, '_' or '-'")
    where = f"destination {name!r}"
    unknown = sorted(set(entry) - KEYS)
    if unknown:
        raise Invalid(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
    pixel = entry.get("pixel_id")
    if isinstance(pixel, int) and not isinstance(pixel, bool):
        pixel = str(pixel)
    if not isinstance(pixel, str) or not pixel.isdigit():
        raise Invalid(f"{where}: pixel_id must be digits")
    text = {key: _text(entry, key, where) for key in KEYS - {"name", "pixel_id", "forward_events", "hosts"}}
    if not (text["access_token_secret"] or text["access_token"]):
        raise Invalid(f"{where} has no token: give access_token_secret (or access_token for local runs)")
    names: Any = INHERIT
    if "forward_events" in entry:
        value = entry["forward_events"]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = ",".join(value)
        if not isinstance(value, str):
            raise Invalid(f"{where}: forward_events must be a comma list or an array of names")
        try:
            names = forward_events(value.strip() or " ")  # "" would mean the default
        except ValueError as exc:
            raise Invalid(f"{where}: forward_events {exc}") from None
    return Destination(
        name=name,
        pixel_id=pixel,
        access_token_secret=text["access_token_secret"],
        access_token=text["access_token"],
        app_secret_secret=text["app_secret_secret"],
        app_secret=text["app_secret"],
        test_event_code=text["test_event_code"],
        forward_events=names,
        hosts=_hosts(entry.get("hosts"), where),
    )


def _text(entry: dict[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(f"{where}: {key} must be a string")
    return value.strip() or None


def _hosts(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(h, str) for h in value):
        raise Invalid(f"{where}: hosts must be a non-empty array of host names")
    if len(value) > MAX_HOSTS:
        raise Invalid(f"{where}: at most {MAX_HOSTS} hosts")
    hosts = []
    for host in value:
        pattern = host.strip().lower().rstrip(".")
        if not HOST_PATTERN.fullmatch(pattern) or len(pattern) > 253:
            raise Invalid(
                f"{where}: bad host pattern {host[:80]!r} (a host name such as shop.example.com, or *.example.com;"
                " no scheme, port or path)"
            )
        hosts.append(pattern)
    return tuple(hosts)


# -- routing one event --------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """Where one event goes: destination names, or why none (a skip or a rejection)."""

    names: tuple[str, ...] = ()
    skip: str | None = None  # "no destination" or "not in FORWARD_EVENTS"
    problem: str | None = None  # the event's own `destinations` field is wrong


def route(destinations: Sequence[Destination], named: Any, url: Any, incoming: str, meta_name: str) -> Route:
    """The destinations of one event: those it `named`, else those serving its URL's host;
    each filtered by its own `forward_events`."""
    if named is not None:
        known = {d.name for d in destinations}
        if isinstance(named, str):
            named = [named]
        if not isinstance(named, list) or not named or not all(isinstance(n, str) for n in named):
            return Route(problem="must be a non-empty array of destination names")
        unknown = [n for n in named if n not in known]
        if unknown:
            shown = ", ".join(repr(n[:64]) for n in unknown[:5])
            return Route(problem=f"unknown destination(s) {shown}; known: {', '.join(sorted(known))}")
        matched = [d for d in destinations if d.name in named]
    else:
        host = event_host(url) if any(d.hosts for d in destinations) else None
        matched = [d for d in destinations if d.serves(host)]
    if not matched:
        return Route(skip="no destination")
    names = tuple(d.name for d in matched if d.takes(incoming, meta_name))
    if not names:
        return Route(skip="not in FORWARD_EVENTS")
    return Route(names)
