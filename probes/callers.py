"""A fleet of callers that is not one voice: per-session draws of voice, speed, pitch and
background noise from a distribution, reproducible from a seed.

    callers:
      noise_snr_db: [5, 30]          # uniform in [lo, hi] dB, or one number
      noise: [pink, babble, white]   # kinds to pick from (probes/noise.py); default pink
      voices: [en-us, en-gb, en-us+f3]   # espeak-ng voices (accent and sex) to pick from
      rate_wpm: [140, 200]           # words per minute, uniform, or one number
      pitch: [30, 70]                # espeak-ng pitch 0..99, uniform, or one number

Session `index` of a run seeded `seed` always draws the same caller, whichever worker runs it
and in whatever order: each draw has its own random stream keyed by (seed, index).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from probes.noise import KINDS

_KEYS = ("noise_snr_db", "noise", "voices", "rate_wpm", "pitch")


@dataclass(frozen=True, slots=True)
class Caller:
    voice: str | None = None
    rate_wpm: int | None = None
    pitch: int | None = None
    noise: str | None = None
    snr_db: float | None = None


@dataclass(frozen=True, slots=True)
class CallerSpec:
    noise_snr_db: tuple[float, float] | None = None
    noise: tuple[str, ...] = ("pink",)
    voices: tuple[str, ...] = ()
    rate_wpm: tuple[int, int] | None = None
    pitch: tuple[int, int] | None = None


def _range(v, key: str, lo: float, hi: float, integer: bool) -> tuple:
    vals = v if isinstance(v, list | tuple) else [v, v]
    if len(vals) != 2 or any(isinstance(x, bool) or not isinstance(x, int | float) for x in vals):
        raise ValueError(f"callers.{key}: expected a number or [low, high], got {v!r}")
    a, b = (int(x) if integer else float(x) for x in vals)
    if not lo <= a <= b <= hi:
        raise ValueError(f"callers.{key}: expected {lo:g} <= low <= high <= {hi:g}, got {v!r}")
    return (a, b)


def parse_callers(d: dict) -> CallerSpec:
    """The `callers:` mapping (module docstring). Raises ValueError naming the key."""
    if not isinstance(d, dict):
        raise ValueError("callers: expected a mapping")
    unknown = sorted(set(d) - set(_KEYS))
    if unknown:
        raise ValueError(f"callers.{unknown[0]}: unknown key (expected one of "
                         f"{', '.join(_KEYS)})")
    kinds = d.get("noise", ["pink"])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if not kinds or not all(k in KINDS for k in kinds):
        raise ValueError(f"callers.noise: expected kinds from {', '.join(KINDS)}, got {kinds!r}")
    voices = d.get("voices", [])
    if not isinstance(voices, list) or not all(isinstance(v, str) and v for v in voices):
        raise ValueError("callers.voices: expected a list of espeak-ng voice names")
    return CallerSpec(
        noise_snr_db=(_range(d["noise_snr_db"], "noise_snr_db", -20, 100, False)
                      if "noise_snr_db" in d else None),
        noise=tuple(kinds), voices=tuple(voices),
        rate_wpm=_range(d["rate_wpm"], "rate_wpm", 80, 450, True) if "rate_wpm" in d else None,
        pitch=_range(d["pitch"], "pitch", 0, 99, True) if "pitch" in d else None)


def draw(spec: CallerSpec, index: int, seed: int | None = 0) -> Caller:
    """Session `index`'s caller (module docstring); no noise without `noise_snr_db`."""
    rng = random.Random(f"voicepulse-caller:{seed}:{index}")
    snr = None if spec.noise_snr_db is None else round(rng.uniform(*spec.noise_snr_db), 2)
    kind = rng.choice(spec.noise) if snr is not None else None
    return Caller(
        voice=rng.choice(spec.voices) if spec.voices else None,
        rate_wpm=rng.randint(*spec.rate_wpm) if spec.rate_wpm else None,
        pitch=rng.randint(*spec.pitch) if spec.pitch else None,
        noise=kind, snr_db=snr)
