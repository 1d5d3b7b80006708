"""The dialect contract: wire messages in and out, normalised events, no sockets, no clocks.

A dialect is sans-I/O: the engine (probes/session.py) owns the socket and the clock and asks the
dialect only two kinds of question. "What bytes do I send to do X?" (intents -> messages) and
"what happened in this frame?" (frame bytes -> events). That keeps every provider's quirks
unit-testable with plain data, and lets Gemini Live (binary frames, camelCase, 16 kHz in,
several events per frame) slot in beside OpenAI Realtime without touching the engine.

`parse()` returns a tuple of events because one Gemini frame can carry several (audio part,
transcript, turnComplete with usage); OpenAI frames yield at most one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from probes.results import Usage


class DialectError(ValueError):
    """A frame the dialect cannot make sense of: the `protocol` error class."""


def typed_object(frame: bytes) -> tuple[str, dict]:
    """A JSON frame as (type, object), the first check of every JSON dialect; anything else is
    a DialectError that names what was wrong (without the frame's content)."""
    import orjson

    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError as e:
        raise DialectError(f"malformed JSON frame ({len(frame)} bytes): {e}") from None
    if not isinstance(msg, dict):
        raise DialectError(f"frame is JSON {type(msg).__name__}, not an object")
    t = msg.get("type")
    if not isinstance(t, str):
        raise DialectError("frame has no string 'type'")
    return t, msg


# ---- normalised events ---------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class SessionReady:
    """The server accepted the connection (`session.created` / `setupComplete`)."""

    session_id: str = ""


@dataclass(slots=True, frozen=True)
class SessionConfigured:
    """The server applied our configuration (`session.updated`). Gemini: same as ready."""


@dataclass(slots=True, frozen=True)
class SpeechStarted:
    audio_start_ms: int | None = None


@dataclass(slots=True, frozen=True)
class SpeechStopped:
    audio_end_ms: int | None = None


@dataclass(slots=True, frozen=True)
class Committed:
    """The input buffer became a user item (`input_audio_buffer.committed`)."""


@dataclass(slots=True, frozen=True)
class ResponseCreated:
    response_id: str = ""


@dataclass(slots=True, frozen=True)
class AudioDelta:
    """A chunk of reply audio: its decoded size, and its base64 text, undecoded, for the
    engine's audible gate (probes/onset.py); empty when a dialect cannot give it."""

    nbytes: int
    audio: bytes = field(default=b"", compare=False, repr=False)  # payload, not identity


@dataclass(slots=True, frozen=True)
class AudibleOnset:
    """Not on any wire: the engine's audible gate (probes/onset.py) puts it right after the
    first AudioDelta of a reply whose sound crosses the gate (probes/audible.py)."""


@dataclass(slots=True, frozen=True)
class TranscriptDelta:
    """Transcript of the reply audio; GPT-Live adds where it lies on the session timeline
    (ms from the session's start, the server's clock)."""

    text: str
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass(slots=True, frozen=True)
class TextDelta:
    """Text output of a text-modality reply."""

    text: str


@dataclass(slots=True, frozen=True)
class InputTranscript:
    """The server's transcription of what we said (final when `final`)."""

    text: str
    final: bool = True
    start_ms: int | None = None  # GPT-Live: the fragment's span on the session timeline
    end_ms: int | None = None


@dataclass(slots=True, frozen=True)
class ToolCall:
    """A function call whose arguments are complete (`...arguments.done` / `toolCall`)."""

    call_id: str
    name: str
    arguments: str  # raw JSON text as sent; validity is the scenario's check, not the dialect's
    delegation_id: str = ""  # GPT-Live: the delegation the call belongs to


#: ResponseDone.reason of a reply end the engine inferred from `quiet_ms` of quiet output
OUTPUT_QUIET = "output_quiet"


@dataclass(slots=True, frozen=True)
class ResponseDone:
    """A response ended (`response.done` / `turnComplete`).

    status: completed | cancelled | failed | incomplete. error_code is set when failed;
    reason carries status_details.reason (turn_detected, client_cancelled, max_output_tokens...);
    `output_quiet` (OUTPUT_QUIET) when the engine inferred the end from quiet output (GPT-Live:
    probes/onset.py), never a server's.
    """

    status: str
    usage: Usage = field(default_factory=Usage)
    error_code: str | None = None
    reason: str | None = None
    response_id: str = ""


@dataclass(slots=True, frozen=True)
class Interrupted:
    """The server stopped its reply because the user spoke over it (Gemini `interrupted`)."""


@dataclass(slots=True, frozen=True)
class ServerError:
    """An `error` event. Most leave the socket usable; the engine decides what is fatal."""

    code: str
    message: str = ""
    type: str = ""


@dataclass(slots=True, frozen=True)
class GoAway:
    """The server announced it will close soon (Gemini `goAway`)."""

    time_left_s: float | None = None


@dataclass(slots=True, frozen=True)
class UsageUpdated:
    """Cumulative billable session time (GPT-Live `session.usage.updated`): never summed."""

    seconds: float
    active_seconds: int | None = None
    paused_seconds: int | None = None
    context_ratio: float | None = None


@dataclass(slots=True, frozen=True)
class SessionClosed:
    """The server finalised the session (GPT-Live `session.closed`): why, and the final usage.
    reason: close_requested | expired | content | remote_hangup | connection_lost."""

    reason: str
    seconds: float | None = None


@dataclass(slots=True, frozen=True)
class DelegationCreated:
    """The model handed a task to the app (`target` client) or a Responses backend
    (GPT-Live `session.delegation.created`); `offset_ms` is on the session timeline."""

    delegation_id: str
    target: str
    response_id: str = ""
    offset_ms: int | None = None


@dataclass(slots=True, frozen=True)
class BackendEvent:
    """A nested Responses stream event of a delegation (GPT-Live `response.event`) that is not
    a function call. For `response.completed|failed|incomplete|cancelled`, status and usage
    (backend tokens, billed apart from the session's seconds) are set."""

    delegation_id: str
    type: str
    response_id: str = ""
    status: str = ""
    usage: Usage = field(default_factory=Usage)
    error_code: str | None = None


@dataclass(slots=True, frozen=True)
class Ack:
    """A command's acknowledgement (GPT-Live `...appended`, `...muted`); appends carry the
    estimated injection span on the session timeline, which is not speech."""

    type: str
    start_ms: int | None = None
    end_ms: int | None = None


@dataclass(slots=True, frozen=True)
class Info:
    """An informational notice (GPT-Live `info`, e.g. data_channel_permissions)."""

    code: str
    message: str = ""


@dataclass(slots=True, frozen=True)
class Ignored:
    """A known event the engine has no use for (rate limits, item bookkeeping)."""

    type: str


@dataclass(slots=True, frozen=True)
class Unknown:
    """An event type the dialect does not know: counted, otherwise ignored."""

    type: str


Event = (
    SessionReady
    | SessionConfigured
    | SpeechStarted
    | SpeechStopped
    | Committed
    | ResponseCreated
    | AudioDelta
    | AudibleOnset
    | TranscriptDelta
    | TextDelta
    | InputTranscript
    | ToolCall
    | ResponseDone
    | Interrupted
    | ServerError
    | GoAway
    | UsageUpdated
    | SessionClosed
    | DelegationCreated
    | BackendEvent
    | Ack
    | Info
    | Ignored
    | Unknown
)


# ---- the contract ---------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class ConnectRequest:
    """Where and how to open the WebSocket. Headers may hold the key: never log them."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True, frozen=True)
class AudioFormat:
    """One direction's audio encoding as the engine needs it for pacing and accounting."""

    codec: str  # pcm16 | g711_ulaw | g711_alaw
    rate: int  # samples per second

    @property
    def bytes_per_s(self) -> int:
        return self.rate * (2 if self.codec == "pcm16" else 1)


class Dialect(Protocol):
    """What the engine asks of a provider protocol. Every method is pure."""

    input_format: AudioFormat
    output_format: AudioFormat
    #: True when the server confirms configuration with a second event (SessionConfigured)
    #: that the engine must wait for before streaming audio.
    waits_for_configured: bool
    #: True when a function call's response ends (response.done) before the tool result may be
    #: sent; False when the call pauses the turn until the answer (Gemini toolCall).
    tool_call_ends_response: bool

    def connect_request(self, api_key: str | None) -> ConnectRequest: ...

    def configure(self) -> list[bytes]:
        """Messages that set the session up (voice, formats, turn detection, tools...)."""
        ...

    def append_audio(self, b64: str) -> bytes:
        """One audio chunk (already base64) as a wire message; called once per chunk per
        utterance, never per send: the engine reuses the bytes."""
        ...

    def end_turn(self) -> list[bytes]:
        """Manual turn mode: the user stopped talking, answer now (commit + response.create)."""
        ...

    def start_activity(self) -> list[bytes]:
        """Manual turn mode, before the speech (Gemini activityStart); OpenAI: nothing."""
        ...

    def cancel(self) -> list[bytes]: ...

    def tool_result(self, call_id: str, output: str, name: str = "") -> list[bytes]: ...

    def user_text(self, text: str) -> list[bytes]: ...

    def parse(self, frame: bytes) -> tuple[Event, ...]:
        """Events in one server frame; raises DialectError on a malformed frame."""
        ...
