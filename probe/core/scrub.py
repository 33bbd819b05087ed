"""The volunteer's own public address, taken out of what pages show before anything is
stored.

Why: many pages echo the visitor's address ("your IP: 178.120.x.x", a blockpage naming
the subscriber, an rDNS name such as ``mm-7-100-51-198.dynamic.pppoe.byfly.by``). The
probe keeps the address out of the run record unless the volunteer opts in
(``--store-ip``), but a stored page would hand it over all the same to whoever reads
the results. So when a run knows the address (from the vantage lookup), every
occurrence in page bodies, headers, titles, reason phrases and redirect URLs is
replaced by ``PLACEHOLDER`` before it reaches SQLite.

What is matched (ASCII, any case): IPv4 dotted (``198.51.100.7``), dashed
(``198-51-100-7``) and both reversed (``7.100.51.198``, ``7-100-51-198``), as rDNS
names write it; IPv6 compressed, uncompressed and fully exploded. Not inside a longer
number: ``1.2.3.4`` is not matched in ``11.2.3.45`` or ``1.2.3.4.5``.

Bodies are scrubbed as they stream in (``StreamScrub``), so the stored body hash is
the hash of the scrubbed body: a hash of a short page that echoes the address would
otherwise give the address away to anyone who hashes the few million addresses of one
country. Body lengths stay the bytes received.

Pure functions over records: the probe calls them, tests and other tools can too.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from typing import Any

from probe.core.records import ControlResult, HttpRequest, Measurement

PLACEHOLDER = "[probe-ip]"
_PLACEHOLDER_BYTES = PLACEHOLDER.encode("ascii")
# Context the boundaries look at, either side of an address (a separator and a digit).
_LOOK = 2
_V4_BEFORE = r"(?<![0-9])(?<![0-9][.-])"
_V4_AFTER = r"(?![0-9])(?![.-][0-9])"
_V6_BEFORE = r"(?<![0-9a-f:])"
_V6_AFTER = r"(?![0-9a-f])(?!:[0-9a-f])"


def spellings(address: str) -> list[str]:
    """How pages write ``address``; empty for something that is not an IP address."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return []
    if isinstance(ip, ipaddress.IPv4Address):
        octets = str(ip).split(".")
        forms = [sep.join(o) for o in (octets, octets[::-1]) for sep in (".", "-")]
    else:
        groups = ip.exploded.split(":")
        forms = [ip.compressed, ":".join(g.lstrip("0") or "0" for g in groups), ip.exploded]
    return list(dict.fromkeys(forms))


def _patterns(addresses: Iterable[str]) -> tuple[str, str, int] | None:
    """(the spellings as plain alternatives, the same with their boundaries, the
    longest spelling), or None without any address."""
    plain: list[str] = []
    bounded: list[str] = []
    longest = 0
    for address in addresses:
        for form in sorted(spellings(address), key=len, reverse=True):
            longest = max(longest, len(form))
            before, after = (_V6_BEFORE, _V6_AFTER) if ":" in form else (_V4_BEFORE, _V4_AFTER)
            plain.append(re.escape(form))
            bounded.append(f"{before}{re.escape(form)}{after}")
    if not plain:
        return None
    return "|".join(plain), "|".join(bounded), longest


class _Finder:
    """Where the spellings stand alone in one kind of string (str or bytes). Looking
    around at every position is slow (0.4 s for a 2 MiB page), so the plain spellings
    are searched first (20 ms) and the boundaries checked only where one is found."""

    def __init__(self, plain: re.Pattern, bounded: re.Pattern) -> None:
        self.plain, self.bounded = plain, bounded

    def matches(self, text: Any, pos: int = 0) -> Iterator[re.Match]:
        while (candidate := self.plain.search(text, pos)) is not None:
            m = self.bounded.match(text, candidate.start())  # the look-behind sees before it
            if m is None:
                pos = candidate.start() + 1  # another spelling may start inside this one
                continue
            yield m
            pos = m.end()

    def sub(self, text: Any, placeholder: Any) -> Any:
        out, pos = [], 0
        for m in self.matches(text):
            out += [text[pos:m.start()], placeholder]
            pos = m.end()
        if not out:
            return text
        out.append(text[pos:])
        return text[:0].join(out)


