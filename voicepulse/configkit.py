"""A small typed reader for YAML mappings whose every error names the file, the key and what was
expected, e.g. ``voicepulse.yaml: targets.sim-fast.url: expected a ws:// or wss:// URL, got 'http://x'``.

Each config section (targets, sinks, probes, alerts, ...) reads its mapping through a `Section`
and calls `done()` last, so an unknown key is an error rather than a silently ignored typo.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from typing import Any

from probes.spec import parse_duration  # noqa: F401  (re-exported: the CLI reads durations too)

_MISSING = object()


class ConfigError(ValueError):
    """A config value that cannot be used. str() is the one-line message users see."""

    def __init__(self, file: str, key: str, message: str):
        self.file, self.key, self.message = file, key, message
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Section:
    """A mapping read key by key. `path` is the dotted key of the mapping itself."""

    def __init__(self, data: Any, file: str, path: str = ""):
        self.file, self.path = file, path
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(file, path or "(top level)", f"expected a mapping, got {_show(data)}")
        self.data = data
        self._seen: set[str] = set()

    # -- plumbing -------------------------------------------------------------------------
    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else str(name)

    def error(self, name: str | None, message: str) -> ConfigError:
        return ConfigError(self.file, self.key(name) if name is not None else self.path, message)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        self._seen.add(name)
        if name in self.data and self.data[name] is not None:
            return self.data[name]
        if default is _MISSING:
            raise self.error(name, "is required")
        return default

    def done(self) -> None:
        unknown = [k for k in self.data if k not in self._seen]
        if unknown:
            raise self.error(str(unknown[0]), f"unknown key (known here: {', '.join(sorted(self._seen))})")

    # -- typed readers ---------------------------------------------------------------------
    def str(self, name: str, default: Any = _MISSING, choices: tuple[str, ...] | None = None) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, f"expected a non-empty string, got {_show(value)}")
        if choices and value not in choices:
            raise self.error(name, f"expected one of {' | '.join(choices)}, got {_show(value)}")
        return value

    def url(self, name: str, schemes: tuple[str, ...], default: Any = _MISSING) -> Any:
        value = self.str(name, default)
        if value is default and default is not _MISSING:
            return value
        if not any(value.startswith(f"{s}://") for s in schemes):
            want = " or ".join(f"{s}://" for s in schemes)
            raise self.error(name, f"expected a {want} URL, got {_show(value)}")
        return value

    def num(self, name: str, default: Any = _MISSING, *, min: float | None = None,
            max: float | None = None, positive: bool = False) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"expected a number, got {_show(value)}")
        if not math.isfinite(value):
            raise self.error(name, f"expected a finite number, got {_show(value)}")
        self._check_range(name, value, min, max, positive)
        return float(value)

    def int(self, name: str, default: Any = _MISSING, *, min: int | None = None,
            max: int | None = None) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"expected a whole number, got {_show(value)}")
        self._check_range(name, value, min, max, False)
        return value

    def bool(self, name: str, default: Any = _MISSING) -> Any:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {_show(value)}")
        return value

    def duration(self, name: str, default: Any = _MISSING, *, positive: bool = True) -> Any:
        """Seconds, from a number or a string like "30s", "5m", "1h", "3d"."""
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise self.error(name, f"expected a duration like 30s, 5m, 1h or 3d, got {_show(value)}") from None
        if positive and seconds <= 0:
            raise self.error(name, f"expected a duration above zero, got {_show(value)}")
        return seconds

    def percent(self, name: str, default: Any = _MISSING) -> Any:
        """A share in 0..100 written as 15, 15% or "15 %"; returned as a fraction (0.15)."""
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        text = str(value).strip().rstrip("%").strip()
        try:
            pct = float(text)
        except ValueError:
            raise self.error(name, f"expected a percentage like 15%, got {_show(value)}") from None
        if not 0 <= pct <= 100:
            raise self.error(name, f"expected a percentage from 0 to 100, got {_show(value)}")
        return pct / 100.0

    def env_name(self, name: str, default: Any = _MISSING, *, must_exist: bool = False) -> Any:
        """The *name* of an environment variable (never its value: values are secrets)."""
        value = self.str(name, default)
        if value is default and default is not _MISSING:
            return value
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise self.error(name, f"expected the name of an environment variable, got {_show(value)}")
        if must_exist and not os.environ.get(value):
            raise self.error(name, f"environment variable {value} is not set")
        return value

    def section(self, name: str, default: Any = _MISSING) -> Section:
        return Section(self.raw(name, {} if default is _MISSING else default), self.file, self.key(name))

    def list(self, name: str, default: Any = _MISSING) -> list:
        value = self.raw(name, default)
        if not isinstance(value, list):
            raise self.error(name, f"expected a list, got {_show(value)}")
        return value

    def sections(self, name: str, default: Any = _MISSING) -> Iterator[Section]:
        """Each mapping in a list (key ``name[i]``) or each value of a mapping (``name.key``)."""
        value = self.raw(name, default)
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield Section(item, self.file, f"{self.key(name)}[{i}]")
        elif isinstance(value, dict):
            for k, item in value.items():
                yield Section(item, self.file, f"{self.key(name)}.{k}")
        else:
            raise self.error(name, f"expected a list or a mapping, got {_show(value)}")

    def _check_range(self, name: str, value: float, lo: float | None, hi: float | None,
                     positive: bool) -> None:
        if positive and value <= 0:
            raise self.error(name, f"expected a number above zero, got {_show(value)}")
        if lo is not None and value < lo:
            raise self.error(name, f"expected at least {lo}, got {_show(value)}")
        if hi is not None and value > hi:
            raise self.error(name, f"expected at most {hi}, got {_show(value)}")
