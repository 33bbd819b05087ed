"""A page's bytes as text, the way a browser reads them, and its title.

Belarusian and Russian sites (and their censors' blockpages) still serve windows-1251
declared only in a ``<meta>`` tag; decoding every body as UTF-8 garbled their titles, so
titles stopped matching the control's and Cyrillic blockpage fingerprints missed. The
HTML encoding-sniffing rules (byte-order mark, then the HTTP ``charset``, then a
``<meta>`` declaration, with browsers' aliases such as latin-1 -> windows-1252) are
applied by w3lib (Scrapy's), not by hand; entities are resolved by ``html.unescape``.
Pure functions: the probe, the helper and analysis all call them.
"""

from __future__ import annotations

import html
import re

from w3lib.encoding import html_to_unicode

# OONI's title regex (measurexlite/web.go), widened to allow attributes on <title>.
_TITLE_RE = re.compile(r"<title[^>]*>([^<]{1,512})</title>", re.IGNORECASE)


def content_type_of(headers: list[list[str]] | None) -> str | None:
    """The Content-Type of recorded ``[[name, value], ...]`` headers."""
    for name, value in headers or []:
        if name.lower() == "content-type":
            return value
    return None


def decode_html(body: bytes, content_type: str | None) -> str:
    """The body as text by the HTML sniffing rules; undecodable bytes become U+FFFD.
    Without any declaration UTF-8 is assumed (what most of the web is, and OONI too)."""
    return sniff_html(body, content_type)[1]


def sniff_html(body: bytes, content_type: str | None) -> tuple[bool, str]:
    """(whether ``body`` is itself the UTF-8 of the text, no byte-order mark; the
    text). A scanner for UTF-8 literals can then read the bytes as they are."""
    if not body:
        return True, ""
    try:
        encoding, text = html_to_unicode(content_type, body)
    except (LookupError, ValueError):  # an encoding name Python does not know
        return not body.startswith(b"\xef\xbb\xbf"), body.decode("utf-8", errors="replace")
    return encoding == "utf-8" and not body.startswith(b"\xef\xbb\xbf"), text


def extract_title(body: bytes, content_type: str | None) -> str | None:
    """The page title, decoded as a browser would, entities resolved, on one line."""
    m = _TITLE_RE.search(decode_html(body, content_type))
    if not m:
        return None
    text = " ".join(html.unescape(m.group(1)).split())
    return text or None
