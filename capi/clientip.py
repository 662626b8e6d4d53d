"""The client IP address of Meta's Parameter Builder cookie, and which address capi sends.

Meta's Parameter Builder (facebook/capi-param-builder) runs in the page, asks an endpoint for
the browser's address, IPv6 first, and keeps it in the first-party cookie `_fbi`
(`IP_COOKIE_NAME`, client_js/shared/model/constants.js) for a day, written as
`{address}.{appendix}` (`writeCookieWithToken`, client_js/shared/utils/cookieUtil.js): the
appendix is an 8-character base64url token or one of the language tokens `AQ` ... `Bg`.
The sGTM tag forwards it as `x-fb-ck-fbi`. Meta's diagnostics flag servers "sending IPv4" and
"mismatched IP addresses": the page's own IPv6 address fixes both.

The choice follows the Parameter Builder's server side (`_getClientIp`, nodejs/capi-param-builder/
src/ParamBuilder.js): a public IPv6 address from the cookie, else the request's public IPv6,
else the cookie's public IPv4, else the request's public IPv4; "public" as it defines it (not
private, loopback or link-local). capi keeps the request's address when neither is public.
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress

COOKIE_KEY = "x-fb-ck-fbi"  # the event key the sGTM tag fills from the _fbi cookie
APPENDIX_TOKENS = frozenset({"AQ", "Ag", "Aw", "BA", "BQ", "Bg"})  # SUPPORTED_PARAM_BUILDER_LANGUAGES_TOKEN
APPENDIX_LENGTH = 8  # APPENDIX_LENGTH_V2

# The Parameter Builder's private ranges (_isPrivateIPv4 / _isPrivateIPv6).
_PRIVATE = tuple(
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
                "::1/128", "fe80::/10", "fc00::/7")
)  # fmt: skip

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def from_cookie(value: str) -> str | None:
    """The address in an `_fbi` value (its appendix removed), or None when it holds none."""
    text = value.strip()
    head, dot, tail = text.rpartition(".")
    if dot and (tail in APPENDIX_TOKENS or len(tail) == APPENDIX_LENGTH):
        text = head
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _public(address: Address) -> bool:
    return not any(address in net for net in _PRIVATE if net.version == address.version)


def prefer(cookie_ip: str, request_ip: str | None) -> str:
    """The address to send: both are already valid (normalize_ip / from_cookie)."""
    cookie = ipaddress.ip_address(cookie_ip)
    request = ipaddress.ip_address(request_ip) if request_ip else None
    ranked = [
        (cookie, 6),
        (request, 6),
        (cookie, 4),
        (request, 4),
    ]
    for address, version in ranked:
        if address is not None and address.version == version and _public(address):
            return str(address)
    return request_ip or cookie_ip
