"""What a load run is asked to do, as plain data that travels to every Locust process.

`voicepulse load` (or `run_load`) resolves the config file into a `Plan` and hands it to Locust as
one JSON custom argument (`--vp-plan`), which Locust forwards from the master to every worker,
local (`--processes`) or remote. The plan holds no secrets: only environment-variable names.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from dataclasses import dataclass, field

import orjson

from loadtests.profile import Profile, Stage, shape_stages
from probes.script import Repeat, Say, Script, Silence, ToolResult, WaitReply, parse_script
from probes.spec import Scenario, Target, Timeouts

DEFAULT_URL = "ws://127.0.0.1:8765/v1/realtime"
DEFAULT_MODEL = "sim-fast"


@dataclass(slots=True)
class LoadConfig:
    """The `load:` section: defaults for every load run (the CLI overrides them)."""

    rate: float | None = None  # sessions/s (open model)
    users: int | None = None  # concurrent sessions (closed model)
    arrivals: str = "constant"  # constant | poisson
    stages: list[Stage] | None = None
    shape: str | None = None  # ramp | step | spike | soak
    shape_params: dict[str, str] = field(default_factory=dict)
    duration_s: float = 30.0
    slots: int | None = None  # open-model session slots (default: sized from rate and scenario)
    headroom: float = 1.5
    expected_reply_s: float = 2.0  # used only to size slots
    late_ms: float = 50.0  # a start later than this after its intended time is a late start
    max_start_lag_s: float = 10.0  # an arrival still waiting for a slot after this is dropped
    drain_s: float = 30.0  # after the last arrival, how long sessions in flight may finish
    thresholds: list[str] = field(default_factory=list)
    abort_on_fail: bool = False
    interval_s: float = 10.0
    overload_lag_ms: float = 10.0  # send lag or event-loop lag p99 above this: overloaded
    overload_cpu_pct: float = 90.0
    turn_points: bool = True  # also write per-turn `turn` and `session` points
    seed: int | None = None
    closed_stagger_s: float = 1.0  # closed model: first sessions start spread over this
    # closed model: a failed session's slot waits this long before its next (0: at once);
    # set by the capacity search so refusals do not become a tight connect loop
    closed_retry_s: float = 0.0

    @property
    def model(self) -> str:
        return "closed" if self.users is not None else "open"

    @property
    def level(self) -> float:
        return float(self.users) if self.users is not None else float(self.rate or 1.0)

    def profile(self) -> Profile:
        if self.stages:
            return Profile(self.stages)
        if self.shape:
            return Profile(shape_stages(self.shape, self.level, self.duration_s, self.shape_params))
        return Profile.constant(self.level, self.duration_s)

    def session_estimate_s(self, sc: Scenario) -> float:
        if sc.script is not None:
            return 0.2 + script_estimate_s(sc.script, sc.trailing_silence_s, self.expected_reply_s)
        per_turn = sc.utterance_s + sc.trailing_silence_s + self.expected_reply_s + sc.pause_s
        return 0.2 + sc.turns * per_turn

    def slot_count(self, sc: Scenario) -> int:
        """Session slots (Locust users): the open model's peak need with headroom."""
        prof = self.profile()
        if self.model == "closed":
            return max(1, int(math.ceil(prof.peak)))
        if self.slots:
            return self.slots
        return max(2, int(math.ceil(prof.peak * self.session_estimate_s(sc) * self.headroom)) + 1)


@dataclass(slots=True)
class Plan:
    target: Target
    scenario: Scenario
    load: LoadConfig = field(default_factory=LoadConfig)
    run_id: str = ""
    sinks: list[dict] = field(default_factory=list)  # {"api": "v1"|"v2", ...sink fields}
    store: str | None = None  # embedded store file when no sinks; None with record=False
    outbox: str | None = None
    record: bool = True
    summary_json: str | None = None
    results_jsonl: str | None = None  # also append every session result here, one JSON a line
    status_jsonl: str | None = None  # the master appends live figures here every second

    def __post_init__(self):
        if not self.run_id:
            self.run_id = uuid.uuid4().hex[:12]
        for obj in (self.target, self.scenario):
            _fix_slot_defaults(obj)

    def to_json(self) -> str:
        return orjson.dumps(dataclasses.asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str) -> Plan:
        d = orjson.loads(text)
        sc = dict(d["scenario"])
        sc["timeouts"] = Timeouts(**sc.get("timeouts") or {})
        if sc.get("script"):  # shipped as its YAML source: parse it again here
            sc["script"] = parse_script(sc["script"]["source"], sc["script"]["expect"],
                                        base_dir=sc["script"]["base_dir"])
        ld = dict(d.get("load") or {})
        if ld.get("stages"):
            ld["stages"] = [Stage(**s) for s in ld["stages"]]
        return cls(target=Target(**d["target"]), scenario=Scenario(**sc), load=LoadConfig(**ld),
                   run_id=d.get("run_id", ""), sinks=list(d.get("sinks") or []),
                   store=d.get("store"), outbox=d.get("outbox"), record=d.get("record", True),
                   summary_json=d.get("summary_json"), results_jsonl=d.get("results_jsonl"),
                   status_jsonl=d.get("status_jsonl"))

    def sink_configs(self) -> list:
        from telemetry.sinks import InfluxV1Sink, InfluxV2Sink

        out = []
        for s in self.sinks:
            s = dict(s)
            api = s.pop("api", "v2")
            out.append(InfluxV1Sink(**s) if api == "v1" else InfluxV2Sink(**s))
        return out


def sink_dict(sink) -> dict:
    """A telemetry sink config as plan data (its class decides the api)."""
    from telemetry.sinks import InfluxV1Sink

    return {"api": "v1" if isinstance(sink, InfluxV1Sink) else "v2", **dataclasses.asdict(sink)}


def default_target(url: str = DEFAULT_URL, model: str = DEFAULT_MODEL) -> Target:
    return Target(name=model, url=url, model=model, provider="openai", api_key_env="SIM_API_KEY")


def _fix_slot_defaults(obj) -> None:
    """A slots dataclass's class attribute is a member descriptor, not the default; a config
    reader that passed `Target.instructions` as a default leaves one in the field."""
    for f in dataclasses.fields(obj):
        if type(getattr(obj, f.name)).__name__ == "member_descriptor":
            setattr(obj, f.name, f.default)


def script_estimate_s(script: Script, trailing_s: float, reply_s: float) -> float:
    """A scripted session's rough length for slot sizing: speech (espeak at ~2.5 words/s),
    silences, tool delays and one reply per wait_reply; a repeat until expiry counts its max."""
    def walk(steps) -> float:
        total = 0.0
        for st in steps:
            say = getattr(st, "say", st)
            if isinstance(say, Say):
                words = len((say.text or "").split())
                total += (say.duration_s if say.source == "synthetic" else words / 2.5 + 0.5)
                total += trailing_s
            elif isinstance(st, Silence):
                total += st.ms / 1000
            elif isinstance(st, ToolResult):
                total += st.delay_ms / 1000
            elif isinstance(st, WaitReply):
                total += reply_s
            elif isinstance(st, Repeat):
                total += st.max_s if st.times is None else st.times * walk(st.steps)
        return total

    return walk(script.steps)
