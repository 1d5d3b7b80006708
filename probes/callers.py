"""A fleet of callers that is not one voice: per-session draws of voice, speed, pitch, pauses and
background noise from a distribution, reproducible from a seed.

    callers:
      noise_snr_db: [5, 30]          # uniform in [lo, hi] dB, or one number
      noise: [pink, babble, white]   # kinds to pick from (probes/noise.py); default pink
      voices: [en-us, en-gb, en-us+f3]   # espeak-ng voices (accent and sex) to pick from
      rate_wpm: [140, 200]           # words per minute, uniform, or one number
      pitch: [30, 70]                # espeak-ng pitch 0..99, uniform, or one number
      pause_ms: [-150, 400]          # added to every pause between phrases, drawn per pause
      variants: 8                    # distinct callers rendered for the run (1..64)

Session `index` of a run seeded `seed` always draws the same caller, whichever worker runs it
and in whatever order: each draw has its own random stream keyed by (seed, index).

A load run renders its audio before the clock starts (probes.session.prepare), so callers come
from a bounded pool: `variants` callers drawn once (variant k is `draw(spec, k, seed)`), each
applied to the scenario as a transform (`apply`: the engine plays the result unchanged) and
rendered up front; session `index` then picks its variant from its own (seed, index) stream.
Voice, rate and pitch apply to spoken (`speak`) steps; noise to every utterance that has none of
its own; pause jitter to `silence` steps and the pauses between plain turns.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from probes.espeak import split_voice, voice_spec
from probes.noise import KINDS
from probes.script import InterruptAfter, Pause, Repeat, Say, Script, Silence
from probes.spec import Scenario

_KEYS = ("noise_snr_db", "noise", "voices", "rate_wpm", "pitch", "pause_ms", "variants")
DEFAULT_VARIANTS = 8
MAX_VARIANTS = 64
#: utterances and silences a load worker may render for a scenario with callers (the scenario
#: as written, which the worker also renders, and each variant): what the engine's caches keep
#: (probes/messages.py holds 256 wire forms), so no session renders or encodes audio while
#: others are timed
MAX_RENDERINGS = 200


class CallerError(ValueError):
    """A bad `callers:` value; `key` is its path under `callers` ("" for the mapping itself)."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"callers{'.' + key if key else ''}: {message}")


@dataclass(frozen=True, slots=True)
class Caller:
    voice: str | None = None
    rate_wpm: int | None = None
    pitch: int | None = None
    noise: str | None = None
    snr_db: float | None = None
    pause_ms: tuple[float, float] | None = None  # each pause gets an offset drawn in this range
    seed: int | None = None  # its own stream: pause offsets, noise, synthetic speech (None: none)

    @property
    def kind(self) -> str:
        """What the load summary groups by: the voice and the noise kind (not the numbers)."""
        return f"{self.voice or 'default'}/{self.noise or 'quiet'}"

    @property
    def label(self) -> str:
        """Stored with each session and turn (`caller`): every drawn property, compactly."""
        parts = [self.voice or ""]
        if self.rate_wpm is not None:
            parts.append(f"{self.rate_wpm}wpm")
        if self.pitch is not None:
            parts.append(f"p{self.pitch}")
        if self.noise is not None:
            parts.append(f"{self.noise}@{self.snr_db:g}dB")
        if self.pause_ms is not None:
            parts.append(f"pause{self.pause_ms[0]:+g}..{self.pause_ms[1]:+g}ms")
        return " ".join(p for p in parts if p) or "default"


@dataclass(frozen=True, slots=True)
class CallerSpec:
    noise_snr_db: tuple[float, float] | None = None
    noise: tuple[str, ...] = ("pink",)
    voices: tuple[str, ...] = ()
    rate_wpm: tuple[int, int] | None = None
    pitch: tuple[int, int] | None = None
    pause_ms: tuple[float, float] | None = None
    variants: int = DEFAULT_VARIANTS


def _range(v, key: str, lo: float, hi: float, integer: bool) -> tuple:
    vals = v if isinstance(v, list | tuple) else [v, v]
    if len(vals) != 2 or any(isinstance(x, bool) or not isinstance(x, int | float) for x in vals):
        raise CallerError(key, f"expected a number or [low, high], got {v!r}")
    a, b = (int(x) if integer else float(x) for x in vals)
    if not lo <= a <= b <= hi:
        raise CallerError(key, f"expected {lo:g} <= low <= high <= {hi:g}, got {v!r}")
    return (a, b)


def parse_callers(d: dict) -> CallerSpec:
    """The `callers:` mapping (module docstring). Raises CallerError naming the key."""
    if not isinstance(d, dict):
        raise CallerError("", f"expected a mapping, got {d!r}")
    unknown = sorted(set(d) - set(_KEYS))
    if unknown:
        raise CallerError(unknown[0], f"unknown key (expected one of {', '.join(_KEYS)})")
    kinds = d.get("noise", ["pink"])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if not isinstance(kinds, list) or not kinds or not all(k in KINDS for k in kinds):
        raise CallerError("noise", f"expected kinds from {', '.join(KINDS)}, got {kinds!r}")
    voices = d.get("voices", [])
    if not isinstance(voices, list) or not all(isinstance(v, str) and v.strip() for v in voices):
        raise CallerError("voices", f"expected a list of espeak-ng voice names, got {voices!r}")
    if any(":" in v for v in voices):
        raise CallerError("voices", "a voice name has no ':' (give the pitch as callers.pitch)")
    n = d.get("variants", DEFAULT_VARIANTS)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_VARIANTS:
        raise CallerError("variants", f"expected an integer 1..{MAX_VARIANTS}, got {n!r}")
    return CallerSpec(
        noise_snr_db=(_range(d["noise_snr_db"], "noise_snr_db", -20, 100, False)
                      if "noise_snr_db" in d else None),
        noise=tuple(kinds), voices=tuple(voices),
        rate_wpm=_range(d["rate_wpm"], "rate_wpm", 80, 450, True) if "rate_wpm" in d else None,
        pitch=_range(d["pitch"], "pitch", 0, 99, True) if "pitch" in d else None,
        pause_ms=_range(d["pause_ms"], "pause_ms", -10_000, 10_000, False)
        if "pause_ms" in d else None,
        variants=n)


