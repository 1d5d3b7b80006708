"""GPT-Live's wire shapes, as the simulator reads and writes them: paths, the strict
`session.start` config, audio formats, the reply and quiet audio of the continuous output, and
the server events.

Written from the protocol reference (gpt-live.md) and the openai package's `types/live`
schema (SessionConfig and its parts): every key outside it is refused with `unknown_parameter`
and its dotted `param`, as the real service does. Audio deltas are spliced from pre-encoded
base64 into a bytes template, so a delta costs no JSON encoding.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np
import orjson

from . import audio

PATHS = ("/v1/live/sessions", "/openai/v1/live/sessions")
APPEND_HEAD = b'{"type":"session.input_audio.append","audio":"'
MAX_APPEND_BYTES = 15 * 1024 * 1024
#: the input VAD's silence that ends the user's turn (the model's own, not configurable)
SILENCE_MS = 200
#: the reply's first chunk starts loud: its first 20 ms and the whole chunk are at least this
#: level, so the first audible delta is the reply's first, whatever gate a client uses above
#: the quiet floor
ONSET_DBFS = -35.0
CLOSE_REASONS = ("close_requested", "expired", "content", "remote_hangup", "connection_lost")
#: wire (type, rate) -> the simulator's codec name (audio.py)
FORMATS = {("audio/pcm", 24000): "pcm16", ("audio/pcm", 16000): "pcm16",
           ("audio/pcmu", 8000): "pcmu", ("audio/pcma", 8000): "pcma"}

# SessionConfig and its parts, as openai 3.60's types/live declare them
_SESSION_KEYS = {"model", "instructions", "input", "audio", "delegation", "store", "client",
                 "safety_identifier", "triggers"}
_AUDIO_KEYS = {"format", "output"}
_FORMAT_KEYS = {"type", "rate"}
_OUTPUT_KEYS = {"voice"}
_RESPONSES_KEYS = {"model", "instructions", "max_output_tokens", "parallel_tool_calls",
                   "reasoning", "service_tier", "text", "tool_choice", "tools"}
_FUNCTION_KEYS = {"type", "name", "description", "parameters", "strict"}
_DELEGATION_KEYS = {"client": {"type", "acknowledgement_delay_ms"},
                    "responses": {"type", "responses", "acknowledgement_delay_ms"}}


class ConfigReject(ValueError):
    """A refused session.start / session.update: code and param go into the error event."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.param = code, param


def _unknown(obj: dict, allowed: set, where: str) -> None:
    for k in obj:
        if k not in allowed:
            raise ConfigReject("unknown_parameter", f"Unknown parameter: '{where}.{k}'.",
                               f"{where}.{k}")


def _object(v, where: str) -> dict:
    if not isinstance(v, dict):
        raise ConfigReject("invalid_type", f"Invalid type for '{where}': expected an object.",
                           where)
    return v


@dataclass(slots=True)
class LiveConfig:
    """The started session's configuration (immutable but for the delegation)."""

    model: str
    instructions: str = ""
    codec: str = "pcm16"
    rate: int = 24000
    voice: object = "marin"
    delegation: dict = field(default_factory=lambda: {"type": "client"})
    store: bool = False
    tools: set[str] = field(default_factory=set)  # the Responses backend's function names

    @property
    def mode(self) -> str:
        return self.delegation.get("type", "client")

    @property
    def width(self) -> int:
        return 2 if self.codec == "pcm16" else 1

    def wire_format(self) -> dict:
        return {"type": {"pcm16": "audio/pcm", "pcmu": "audio/pcmu",
                         "pcma": "audio/pcma"}[self.codec], "rate": self.rate}

    def resource(self, sid: str, expires_at: int) -> dict:
        """The package's SessionResource; `status` stays active even in session.closed."""
        return {"id": sid, "status": "active", "expires_at": expires_at, "model": self.model,
                "instructions": self.instructions,
                "audio": {"format": self.wire_format(), "output": {"voice": self.voice}},
                "delegation": self.delegation, "store": self.store}


