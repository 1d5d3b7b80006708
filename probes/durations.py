"""Durations as people write them in config files: 30, "30s", "250ms", "5m", "1h", "3d", "1w".

Its own module because both the spec (probes/spec.py) and the scenario parser (probes/script.py)
read durations, and the parser must not import the spec that refers to its Script type.
"""

from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from 30, 30.5, "30s", "250ms", "5m", "1h", "3d", "1w". Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(value)
    return float(m.group(1)) * _UNIT_S[m.group(2)]
