"""Colours and terminal styles of verdicts: one palette for every format."""

from __future__ import annotations

from probe.core.verdicts import CANT_TELL
from probe.report.model import is_blocked

# One fixed colour per verdict, by family, so the same colour means the same thing in
# every report: ok green, down grey, error light grey, dns blues, tcp purples,
# tls oranges, http reds.
VERDICT_COLOURS: dict[str, str] = {
    "ok": "#2ca02c",
    "down": "#7f7f7f",
    "error": "#d9d9d9",
    "dns.nxdomain": "#08306b",
    "dns.bogon": "#2171b5",
    "dns.blockpage": "#41b6c4",
    "dns.injection": "#6baed6",
    "dns.inconsistent": "#c6dbef",
    "tcp.timeout": "#3f007d",
    "tcp.reset": "#756bb1",
    "tcp.refused": "#bcbddc",
    "tls.reset": "#cc4c02",
    "tls.timeout": "#fe9929",
    "tls.mitm": "#fee391",
    "http.reset": "#67000d",
    "http.timeout": "#cb181d",
    "http.blockpage": "#fb6a4a",
    "http.diff": "#fcbba1",
}


UNKNOWN_COLOUR = "#ff00ff"  # a verdict this report does not know: impossible to miss


CANT_TELL_COLOUR = "#ffeda0"  # a failure that could not be told from an outage (no control)


NO_DATA_COLOUR = "#ffffff"


def verdict_colour(verdict: str) -> str:
    if verdict == CANT_TELL or verdict.endswith(f"({CANT_TELL})"):
        return CANT_TELL_COLOUR
    return VERDICT_COLOURS.get(verdict, UNKNOWN_COLOUR)


def text_colour(background: str) -> str:
    r, g, b = (int(background[i:i + 2], 16) for i in (1, 3, 5))
    return "#000" if (0.299 * r + 0.587 * g + 0.114 * b) > 140 else "#fff"


def terminal_style(verdict: str, blocked: bool | None = False) -> str:
    """Rich style: blocked red, can't tell yellow, ok green, down/error grey."""
    if blocked is None and is_blocked(verdict):
        return "yellow"
    if is_blocked(verdict):
        return "bold red"
    if verdict == "ok":
        return "green"
    if verdict in ("down", "error"):
        return "bright_black"
    return "yellow"
