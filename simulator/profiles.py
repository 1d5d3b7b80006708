"""Latency and behaviour profiles, chosen by model name.

A profile says how a simulated model behaves: how long before the first audio (TTFA), how long the
reply is, how fast and how evenly it is delivered, connect/ready delays, barge-in delay, the text
returned by input transcription, and faults that ride with the model. Profiles come from built-ins,
a YAML file (--profiles) and run-time changes (PUT /profile); see README.md ("Simulator").
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import yaml

DISTS = ("fixed", "normal", "lognormal")


class ProfileError(ValueError):
    """A bad profile value; the message names the file and the key."""


@dataclass(slots=True)
class Dist:
    """A distribution of milliseconds (or seconds, for reply_s): fixed, normal or lognormal."""

    dist: str = "fixed"
    value: float = 0.0  # fixed
    mean: float = 0.0  # normal
    sd: float = 0.0  # normal
    median: float = 0.0  # lognormal
    sigma: float = 0.0  # lognormal: sd of ln(x)
    floor: float = 0.0
    cap: float | None = None

    def sample(self, rng: random.Random) -> float:
        if self.dist == "fixed":
            x = self.value
        elif self.dist == "normal":
            x = rng.gauss(self.mean, self.sd)
        else:
            x = self.median * math.exp(rng.gauss(0.0, self.sigma))
        x = max(x, self.floor)
        if self.cap is not None:
            x = min(x, self.cap)
        return x

    def center(self) -> float:
        return {"fixed": self.value, "normal": self.mean, "lognormal": self.median}[self.dist]

    @classmethod
    def parse(cls, v: Any, where: str) -> Dist:
        if isinstance(v, Dist):
            return v
        if isinstance(v, bool):
            raise ProfileError(f"{where}: expected a number or a mapping with 'dist', got {v!r}")
        if isinstance(v, int | float):
            return cls("fixed", value=float(v), floor=min(0.0, float(v)))
        if not isinstance(v, dict):
            raise ProfileError(f"{where}: expected a number or a mapping with 'dist', got {v!r}")
        kind = v.get("dist", "fixed")
        if kind not in DISTS:
            raise ProfileError(f"{where}.dist: expected one of {', '.join(DISTS)}, got {kind!r}")
        names = {f.name for f in fields(cls)}
        out = cls(kind)
        for k, x in v.items():
            if k == "dist":
                continue
            if k not in names:
                raise ProfileError(f"{where}.{k}: unknown key (expected one of {sorted(names)})")
            if x is not None and (isinstance(x, bool) or not isinstance(x, int | float)):
                raise ProfileError(f"{where}.{k}: expected a number, got {x!r}")
            setattr(out, k, None if x is None else float(x))
        need = {"fixed": ("value",), "normal": ("mean", "sd"), "lognormal": ("median", "sigma")}
        for k in need[kind]:
            if k not in v:
                raise ProfileError(f"{where}.{k}: required for dist {kind}")
        return out


@dataclass(slots=True)
class Profile:
    name: str = "default"
    ttfa_ms: Dist = field(default_factory=lambda: Dist("lognormal", median=450, sigma=0.3, floor=150))
    ttfa_scale: float = 1.0  # multiplies every TTFA sample ("TTFA +40 %" = 1.4)
    reply_s: Dist = field(default_factory=lambda: Dist("fixed", value=2.0))
    delta_ms: int = 100  # audio per output delta
    speed: float = 2.0  # delivery speed vs real time
    delta_jitter_ms: Dist = field(default_factory=Dist)  # added to each delta's slot (no drift)
    connect_delay_ms: Dist = field(default_factory=Dist)  # before the 101 response
    ready_delay_ms: Dist = field(default_factory=Dist)  # 101 -> session.created
    cancel_delay_ms: Dist = field(default_factory=Dist)  # barge-in detected -> reply stopped
    transcription_delay_ms: Dist = field(default_factory=lambda: Dist("fixed", value=50))
    transcript: str | None = None  # input transcription text (also the [transcript: ...] marker)
    wer: float = 0.0  # word errors injected into that transcript (substitutions)
    reply_text: str | None = None  # the reply's transcript; None = a canned sentence
    session_max_s: float = 3600.0  # session_expired + close 1001 after this
    # GPT-Live's continuous output between replies: a noise floor at this level, None = digital
    # silence (well below the -48 dBFS gates clients use; reference gpt-live.md section 6)
    quiet_dbfs: float | None = -60.0
    # a provider's limits (limits.py): concurrent sessions and session starts per second over
    # the whole simulator; over either the upgrade gets 429. None: no limit
    max_sessions: int | None = None
    rate_limit_rps: float | None = None
    # TTFA growing with load: + this many ms per active session beyond ttfa_free_sessions
    ttfa_per_session_ms: float = 0.0
    ttfa_free_sessions: int = 0
    # a reply's first lead_silence_ms of audio is digital silence (whole deltas, rounded):
    # its first byte and its first sound differ by that much (issue 15, ttfa_audible_ms)
    lead_silence_ms: float = 0.0
    seed: int | None = None
    faults: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


_SCALARS = {"ttfa_scale": float, "delta_ms": int, "speed": float, "transcript": str, "wer": float,
            "reply_text": str, "session_max_s": float, "seed": int, "quiet_dbfs": float,
            "max_sessions": int, "rate_limit_rps": float, "ttfa_per_session_ms": float,
            "ttfa_free_sessions": int, "lead_silence_ms": float}
_DISTS = {f.name for f in fields(Profile) if f.type == "Dist"}


def apply(p: Profile, data: dict, where: str) -> Profile:
    """Return a copy of `p` with `data`'s fields merged in (validated)."""
    p = copy.deepcopy(p)
    for k, v in data.items():
        key = f"{where}.{k}"
        if k in ("model", "name", "inherit"):
            continue
        if k in _DISTS:
            setattr(p, k, Dist.parse(v, key))
        elif k in _SCALARS:
            typ = _SCALARS[k]
            if v is None and k in ("transcript", "reply_text", "seed", "quiet_dbfs",
                                   "max_sessions", "rate_limit_rps"):
                setattr(p, k, None)
                continue
            if isinstance(v, bool) or (typ is str and not isinstance(v, str)) or (
                    typ is not str and not isinstance(v, int | float)):
                raise ProfileError(f"{key}: expected {typ.__name__}, got {v!r}")
            if typ is int and float(v) != int(v):
                raise ProfileError(f"{key}: expected an integer, got {v!r}")
            setattr(p, k, typ(v))
        elif k == "faults":
            if not isinstance(v, list) or not all(isinstance(f, dict) for f in v):
                raise ProfileError(f"{key}: expected a list of fault mappings")
            p.faults = list(v)
        else:
            known = sorted(_DISTS | set(_SCALARS) | {"faults", "inherit"})
            raise ProfileError(f"{key}: unknown key (expected one of {', '.join(known)})")
    if p.delta_ms < 10 or p.delta_ms > 2000:
        raise ProfileError(f"{where}.delta_ms: expected 10..2000, got {p.delta_ms}")
    if p.speed <= 0:
        raise ProfileError(f"{where}.speed: expected > 0, got {p.speed}")
    if not 0 <= p.wer <= 1:
        raise ProfileError(f"{where}.wer: expected 0..1, got {p.wer}")
    if p.quiet_dbfs is not None and not -120 <= p.quiet_dbfs < 0:
        raise ProfileError(f"{where}.quiet_dbfs: expected -120..0 (or null), got {p.quiet_dbfs}")
    if p.max_sessions is not None and p.max_sessions < 0:
        raise ProfileError(f"{where}.max_sessions: expected >= 0 (or null), got {p.max_sessions}")
    if p.rate_limit_rps is not None and not p.rate_limit_rps > 0:
        raise ProfileError(f"{where}.rate_limit_rps: expected > 0 (or null), got "
                           f"{p.rate_limit_rps}")
    if p.ttfa_per_session_ms < 0 or p.ttfa_free_sessions < 0:
        raise ProfileError(f"{where}.ttfa_per_session_ms/ttfa_free_sessions: expected >= 0")
    if not 0 <= p.lead_silence_ms <= 60_000:
        raise ProfileError(f"{where}.lead_silence_ms: expected 0..60000, got {p.lead_silence_ms}")
    if p.ttfa_scale <= 0:
        raise ProfileError(f"{where}.ttfa_scale: expected > 0, got {p.ttfa_scale}")
    return p


