"""The OpenAI Realtime session configuration: one internal form, rendered and parsed in the GA
(nested `audio.input/output`) and beta (flat) shapes.

A `session.update` is validated completely before any of it is applied, so a rejected update
leaves the session as it was (as the real service does).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

GA_FORMATS = {"audio/pcm": "pcm16", "audio/pcmu": "pcmu", "audio/pcma": "pcma"}
BETA_FORMATS = {"pcm16": "pcm16", "g711_ulaw": "pcmu", "g711_alaw": "pcma"}
GA_FORMAT_OUT = {"pcm16": {"type": "audio/pcm", "rate": 24000}, "pcmu": {"type": "audio/pcmu"},
                 "pcma": {"type": "audio/pcma"}}
BETA_FORMAT_OUT = {v: k for k, v in BETA_FORMATS.items()}
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
SEMANTIC_SILENCE_MS = {"low": 800, "medium": 500, "auto": 500, "high": 250}

BETA_ONLY = ("modalities", "voice", "input_audio_format", "output_audio_format", "turn_detection",
             "input_audio_transcription", "input_audio_noise_reduction", "temperature",
             "max_response_output_tokens")
GA_ONLY = ("type", "output_modalities", "audio", "max_output_tokens", "tracing", "include",
           "truncation", "prompt")


class ConfigReject(ValueError):
    """Rejected session.update: `code` and `param` go into the error event."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.param = code, param


def default_vad(kind: str = "server_vad", ga: bool = True) -> dict:
    if kind == "semantic_vad":
        return {"type": "semantic_vad", "eagerness": "auto", "create_response": True,
                "interrupt_response": True}
    td = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
          "silence_duration_ms": 200, "create_response": True, "interrupt_response": True}
    if ga:
        td["idle_timeout_ms"] = None
    return td


@dataclass(slots=True)
class SessionConfig:
    instructions: str = "You are a helpful, witty, and friendly AI."
    text_only: bool = False
    input_format: str = "pcm16"
    output_format: str = "pcm16"
    voice: str = "marin"
    turn_detection: dict | None = field(default_factory=default_vad)
    transcription: dict | None = None
    tools: list = field(default_factory=list)
    tool_choice: object = "auto"
    max_output_tokens: object = "inf"
    temperature: float = 0.8

    def silence_ms(self) -> int:
        td = self.turn_detection or {}
        if td.get("type") == "semantic_vad":
            return SEMANTIC_SILENCE_MS.get(td.get("eagerness", "auto"), 500)
        return int(td.get("silence_duration_ms", 200))

    # ---- render -----------------------------------------------------------------------------

    def render(self, ga: bool, sid: str, model: str, expires_at: int) -> dict:
        if ga:
            return {"type": "realtime", "object": "realtime.session", "id": sid, "model": model,
                    "output_modalities": ["text"] if self.text_only else ["audio"],
                    "instructions": self.instructions, "tools": self.tools,
                    "tool_choice": self.tool_choice, "max_output_tokens": self.max_output_tokens,
                    "tracing": None, "prompt": None, "expires_at": expires_at,
                    "audio": {"input": {"format": GA_FORMAT_OUT[self.input_format],
                                        "transcription": self.transcription,
                                        "noise_reduction": None,
                                        "turn_detection": self.turn_detection},
                              "output": {"format": GA_FORMAT_OUT[self.output_format],
                                         "voice": self.voice, "speed": 1}},
                    "include": None}
        return {"id": sid, "object": "realtime.session", "model": model,
                "modalities": ["text"] if self.text_only else ["audio", "text"],
                "instructions": self.instructions, "voice": self.voice,
                "input_audio_format": BETA_FORMAT_OUT[self.input_format],
                "output_audio_format": BETA_FORMAT_OUT[self.output_format],
                "input_audio_transcription": self.transcription,
                "turn_detection": self.turn_detection, "tools": self.tools,
                "tool_choice": self.tool_choice, "temperature": self.temperature,
                "max_response_output_tokens": self.max_output_tokens,
                "input_audio_noise_reduction": None, "expires_at": expires_at}

    # ---- parse ------------------------------------------------------------------------------

    def updated(self, s: dict, ga: bool) -> SessionConfig:
        """A new config with `s` (a session.update `session`) merged in, or ConfigReject."""
        if not isinstance(s, dict):
            raise ConfigReject("invalid_type", "Invalid type for 'session': expected an object.",
                               "session")
        new = copy.deepcopy(self)
        wrong = BETA_ONLY if ga else GA_ONLY
        for k in s:
            if k in wrong:
                raise ConfigReject("unknown_parameter", f"Unknown parameter: 'session.{k}'.",
                                   f"session.{k}")
        if ga:
            if "type" not in s:
                raise ConfigReject("missing_required_parameter",
                                   "Missing required parameter: 'session.type'.", "session.type")
            if s["type"] != "realtime":
                raise ConfigReject("invalid_value", "Only session.type 'realtime' is simulated.",
                                   "session.type")
            if "output_modalities" in s:
                new.text_only = _modalities(s["output_modalities"], "session.output_modalities",
                                            ga=True)
            audio = s.get("audio") or {}
            if not isinstance(audio, dict):
                raise ConfigReject("invalid_type", "Invalid type for 'session.audio'.", "session.audio")
            inp, out = audio.get("input") or {}, audio.get("output") or {}
            if "format" in inp:
                new.input_format = _ga_format(inp["format"], "session.audio.input.format")
            if "turn_detection" in inp:
                new.turn_detection = _turn_detection(inp["turn_detection"], ga=True,
                                                     where="session.audio.input.turn_detection")
            if "transcription" in inp:
                new.transcription = _dict_or_none(inp["transcription"],
                                                  "session.audio.input.transcription")
            if "format" in out:
                new.output_format = _ga_format(out["format"], "session.audio.output.format")
            if "voice" in out:
                new.voice = _voice(out["voice"], "session.audio.output.voice")
            if "max_output_tokens" in s:
                new.max_output_tokens = s["max_output_tokens"]
        else:
            if "modalities" in s:
                new.text_only = _modalities(s["modalities"], "session.modalities", ga=False)
            for key, attr in (("input_audio_format", "input_format"),
                              ("output_audio_format", "output_format")):
                if key in s:
                    if s[key] not in BETA_FORMATS:
                        raise ConfigReject("invalid_value", f"Invalid value: '{s[key]}'. Supported "
                                           f"values are: {', '.join(BETA_FORMATS)}.", f"session.{key}")
                    setattr(new, attr, BETA_FORMATS[s[key]])
            if "turn_detection" in s:
                new.turn_detection = _turn_detection(s["turn_detection"], ga=False,
                                                     where="session.turn_detection")
            if "input_audio_transcription" in s:
                new.transcription = _dict_or_none(s["input_audio_transcription"],
                                                  "session.input_audio_transcription")
            if "voice" in s:
                new.voice = _voice(s["voice"], "session.voice")
            if "temperature" in s:
                new.temperature = s["temperature"]
            if "max_response_output_tokens" in s:
                new.max_output_tokens = s["max_response_output_tokens"]
        if "instructions" in s:
            if not isinstance(s["instructions"], str):
                raise ConfigReject("invalid_type", "Invalid type for 'session.instructions'.",
                                   "session.instructions")
            new.instructions = s["instructions"]
        if "tools" in s:
            if not isinstance(s["tools"], list):
                raise ConfigReject("invalid_type", "Invalid type for 'session.tools'.", "session.tools")
            new.tools = s["tools"]
        if "tool_choice" in s:
            new.tool_choice = s["tool_choice"]
        return new


