"""The client IP of a request, the one answer the rate limiter and the access log share.

Without trusted proxies a request's client is its direct peer (the TCP connection's
address) and the ``X-Forwarded-For`` / ``X-Real-IP`` headers are ignored: anyone can send
them, so believing them would let a client pick the address it is rate limited by.

With trusted proxies (``serve --trusted-proxy 10.0.0.0/8``, ``app.trusted_proxies``) and a
direct peer among them, the client is the right-most address of ``X-Forwarded-For`` that is
not a trusted proxy: each proxy appends the address it received the request from, so the
entries to the right were written by proxies we trust and the first untrusted one is where
the request entered our network (anything left of it is the client's own claim). Without
``X-Forwarded-For``, a valid ``X-Real-IP`` is used; without either, the peer.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Final

from starlette.requests import HTTPConnection
from starlette.types import Scope

__all__ = ["TrustedProxies", "client_ip"]

#: Where a request's resolved client IP is kept (computed at most once per request).
_SCOPE_KEY: Final = "pocketjobs.client_ip"
#: Where :func:`~pocketjobs.apis.create_asgi_app` puts the app's :class:`TrustedProxies`.
STATE_KEY: Final = "pb_trusted_proxies"

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_address(text: str) -> str | None:
    """``text`` (an IP, maybe with a port or IPv6 brackets) as a canonical IP, or ``None``."""
    text = text.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if text.startswith("["):  # [2001:db8::1]:443
        text = text[1 : text.find("]")]
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.partition(":")[0]
    else:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class TrustedProxies:
    """The proxies whose forwarding headers are believed, and the resolution of a request's
    client IP (see the module docstring).

    ``proxies`` are IP addresses or CIDR networks (``10.0.0.1``, ``10.0.0.0/8``, ``::1``,
    ``fd00::/8``); a value that is neither raises ``ValueError``. No proxies (the default)
    means the peer's address is always the client's.
    """

    def __init__(self, proxies: Iterable[str] = ()) -> None:
        networks: list[_Network] = []
        for text in proxies:
            if not isinstance(text, str):
                raise ValueError(f"invalid trusted proxy {text!r}: expected a string")
            try:
                networks.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"invalid trusted proxy {text!r}: expected an IP address or a CIDR "
                    "network such as 10.0.0.0/8"
                ) from None
        self.networks: tuple[_Network, ...] = tuple(networks)
        # Peers are few (the proxies themselves), so a small cache saves the parsing.
        self._is_trusted = functools.lru_cache(maxsize=1024)(self._check_trusted)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def _check_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def is_trusted(self, address: str) -> bool:
        """Whether ``address`` (an IP as text) is one of the trusted proxies."""
        return bool(self.networks) and self._is_trusted(address)

    def client_ip(self, scope: Scope) -> str:
        """The client IP of the ASGI request ``scope`` (``""`` when the server gave no peer
        address, e.g. on a Unix socket). Computed once per request, then cached in it."""
        cached: str | None = scope.get(_SCOPE_KEY)
        if cached is not None:
            return cached
        client = scope.get("client")
        peer: str = client[0] if client else ""
        address = self._forwarded_client(scope, peer) if self.is_trusted(peer) else peer
        scope[_SCOPE_KEY] = address
        return address

    def _forwarded_client(self, scope: Scope, peer: str) -> str:
        forwarded: list[str] = []
        real_ip = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
            elif name == b"x-real-ip":
                real_ip = value.decode("latin-1")
        if forwarded:
            # Several headers count as one comma-separated list (RFC 9110).
            candidate = peer
            for hop in reversed(",".join(forwarded).split(",")):
                address = _parse_address(hop)
                if address is None:
                    # Not an address (``unknown``, garbage): no hop beyond it can be
                    # trusted, so the last address a trusted hop reported stands.
                    break
                candidate = address
                if not self.is_trusted(address):
                    return address
            return candidate  # every hop was a trusted proxy: the left-most is the client
        if real_ip:
            return _parse_address(real_ip) or peer
        return peer


def client_ip(connection: HTTPConnection) -> str:
    """The client IP of a request (or WebSocket) served by the kernel's ASGI app: the peer's
    address, or the forwarded one when the peer is a trusted proxy (:class:`TrustedProxies`).
    """
    proxies: TrustedProxies | None = getattr(connection.app.state, STATE_KEY, None)
    if proxies is None:
        proxies = TrustedProxies()
    return proxies.client_ip(connection.scope)
