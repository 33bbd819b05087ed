"""Blocking events as feeds people and tools subscribe to: Atom 1.0 (RFC 4287) and
JSON Feed 1.1. Pure rendering: events in, bytes or a dict out, no I/O.

An event is a dict (``events_version`` 1.0.0) saying that a site changed on a network:
``kind`` is ``blocked``, ``unblocked`` or ``method_changed``; ``before`` and ``after``
are verdict codes; ``since`` is when the new state was first seen, ``confirmed_at``
when enough measurements agreed, ``last_before`` the last time the old state was seen;
``evidence`` is ``[{"text": ..., "fields": {...}}]``.

Why these choices:
- Entries are newest first and carry ``urn:bynet-probe:event:<event_id>`` as their id,
  so a reader that saw an event once never shows it again, whichever feed URL it used.
- The feed's ``updated`` is the newest ``confirmed_at``, not the time of rendering: the
  same events give the same bytes, so a web server's ETag and a reader's cache work.
- Every text passes ``xml_text`` first: a domain or an evidence line is whatever a
  network answered, and a censor's page may hold characters XML 1.0 cannot carry at
  all (escaping cannot save those; ElementTree escapes the rest: ``<``, ``&``, quotes).
- Titles and summaries stay English, like verdict codes and column names: feeds are
  researchers' output, read by machines and people in many languages alike.
"""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from probe.report.model import evidence_lines

ATOM_NS = "http://www.w3.org/2005/Atom"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
DEFAULT_TITLE = "bynet-probe blocking events"
EVENT_URN = "urn:bynet-probe:event:"
# Category schemes: what a term names (a term "BY" alone could be a country or a tag).
SCHEMES = {"kind": "urn:bynet-probe:kind", "cc": "urn:bynet-probe:cc", "asn": "urn:bynet-probe:asn",
           "verdict": "urn:bynet-probe:verdict"}
JSON_EXTENSION = "_bynet_probe"

# What XML 1.0 forbids (section 2.2, Char): C0 controls but tab, newline and carriage
# return; lone surrogates; U+FFFE and U+FFFF.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class FeedError(ValueError):
    """An event that cannot be put in a feed (a time that is not one): one line."""


def xml_text(value: Any) -> str:
    """``value`` as text XML 1.0 can carry: characters it forbids are dropped."""
    return _NOT_XML.sub("", "" if value is None else str(value))


