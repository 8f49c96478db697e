"""Auth: who may ask: the Host names the server answers to, the Origin of a change, the token.

Starts no threads and touches no files. Every check runs twice: on the request's headers
before its body is read (:mod:`stream.web.httpd`), and in the app for every route.

* **Host** (:class:`HostNames`): only the names the server was started for: the loopback
  names, the ``--host`` address, the ``--allow-host`` names (and, listening on every
  interface, any IP address and this machine's name). Another name is a DNS-rebinding
  page reaching a server on this machine (or a name the operator did not mean): 403.
* **Origin**: a request that changes something (POST, PUT, PATCH, DELETE) from a page of
  another origin is refused (403): another site's page cannot upload or cancel.
* **Token**: ``Authorization: Bearer TOKEN`` (scripts, robots) or a cookie that opening
  ``/?token=TOKEN`` once sets (browsers, as Jupyter does); compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from collections.abc import Iterable
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

from stream.core.settings import is_loopback as core_is_loopback

__all__ = ["COOKIE_PREFIX", "FOREIGN_HOST", "FOREIGN_ORIGIN", "LOOPBACK_NAMES", "HostNames",
           "cookie_name", "is_loopback", "new_token", "token_matches", "request_has_token"]

#: Host names every server answers to: this machine's.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
#: The 403 answers (one line each; the operator's remedy in the first).
FOREIGN_HOST = ("this server does not answer to that Host name (a DNS-rebinding page?); "
                "its operator can add a name with serve --allow-host NAME")
FOREIGN_ORIGIN = ("a page of another site may not change anything here (its operator can "
                  "trust a site's name with serve --allow-host NAME)")
_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_WILDCARDS = ("", "0.0.0.0", "::")

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
    """Whether binding ``host`` keeps the server on this machine (``[::1]`` too)."""
    return core_is_loopback(host.strip().strip("[]"))


def _split_host(authority: str) -> tuple[str, str]:
    """A Host header's name and port: ``"Example.org.:80"`` -> ``("example.org", "80")``."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        name, _, rest = authority[1:].partition("]")
        return name, rest.removeprefix(":")
    name, _, port = authority.rpartition(":") if authority.count(":") == 1 else (
        authority, "", "")
    return name.rstrip("."), port


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostNames:
    """The Host names a server answers to, and the Origins that may change something.

    Args:
        host: the address it listens on.
        allow: more names (``--allow-host``); ``*`` accepts any name.

    Example:
        >>> names = HostNames("127.0.0.1")
        >>> names.refusal("GET", "localhost:8000", None) is None
        True
        >>> names.refusal("GET", "attacker.example:8000", None) == FOREIGN_HOST
        True
    """

    def __init__(self, host: str = "127.0.0.1", allow: Iterable[str] = ()) -> None:
        bound = host.strip().strip("[]").lower().rstrip(".")
        self.allowed = frozenset(a.strip().lower().strip("[]").rstrip(".") for a in allow)
        self.any_name = "*" in self.allowed
        self.wildcard = bound in _WILDCARDS  # every interface: any address, this machine
        names = set(LOOPBACK_NAMES) | self.allowed | ({bound} - set(_WILDCARDS))
        if self.wildcard:
            machine = socket.gethostname().lower().rstrip(".")
            names |= {machine, machine.split(".")[0] + ".local"}
        self.names = frozenset(names)

    def host_ok(self, host_header: str | None) -> bool:
        """Whether a request's ``Host`` header names this server (none: an HTTP/1.0 client)."""
        if not host_header:
            return True
        name = _split_host(host_header)[0]
        return (self.any_name or name in self.names
                or (self.wildcard and _is_ip(name)))

    def origin_ok(self, origin: str | None, host_header: str | None) -> bool:
        """Whether a change may come from ``origin``.

        Yes for none (not a browser's cross-site request), this very server (same name
        and port), or an ``--allow-host`` name.
        """
        if origin is None:
            return True
        parts = urlsplit(origin.strip().lower())
        if not parts.scheme or not parts.netloc:  # "null": a sandboxed or file:// page
            return False
        # Browsers leave a scheme's default port out of both headers: compare as they are.
        if _split_host(parts.netloc) == _split_host(host_header or ""):
            return True
        name = _split_host(parts.netloc)[0]
        return self.any_name or name in self.allowed

    def refusal(self, method: str, host_header: str | None, origin: str | None) -> str | None:
        """The 403 message for a request, or ``None`` when it may go on."""
        if not self.host_ok(host_header):
            return FOREIGN_HOST
        if method.upper() in _CHANGES and not self.origin_ok(origin, host_header):
            return FOREIGN_ORIGIN
        return None