def _delegation(d, where: str) -> tuple[dict, set[str]]:
    if d is None:
        return {"type": "client"}, set()
    d = _object(d, where)
    kind = d.get("type")
    if kind == "decisions":
        raise ConfigReject("unsupported_value", "The simulator does not run Decisions.",
                           f"{where}.type")
    if kind not in _DELEGATION_KEYS:
        raise ConfigReject("invalid_value", f"Invalid value for '{where}.type': expected client, "
                           "responses or decisions.", f"{where}.type")
    _unknown(d, _DELEGATION_KEYS[kind], where)
    tools: set[str] = set()
    if kind == "responses":
        r = _object(d.get("responses"), f"{where}.responses")
        _unknown(r, _RESPONSES_KEYS, f"{where}.responses")
        if not isinstance(r.get("model"), str) or not r["model"]:
            raise ConfigReject("missing_required_parameter", "Missing required parameter: "
                               f"'{where}.responses.model'.", f"{where}.responses.model")
        for i, t in enumerate(r.get("tools") or []):
            t = _object(t, f"{where}.responses.tools[{i}]")
            if t.get("type") == "function":
                _unknown(t, _FUNCTION_KEYS, f"{where}.responses.tools[{i}]")
                if not isinstance(t.get("name"), str):
                    raise ConfigReject("missing_required_parameter", "Missing required "
                                       f"parameter: '{where}.responses.tools[{i}].name'.",
                                       f"{where}.responses.tools[{i}].name")
                tools.add(t["name"])
    return dict(d), tools


def parse_start(s) -> LiveConfig:
    """`session.start.session` -> LiveConfig; raises ConfigReject on anything the schema refuses."""
    s = _object(s, "session")
    _unknown(s, _SESSION_KEYS, "session")
    model = s.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigReject("missing_required_parameter", "Missing required parameter: "
                           "'session.model'.", "session.model")
    cfg = LiveConfig(model)
    ins = s.get("instructions")
    if ins is not None and not isinstance(ins, str):
        raise ConfigReject("invalid_type", "Invalid type for 'session.instructions'.",
                           "session.instructions")
    cfg.instructions = ins or ""
    a = s.get("audio")
    if a is not None:
        a = _object(a, "session.audio")
        _unknown(a, _AUDIO_KEYS, "session.audio")
        f = a.get("format")
        if f is not None:
            f = _object(f, "session.audio.format")
            _unknown(f, _FORMAT_KEYS, "session.audio.format")
            codec = FORMATS.get((f.get("type"), f.get("rate")))
            if codec is None:
                raise ConfigReject("invalid_value", "Invalid value for 'session.audio.format': "
                                   "audio/pcm at 16000 or 24000 Hz, or audio/pcmu or audio/pcma "
                                   "at 8000 Hz.", "session.audio.format")
            cfg.codec, cfg.rate = codec, f["rate"]
        o = a.get("output")
        if o is not None:
            o = _object(o, "session.audio.output")
            _unknown(o, _OUTPUT_KEYS, "session.audio.output")
            v = o.get("voice")
            if isinstance(v, dict):
                _unknown(v, {"id"}, "session.audio.output.voice")
            elif v is not None and not isinstance(v, str):
                raise ConfigReject("invalid_type", "Invalid type for 'session.audio.output.voice'.",
                                   "session.audio.output.voice")
            if v is not None:
                cfg.voice = v
    cfg.delegation, cfg.tools = _delegation(s.get("delegation"), "session.delegation")
    if s.get("store") is not None:
        cfg.store = bool(s["store"])
    return cfg


def updated_delegation(cfg: LiveConfig, s) -> tuple[dict, set[str]]:
    """`session.update`: only the delegation, same type; omitted fields kept."""
    s = _object(s, "session")
    _unknown(s, {"delegation"}, "session")
    d = _object(s.get("delegation"), "session.delegation")
    if d.get("type") != cfg.mode:
        raise ConfigReject("invalid_value", "session.update cannot change the delegation type.",
                           "session.delegation.type")
    merged = dict(cfg.delegation)
    for k, v in d.items():
        merged[k] = {**merged.get(k, {}), **v} if k == "responses" and isinstance(v, dict) else v
    return _delegation(merged, "session.delegation")


# ---- the output's audio ------------------------------------------------------------------------

def _dbfs(x: np.ndarray) -> float:
    """Level of float samples in [-1, 1], dBFS."""
    rms = float(np.sqrt(np.mean(np.square(x.astype(np.float64))))) if x.size else 0.0
    return 20 * np.log10(max(rms, 1e-9))