def rfc3339(value: str | datetime, *, what: str = "time") -> str:
    """A time as RFC 3339 in UTC with ``Z`` (``2024-05-01T10:00:00Z``; fractions of a
    second only when there are some). Naive times are taken as UTC, as stored."""
    if isinstance(value, datetime):
        t = value
    else:
        try:
            t = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise FeedError(f"{what}: not an ISO 8601 time: {xml_text(value)[:64]!r}") from None
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_safe(value: Any) -> Any:
    """A deep copy of ``value`` whose strings UTF-8 can encode (lone surrogates
    dropped): the event travels whole in the JSON feed, and a lone surrogate would make
    ``json.dumps(..., ensure_ascii=False).encode()`` fail, or a strict reader refuse it."""
    if isinstance(value, str):
        return _SURROGATE.sub("", value)
    if isinstance(value, Mapping):
        return {utf8_safe(str(k)): utf8_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [utf8_safe(v) for v in value]
    return copy.deepcopy(value)


def _confirmed(event: Mapping[str, Any]) -> datetime:
    text = rfc3339(event.get("confirmed_at") or "", what=f"event {event.get('event_id')}: confirmed_at")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def newest_first(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Newest ``confirmed_at`` first; the event id breaks ties, so the order (and the
    bytes) never depend on how the events came."""
    keyed = [(_confirmed(e), str(e.get("event_id") or ""), e) for e in events]
    keyed.sort(key=lambda k: (k[0], k[1]), reverse=True)
    return [e for _, _, e in keyed]


def domain_of(event: Mapping[str, Any]) -> str:
    if event.get("domain"):
        return str(event["domain"])
    return urlsplit(str(event.get("url") or "")).hostname or str(event.get("url") or "?")


def network_of(event: Mapping[str, Any]) -> str:
    """``BY/AS25106``: the event's own, else from cc and asn (as reports name networks)."""
    if event.get("network"):
        return str(event["network"])
    cc, asn = event.get("cc"), event.get("asn")
    if not cc and not asn:
        return "unknown"
    return f"{cc or '??'}/{asn or 'AS?'}"


def event_title(event: Mapping[str, Any]) -> str:
    """One line: "charter97.org blocked on BY/AS25106 (tls.reset)", "... unblocked on
    ... (was tls.reset)", "... on ...: method changed: dns.nxdomain -> tls.reset"."""
    domain, network, kind = domain_of(event), network_of(event), event.get("kind")
    before, after = event.get("before"), event.get("after")
    if kind == "blocked":
        return f"{domain} blocked on {network}" + (f" ({after})" if after else "")
    if kind == "unblocked":
        return f"{domain} unblocked on {network}" + (f" (was {before})" if before else "")
    if kind == "method_changed":
        return f"{domain} on {network}: method changed: {before or '?'} -> {after or '?'}"
    return f"{domain} on {network}: {kind or 'changed'}"


def event_text(event: Mapping[str, Any]) -> str:
    """The evidence lines, one a line; without evidence, what changed in words."""
    lines = evidence_lines(event.get("evidence"))
    if lines:
        return "\n".join(lines)
    return f"{event.get('before') or '?'} -> {event.get('after') or '?'}"


def event_details(event: Mapping[str, Any]) -> str:
    """Everything a reader needs without opening anything else: the change, when, the
    network's name, the measurements, then the evidence."""
    lines = [event_title(event)]
    if event.get("url"):
        lines.append(f"URL: {event['url']}")
    if event.get("network_name"):
        lines.append(f"network: {network_of(event)} ({event['network_name']})")
    lines.append(f"verdict: {event.get('before') or '?'} -> {event.get('after') or '?'}")
    for key, label in (("since", "since"), ("last_before", "last seen before"), ("confirmed_at", "confirmed")):
        if event.get(key):
            try:
                lines.append(f"{label}: {rfc3339(event[key], what=key)}")
            except FeedError:
                lines.append(f"{label}: {event[key]}")
    ids = [str(i) for i in event.get("measurement_ids") or []]
    if ids:
        lines.append("measurements: " + ", ".join(ids))
    evidence = evidence_lines(event.get("evidence"))
    if evidence:
        lines += ["", "evidence:", *(f"- {line}" for line in evidence)]
    return "\n".join(lines)


def event_terms(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(scheme key, term) pairs for categories and tags: kind, cc, asn, and the verdict
    the site changed to."""
    terms = [(key, str(event[key])) for key in ("kind", "cc", "asn") if event.get(key)]
    if event.get("after"):
        terms.append(("verdict", str(event["after"])))
    return terms


def _updated(events: list[Mapping[str, Any]], updated: str | datetime | None) -> str:
    if updated is not None:
        return rfc3339(updated, what="updated")
    if events:
        return rfc3339(_confirmed(events[0]))
    # Atom requires a time even for no entries; without one given, "now" is honest
    return rfc3339(datetime.now(UTC))


def _sub(parent: ET.Element, tag: str, text: Any = None, **attrs: Any) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}", {k: xml_text(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        element.text = xml_text(text)
    return element


def atom_feed(events: Iterable[Mapping[str, Any]], *, feed_url: str, site_url: str, title: str = DEFAULT_TITLE,
              updated: str | datetime | None = None) -> bytes:
    """The events as an Atom 1.0 document (UTF-8 bytes with an XML declaration): the
    feed's id is its own URL, ``updated`` the newest ``confirmed_at`` (or ``updated``
    when given), a self link; one entry per event, newest first. FeedError for an
    event without a valid ``confirmed_at``."""
    ordered = newest_first(events)
    ET.register_namespace("", ATOM_NS)
    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    _sub(feed, "id", feed_url)
    _sub(feed, "title", title)
    _sub(feed, "updated", _updated(ordered, updated))
    _sub(feed, "link", rel="self", href=feed_url, type="application/atom+xml")
    _sub(feed, "link", rel="alternate", href=site_url, type="text/html")
    author = _sub(feed, "author")
    _sub(author, "name", "bynet-probe")
    _sub(feed, "generator", "bynet-probe")
    for event in ordered:
        entry = _sub(feed, "entry")
        _sub(entry, "id", EVENT_URN + str(event.get("event_id") or ""))
        _sub(entry, "title", event_title(event))
        when = rfc3339(_confirmed(event))
        _sub(entry, "updated", when)
        _sub(entry, "published", when)
        _sub(entry, "link", rel="alternate", href=site_url, type="text/html")
        for key, term in event_terms(event):
            _sub(entry, "category", term=term, scheme=SCHEMES[key], label=f"{key}: {term}")
        _sub(entry, "summary", event_text(event), type="text")
        _sub(entry, "content", event_details(event), type="text")
    ET.indent(feed)
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True) + b"\n"


def json_feed(events: Iterable[Mapping[str, Any]], *, feed_url: str, site_url: str,
              title: str = DEFAULT_TITLE) -> dict[str, Any]:
    """The events as a JSON Feed 1.1 object (for ``json.dumps``): one item per event,
    newest first, with the same ids as the Atom entries and the whole event (its
    strings made UTF-8-safe) under ``_bynet_probe`` for tools that want more than words."""
    items = []
    for event in newest_first(events):
        items.append({
            "id": EVENT_URN + str(event.get("event_id") or ""),
            "url": site_url,
            "title": xml_text(event_title(event)),
            "content_text": xml_text(event_details(event)),
            "summary": xml_text(event_text(event)),
            "date_published": rfc3339(_confirmed(event)),
            "tags": [xml_text(term) for _, term in event_terms(event)],
            JSON_EXTENSION: utf8_safe(event),
        })
    return {
        "version": JSON_FEED_VERSION,
        "title": xml_text(title),
        "home_page_url": site_url,
        "feed_url": feed_url,
        "authors": [{"name": "bynet-probe"}],
        "items": items,
    }
