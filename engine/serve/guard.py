"""Who may talk to the server: checked before any route runs.

- Host header: a web page can point a DNS name it controls at 127.0.0.1 (DNS rebinding) and then
  read a local server's answers as "same origin". Its requests still carry that name in Host, so
  only IP addresses the server listens on, "localhost" (when it listens on loopback) and names
  given explicitly are accepted.
- Origin header: browsers send it on cross-site requests; a page from anywhere but this computer
  (or an allowed name) is refused, so it cannot make the CPU work for it either.
- API key: required when one is set (always, when listening beyond this computer).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from .errors import ApiError

WILDCARDS = {"0.0.0.0", "::", ""}


def _ip(name: str):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    ip = _ip(host)
    return host.lower() == "localhost" if ip is None else ip.is_loopback


def check_exposure(host: str, api_key: str | None) -> None:
    """Listening beyond this computer needs an API key; ValueError says so."""
    if not is_loopback(host) and not api_key:
        raise ValueError(
            f"Listening on {host or 'every address'} lets other computers use the model; "
            "give an API key (--api-key KEY) to do that."
        )


def host_name(value: str) -> str:
    """'example.com:8088' -> 'example.com', '[::1]:8088' -> '::1' (lower case)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@dataclass(frozen=True)
class HostPolicy:
    bound: str  # the address the server listens on
    names: frozenset[str] = field(default_factory=frozenset)  # other host names allowed

    @classmethod
    def for_bind(cls, bound: str, names: Iterable[str] = ()) -> HostPolicy:
        return cls(bound.strip("[]").lower(), frozenset(n.lower() for n in names))

    def allows(self, name: str) -> bool:
        if not name:
            return False
        if name in self.names or name == self.bound:
            return True
        wildcard = self.bound in WILDCARDS
        if name == "localhost":
            return wildcard or is_loopback(self.bound)
        ip = _ip(name)
        if ip is None:  # a DNS name nobody vouched for
            return False
        return wildcard or (ip.is_loopback and is_loopback(self.bound))


class Guard:
    """ASGI middleware applying the host, origin and key rules to every HTTP request."""

    def __init__(self, app, policy: HostPolicy, api_key: str | None = None):
        self.app = app
        self.policy = policy
        self.api_key = api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            self._check(Headers(scope=scope))
        except ApiError as error:
            return await JSONResponse(error.body(), error.status)(scope, receive, send)
        return await self.app(scope, receive, send)

    def _check(self, headers: Headers) -> None:
        host = headers.get("host", "")
        if not self.policy.allows(host_name(host)):
            raise ApiError(
                403,
                f"Requests for host '{host}' are refused: this server answers only to the address it listens on.",
                code="host_not_allowed",
            )
        origin = headers.get("origin")
        if origin is not None and not self.policy.allows((urlsplit(origin).hostname or "").lower()):
            raise ApiError(403, f"Requests from web pages at {origin} are refused.", code="origin_not_allowed")
        if self.api_key:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                raise ApiError(
                    401,
                    "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                    code="invalid_api_key",
                )
            if not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
                raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
