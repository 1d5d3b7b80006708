"""Scripted voice scenarios: the steps a scenario file lists, as plain data, and their parser.

A scripted scenario is a list of steps played in order on one session (see README, "Voice
scenarios"):

    say            speak: synthetic audio ({duration}), text through espeak-ng ({speak}) or a WAV
                   file ({wav, transcript}); starts a user turn
    silence        ms of silent audio (the caller's mic stays open)
    wait_reply     wait for the reply to the current turn (audio, then its end)
    interrupt_after  ms into the reply's audio, start speaking over it (barge-in)
    expect_tool    the reply calls a function: its name, argument checks
    tool_result    answer the call (JSON output, optional delay)
    text           a typed user message; starts a user turn
    repeat         play sub-steps again, `times` times or until the session expires

`parse_script` checks shapes, values, that WAV files exist and that espeak-ng is there for
`speak`, and raises `StepError(key, message)` with the dotted key of the offending value; the
config loader adds the file name.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from probes import audio
from probes.durations import parse_duration
from probes.espeak import INSTALL_HINT, voice_spec

STEP_KINDS = ("say", "silence", "wait_reply", "interrupt_after", "expect_tool", "tool_result",
              "text", "repeat")
#: what `expect:` may name: the ways a session can end at the provider's session limit
EXPECTABLE = ("session_expired",)


class StepError(ValueError):
    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")


@dataclass(frozen=True, slots=True)
class Say:
    """One utterance. `text` is what was said when known (espeak text, WAV transcript): the
    reference the server's input transcription is scored against (WER)."""

    source: str  # synthetic | speak | wav
    duration_s: float = 1.5
    text: str | None = None
    path: str | None = None
    voice: str = "en-us"
    wpm: int = 165
    noise: str | None = None  # background noise kind mixed in (probes/noise.py), or None
    snr_db: float | None = None  # ... at this SNR


@dataclass(frozen=True, slots=True)
class Silence:
    ms: float


@dataclass(frozen=True, slots=True)
class WaitReply:
    pass


@dataclass(frozen=True, slots=True)
class InterruptAfter:
    """Start `say` `ms` into the reply's audio (its first byte's arrival + ms)."""

    ms: float
    say: Say


@dataclass(frozen=True, slots=True)
class ExpectTool:
    name: str
    args: dict[str, Any] | None = None  # each key must be present with exactly this value
    required: tuple[str, ...] = ()  # keys that must be present (any value)


@dataclass(frozen=True, slots=True)
class ToolResult:
    output: str  # JSON text sent as the function's output
    delay_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Repeat:
    steps: tuple = ()
    times: int | None = None  # None: until the session ends (`until`) or max_s
    until: str | None = None  # session_expired
    max_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class Pause:
    """Send nothing for `s` seconds (between the turns of a compiled `turns: N` scenario; not a
    step a scenario file can name)."""

    s: float


Step = Say | Silence | WaitReply | InterruptAfter | ExpectTool | ToolResult | Text | Repeat | Pause


@dataclass(frozen=True, slots=True)
class Script:
    steps: tuple = ()
    expect: str | None = None  # the outcome this session is meant to end with (session_expired)
    # what it was parsed from (the YAML steps and the folder WAV paths are relative to), so a
    # plan shipped to load-test workers as JSON is parsed again there
    source: list = field(default_factory=list, compare=False)
    base_dir: str = ""
    # where the steps were written (the scenario file or config, and the dotted key of the
    # list), so a step refused later for a target's provider is named like a parse error
    file: str = field(default="", compare=False)
    key: str = field(default="steps", compare=False)

    def says(self) -> list[Say]:
        """Every utterance, in order, repeats played once (for pre-rendering and sim hints)."""
        out: list[Say] = []
        _walk(self.steps, out, lambda s: s.say if isinstance(s, InterruptAfter) else s,
              (Say, InterruptAfter))
        return out

    def longest_s(self) -> float:
        """How long the script may run by its own bounds (repeat max_s): a session deadline
        shorter than this would cut a long-call scenario off before its provider does."""
        return sum(s.max_s for s in self.steps if isinstance(s, Repeat) and s.times is None)


def _walk(steps, out: list, pick, kinds) -> None:
    for s in steps:
        if isinstance(s, Repeat):
            _walk(s.steps, out, pick, kinds)
        elif isinstance(s, kinds):
            out.append(pick(s))


# ---- parsing ----------------------------------------------------------------------------------


