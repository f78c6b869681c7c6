"""Egress guard: http and message jobs may not reach loopback, private, link-local or
cloud-metadata addresses unless whoever runs the service allowed them.

The check sits where every client library ends up before it connects, `socket.getaddrinfo`
(httpx's sync transport, requests/urllib3 under apprise, smtplib all resolve through it, an IP
literal too), so it sees the addresses actually connected to, after DNS, and again for every
new connection, so on every redirect. A name that resolves to both a public and a refused
address keeps only the public ones; one with nothing left is refused. The wrapper only acts
inside `guarded()`, a context variable of the calling thread: Prefect's own client, SSH
targets and SQL connections (addresses an admin chose) are not affected.

`FLOWFORGE_EGRESS_ALLOW` is a comma-separated list of IPs or CIDRs (matched against the
resolved address) and host names (matched against the name asked for), each optionally with
`:port`: `10.0.0.0/8, 127.0.0.1:8025, hooks.internal`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressRefused(OSError):
    """A connection to an address jobs may not reach (an OSError, so every client library
    fails the request with it as the cause)."""


@dataclass(frozen=True)
class Rule:
    network: IPNetwork | None = None
    host: str | None = None
    port: int | None = None

    def allows(self, host: str, address: IPAddress, port: int | None) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.network is not None:
            return address in self.network
        return self.host == host


def _split_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [::1]:8080
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if entry.count(":") == 1:
        host, port = entry.split(":")
        return host, int(port)
    return entry, None


def parse_allow(text: str | None) -> tuple[Rule, ...]:
    """The rules of an allow-list; ValueError naming the entry that is neither."""
    rules: list[Rule] = []
    for raw in (text or "").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        try:
            host, port = _split_port(entry)
            if port is not None and not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise ValueError(f"FLOWFORGE_EGRESS_ALLOW: '{raw.strip()}' has a bad port") from None
        try:
            rules.append(Rule(network=ipaddress.ip_network(host, strict=False), port=port))
        except ValueError:
            if not host or not all(part.replace("-", "").isalnum() for part in host.split(".")):
                raise ValueError(f"FLOWFORGE_EGRESS_ALLOW: '{raw.strip()}' is neither an "
                                 "address, a network nor a host name") from None
            rules.append(Rule(host=host.rstrip("."), port=port))
    return tuple(rules)


def why_refused(address: IPAddress) -> str | None:
    """What kind of address jobs may not reach this is, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_unspecified:
        return "the unspecified address (this machine)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved address"
    return None


@dataclass
class Guard:
    rules: Sequence[Rule]
    #: The last refusal, said as the job's error when the client library's own is vaguer.
    refused: str | None = None
    _seen: set[str] = field(default_factory=set)

    def filter(self, host: Any, port: Any, infos: list[Any]) -> list[Any]:
        name = (host.decode() if isinstance(host, bytes) else str(host or "")).lower().rstrip(".")
        number = int(port) if isinstance(port, int) or (isinstance(port, str)
                                                         and port.isdigit()) else None
        kept, refusals = [], []
        for info in infos:
            try:
                address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            except ValueError:
                continue
            reason = why_refused(address)
            if reason is None or any(r.allows(name, address, number) for r in self.rules):
                kept.append(info)
            else:
                refusals.append(f"{address} ({reason})")
        if infos and not kept:
            said = ", ".join(dict.fromkeys(refusals))
            literal = bool(refusals) and name == refusals[0].split(" ")[0]
            target = said if literal else f"{name}, which resolves to {said}"
            self.refused = (f"egress to {target} is "
                            "refused: jobs may not reach loopback, private, link-local or "
                            "metadata addresses unless FLOWFORGE_EGRESS_ALLOW lists them")
            raise EgressRefused(self.refused)
        return kept


_GUARD: ContextVar[Guard | None] = ContextVar("flowforge_egress_guard", default=None)
_real_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    infos = _real_getaddrinfo(host, port, *args, **kwargs)
    guard = _GUARD.get()
    return infos if guard is None else guard.filter(host, port, infos)


def install() -> None:
    """Put the checking resolver in place (once per process; inert outside `guarded`)."""
    if socket.getaddrinfo is not _getaddrinfo:
        socket.getaddrinfo = _getaddrinfo


@contextlib.contextmanager
def guarded(allow: str | Sequence[Rule] | None) -> Iterator[Guard]:
    """Refuse, in this thread, connections to addresses jobs may not reach (`allow` excepted)."""
    install()
    guard = Guard(parse_allow(allow) if allow is None or isinstance(allow, str) else allow)
    token = _GUARD.set(guard)
    try:
        yield guard
    finally:
        _GUARD.reset(token)


__all__ = ["EgressRefused", "Guard", "Rule", "guarded", "install", "parse_allow", "why_refused"]
