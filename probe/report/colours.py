"""Colours of verdicts: few, and the same meaning in every format.

A reader asks "is it blocked, and how sure are we?" before "how?", so colour answers
the first question only: red is blocked (deeper red, more confidence), green works,
grey is down for everyone, hatched amber is "can't tell" (no control to tell a block
from an outage), and a dashed outline is "could not measure". The method is the
verdict code, written out. Eighteen colours, one per verdict, were unreadable.
"""

from __future__ import annotations

from probe.report.model import is_blocked

# Blocked, by confidence level (model.confidence_level): saturation is confidence.
BLOCKED_COLOURS = {"high": "#b71c1c", "medium": "#e35d5d", "low": "#f4b4b4"}
OK_COLOUR = "#8cc68c"
DOWN_COLOUR = "#c4c4c4"
CANT_TELL_COLOUR = "#e0a800"  # the hatching's ink; the cell is hatched, never filled
CANT_TELL_HATCH = f"repeating-linear-gradient(135deg,{CANT_TELL_COLOUR} 0 2px,#fff 2px 5px)"
ERROR_OUTLINE = "#8a8a8a"


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


def css() -> str:
    """The CSS classes of the HTML chart and badges: ``s-<status>`` and, for blocked,
    ``q-<level>``. One place, so the legend and the cells cannot disagree."""
    rules = [
        f".s-blocked{{background:{BLOCKED_COLOURS['high']};color:#fff}}",
        f".s-blocked.q-medium{{background:{BLOCKED_COLOURS['medium']};color:#fff}}",
        f".s-blocked.q-low{{background:{BLOCKED_COLOURS['low']};color:#222}}",
        f".s-ok{{background:{OK_COLOUR};color:#111}}",
        f".s-down{{background:{DOWN_COLOUR};color:#111}}",
        f".s-cant_tell{{background:{CANT_TELL_HATCH};color:#111;box-shadow:inset 0 0 0 1px {CANT_TELL_COLOUR}}}",
        f".s-error{{background:#fff;color:#444;box-shadow:inset 0 0 0 1px {ERROR_OUTLINE};"
        f"outline:1px dashed {ERROR_OUTLINE};outline-offset:-1px}}",
        ".s-none{background:transparent;box-shadow:inset 0 0 0 1px #d4d4d4}",
    ]
    return "\n".join(rules)
