"""Parse the duration settings (``90``, ``30s``, ``5m``, ``1h``, ``2d``) and format times."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: str | int | float) -> float:
    """Return seconds for a duration such as ``90``, ``30s``, ``5m``, ``1h`` or ``2d``.

    Raises ``ValueError`` naming the value when it is not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        if not 0 <= value < math.inf:  # also refuses NaN
            raise ValueError(f"{value!r} is not a duration (negative or not finite)")
        return float(value)
    match = _DURATION.match(str(value).lower())
    if not match:
        raise ValueError(f"{value!r} is not a duration; write e.g. 90, 30s, 5m, 1h or 2d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    """Return a short human form of ``seconds`` (``45s``, ``12m``, ``3h``, ``2d``)."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def iso_utc(timestamp: float) -> str:
    """Return an ISO 8601 UTC string (``2026-11-28T15:11:36.123456Z``) for a Unix time."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_iso_utc(text: str) -> float:
    """Return the Unix time of an ISO 8601 string written by :func:`iso_utc`."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
