"""The GA4 / server-side GTM event model: an event object as sGTM's getAllEventData() gives it.

It already is capi's internal form, so the common event goes through untouched. Two families
of keys inside it are translated, each by its own module: Meta's sGTM tag keys (`x-fb-ud-*`,
`x-fb-cd-*`, `x-fb-event_id`: `meta_tag`) and Stape's flat user keys (`email`, `firstName`, ...,
`common_cookie`: `stape`).
"""

from __future__ import annotations

from typing import Any

from capi.inputs import meta_tag, stape
from capi.inputs.common import Incoming

DIALECT = "ga4"
_TRANSLATED = meta_tag.KEYS | stape.KEYS  # keys that make an event need a copy and translation
_IN_LIST_IGNORED = ("test_event_code",)  # one code per request: only a single event's is read


def adapt(raw: Any, in_list: bool = False) -> Incoming:
    """One event-model object -> (internal event, dialect, keys left out)."""
    if type(raw) is not dict:
        return raw, DIALECT, ()
    ignored: tuple[str, ...] = ()
    if in_list and "test_event_code" in raw:
        raw = {k: v for k, v in raw.items() if k != "test_event_code"}
        ignored = _IN_LIST_IGNORED
    if _TRANSLATED.isdisjoint(raw):  # the common case: nothing to translate
        return raw, stape.DIALECT if "consent_state" in raw else DIALECT, ignored
    event = dict(raw)
    dialect = DIALECT
    if not meta_tag.KEYS.isdisjoint(raw):
        dialect = meta_tag.DIALECT
        ignored += meta_tag.translate(event)
    if not stape.KEYS.isdisjoint(event):
        dialect = stape.DIALECT if dialect == DIALECT else dialect
        ignored += stape.translate(event)
    return event, dialect, ignored


def merge_user(event: dict[str, Any], name: str, value: Any) -> None:
    """Add one customer value to the event's user_data (a copy), next to any value already there."""
    user = event.get("user_data")
    if user is None:
        user = {}
    elif not isinstance(user, dict):
        return  # prepare rejects the bad user_data itself
    else:
        user = dict(user)
    if name in user and user[name] is not None:
        existing = user[name] if isinstance(user[name], list) else [user[name]]
        user[name] = [*existing, *(value if isinstance(value, list) else [value])]
    else:
        user[name] = value
    event["user_data"] = user
