"""One POST to a receiver, safely: the URL's host is resolved first and every address it resolves to is checked
(no loopback, private, link-local or otherwise non-public address unless BATCHSERVER_WEBHOOK_ALLOW_PRIVATE), then
the connection goes to a checked address (the name is not resolved a second time, so a DNS answer that changes
in between cannot redirect it), with the host name kept for the Host header, TLS SNI and certificate check.
Redirects are not followed, proxies from the environment are not used, and at most RESPONSE_CAP bytes of the
answer are read."""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from django.conf import settings

RESPONSE_CAP = 4096
USER_AGENT = "batchserver-webhooks/1"


class UnsafeUrl(ValueError):
    """A URL the server refuses to send to; the message says why and what to do."""


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: a status code, or an error that prevented one."""

    status_code: int | None = None
    error: str = ""
    latency: float = 0.0
    response: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        return is_public(mapped)
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # ASCII (IDNA), as DNS, the Host header and TLS want it
    port: int
    path: str  # with the query


def check_url(url: str) -> Target:
    """What can be checked without the network: the scheme, a host, and a host that names this machine or a
    private network by itself (an IP literal, localhost). The resolved addresses are checked at each attempt."""
    allow_private = settings.BATCHSERVER_WEBHOOK_ALLOW_PRIVATE
    try:
        parts = urlsplit(url)
        port = parts.port
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise UnsafeUrl(f"'{url[:200]}' is not a valid URL: use https://host/path.") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes or not host:
        raise UnsafeUrl(
            f"'{url[:200]}' is not an HTTPS URL: use https://host/path "
            + (
                "(or http://)."
                if allow_private
                else "(plain HTTP is accepted only when the server sets BATCHSERVER_WEBHOOK_ALLOW_PRIVATE=true)."
            )
        )
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl(
            "A webhook URL cannot hold credentials (user:password@): receivers authenticate a delivery "
            "by its signature (client.webhooks.unwrap)."
        )
    target = Target(
        parts.scheme,
        host,
        port or (443 if parts.scheme == "https" else 80),
        (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
    )
    if allow_private:
        return target
    if host == "localhost" or host.endswith(".localhost"):
        raise UnsafeUrl(f"'{host}' is this server itself: webhooks go to public addresses only.")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return target
    if not is_public(address):
        raise UnsafeUrl(
            f"{address} is not a public address: webhooks go to public addresses only (an operator "
            "can allow private ones with BATCHSERVER_WEBHOOK_ALLOW_PRIVATE=true)."
        )
    return target


def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address `host` resolves to; UnsafeUrl if it resolves to none, or to any that is not allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"'{host}' does not resolve ({exc}). Check the host name of the URL.") from None
    # getaddrinfo gives IPv4 and IPv6 addresses as str (typeshed's int is for other address families).
    addresses = list(
        dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos if isinstance(info[4][0], str))
    )
    if not addresses:
        raise UnsafeUrl(f"'{host}' does not resolve. Check the host name of the URL.")
    if not settings.BATCHSERVER_WEBHOOK_ALLOW_PRIVATE:
        refused = [str(address) for address in addresses if not is_public(address)]
        if refused:
            raise UnsafeUrl(
                f"'{host}' resolves to {', '.join(refused)}, not a public address: webhooks go to public "
                "addresses only (an operator can allow private ones with "
                "BATCHSERVER_WEBHOOK_ALLOW_PRIVATE=true)."
            )
    return addresses


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Loading the CA bundle takes a quarter of a second: once per process, not per attempt."""
    return httpx.create_ssl_context()


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> Outcome:
    started = time.monotonic()

    def failed(error: str) -> Outcome:
        return Outcome(error=error[:500], latency=time.monotonic() - started)

    try:
        target = check_url(url)
        address = resolve(target.host, target.port)[0]
    except UnsafeUrl as exc:
        return failed(f"refused: {exc}")
    host, port = target.host, target.port
    pinned = f"[{address}]" if address.version == 6 else str(address)
    default_port = port == (443 if target.scheme == "https" else 80)
    request_headers = {
        **headers,
        "Host": host if default_port else f"{host}:{port}",
        "User-Agent": USER_AGENT,
        "Content-Type": "application/json",
    }
    # A client per attempt: a pooled connection could carry one host's TLS session to another host's request.
    client = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False, verify=tls_context())
    try:
        with (
            client,
            client.stream(
                "POST",
                f"{target.scheme}://{pinned}:{port}{target.path}",
                content=body,
                headers=request_headers,
                extensions={"sni_hostname": host},
            ) as response,
        ):
            received = bytearray()
            for chunk in response.iter_raw():
                received += chunk
                if len(received) >= RESPONSE_CAP or time.monotonic() - started > timeout:
                    break
            return Outcome(
                status_code=response.status_code,
                latency=time.monotonic() - started,
                response=bytes(received[:RESPONSE_CAP]).decode("utf-8", "replace"),
            )
    except httpx.TimeoutException:
        return failed(f"timed out: no answer within {timeout:g} s")
    except httpx.ConnectError as exc:
        return failed(f"could not connect to {host} ({address}): {exc or 'connection refused'}")
    except httpx.HTTPError as exc:
        return failed(f"{type(exc).__name__}: {exc}")
