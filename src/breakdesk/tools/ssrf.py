"""SSRF guard: a tool URL may only reach a public address, or a private one the tenant explicitly allowed.

The host is resolved here and the request is then sent to the *checked* address (the URL is pinned to the
IP, with the original Host header and TLS server name), so a DNS answer that changes between the check and
the connection (DNS rebinding) cannot redirect a call into the private network.

Rules, per tenant policy (`tools.allowedHosts`, `tools.allowPrivateNetworks`):
- only http and https, no credentials in the URL;
- a non-empty `allowedHosts` is an allow-list: the host must equal an entry or match a `*.suffix` entry;
- every resolved address must be public (`is_global`), except that loopback, private and link-local
  addresses are accepted when `allowPrivateNetworks` is true *and* the host is listed in `allowedHosts`;
- multicast, unspecified, reserved and broadcast addresses are always refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


class UnsafeTarget(Exception):
    """The URL is refused by the tenant's network policy (the message says which rule)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a checked request goes: `url` has the host replaced by the vetted address."""

    url: str
    host: str
    address: str
    host_header: str
    sni_hostname: str | None


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Exact (case-insensitive) match, or `*.example.com` matching any subdomain of example.com."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        pattern = entry.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def _normal(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_problem(ip: IPAddress, private_ok: bool) -> str | None:
    """Why this address may not be called (None when it may)."""
    ip = _normal(ip)
    if ip.is_multicast or ip.is_unspecified or (ip.is_reserved and not ip.is_loopback):
        return f"{ip} is a multicast, unspecified or reserved address"
    if isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
        return f"{ip} is the broadcast address"
    if ip.is_global:
        return None
    if private_ok and (ip.is_loopback or ip.is_private or ip.is_link_local):
        return None
    kind = "loopback" if ip.is_loopback else "link-local" if ip.is_link_local else "private/non-public"
    return f"{ip} is a {kind} address (allowed only with tools.allowPrivateNetworks and the host in allowedHosts)"


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class HostGuard:
    """Checks and pins tool URLs. DNS answers are cached briefly (`cache_seconds`) to keep calls cheap."""

    def __init__(
        self,
        resolver: Resolver | None = None,
        *,
        cache_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolve = resolver or _system_resolver
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[tuple[str, int], tuple[float, list[str]]] = {}

    async def _addresses(self, host: str, port: int) -> list[str]:
        key = (host, port)
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            addrs = await self._resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise UnsafeTarget(f"host {host!r} cannot be resolved ({type(exc).__name__})") from None
        if not addrs:
            raise UnsafeTarget(f"host {host!r} resolves to no address")
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = (now + self._cache_seconds, addrs)
        return addrs

    async def check(self, url: str, allowed_hosts: Sequence[str], allow_private: bool) -> Target:
        """Vet `url` for a tenant; raises UnsafeTarget with the rule that refused it."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UnsafeTarget(f"malformed URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise UnsafeTarget(f"scheme {scheme or '(none)'!r} is not allowed (http or https only)")
        if parts.username is not None or parts.password is not None:
            raise UnsafeTarget("credentials in the URL are not allowed (use a secret reference)")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise UnsafeTarget("the URL has no host")
        listed = bool(allowed_hosts) and host_allowed(host, allowed_hosts)
        if allowed_hosts and not listed:
            raise UnsafeTarget(f"host {host!r} is not in tools.allowedHosts")
        port = port or (443 if scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        addrs = [host] if literal is not None else await self._addresses(host, port)
        private_ok = allow_private and listed
        chosen: str | None = None
        for addr in addrs:
            try:
                ip = ipaddress.ip_address(addr.split("%", 1)[0])
            except ValueError:
                raise UnsafeTarget(f"host {host!r} resolved to an unusable address") from None
            problem = address_problem(ip, private_ok)
            if problem is not None:  # every answer must pass: a mixed answer is a rebinding attempt
                raise UnsafeTarget(f"host {host!r}: {problem}")
            chosen = chosen or str(ip)
        assert chosen is not None
        return _pin(parts, host, chosen, scheme, literal is not None)


def _pin(parts: SplitResult, host: str, address: str, scheme: str, is_literal: bool) -> Target:
    ip_host = f"[{address}]" if ":" in address else address
    netloc = ip_host if parts.port is None else f"{ip_host}:{parts.port}"
    pinned = urlunsplit((scheme, netloc, parts.path, parts.query, ""))
    header_host = f"[{host}]" if ":" in host else host
    host_header = header_host if parts.port is None else f"{header_host}:{parts.port}"
    sni = host if scheme == "https" and not is_literal else None
    return Target(url=pinned, host=host, address=address, host_header=host_header, sni_hostname=sni)
