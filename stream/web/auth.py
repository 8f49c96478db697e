"""Auth: the web server's token, checked on every request (header or cookie).

Starts no threads and touches no files. A request carries the token as
``Authorization: Bearer TOKEN`` (scripts, robots) or in a cookie that opening
``/?token=TOKEN`` once sets (browsers, as Jupyter does); tokens are compared in
constant time. The same check runs twice: on the request's headers before its body is
read (:mod:`stream.web.httpd`), and in the app for every route.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from http.cookies import CookieError, SimpleCookie

__all__ = ["COOKIE_PREFIX", "cookie_name", "is_loopback", "new_token", "token_matches",
           "request_has_token"]

#: The cookie is ``depthstream_<port>``: two servers on one host keep their own tokens.
COOKIE_PREFIX = "depthstream_"


def new_token() -> str:
    """A fresh random token (32 URL-safe characters, 192 bits)."""
    return secrets.token_urlsafe(24)


def token_matches(given: str | None, token: str) -> bool:
    """Whether ``given`` is ``token``, compared in constant time."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def cookie_name(host_header: str | None) -> str:
    """The token cookie's name for the server a ``Host`` header names."""
    host = host_header or ""
    port = "" if host.endswith("]") else host.rpartition(":")[2]  # [::1] has no port
    return COOKIE_PREFIX + (port if port.isdigit() else "80")


def request_has_token(token: str, authorization: str | None, cookie_header: str | None,
                      host_header: str | None) -> bool:
    """Whether a request's headers carry ``token`` (Bearer header, else cookie)."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and token_matches(value.strip(), token):
        return True
    if not cookie_header:
        return False
    try:
        cookies = SimpleCookie(cookie_header)
    except CookieError:
        return False
    morsel = cookies.get(cookie_name(host_header))
    return morsel is not None and token_matches(morsel.value, token)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
