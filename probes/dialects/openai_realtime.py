"""OpenAI Realtime (GA by default, legacy beta shape, Azure variants) as a sans-I/O dialect.

Reference: /work/shared/protocols/openai-realtime.md. Intents become orjson bytes; server frames
become the normalised events of probes.dialects.base. Both GA and beta event names are
accepted whatever shape we speak, so a server that mixes them still parses.

Hot path: reply audio arrives as ~6 KB `response.output_audio.delta` frames, dozens per second
per session. `parse()` finds the base64 string with `bytes.find`, parses only the small rest of the frame
and computes the decoded size from the string's length: no tokenising or decoding of the
audio. Any doubt (escapes, other types) falls back to the full parse, which is also where a
malformed frame raises DialectError (the `protocol` error class).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from probes.dialects.base import (
    AudioDelta,
    AudioFormat,
    Committed,
    ConnectRequest,
    DialectError,
    Event,
    Ignored,
    InputTranscript,
    ResponseCreated,
    ResponseDone,
    ServerError,
    SessionConfigured,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    ToolCall,
    TranscriptDelta,
    Unknown,
    typed_object,
)
from probes.results import Usage

#: Audio formats by their beta names (the ones probes.spec.Target uses).
FORMATS = {
    "pcm16": AudioFormat("pcm16", 24000),
    "g711_ulaw": AudioFormat("g711_ulaw", 8000),
    "g711_alaw": AudioFormat("g711_alaw", 8000),
}
_GA_FORMAT = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}
AZURE_PREVIEW_API_VERSION = "2024-10-01-preview"

_AUDIO_DELTA_TYPES = ("response.output_audio.delta", "response.audio.delta")
_TRANSCRIPT_DELTA_TYPES = ("response.output_audio_transcript.delta", "response.audio_transcript.delta")
_TEXT_DELTA_TYPES = ("response.output_text.delta", "response.text.delta")
_IGNORED_TYPES = frozenset(
    {
        "conversation.created",
        "conversation.item.created",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "conversation.item.retrieved",
        "conversation.item.input_audio_transcription.segment",
        "conversation.item.input_audio_transcription.failed",
        "input_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_audio.done",
        "response.audio.done",
        "response.output_audio_transcript.done",
        "response.audio_transcript.done",
        "response.output_text.done",
        "response.text.done",
        "response.function_call_arguments.delta",
        "rate_limits.updated",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
    }
)

# the audio fast path: only for frames big enough to be worth it
_P_DELTA = b'"delta"'
_FAST_MIN = 256


def b64_decoded_len(n_chars: int, pad: int) -> int:
    """Decoded size of `n_chars` base64 characters ending in `pad` '=' (unpadded tolerated)."""
    return n_chars * 3 // 4 - pad if n_chars % 4 == 0 else n_chars * 3 // 4


class OpenAIRealtime:
    """One session's OpenAI Realtime codec.

    provider "azure" switches auth to `api-key` and the URL to Azure's form (GA v1 path
    /openai/v1/realtime?model=, or the preview path with api-version + deployment, which speaks
    the beta shape); `beta=True` speaks the legacy flat shape with the `OpenAI-Beta: realtime=v1`
    header. `turn_mode` is
    server_vad | semantic_vad | manual (turn_detection null: the engine commits itself).
    """

    waits_for_configured = True
    tool_call_ends_response = True  # response.done follows the call; answer after it

    def __init__(
        self,
        *,
        url: str,
        model: str,
        provider: str = "openai",
        beta: bool = False,
        api_version: str | None = None,
        voice: str | None = None,
        instructions: str | None = None,
        input_format: str = "pcm16",
        output_format: str = "pcm16",
        turn_mode: str = "server_vad",
        turn_detection: dict | None = None,
        transcription_model: str | None = None,
        tools: list[dict] | None = None,
    ) -> None:
        if provider not in ("openai", "azure"):
            raise ValueError(f"provider must be openai or azure, not {provider!r}")
        if turn_mode not in ("server_vad", "semantic_vad", "manual"):
            raise ValueError(f"turn_mode must be server_vad, semantic_vad or manual, not {turn_mode!r}")
        for f in (input_format, output_format):
            if f not in FORMATS:
                raise ValueError(f"audio format must be one of {sorted(FORMATS)}, not {f!r}")
        self.url = url
        self.model = model
        self.provider = provider
        self.beta = beta
        # Azure's preview endpoint (/openai/realtime?api-version=...) speaks the beta shape
        self.azure_preview = provider == "azure" and "/openai/v1/" not in urlsplit(url).path
        self.beta_shape = beta or self.azure_preview
        self.api_version = api_version
        self.voice = voice
        self.instructions = instructions
        self.input_format = FORMATS[input_format]
        self.output_format = FORMATS[output_format]
        self.turn_mode = turn_mode
        self.turn_detection = turn_detection
        self.transcription_model = transcription_model
        self.tools = list(tools or [])
        self.unknown_events = 0
        self._call_names: dict[str, str] = {}  # call_id/item_id -> function name (beta lacks it)

    @classmethod
    def for_target(cls, target, turn_mode: str = "server_vad", *, interrupt_response: bool = True,
                   silence_ms: int | None = None) -> OpenAIRealtime:
        """Build from a probes.spec.Target (duck-typed so the dialect stays spec-agnostic)."""
        return cls(
            url=target.url,
            model=target.model,
            provider=target.provider,
            beta=target.beta,
            api_version=target.api_version,
            voice=target.voice,
            instructions=target.instructions,
            input_format=target.input_format,
            output_format=target.output_format,
            turn_mode=turn_mode,
            turn_detection=_vad_overrides(turn_mode, interrupt_response, silence_ms),
            transcription_model=target.transcription_model,
            tools=target.tools,
        )

    # ---- intents -> messages -----------------------------------------------------------

    def connect_request(self, api_key: str | None) -> ConnectRequest:
        parts = urlsplit(self.url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        keys = {k for k, _ in query}
        if self.azure_preview:
            # Azure preview: api-version + deployment
            if "api-version" not in keys:
                query.append(("api-version", self.api_version or AZURE_PREVIEW_API_VERSION))
            if "deployment" not in keys:
                query.append(("deployment", self.model))
        elif not keys & {"model", "call_id", "intent"}:
            query.append(("model", self.model))
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
        headers: list[tuple[str, str]] = []
        if api_key:
            if self.provider == "azure":
                headers.append(("api-key", api_key))
            else:
                headers.append(("Authorization", f"Bearer {api_key}"))
        if self.beta:
            headers.append(("OpenAI-Beta", "realtime=v1"))
        return ConnectRequest(url, tuple(headers))

    def _turn_detection(self) -> dict | None:
        if self.turn_mode == "manual":
            return None
        td: dict = {"type": self.turn_mode}
        if self.turn_mode == "server_vad":
            td.update(create_response=True, interrupt_response=True)
        else:
            td.update(eagerness="auto", create_response=True, interrupt_response=True)
        if self.turn_detection:
            td.update(self.turn_detection)
        return td

    def session_config(self) -> dict:
        """The `session` object of session.update, in the shape we speak."""
        td = self._turn_detection()
        if self.beta_shape:
            s: dict = {
                "modalities": ["audio", "text"],
                "input_audio_format": self.input_format.codec,
                "output_audio_format": self.output_format.codec,
                "turn_detection": td,
            }
            if self.voice:
                s["voice"] = self.voice
            if self.transcription_model:
                s["input_audio_transcription"] = {"model": self.transcription_model}
        else:
            audio_in: dict = {"format": _GA_FORMAT[self.input_format.codec], "turn_detection": td}
            if self.transcription_model:
                audio_in["transcription"] = {"model": self.transcription_model}
            audio_out: dict = {"format": _GA_FORMAT[self.output_format.codec]}
            if self.voice:
                audio_out["voice"] = self.voice
            s = {
                "type": "realtime",
                "output_modalities": ["audio"],
                "audio": {"input": audio_in, "output": audio_out},
            }
        if self.instructions:
            s["instructions"] = self.instructions
        if self.tools:
            s["tools"] = [t if "type" in t else {"type": "function", **t} for t in self.tools]
            s["tool_choice"] = "auto"
        return s

    def configure(self) -> list[bytes]:
        return [orjson.dumps({"type": "session.update", "session": self.session_config()})]

    def append_audio(self, b64: str) -> bytes:
        return orjson.dumps({"type": "input_audio_buffer.append", "audio": b64})

    def start_activity(self) -> list[bytes]:
        return []

    def end_turn(self) -> list[bytes]:
        return [
            orjson.dumps({"type": "input_audio_buffer.commit"}),
            orjson.dumps({"type": "response.create"}),
        ]

    def create_response(self) -> list[bytes]:
        return [orjson.dumps({"type": "response.create"})]

    def cancel(self) -> list[bytes]:
        return [orjson.dumps({"type": "response.cancel"})]

    def tool_result(self, call_id: str, output: str, name: str = "") -> list[bytes]:
        item = {"type": "function_call_output", "call_id": call_id, "output": output}
        return [
            orjson.dumps({"type": "conversation.item.create", "item": item}),
            orjson.dumps({"type": "response.create"}),
        ]

    def user_text(self, text: str) -> list[bytes]:
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }
        return [
            orjson.dumps({"type": "conversation.item.create", "item": item}),
            orjson.dumps({"type": "response.create"}),
        ]

    # ---- frames -> events --------------------------------------------------------------

    def parse(self, frame: bytes) -> tuple[Event, ...]:
        if len(frame) >= _FAST_MIN:
            n, b64 = _fast_audio(frame)
            if n >= 0:
                return (AudioDelta(n, b64),)
        t, msg = typed_object(frame)
        try:
            ev = self._event(t, msg)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise DialectError(f"{t}: unexpected shape ({type(e).__name__}: {e})") from None
        if type(ev) is Unknown:
            self.unknown_events += 1
        return (ev,)

    def _event(self, t: str, m: dict) -> Event:
        if t in _AUDIO_DELTA_TYPES:
            d = m["delta"]
            return AudioDelta(b64_decoded_len(len(d), len(d) - len(d.rstrip("="))),
                              d.encode("utf-8", "surrogatepass"))
        if t in _TRANSCRIPT_DELTA_TYPES:
            return TranscriptDelta(m.get("delta") or "")
        if t in _TEXT_DELTA_TYPES:
            return TextDelta(m.get("delta") or "")
        if t == "input_audio_buffer.speech_started":
            return SpeechStarted(m.get("audio_start_ms"))
        if t == "input_audio_buffer.speech_stopped":
            return SpeechStopped(m.get("audio_end_ms"))
        if t == "input_audio_buffer.committed":
            return Committed()
        if t == "response.created":
            return ResponseCreated((m.get("response") or {}).get("id") or "")
        if t == "response.done":
            return _response_done(m["response"])
        if t == "session.created":
            return SessionReady((m.get("session") or {}).get("id") or "")
        if t == "session.updated":
            return SessionConfigured()
        if t == "error":
            e = m.get("error") or {}
            return ServerError(
                str(e.get("code") or e.get("type") or "unknown"),
                str(e.get("message") or ""),
                str(e.get("type") or ""),
            )
        if t == "conversation.item.input_audio_transcription.completed":
            return InputTranscript(m.get("transcript") or "", True)
        if t == "conversation.item.input_audio_transcription.delta":
            return InputTranscript(m.get("delta") or "", False)
        if t == "response.output_item.added":
            item = m.get("item") or {}
            if item.get("type") == "function_call":
                name = item.get("name") or ""
                for k in (item.get("call_id"), item.get("id")):
                    if k:
                        self._call_names[k] = name
            return Ignored(t)
        if t == "response.function_call_arguments.done":
            call_id = m.get("call_id") or ""
            name = m.get("name") or self._call_names.get(call_id) or self._call_names.get(
                m.get("item_id") or "", ""
            )
            return ToolCall(call_id, name, m.get("arguments") or "")
        if t in _IGNORED_TYPES:
            return Ignored(t)
        return Unknown(t)


def _response_done(r: dict) -> ResponseDone:
    status = r.get("status") or "completed"
    details = r.get("status_details") or {}
    err = details.get("error") or {}
    code = err.get("code") or err.get("type") if err else None
    if status == "failed" and not code:
        code = details.get("reason") or "unknown"
    return ResponseDone(
        status=status,
        usage=parse_usage(r.get("usage")),
        error_code=code,
        reason=details.get("reason"),
        response_id=r.get("id") or "",
    )


def parse_usage(u: dict | None) -> Usage:
    """`response.usage` -> Usage; cached tokens split by modality when the server says so."""
    if not u:
        return Usage()
    ind = u.get("input_token_details") or {}
    outd = u.get("output_token_details") or {}
    cached = int(ind.get("cached_tokens") or 0)
    cdet = ind.get("cached_tokens_details") or {}
    in_audio = int(ind.get("audio_tokens") or 0)
    in_text = int(ind.get("text_tokens") or 0)
    out_audio = int(outd.get("audio_tokens") or 0)
    out_text = int(outd.get("text_tokens") or 0)
    if not ind and u.get("input_tokens"):
        in_text = int(u["input_tokens"])
    if not outd and u.get("output_tokens"):
        out_text = int(u["output_tokens"])
    return Usage(
        in_audio=in_audio,
        in_text=in_text,
        out_audio=out_audio,
        out_text=out_text,
        in_cached=cached,
        in_cached_audio=int(cdet.get("audio_tokens") or 0),
    )


def _fast_audio(frame: bytes) -> tuple[int, bytes]:
    """Decoded audio size of an audio-delta frame and its base64 (a slice, for the engine's
    audible gate), or (-1, b"") to let the full parse decide.

    The base64 string is cut out (it must hold no quote or backslash) and replaced by 0; the
    remaining ~200 bytes are parsed with orjson, so the frame is still fully validated as JSON
    while the 6 KB of audio are only scanned by memchr, never tokenised or decoded.
    """
    d = frame.find(_P_DELTA)
    if d < 0:
        return -1, b""
    q1 = d + 7
    n = len(frame)
    while q1 < n and frame[q1] in b" \t\r\n:":
        q1 += 1
    if q1 >= n or frame[q1] != 0x22:
        return -1, b""
    q2 = frame.find(b'"', q1 + 1)
    if q2 < 0 or frame.find(b"\\", q1, q2) >= 0:
        return -1, b""
    try:
        rest = orjson.loads(frame[:q1] + b"0" + frame[q2 + 1 :])
    except orjson.JSONDecodeError:
        return -1, b""
    if type(rest) is not dict or rest.get("type") not in _AUDIO_DELTA_TYPES:
        return -1, b""
    chars = q2 - q1 - 1
    pad = (frame[q2 - 1] == 0x3D) + (frame[q2 - 2] == 0x3D) if chars >= 2 else 0
    return b64_decoded_len(chars, pad), frame[q1 + 1:q2]


def _vad_overrides(turn_mode: str, interrupt_response: bool, silence_ms: int | None) -> dict | None:
    td: dict = {}
    if not interrupt_response:
        td["interrupt_response"] = False
    if silence_ms is not None and turn_mode == "server_vad":  # semantic_vad has no such knob
        td["silence_duration_ms"] = int(silence_ms)
    return td or None