def draw(spec: CallerSpec, index: int, seed: int | None = 0) -> Caller:
    """Session `index`'s caller (module docstring); no noise without `noise_snr_db`."""
    rng = random.Random(f"voicepulse-caller:{seed}:{index}")
    snr = None if spec.noise_snr_db is None else round(rng.uniform(*spec.noise_snr_db), 2)
    kind = rng.choice(spec.noise) if snr is not None else None
    c = Caller(
        voice=rng.choice(spec.voices) if spec.voices else None,
        rate_wpm=rng.randint(*spec.rate_wpm) if spec.rate_wpm else None,
        pitch=rng.randint(*spec.pitch) if spec.pitch else None,
        noise=kind, snr_db=snr, pause_ms=spec.pause_ms)
    return c if c == Caller() else dataclasses.replace(c, seed=rng.randrange(1, 1 << 30))


# ---- the scenario as one caller plays it -----------------------------------------------------


def apply(sc: Scenario, caller: Caller) -> Scenario:
    """`sc` played by `caller`: a scripted scenario whose says carry the caller's voice, rate,
    pitch and noise and whose pauses carry its jitter (plain `turns: N` are compiled first, as
    the player does). The seed becomes the caller's, so noise and synthetic speech differ from
    caller to caller. Pure: the same caller always gives the same scenario."""
    from probes.play import plain_script  # the player's own compilation of `turns: N`

    script = sc.script if sc.script is not None else plain_script(sc)
    pauses = iter(random.Random(f"voicepulse-pauses:{caller.seed}").random, None)
    steps = _steps(script.steps, caller, pauses)
    new = Script(steps, script.expect, script.source, script.base_dir)
    seed = sc.seed if caller.seed is None else caller.seed
    return dataclasses.replace(sc, script=new, seed=seed, callers=None)


def _steps(steps, caller: Caller, pauses) -> tuple:
    out = []
    for st in steps:
        if isinstance(st, Say):
            st = _say(st, caller)
        elif isinstance(st, InterruptAfter):
            st = dataclasses.replace(st, say=_say(st.say, caller))
        elif isinstance(st, Repeat):
            st = dataclasses.replace(st, steps=_steps(st.steps, caller, pauses))
        elif isinstance(st, Silence) and caller.pause_ms is not None:
            st = Silence(max(1.0, st.ms + _offset(caller, next(pauses))))
        elif isinstance(st, Pause) and caller.pause_ms is not None:
            st = Pause(max(0.0, st.s + _offset(caller, next(pauses)) / 1000))
        out.append(st)
    return tuple(out)


def _offset(caller: Caller, u: float) -> float:
    lo, hi = caller.pause_ms
    return round(lo + (hi - lo) * u, 1)


def _say(say: Say, caller: Caller) -> Say:
    changes: dict = {}
    if caller.noise is not None and say.noise is None:  # a step's own noise wins
        changes.update(noise=caller.noise, snr_db=caller.snr_db)
    if say.source == "speak":
        voice, pitch = split_voice(say.voice)
        voice = caller.voice or voice
        pitch = caller.pitch if caller.pitch is not None else pitch
        changes["voice"] = voice_spec(voice, pitch)
        if caller.rate_wpm is not None:
            changes["wpm"] = caller.rate_wpm
    return dataclasses.replace(say, **changes) if changes else say


# ---- the run's pool ----------------------------------------------------------------------------


def check_renderings(sc: Scenario) -> None:
    """CallerError (variants) when the scenario's callers would render more than MAX_RENDERINGS
    utterances and silences: the caches would drop some, and sessions would render them again
    while others are being timed."""
    from probes.play import plain_script

    spec = parse_callers(sc.callers or {})
    script = sc.script if sc.script is not None else plain_script(sc)
    per = len(script.says()) + len(_silences(script.steps))
    n = (spec.variants + 1) * per  # + the scenario as written
    if n > MAX_RENDERINGS:
        raise CallerError("variants", f"{spec.variants} callers (and the scenario as written) x "
                                      f"{per} utterances and silences = {n} renderings; at most "
                                      f"{MAX_RENDERINGS} stay rendered for a run (fewer variants)")


def _silences(steps) -> list:
    out = []
    for st in steps:
        if isinstance(st, Silence):
            out.append(st)
        elif isinstance(st, Repeat):
            out.extend(_silences(st.steps))
    return out


class CallerPool:
    """The run's `variants` callers and their scenarios (module docstring)."""

    def __init__(self, sc: Scenario, seed: int | None):
        check_renderings(sc)
        self.spec = parse_callers(sc.callers or {})
        self.seed = seed
        self.callers = [draw(self.spec, k, seed) for k in range(self.spec.variants)]
        self.scenarios = [apply(sc, c) for c in self.callers]

    def pick(self, index: int) -> tuple[Caller, Scenario]:
        """Session `index`'s caller and the scenario it plays."""
        k = random.Random(f"voicepulse-caller-pick:{self.seed}:{index}").randrange(
            len(self.callers))
        return self.callers[k], self.scenarios[k]