@dataclass(slots=True)
class LiveClip:
    """Reply speech and quiet frames of `delta_ms`, pre-encoded (base64 bytes) in one format."""

    codec: str
    rate: int
    delta_ms: int
    chunks: list[bytes]
    loud: list[int]  # chunk indices a reply may start at (ONSET_DBFS at its very start)
    quiet: list[bytes]  # quiet frames, cycled
    quiet_dbfs: float | None

    @property
    def samples(self) -> int:
        return self.rate * self.delta_ms // 1000

    def speech(self, i: int, n: int | None = None) -> bytes:
        """Speech chunk i, or only its first n samples."""
        b = self.chunks[i % len(self.chunks)]
        if n is None or n >= self.samples:
            return b
        width = 2 if self.codec == "pcm16" else 1
        return base64.b64encode(base64.b64decode(b)[: n * width])

    def quiet_frame(self, k: int, n: int) -> bytes:
        """Quiet frame k, or only its first n samples."""
        b = self.quiet[k % len(self.quiet)]
        if n >= self.samples:
            return b
        width = 2 if self.codec == "pcm16" else 1
        return base64.b64encode(base64.b64decode(b)[: n * width])


_clips: dict[tuple, LiveClip] = {}


def live_clip(codec: str, rate: int, delta_ms: int, quiet_dbfs: float | None) -> LiveClip:
    """The (cached) clip of one format: audio.py's speech at `rate`, cut into deltas, and quiet
    frames of digital silence (quiet_dbfs None) or a Gaussian noise floor at quiet_dbfs."""
    key = (codec, rate, delta_ms, quiet_dbfs)
    clip = _clips.get(key)
    if clip is not None:
        return clip
    x = audio.speech(rate)
    step = rate * delta_ms // 1000
    onset = rate * 20 // 1000
    chunks, loud = [], []
    for i in range(len(x) // step):
        c = x[i * step:(i + 1) * step]
        chunks.append(base64.b64encode(audio.encode(c, codec)))
        if _dbfs(c) >= ONSET_DBFS and _dbfs(c[:onset]) >= ONSET_DBFS:
            loud.append(i)
    if quiet_dbfs is None:
        quiet = [base64.b64encode(audio.encode(np.zeros(step, dtype=np.float32), codec))]
    else:
        rng = np.random.default_rng(11)
        amp = 10 ** (quiet_dbfs / 20)
        quiet = [base64.b64encode(audio.encode(rng.normal(0, amp, step).astype(np.float32), codec))
                 for _ in range(8)]
    clip = _clips[key] = LiveClip(codec, rate, delta_ms, chunks, loud or [0], quiet, quiet_dbfs)
    return clip


# ---- server events -----------------------------------------------------------------------------

class Events:
    """Server events of one session: `event_id`s, and the audio delta splice."""

    __slots__ = ("tag", "n")

    def __init__(self, tag: str):
        self.tag, self.n = tag, 0

    def eid(self) -> str:
        self.n += 1
        return f"event_{self.tag}{self.n:08d}"

    def dumps(self, obj: dict) -> bytes:
        obj["event_id"] = self.eid()
        return orjson.dumps(obj)

    def audio(self, b64: bytes) -> bytes:
        return b"".join((b'{"type":"session.output_audio.delta","event_id":"', self.eid().encode(),
                         b'","delta":"', b64, b'"}'))

    def transcript(self, kind: str, text: str, start_ms: int, end_ms: int) -> bytes:
        return self.dumps({"type": f"session.{kind}_transcript.delta", "delta": text,
                           "start_ms": start_ms, "end_ms": end_ms})

    def error(self, code: str, message: str, etype: str = "invalid_request_error",
              param: str | None = None, client_event_id: str | None = None) -> bytes:
        err = {"type": etype, "code": code, "message": message, "param": param,
               "client_event_id": client_event_id}
        return self.dumps({"type": "error", "error": err, "client_event_id": client_event_id})

    def backend(self, delegation_id: str, event: dict) -> bytes:
        return self.dumps({"type": "response.event", "delegation_id": delegation_id,
                           "event": event})

    def malformed(self) -> bytes:
        return b'{"type":"session.output_audio.delta","event_id":"' + self.eid().encode() + (
            b'","delta":"AAAA')

    def oversized(self, n: int) -> bytes:
        return self.audio(b"A" * n)


def function_call_item(item_id: str, call_id: str, name: str, arguments: str) -> dict:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": "completed"}


def backend_response(rid: str, status: str, usage: dict | None = None) -> dict:
    """A Responses lifecycle snapshot, small as the Live service sends it (no input/output)."""
    return {"id": rid, "object": "response", "status": status, "output": [], "usage": usage}