def _modalities(v, where: str, ga: bool) -> bool:
    if not isinstance(v, list) or not v or not all(m in ("audio", "text") for m in v):
        raise ConfigReject("invalid_value", f"Invalid value for '{where}'.", where)
    if ga and len(set(v)) > 1:
        raise ConfigReject("invalid_value", "output_modalities cannot hold both 'audio' and 'text'.",
                           where)
    return "audio" not in v


def _ga_format(v, where: str) -> str:
    if not isinstance(v, dict) or v.get("type") not in GA_FORMATS:
        raise ConfigReject("invalid_value", f"Invalid value for '{where}'. Supported types are: "
                           f"{', '.join(GA_FORMATS)}.", where)
    fmt = GA_FORMATS[v["type"]]
    if fmt == "pcm16" and v.get("rate", 24000) != 24000:
        raise ConfigReject("invalid_value", "Only rate 24000 is supported for audio/pcm.",
                           f"{where}.rate")
    return fmt


def _voice(v, where: str) -> str:
    if v not in VOICES:
        raise ConfigReject("invalid_value", f"Invalid value: '{v}'.", where)
    return v


def _dict_or_none(v, where: str) -> dict | None:
    if v is not None and not isinstance(v, dict):
        raise ConfigReject("invalid_type", f"Invalid type for '{where}'.", where)
    return v


def _turn_detection(v, ga: bool, where: str) -> dict | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise ConfigReject("invalid_type", f"Invalid type for '{where}'.", where)
    kind = v.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise ConfigReject("invalid_value", f"Invalid value: '{kind}'.", f"{where}.type")
    td = default_vad(kind, ga)
    td.update(v)
    if kind == "server_vad":
        thr = td.get("threshold")
        if not isinstance(thr, int | float) or isinstance(thr, bool) or not 0 <= thr <= 1:
            raise ConfigReject("invalid_value", "threshold must be between 0 and 1.",
                               f"{where}.threshold")
        for k in ("prefix_padding_ms", "silence_duration_ms"):
            x = td.get(k)
            if not isinstance(x, int | float) or isinstance(x, bool) or x < 0:
                raise ConfigReject("invalid_value", f"{k} must be a non-negative integer.",
                                   f"{where}.{k}")
    return td