class Scrubber:
    """Replaces the given addresses, in every spelling, by ``PLACEHOLDER``. Without an
    address it changes nothing (and is false)."""

    def __init__(self, addresses: Iterable[str] = ()) -> None:
        self.addresses = [a for a in dict.fromkeys(addresses) if spellings(a)]
        found = _patterns(self.addresses)
        self.longest = found[2] if found else 0
        self._text = self._bytes = None
        if found:
            plain, bounded, _ = found
            self._text = _Finder(re.compile(plain, re.IGNORECASE), re.compile(bounded, re.IGNORECASE))
            self._bytes = _Finder(re.compile(plain.encode("ascii"), re.IGNORECASE),
                                  re.compile(bounded.encode("ascii"), re.IGNORECASE))

    def __bool__(self) -> bool:
        return self._text is not None

    def text(self, value: str | None) -> str | None:
        if value is None or self._text is None:
            return value
        return self._text.sub(value, PLACEHOLDER)

    def data(self, value: bytes) -> bytes:
        if self._bytes is None:
            return value
        return self._bytes.sub(value, _PLACEHOLDER_BYTES)

    def stream(self) -> StreamScrub:
        """A scrubber for a body that arrives in chunks (an address may be cut in two)."""
        return StreamScrub(self)

    def json(self, value: Any) -> Any:
        """Every string in a JSON value (keys too), scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self.json(v) for k, v in value.items()}
        return value


class StreamScrub:
    """``Scrubber.data`` over a stream: ``feed`` each chunk, then ``finish``; the output,
    joined, is what ``data`` gives for the whole body. Holds back the last few bytes of
    each chunk (an address and what decides where it ends) until the next one."""

    def __init__(self, scrubber: Scrubber) -> None:
        self._finder = scrubber._bytes
        self._hold = scrubber.longest + _LOOK
        self._before = b""  # the last bytes given out: what the look-behind sees
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        if self._finder is None:
            return chunk
        return self._run(self._pending + chunk, final=False)

    def finish(self) -> bytes:
        if self._finder is None:
            return b""
        return self._run(self._pending, final=True)

    def _run(self, data: bytes, final: bool) -> bytes:
        assert self._finder is not None
        text = self._before + data
        start = len(self._before)
        out: list[bytes] = []
        pos = start
        for m in self._finder.matches(text, start):
            if not final and m.end() + _LOOK > len(text):
                break  # what follows may still make it part of a longer number
            out += [text[pos:m.start()], _PLACEHOLDER_BYTES]
            pos = m.end()
        cut = len(text) if final else max(pos, len(text) - self._hold)
        out.append(text[pos:cut])
        self._before = text[max(0, cut - _LOOK):cut]
        self._pending = text[cut:]
        return b"".join(out)


# --- records ---------------------------------------------------------------------------


def scrub_http(record: HttpRequest, scrubber: Scrubber, *, keep_url: bool = False) -> None:
    """Everything a server sent in one HTTP record: headers, Location, reason phrase,
    title, the kept body; and its URL when it came from a redirect (``keep_url`` for the
    target's own URL and the probe's own requests)."""
    if not scrubber:
        return
    record.headers = [[scrubber.text(str(part)) or "" for part in pair] for pair in record.headers]
    record.location = scrubber.text(record.location)
    record.reason = scrubber.text(record.reason)
    record.title = scrubber.text(record.title)
    if record.body_head:
        record.body_head = scrubber.data(record.body_head)
    if not keep_url:
        record.url = scrubber.text(record.url) or record.url


def scrub_control(result: ControlResult, scrubber: Scrubber) -> None:
    """The control helper's answer: the pages it fetched and its raw reply. The helper
    sees the volunteer's address as its client's, and a helper may echo it."""
    if not scrubber:
        return
    for record in result.http:
        scrub_http(record, scrubber, keep_url=record.kind != "main" or record.hop == 0)
    if result.raw is not None:
        result.raw = scrubber.json(result.raw)


def scrub_measurement(m: Measurement, scrubber: Scrubber) -> None:
    """Every page-derived field of a measurement, both sides, in place. Kept as they
    are: the target URL, the requests the probe made itself (``http_fallback`` to an
    address), and what DNS, TCP and TLS observed (addresses are the network's answer,
    not a page's)."""
    if not scrubber:
        return
    for record in m.http:
        scrub_http(record, scrubber, keep_url=record.kind != "main" or record.hop == 0)
    if m.control is not None:
        scrub_control(m.control, scrubber)