def builtin_profiles() -> dict[str, Profile]:
    return {
        "default": Profile("default"),
        "sim-fast": Profile("sim-fast", ttfa_ms=Dist("lognormal", median=250, sigma=0.2, floor=120)),
        "sim-slow": Profile("sim-slow", ttfa_ms=Dist("lognormal", median=800, sigma=0.25, floor=300),
                            reply_s=Dist("fixed", value=3.0)),
    }


class ProfileBook:
    """All profiles by name; `for_model` picks one (exact name, else `default`)."""

    def __init__(self, overrides: dict | None = None):
        self.profiles = builtin_profiles()
        if overrides:
            for name in list(self.profiles):
                self.profiles[name] = apply(self.profiles[name], overrides, "flags")

    def load_file(self, path: str) -> None:
        try:
            with open(path) as f:
                doc = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ProfileError(f"{path}: cannot read: {e}") from None
        self.load_doc(doc, path)

    def load_doc(self, doc: dict, where: str = "profiles") -> None:
        if not isinstance(doc, dict):
            raise ProfileError(f"{where}: expected a mapping with 'profiles'")
        unknown = set(doc) - {"defaults", "profiles"}
        if unknown:
            raise ProfileError(f"{where}: {sorted(unknown)[0]}: unknown key (expected defaults, profiles)")
        defaults = doc.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise ProfileError(f"{where}: defaults: expected a mapping")
        if defaults:
            for name in list(self.profiles):
                self.profiles[name] = apply(self.profiles[name], defaults, f"{where}: defaults")
        profs = doc.get("profiles") or {}
        if not isinstance(profs, dict):
            raise ProfileError(f"{where}: profiles: expected a mapping of model name -> profile")
        for name, body in profs.items():
            body = body or {}
            if not isinstance(body, dict):
                raise ProfileError(f"{where}: profiles.{name}: expected a mapping")
            base_name = body.get("inherit", name if name in self.profiles else "default")
            if base_name not in self.profiles:
                raise ProfileError(f"{where}: profiles.{name}.inherit: no profile {base_name!r}")
            base = apply(self.profiles[base_name], defaults, f"{where}: defaults")
            prof = apply(base, body, f"{where}: profiles.{name}")
            prof.name = str(name)
            self.profiles[str(name)] = prof

    def for_model(self, model: str | None) -> Profile:
        return self.profiles.get(model or "", self.profiles["default"])

    def update(self, data: dict) -> list[str]:
        """PUT /profile: change one profile (`model`) or, without `model`, all of them."""
        model = data.get("model")
        if model is not None and not isinstance(model, str):
            raise ProfileError("model: expected a string")
        names = [model] if model else list(self.profiles)
        for name in names:
            base = self.profiles.get(name) or copy.deepcopy(self.profiles["default"])
            prof = apply(base, data, f"profile {name}")
            prof.name = name
            self.profiles[name] = prof
        return names
