"""Meta's Parameter Builder IP cookie (`_fbi`, forwarded by the sGTM tag as `x-fb-ck-fbi`) and
the choice of client_ip_address (capi/clientip.py).

Cookie values follow the Parameter Builder: `{address}.{appendix}`, the appendix an 8-character
base64url token or a language token such as `Bg` (facebook/capi-param-builder,
client_js/shared/utils/cookieUtil.js `writeCookieWithToken`, nodejs ParamBuilder.js
`_removeLanguageToken`); its ipUtil tests use 2001:0db8:85a3:0000:0000:8a2e:0370:7334.
"""

from __future__ import annotations

import pytest

from capi.clientip import from_cookie, prefer
from tests.conftest import make_service

PUBLIC_V6 = "2a03:2880:f12f:83:face:b00c:0:25de"


@pytest.mark.parametrize(
    ("cookie", "address"),
    [
        (f"{PUBLIC_V6}.AQYCAQAA", PUBLIC_V6),
        ("2001:0db8:85a3:0000:0000:8a2e:0370:7334.Bg", "2001:db8:85a3::8a2e:370:7334"),  # compressed, as capi sends
        ("198.51.100.23.AQYCAQAA", "198.51.100.23"),
        ("198.51.100.23.Bg", "198.51.100.23"),
        ("198.51.100.23", "198.51.100.23"),  # no appendix: the last part is the address's
        (" 2A03:2880:F12F:83:FACE:B00C:0:25DE.AQYCAQAA ", PUBLIC_V6),
        ("not-an-ip.AQYCAQAA", None),
        ("198.51.100.23.AQYCAQAA.AQYCAQAA", None),  # appended twice: not guessed at
        ("", None),
    ],
)
def test_address_of_the_cookie(cookie: str, address: str | None) -> None:
    assert from_cookie(cookie) == address


@pytest.mark.parametrize(
    ("cookie", "request_ip", "chosen"),
    [
        (PUBLIC_V6, "198.51.100.23", PUBLIC_V6),  # IPv6 preferred over the request's IPv4
        ("198.51.100.99", "2001:4860:4860::8888", "2001:4860:4860::8888"),  # the request's public IPv6 first
        ("198.51.100.99", "198.51.100.23", "198.51.100.99"),  # both IPv4: the cookie's
        ("fd00::1", "198.51.100.23", "198.51.100.23"),  # a private IPv6 loses to a public IPv4
        ("192.168.1.10", "10.0.0.1", "10.0.0.1"),  # nothing public: the request's, as before
        ("198.51.100.99", None, "198.51.100.99"),
        ("fe80::1", None, "fe80::1"),
    ],
)
def test_which_address_is_sent(cookie: str, request_ip: str | None, chosen: str) -> None:
    assert prefer(cookie, request_ip) == chosen


def event(**extra: object) -> dict[str, object]:
    return {
        "event_name": "purchase",
        "event_id": "IP-1",
        "page_location": "https://shop.example.com/thanks",
        "user_agent": "Mozilla/5.0",
        "ip_override": "198.51.100.23",
        "value": 5,
        "currency": "EUR",
        "user_data": {"email_address": "a@example.com"},
        **extra,
    }


def test_validate_sends_the_cookie_address_and_notes_a_bad_cookie() -> None:
    service = make_service()
    body = service.validate(event(**{"x-fb-ck-fbi": f"{PUBLIC_V6}.AQYCAQAA"})).body
    assert body["payload"]["data"][0]["user_data"]["client_ip_address"] == PUBLIC_V6
    assert not [m for m in body["messages"] if "ignored" in m]  # a key capi reads
    body = service.validate(event(**{"x-fb-ck-fbi": "garbage"})).body
    assert body["payload"]["data"][0]["user_data"]["client_ip_address"] == "198.51.100.23"
    assert {
        "index": 0,
        "field": "x-fb-ck-fbi",
        "message": "not the Parameter Builder's _fbi (an IP address and its appendix); ignored",
    } in body["messages"]
    body = service.validate(event(**{"x-fb-ck-fbi": 42})).body
    assert body["messages"][0]["field"] == "x-fb-ck-fbi"