def parse_script(steps: Any, expect: Any = None, *, base_dir: str = "", key: str = "steps",
                 expect_key: str = "expect", file: str = "") -> Script:
    """Steps from YAML data. WAV paths are taken relative to base_dir and must exist; `speak`
    needs espeak-ng. Raises StepError naming the key."""
    if expect is not None and expect not in EXPECTABLE:
        raise StepError(expect_key, f"expected one of {' | '.join(EXPECTABLE)}, got {expect!r}")
    parsed = parse_steps(steps, key, base_dir)
    if expect and not any(isinstance(s, Repeat) and s.until == expect for s in parsed):
        raise StepError(expect_key, f"needs a `repeat` step with `until: {expect}` to reach it")
    return Script(parsed, expect, list(steps), base_dir, file, key)


def reparse(script: Script) -> Script:
    return parse_script(script.source, script.expect, base_dir=script.base_dir, key=script.key,
                        file=script.file)


#: Providers whose protocol has no typed user message, so a `text` step cannot be sent. GPT-Live
#: (openai-live): its client events (the openai package's types/live ClientEvent) carry audio,
#: instructions, thinking and commentary, never a user turn; `session.start`'s `input` history
#: is fixed before the first word. The dialect refuses it at run time too (GptLive.user_text).
NO_TYPED_TEXT = {
    "openai-live": "GPT-Live has no typed user message (the model only hears audio): "
                   "use a say step (e.g. say: {speak: ...}) instead of text",
}


def unplayable_step(script: Script, provider: str) -> StepError | None:
    """The first step of `script` that `provider`'s protocol cannot play, as a StepError with
    its dotted key (under Script.key, repeats included); None when every step can be played."""
    why = NO_TYPED_TEXT.get(provider)
    if why is None:
        return None

    def first(steps: tuple, key: str) -> str | None:
        for i, s in enumerate(steps):
            if isinstance(s, Text):
                return f"{key}[{i}].text"
            if isinstance(s, Repeat) and (k := first(s.steps, f"{key}[{i}].repeat.steps")):
                return k
        return None

    key = first(script.steps, script.key)
    return None if key is None else StepError(key, why)


def parse_steps(steps: Any, key: str = "steps", base_dir: str = "") -> tuple:
    if not isinstance(steps, list) or not steps:
        raise StepError(key, "expected a non-empty list of steps")
    out = tuple(_step(s, f"{key}[{i}]", base_dir) for i, s in enumerate(steps))
    _check_order(out, key)
    return out


def _step(raw: Any, key: str, base_dir: str) -> Step:
    if isinstance(raw, str) and raw == "wait_reply":
        return WaitReply()
    if not isinstance(raw, dict) or len(raw) != 1:
        raise StepError(key, f"expected a mapping with one step ({' | '.join(STEP_KINDS)}), "
                             f"got {_show(raw)}")
    kind, v = next(iter(raw.items()))
    k = f"{key}.{kind}"
    if kind == "say":
        return _say(v, k, base_dir)
    if kind == "silence":
        return Silence(_number(v, k, low=1, high=600_000))
    if kind == "wait_reply":
        if v not in (None, {}, True):
            raise StepError(k, f"takes no settings (write `- wait_reply: {{}}`), got {_show(v)}")
        return WaitReply()
    if kind == "interrupt_after":
        if isinstance(v, dict):
            m = _mapping(v, k, {"ms", "say"})
            return InterruptAfter(_number(m.get("ms"), f"{k}.ms", low=0, high=600_000),
                                  _say(m.get("say", {"duration": 1.0}), f"{k}.say", base_dir))
        return InterruptAfter(_number(v, k, low=0, high=600_000), Say("synthetic", 1.0))
    if kind == "expect_tool":
        if isinstance(v, str):
            v = {"name": v}
        m = _mapping(v, k, {"name", "args", "required"})
        name = _string(m.get("name"), f"{k}.name")
        args = m.get("args")
        if args is not None and not isinstance(args, dict):
            raise StepError(f"{k}.args", f"expected a mapping of argument: value, got {_show(args)}")
        req = m.get("required", [])
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            raise StepError(f"{k}.required", f"expected a list of argument names, got {_show(req)}")
        return ExpectTool(name, args, tuple(req))
    if kind == "tool_result":
        m = _mapping(v if isinstance(v, dict) else {"output": v}, k, {"output", "delay_ms"})
        if "output" not in m:
            raise StepError(f"{k}.output", "is required (the function's result, JSON)")
        return ToolResult(_json_text(m["output"], f"{k}.output"),
                          _number(m.get("delay_ms", 0), f"{k}.delay_ms", low=0, high=600_000))
    if kind == "text":
        return Text(_string(v, k))
    if kind == "repeat":
        return _repeat(v, k, base_dir)
    raise StepError(k if kind is not None else key,
                    f"unknown step {kind!r} (expected one of {' | '.join(STEP_KINDS)})")


