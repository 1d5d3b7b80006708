"""Fault injection: what can go wrong, how often, and when.

A fault has a `kind`, a `probability` (default 1), a scope `per` ("session" or "turn"), an optional
time window (`start_s` after it was posted, for `duration_s`), an optional `count` (apply at most N
times, e.g. "the next session"), an optional `models` filter, an optional `seed` (its own dice,
so a test's faults fall the same way whatever else draws from the simulator's random source),
and kind-specific parameters.
Faults come from POST /faults or from a profile's `faults:` list. See README.md ("Simulator").
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import asdict, dataclass, field, replace

# Decided when the upgrade request arrives.
UPGRADE_KINDS = ("refuse", "slow_handshake", "http_status")
# Decided per session.
SESSION_KINDS = ("session_expiry",)
# Applied to a response (per turn, or to every turn of a chosen session with per: session).
TURN_KINDS = ("error_event", "response_failed", "drop", "close_1011", "stall", "malformed_json",
              "oversized", "empty_reply", "silent_reply")
# Of those, the silent failures (issue 19): the reply completes normally, with no audio delta at
# all (empty_reply) or with deltas of digital silence only (silent_reply); reply.take_mute.
MUTE_KINDS = ("empty_reply", "silent_reply")
# The WebRTC transport's (simulator/webrtc): decided per call when the offer is answered.
RTC_KINDS = ("rtp_loss", "rtp_jitter", "ice_fail", "dc_close")
KINDS = UPGRADE_KINDS + SESSION_KINDS + TURN_KINDS + RTC_KINDS

_PARAMS = {
    "slow_handshake": {"delay_ms": 2000.0},
    "http_status": {"status": 503},
    "session_expiry": {"after_s": 5.0},
    "error_event": {"code": "rate_limit_exceeded"},
    "response_failed": {"code": "server_error"},
    "drop": {"after_deltas": 2},
    "close_1011": {"after_deltas": 2},
    "stall": {"after_deltas": 2, "stall_s": 2.0},
    "malformed_json": {"after_deltas": 2},
    "oversized": {"after_deltas": 2, "bytes": 2 * 1024 * 1024},
    "rtp_loss": {"rate": 0.05, "burst": 1},
    "rtp_jitter": {"min_ms": 0.0, "max_ms": 30.0},
    "dc_close": {"after_deltas": 2},
}
_ids = itertools.count(1)


class FaultError(ValueError):
    pass


@dataclass(slots=True)
class Fault:
    kind: str
    probability: float = 1.0
    per: str = "turn"
    start_ns: int = 0
    end_ns: int | None = None
    count: int | None = None  # remaining applications; None = unlimited
    models: list[str] | None = None
    params: dict = field(default_factory=dict)
    id: str = ""
    applied: int = 0
    seed: int | None = None
    rng: random.Random | None = field(default=None, repr=False, compare=False)

    @classmethod
    def parse(cls, spec: dict, now_ns: int | None = None, where: str = "fault") -> Fault:
        if not isinstance(spec, dict):
            raise FaultError(f"{where}: expected a mapping")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise FaultError(f"{where}.kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        known = {"kind", "probability", "per", "start_s", "duration_s", "count", "models", "id",
                 "seed", "action"} | set(_PARAMS.get(kind, {}))
        for k in spec:
            if k not in known:
                raise FaultError(f"{where}.{k}: unknown key for kind {kind} "
                                 f"(expected one of {', '.join(sorted(known - {'action'}))})")
        p = spec.get("probability", 1.0)
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise FaultError(f"{where}.probability: expected 0..1, got {p!r}")
        per = spec.get("per", "turn" if kind in TURN_KINDS else "session")
        if per not in ("session", "turn"):
            raise FaultError(f"{where}.per: expected session or turn, got {per!r}")
        if kind in RTC_KINDS and per != "session":
            raise FaultError(f"{where}.per: {kind} is decided per call, expected session")
        start_s = spec.get("start_s", 0) or 0
        dur = spec.get("duration_s")
        for k, v in (("start_s", start_s), ("duration_s", dur)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v < 0):
                raise FaultError(f"{where}.{k}: expected seconds >= 0, got {v!r}")
        count = spec.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise FaultError(f"{where}.count: expected an integer >= 0, got {count!r}")
        models = spec.get("models")
        if models is not None and (not isinstance(models, list)
                                   or not all(isinstance(m, str) for m in models)):
            raise FaultError(f"{where}.models: expected a list of model names")
        seed = spec.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise FaultError(f"{where}.seed: expected an integer, got {seed!r}")
        params = dict(_PARAMS.get(kind, {}))
        for k in params:
            if k in spec:
                v = spec[k]
                want = type(params[k])
                if isinstance(v, bool) or not isinstance(v, str if want is str else int | float):
                    raise FaultError(f"{where}.{k}: expected {want.__name__}, got {v!r}")
                params[k] = v
        if kind == "http_status" and params["status"] not in (400, 401, 403, 404, 429, 500, 502,
                                                                 503, 504):
            raise FaultError(f"{where}.status: expected an HTTP error status, got {params['status']}")
        _check_rtc(kind, params, where)
        start_ns = now_ns + int(start_s * 1e9)
        end_ns = None if dur is None else start_ns + int(dur * 1e9)
        fid = str(spec.get("id") or f"f{next(_ids)}")
        return cls(kind, float(p), per, start_ns, end_ns, count, models, params, fid, seed=seed,
                   rng=None if seed is None else random.Random(seed))

    def active(self, model: str, now_ns: int) -> bool:
        if now_ns < self.start_ns or (self.end_ns is not None and now_ns >= self.end_ns):
            return False
        if self.count is not None and self.count <= 0:
            return False
        return self.models is None or model in self.models

    def take(self, model: str, rng: random.Random, now_ns: int) -> bool:
        """Roll the dice; True (and one use consumed) if this fault applies now."""
        if not self.active(model, now_ns):
            return False
        if self.probability < 1.0 and (self.rng or rng).random() >= self.probability:
            return False
        if self.count is not None:
            self.count -= 1
        self.applied += 1
        return True

    def record(self) -> dict:
        return {"id": self.id, "kind": self.kind, **self.params}

    def to_json(self) -> dict:
        d = asdict(replace(self, rng=None))
        del d["rng"]
        return d


def _check_rtc(kind: str, params: dict, where: str) -> None:
    if kind == "rtp_loss":
        if not 0 <= params["rate"] <= 1:
            raise FaultError(f"{where}.rate: expected a fraction 0..1, got {params['rate']!r}")
        b = params["burst"]
        if not isinstance(b, int) or b < 1:
            raise FaultError(f"{where}.burst: expected an integer >= 1 (packets), got {b!r}")
    elif kind == "rtp_jitter":
        lo, hi = params["min_ms"], params["max_ms"]
        if not 0 <= lo <= hi <= 10_000:
            raise FaultError(f"{where}.min_ms/max_ms: expected 0 <= min_ms <= max_ms <= 10000, "
                             f"got {lo!r}, {hi!r}")
    elif kind == "dc_close":
        n = params["after_deltas"]
        if not isinstance(n, int) or n < 0:
            raise FaultError(f"{where}.after_deltas: expected an integer >= 0, got {n!r}")


class FaultBoard:
    """Faults posted at run time plus those compiled from profiles."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.posted: dict[str, Fault] = {}
        self._profile_faults: dict[int, tuple[object, list[Fault]]] = {}

    def post(self, spec: dict) -> Fault:
        f = Fault.parse(spec, where="fault")
        self.posted[f.id] = f
        return f

    def stop(self, fid: str) -> bool:
        return self.posted.pop(fid, None) is not None

    def clear(self) -> None:
        self.posted.clear()

    def for_profile(self, profile) -> list[Fault]:
        got = self._profile_faults.get(id(profile))
        if got is None or got[0] is not profile:
            faults = [Fault.parse(s, where=f"profiles.{profile.name}.faults[{i}]")
                      for i, s in enumerate(profile.faults)]
            got = self._profile_faults[id(profile)] = (profile, faults)
        return got[1]

    def all(self, profile) -> list[Fault]:
        return list(self.posted.values()) + self.for_profile(profile)

    def pick(self, profile, model: str, kinds: tuple[str, ...], per: str | None = None) -> list[Fault]:
        now = time.monotonic_ns()
        out = []
        for f in self.all(profile):
            if f.kind in kinds and (per is None or f.per == per) and f.take(model, self.rng, now):
                out.append(f)
        return out
