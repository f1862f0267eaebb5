"""Where a webhook may point: SSRF refusal by address, checked when the hook is registered and again before every
attempt (a name may resolve elsewhere by then), and the attempt connects to the address that was checked.

Allowlist, not denylist: only globally routable unicast addresses pass (``ipaddress``'s ``is_global``), so loopback,
RFC 1918, link-local (cloud metadata at 169.254.169.254), CGNAT, unique-local, multicast and reserved ranges are all
refused, however the URL spells them (``0x7f000001``, ``2130706433``, ``[::ffff:127.0.0.1]``), unless the operator
sets POISONSCAN_WEBHOOK_ALLOW_PRIVATE for receivers on their own network.
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


class UnsafeWebhookUrl(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as given


def parse(url: str) -> Target:
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced "[" in the host
        raise UnsafeWebhookUrl(f"the URL cannot be parsed ({exc})") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeWebhookUrl("the URL must start with https:// (or http://)")
    if parts.username or parts.password:
        raise UnsafeWebhookUrl("the URL must not carry credentials; authenticate receipts with the webhook signature")
    if not parts.hostname:
        raise UnsafeWebhookUrl("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeWebhookUrl(f"the URL's port is not valid ({exc})") from exc
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, path)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])  # an IPv6 zone ("fe80::1%eth0") names a link: not public
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(target: Target, allow_private: bool) -> str:
    """The address to connect to. Every address the name has must be public (a name that also resolves to a private
    one could be answered with it next time)."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:  # unknown name, or one no resolver takes (NUL, too long)
        raise UnsafeWebhookUrl(f"the host {target.host!r} does not resolve ({exc})") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not allow_private:
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            raise UnsafeWebhookUrl(f"the host {target.host!r} resolves to a non-public address ({refused[0]}); webhooks "
                                   "go to public addresses only unless the operator sets POISONSCAN_WEBHOOK_ALLOW_PRIVATE")
    return addresses[0]