def _say(v: Any, key: str, base_dir: str) -> Say:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return Say("synthetic", _number(v, key, low=0.05, high=600))
    m = _mapping(v, key, {"duration", "speak", "wav", "transcript", "voice", "wpm", "rate_wpm",
                          "pitch", "noise"})
    if "rate_wpm" in m:  # the name callers: uses; wpm is the older one
        if "wpm" in m:
            raise StepError(f"{key}.rate_wpm", "give wpm or rate_wpm, not both")
        m = {**m, "wpm": m["rate_wpm"]}
    say = _say_source(m, v, key, base_dir)
    if "noise" not in m:
        return say
    kind, snr = _noise(m["noise"], f"{key}.noise")
    return dataclasses.replace(say, noise=kind, snr_db=snr)


def _noise(v: Any, key: str) -> tuple[str, float]:
    """`noise: {kind: white|pink|babble|hum, snr_db: N}` of a say step."""
    from probes.noise import KINDS

    m = _mapping(v, key, {"kind", "snr_db"})
    kind = _string(m.get("kind", "pink"), f"{key}.kind")
    if kind not in KINDS:
        raise StepError(f"{key}.kind", f"expected one of {' | '.join(KINDS)}, got {kind!r}")
    if "snr_db" not in m:
        raise StepError(f"{key}.snr_db", "required: the signal-to-noise ratio in dB")
    return kind, float(_number(m["snr_db"], f"{key}.snr_db", low=-20, high=100))


def _say_source(m: dict, v: Any, key: str, base_dir: str) -> Say:
    sources = [s for s in ("duration", "speak", "wav") if s in m]
    if len(sources) != 1:
        raise StepError(key, "expected exactly one of duration (seconds of synthetic speech), "
                             f"speak (text for espeak-ng) or wav (a file), got {_show(v)}")
    src = sources[0]
    if src != "wav" and "transcript" in m:
        raise StepError(f"{key}.transcript", "only goes with wav (speak's text is its transcript)")
    if src == "duration":
        return Say("synthetic", _number(m["duration"], f"{key}.duration", low=0.05, high=600))
    voice = _string(m.get("voice", "en-us"), f"{key}.voice")
    if ":" in voice:
        raise StepError(f"{key}.voice", f"expected an espeak-ng voice name, got {voice!r} (a pitch "
                                         "is its own key: pitch)")
    wpm = int(_number(m.get("wpm", 165), f"{key}.wpm", low=60, high=450))
    if "pitch" in m:  # espeak-ng's -p; travels in the voice string (probes/espeak.voice_spec)
        if src != "speak":
            raise StepError(f"{key}.pitch", "only goes with speak (espeak-ng renders the pitch)")
        voice = voice_spec(voice, int(_number(m["pitch"], f"{key}.pitch", low=0, high=99)))
    if src == "speak":
        if not audio.espeak_available():
            raise StepError(f"{key}.speak", f"needs espeak-ng, which is not installed "
                                            f"({INSTALL_HINT})")
        return Say("speak", text=_string(m["speak"], f"{key}.speak"), voice=voice, wpm=wpm)
    path = os.path.join(base_dir, os.path.expanduser(_string(m["wav"], f"{key}.wav")))
    if not os.path.isfile(path):
        raise StepError(f"{key}.wav", f"no such file: {path}")
    text = m.get("transcript")
    return Say("wav", path=os.path.abspath(path),
               text=None if text is None else _string(text, f"{key}.transcript"))


