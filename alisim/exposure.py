"""Who may reach alisim: loopback by default; other hosts only when asked for explicitly.

alisim runs `/bin/sh` for whoever holds a key it accepts, and its default key pair is
published. So binding beyond loopback needs `allow_remote`, which also mints a fresh key
pair (the published pair then works from loopback clients only) and locks `/_alisim/*`.
"""

from __future__ import annotations

import ipaddress
import socket

# uvicorn takes the client address from X-Forwarded-For only on connections from these,
# so a reverse proxy on the same host passes its remote clients on as remote.
TRUSTED_PROXIES = "127.0.0.1,::1"


class RemoteBindRefused(ValueError):
    pass


def is_loopback_address(host: str | None) -> bool:
    """Whether an IP address (a peer's or a bind address) is loopback; hostnames are not."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def binds_loopback_only(host: str) -> bool:
    """Whether every address `host` binds to is loopback (`localhost` resolves)."""
    if is_loopback_address(host):
        return True
    if not host or host in ("0.0.0.0", "::", "*"):
        return False
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(infos) and all(is_loopback_address(str(info[4][0])) for info in infos)


def check_bind(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback bind address unless remote access was asked for."""
    if allow_remote or binds_loopback_only(host):
        return
    raise RemoteBindRefused(
        f"alisim refuses to listen on {host!r}: it is not a loopback address, and alisim runs "
        "shell commands for anyone holding its published default key pair. Listen on "
        "127.0.0.1, or pass --allow-remote (AlisimServer(allow_remote=True)) to mint a fresh "
        "key pair that remote clients and /_alisim/* must use."
    )
