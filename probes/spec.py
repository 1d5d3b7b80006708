"""What the engine is asked to do: a target to reach and a scenario to play.

Plain data, built by the CLI's config loader (voicepulse/config.py) or by hand in tests.
The API key itself never lives here: only the *name* of the environment variable that holds it,
resolved at connect time, so a spec can be printed, logged or stored safely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from probes.durations import parse_duration

if TYPE_CHECKING:
    from probes.script import Script

__all__ = ["PROVIDERS", "TRANSPORTS", "TURN_MODES", "Scenario", "Target", "Timeouts",
           "parse_duration"]

PROVIDERS = ("openai", "azure", "gemini", "openai-live")
#: how the engine reaches a target: WebSocket (every provider), or WebRTC (probes/rtc.py: Opus
#: over RTP, events on the oai-events data channel) for openai (Realtime GA) and openai-live
TRANSPORTS = ("websocket", "webrtc")
WEBRTC_PROVIDERS = ("openai", "openai-live")
TURN_MODES = ("server_vad", "semantic_vad", "manual")


@dataclass(slots=True)
class Target:
    name: str
    url: str
    model: str
    provider: str = "openai"  # openai | azure | gemini | openai-live
    api_key_env: str | None = None
    voice: str | None = None
    instructions: str = "You are a helpful voice assistant. Answer briefly."
    input_format: str = "pcm16"  # pcm16 | g711_ulaw | g711_alaw
    output_format: str = "pcm16"
    beta: bool = False  # OpenAI legacy beta shape (OpenAI-Beta: realtime=v1)
    api_version: str | None = None  # Azure api-version / Gemini API version
    ca_file: str | None = None  # extra CA to trust for wss (e.g. the simulator's self-signed cert)
    transcription_model: str | None = None  # ask for input transcription when set
    tools: list[dict] = field(default_factory=list)
    prices: dict[str, float] | None = None  # per-1M-token price override for this target's model
    # the built-in simulator cannot hear: scripted scenarios tell it what was said and which
    # tool to call through markers in the instructions (simulator/markers.py). Never for a
    # real provider.
    simulator_hints: bool = False
    # GPT-Live (openai-live): delegation mode (client | responses; None: responses when tools
    # are declared), the Responses backend's model, and auth (bearer | api-key; None: by URL)
    delegation: str | None = None
    backend_model: str | None = None
    auth: str | None = None
    quiet_ms: float | None = None  # overrides the scenario's quiet_ms for this target
    transport: str = "websocket"  # websocket | webrtc (TRANSPORTS)


@dataclass(slots=True)
class Timeouts:
    """Seconds allowed for each phase; a phase that overruns ends as `timeout:<phase>`."""

    connect: float = 10.0
    ready: float = 10.0
    first_audio: float = 15.0
    response_done: float = 30.0
    session: float = 120.0


@dataclass(slots=True)
class Scenario:
    name: str = "default"
    turns: int = 2
    utterance_s: float = 1.5
    trailing_silence_s: float = 0.8  # server VAD needs silence after speech to end the turn
    pause_s: float = 0.3  # between a reply's end and the next turn
    turn_mode: str = "server_vad"  # server_vad | semantic_vad | manual
    chunk_ms: int = 100
    jitter_buffer_ms: float = 100.0  # the simulated player's buffer for stall accounting
    seed: int = 1
    loudness_dbfs: float = -20.0
    max_send_lag_ms: float = 1000.0  # worse send lag than this marks the session client_overload
    timeouts: Timeouts = field(default_factory=Timeouts)
    # scripted voice scenarios (probes/script.py); None = `turns` plain question-and-answer turns
    script: Script | None = None
    instructions: str | None = None  # replaces the target's instructions for this scenario
    tools: list[dict] | None = None  # replaces the target's function tools
    transcription_model: str | None = None  # ask for input transcription (WER needs it)
    interrupt_response: bool = True  # the server may stop its reply when the user speaks over it
    silence_ms: int | None = None  # server VAD: the pause that ends a user turn (None: provider's)
    # continuous output (GPT-Live): a reply has ended after this much output below the gate
    quiet_ms: float = 800.0
    # load runs: each session's caller (voice, rate, pitch, noise, pauses) drawn from this
    # `callers:` mapping (validated by probes.callers.parse_callers); None: every session alike
    callers: dict | None = None
    # where it was read (file, key of its mapping), so a config error can point there
    origin: tuple[str, str] | None = None
