"""Durations and byte counts as a volunteer types them ('10m', '500MB').

Why here: ``--max-runtime``, ``--max-bytes``, ``probe config set max-bytes`` and
``probe schedule --every`` take the same spellings, so one parser serves them all."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1.5h', '1d' to seconds; ValueError otherwise."""
    m = _DURATION.match(text or "")
    if not m:
        raise ValueError(f"invalid duration {text!r} (use e.g. 90s, 10m, 1h)")
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2).lower()]
    if value <= 0:
        raise ValueError(f"invalid duration {text!r}: must be more than zero")
    return value


def parse_size(text: str) -> int:
    """'500000', '500k', '50MB', '1.5G', '2GiB' to bytes (k = 1000, Ki = 1024)."""
    m = _SIZE.match(text or "")
    if not m or (m.group(3) and not m.group(2)):
        raise ValueError(f"invalid size {text!r} (use e.g. 50MB, 1GB)")
    base = 1024 if m.group(3) else 1000
    value = int(float(m.group(1)) * base ** _SIZE_UNITS[m.group(2).lower()])
    if value <= 0:
        raise ValueError(f"invalid size {text!r}: must be more than zero")
    return value


def format_size(n: int) -> str:
    """Bytes as a person reads them: 980 B, 12.3 kB, 4.6 MB, 1.2 GB."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