def _repeat(v: Any, key: str, base_dir: str) -> Repeat:
    m = _mapping(v, key, {"steps", "times", "until", "max"})
    if "steps" not in m:
        raise StepError(f"{key}.steps", "is required")
    times = m.get("times")
    until = m.get("until")
    if (times is None) == (until is None):
        raise StepError(key, "expected exactly one of times (a count) or until (session_expired)")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise StepError(f"{key}.times", f"expected a positive integer, got {_show(times)}")
    if until is not None and until not in EXPECTABLE:
        raise StepError(f"{key}.until", f"expected one of {' | '.join(EXPECTABLE)}, got {_show(until)}")
    max_s = _duration(m.get("max", "1h"), f"{key}.max")
    inner = parse_steps(m["steps"], f"{key}.steps", base_dir)
    if any(isinstance(s, Repeat) for s in inner):
        raise StepError(f"{key}.steps", "a repeat cannot hold another repeat")
    return Repeat(inner, times, until, max_s)


def _check_order(steps: tuple, key: str) -> None:
    """Steps that answer something need that something before them."""
    started = False
    for i, s in enumerate(steps):
        if isinstance(s, Say | Text | InterruptAfter | Repeat):
            started = True
        elif isinstance(s, WaitReply | ExpectTool) and not started:
            raise StepError(f"{key}[{i}]", "comes before any say or text: there is nothing to reply to")
        if isinstance(s, InterruptAfter) and not started:
            raise StepError(f"{key}[{i}]", "comes before any say or text: there is no reply to interrupt")
        if isinstance(s, ToolResult) and not any(isinstance(p, ExpectTool) for p in steps[:i]):
            raise StepError(f"{key}[{i}]", "needs an expect_tool step before it (the call it answers)")


# ---- small typed readers (errors carry the key) ----------------------------------------------


def _show(v: Any) -> str:
    t = repr(v)
    return t if len(t) <= 60 else t[:57] + "..."


def _mapping(v: Any, key: str, known: set[str]) -> dict:
    if not isinstance(v, dict):
        raise StepError(key, f"expected a mapping, got {_show(v)}")
    for k in v:
        if k not in known:
            raise StepError(f"{key}.{k}", f"unknown key (known here: {', '.join(sorted(known))})")
    return v


def _number(v: Any, key: str, low: float, high: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise StepError(key, f"expected a number, got {_show(v)}")
    if not low <= v <= high:
        raise StepError(key, f"expected {low:g}..{high:g}, got {v!r}")
    return float(v)


def _string(v: Any, key: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise StepError(key, f"expected a non-empty string, got {_show(v)}")
    return v


def _duration(v: Any, key: str) -> float:
    try:
        s = parse_duration(v)
    except ValueError:
        raise StepError(key, f"expected a duration like 90s, 30m or 2h, got {_show(v)}") from None
    if not 0 < s <= 7 * 86400:
        raise StepError(key, f"expected more than 0 and at most 7d, got {_show(v)}")
    return s


def _json_text(v: Any, key: str) -> str:
    """Tool outputs are JSON: a mapping/list in YAML is dumped, a string must already be JSON."""
    import json

    if isinstance(v, str):
        try:
            json.loads(v)
        except ValueError:
            return json.dumps(v)  # plain text result: sent as a JSON string
        return v
    try:
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise StepError(key, f"cannot be written as JSON: {e}") from None


@dataclass(slots=True)
class ArgCheck:
    """The outcome of an expect_tool's checks on one call (stored as turn checks)."""

    called: bool
    json_ok: bool = False
    args_ok: bool = False
    problems: list[str] = field(default_factory=list)


def check_call(expect: ExpectTool, name: str | None, arguments: str | None) -> ArgCheck:
    """Name, JSON validity and argument match of a function call against its expect_tool."""
    import json

    if name is None:
        return ArgCheck(False, problems=[f"no call to {expect.name}"])
    c = ArgCheck(name == expect.name)
    if not c.called:
        c.problems.append(f"called {name!r}, expected {expect.name!r}")
    try:
        args = json.loads(arguments or "")
        c.json_ok = isinstance(args, dict)
    except ValueError as e:
        args = None
        c.problems.append(f"arguments are not valid JSON ({e.msg} at {e.pos})")
    if c.json_ok:
        missing = [k for k in expect.required if k not in args]
        wrong = [k for k, want in (expect.args or {}).items() if args.get(k, _ABSENT) != want]
        c.args_ok = not missing and not wrong
        if missing:
            c.problems.append(f"missing arguments {', '.join(missing)}")
        if wrong:
            c.problems.append("unexpected values for " + ", ".join(
                f"{k}={args.get(k, '<absent>')!r}" for k in wrong))
    elif args is not None:
        c.problems.append("arguments are JSON but not an object")
    return c


_ABSENT = object()
