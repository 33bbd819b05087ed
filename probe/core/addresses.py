"""Addresses, host:port pairs and URLs, parsed one way for every layer.

Why here: the measuring steps, the OONI codec, the helper and the CLI all read
``IP[:PORT]`` and split URLs; written once, they cannot disagree on what is valid."""

from __future__ import annotations

import ipaddress

from yarl import URL


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def split_hostport(resolver: str, default_port: int = 53) -> tuple[str, int]:
    """'1.2.3.4', '1.2.3.4:5353', '[::1]:53' or '::1' to (host, port)."""
    text = resolver.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url_of(text: str) -> URL:
    """yarl's URL of ``text``, or ValueError. yarl also raises TypeError, UnicodeError
    (a host that is no IDNA) and, for some bracketed hosts ("http://[::1]@/"),
    IndexError: every parser of hostile URLs goes through here, so none leaks them."""
    try:
        u = URL(text)
        u.port, u.raw_host, u.host  # noqa: B018 - parsed lazily: make them fail here
        return u
    except (ValueError, TypeError, UnicodeError, IndexError):
        raise ValueError(f"not a URL: {text!r}") from None


def split_url(url: str) -> tuple[str, str, int]:
    try:
        u = url_of(url)
    except ValueError:
        raise ValueError(f"not an http(s) URL: {url}") from None
    if u.scheme not in ("http", "https") or not u.host:
        raise ValueError(f"not an http(s) URL: {url}")
    return u.scheme, u.host.strip("[]").lower(), u.port or (443 if u.scheme == "https" else 80)


def parse_resolver(text: str) -> str:
    """A resolver given as ``IP`` or ``IP:PORT`` (``[v6]:PORT``), normalised to
    ``ip:port``; ValueError with a one-line reason otherwise."""
    try:
        host, port = split_hostport(text)
    except ValueError:
        raise ValueError(f"{text!r} is not IP[:PORT]") from None
    if not is_ip(host) or not 0 < port < 65536:
        raise ValueError(f"{text!r} is not IP[:PORT]")
    return format_hostport(host, port)
