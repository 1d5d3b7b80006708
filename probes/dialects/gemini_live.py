"""Gemini Live (BidiGenerateContent) as a sans-I/O dialect: Gemini API and Vertex AI.

Reference: /work/shared/protocols/gemini-live.md. Differences from OpenAI Realtime that matter
to the engine:

- the client speaks first: `setup` goes out right after the upgrade and `setupComplete` is the
  ready event (`setup_first = True`; there is no separate "configured" event);
- input audio is 16 kHz PCM16 (`input_format`), so the engine renders utterances natively at
  16 kHz (probes/audio.py); reply audio is 24 kHz;
- servers send JSON in BINARY frames (text frames are accepted too), keys may be camelCase or
  snake_case at any level, and one frame can carry several events (audio part, transcript,
  turnComplete with usageMetadata);
- errors are WebSocket close codes with a reason (the engine's `ws_closed_<code>`), and a
  `goAway` announces a forced close (the engine's `go_away` outcome when the close follows).

Auth: the Gemini API takes the key in `x-goog-api-key`; a Vertex AI URL (host
`*aiplatform.googleapis.com` or an `LlmBidiService` path) takes `Authorization: Bearer TOKEN`
and a full model resource name (`projects/P/locations/L/publishers/google/models/M`).
"""

from __future__ import annotations

import math
from urllib.parse import urlsplit, urlunsplit

import orjson

from probes.dialects.base import (
    AudioDelta,
    AudioFormat,
    ConnectRequest,
    DialectError,
    Event,
    GoAway,
    Ignored,
    InputTranscript,
    Interrupted,
    ResponseDone,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    ToolCall,
    TranscriptDelta,
    Unknown,
)
from probes.results import Usage

DEFAULT_API_VERSION = "v1beta"
API_PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
INPUT_FORMAT = AudioFormat("pcm16", 16000)
OUTPUT_FORMAT = AudioFormat("pcm16", 24000)
INPUT_MIME = "audio/pcm;rate=16000"

_SNAKE: dict[str, str] = {}
_CUT = "\x00"  # placeholder left where the fast path cut the audio base64 out of a frame
_P_DATA = b'"data"'
_FAST_MIN = 256


def snake(name: str) -> str:
    """camelCase -> snake_case (cached): `inlineData` -> `inline_data`."""
    s = _SNAKE.get(name)
    if s is None:
        s = _SNAKE[name] = "".join("_" + c.lower() if c.isupper() else c for c in name)
    return s


def get(d: dict, name: str, default=None):
    """d[name] in camelCase, else in snake_case, else default."""
    v = d.get(name)
    if v is None:
        v = d.get(snake(name), default)
    return v


def b64_nbytes(n_chars: int, pad: int) -> int:
    """Decoded size of base64 (standard or URL-safe), padded or not. Padding beyond two
    characters is junk: counting it would make a string of `=` a negative size."""
    pad = min(pad, 2)
    return n_chars * 3 // 4 - pad if n_chars % 4 == 0 else n_chars * 3 // 4


def is_vertex(url: str) -> bool:
    p = urlsplit(url)
    return (p.hostname or "").endswith("aiplatform.googleapis.com") or "LlmBidiService" in p.path


def parse_duration_s(s) -> float | None:
    """A proto Duration ("50s", "1.5s") or a number -> seconds; None when unreadable or not
    finite (float() takes "1e309" and "NaN", which no deadline can use)."""
    if isinstance(s, str):
        s = s[:-1] if s.endswith("s") else s
    elif not isinstance(s, int | float) or isinstance(s, bool):
        return None
    try:
        v = float(s)
    except (ValueError, OverflowError):
        return None
    return v if math.isfinite(v) else None


def parse_usage(u: dict | None) -> Usage:
    """`usageMetadata` (Gemini API or Vertex names) -> Usage.

    Modalities come from the *TokensDetails lists; without them the totals count as text.
    Thinking tokens are billed as output text, tool-use prompt tokens as input text.
    """
    if not isinstance(u, dict) or not u:
        return Usage()
    out = Usage()

    def split(details, total: int, cached: bool = False) -> tuple[int, int]:
        audio = text = 0
        if isinstance(details, list) and details:
            for d in details:
                if not isinstance(d, dict):
                    continue
                n = int(get(d, "tokenCount", 0) or 0)
                if str(d.get("modality", "")).upper() in ("AUDIO", "VIDEO", "IMAGE"):
                    audio += n
                else:
                    text += n
            return audio, text
        return 0, total

    out.in_audio, out.in_text = split(get(u, "promptTokensDetails"), int(get(u, "promptTokenCount", 0) or 0))
    resp_details = get(u, "responseTokensDetails")
    if resp_details is None:
        resp_details = get(u, "candidatesTokensDetails")
    resp_total = get(u, "responseTokenCount")
    if resp_total is None:
        resp_total = get(u, "candidatesTokenCount", 0)
    out.out_audio, out.out_text = split(resp_details, int(resp_total or 0))
    out.out_text += int(get(u, "thoughtsTokenCount", 0) or 0)
    out.in_text += int(get(u, "toolUsePromptTokenCount", 0) or 0)
    out.in_cached = int(get(u, "cachedContentTokenCount", 0) or 0)
    ca, _ = split(get(u, "cacheTokensDetails"), 0)
    out.in_cached_audio = ca
    return out


def _function_declarations(tools: list[dict]) -> list[dict]:
    """OpenAI-style tools ({"type": "function", "name", "description", "parameters"}) and
    native Gemini tool objects (functionDeclarations, googleSearch...) -> setup.tools."""
    decls: list[dict] = []
    native: list[dict] = []
    for t in tools:
        if not isinstance(t, dict):
            continue
        if "name" in t and t.get("type", "function") == "function":
            d = {"name": t["name"]}
            for k in ("description", "parameters", "behavior"):
                if k in t:
                    d[k] = t[k]
            decls.append(d)
        else:
            native.append({k: v for k, v in t.items() if k != "type"} if "type" in t else t)
    return ([{"functionDeclarations": decls}] if decls else []) + native


class GeminiLive:
    """One session's Gemini Live codec (stateful only for usage and interruption per turn)."""

    waits_for_configured = False
    setup_first = True  # the engine sends configure() before waiting for SessionReady
    tool_call_ends_response = False  # a toolCall pauses the turn; turnComplete comes after the answer
    input_format = INPUT_FORMAT
    output_format = OUTPUT_FORMAT

    def __init__(
        self,
        *,
        url: str,
        model: str,
        api_version: str | None = None,
        voice: str | None = None,
        instructions: str | None = None,
        turn_mode: str = "server_vad",
        input_transcription: bool = False,
        output_transcription: bool = True,
        tools: list[dict] | None = None,
        activity_detection: dict | None = None,
        interrupt_response: bool = True,
    ) -> None:
        if turn_mode not in ("server_vad", "semantic_vad", "manual"):
            raise ValueError(f"turn_mode must be server_vad, semantic_vad or manual, not {turn_mode!r}")
        self.url = url
        self.model = model
        self.api_version = api_version
        self.vertex = is_vertex(url)
        self.voice = voice
        self.instructions = instructions
        self.turn_mode = turn_mode
        self.input_transcription = input_transcription
        self.output_transcription = output_transcription
        self.tools = list(tools or [])
        self.activity_detection = activity_detection
        self.interrupt_response = interrupt_response
        self.unknown_events = 0
        self.usage: Usage | None = None  # latest usageMetadata of the turn in progress
        self.interrupted = False
        self._cut_b64 = b""  # the audio base64 the fast path cut out of the current frame
        self.go_away_s: float | None = None
        self.resumption_handle: str | None = None
        self.session_id = ""

    @classmethod
    def for_target(cls, target, turn_mode: str = "server_vad", *, interrupt_response: bool = True,
                   silence_ms: int | None = None) -> GeminiLive:
        return cls(
            url=target.url,
            model=target.model,
            api_version=target.api_version,
            voice=target.voice,
            instructions=target.instructions,
            turn_mode=turn_mode,
            input_transcription=bool(target.transcription_model),
            tools=target.tools,
            interrupt_response=interrupt_response,
            activity_detection=None if silence_ms is None else {"silenceDurationMs": int(silence_ms)},
        )

    # ---- intents -> messages -----------------------------------------------------------

    def connect_request(self, api_key: str | None) -> ConnectRequest:
        p = urlsplit(self.url)
        path = p.path
        if not self.vertex:
            version = self.api_version or DEFAULT_API_VERSION
            if path.strip("/") == "":
                path = API_PATH.format(version=version)
            elif self.api_version:
                for v in ("v1alpha", "v1beta", "v1"):
                    marker = f".{v}.GenerativeService"
                    if marker in path:
                        path = path.replace(marker, f".{version}.GenerativeService")
                        break
        url = urlunsplit((p.scheme, p.netloc, path, p.query, ""))
        headers: list[tuple[str, str]] = []
        if api_key:
            if self.vertex:
                headers.append(("Authorization", f"Bearer {api_key}"))
            else:
                headers.append(("x-goog-api-key", api_key))
        return ConnectRequest(url, tuple(headers))

    def model_name(self) -> str:
        return self.model if "/" in self.model else f"models/{self.model}"

    def setup_message(self) -> dict:
        gen: dict = {"responseModalities": ["AUDIO"]}
        if self.voice:
            gen["speechConfig"] = {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": self.voice}}}
        s: dict = {"model": self.model_name(), "generationConfig": gen}
        if self.instructions:
            s["systemInstruction"] = {"parts": [{"text": self.instructions}]}
        aad: dict = {"disabled": self.turn_mode == "manual"}
        if self.turn_mode != "manual" and self.activity_detection:
            aad.update(self.activity_detection)
        s["realtimeInputConfig"] = {"automaticActivityDetection": aad}
        if not self.interrupt_response:  # the reply plays on when the user talks over it
            s["realtimeInputConfig"]["activityHandling"] = "NO_INTERRUPTION"
        if self.input_transcription:
            s["inputAudioTranscription"] = {}
        if self.output_transcription:
            s["outputAudioTranscription"] = {}
        if self.tools:
            s["tools"] = _function_declarations(self.tools)
        return {"setup": s}

    def configure(self) -> list[bytes]:
        return [orjson.dumps(self.setup_message())]

    def append_audio(self, b64: str) -> bytes:
        return b'{"realtimeInput":{"audio":{"mimeType":"' + INPUT_MIME.encode() + b'","data":"' + (
            b64.encode("ascii") + b'"}}}'
        )

    def start_activity(self) -> list[bytes]:
        self._new_turn()
        return [b'{"realtimeInput":{"activityStart":{}}}'] if self.turn_mode == "manual" else []

    def end_turn(self) -> list[bytes]:
        return [b'{"realtimeInput":{"activityEnd":{}}}']

    def audio_stream_end(self) -> list[bytes]:
        """Automatic VAD: the mic paused (flushes the server's cached audio). Not on Vertex."""
        return [] if self.vertex else [b'{"realtimeInput":{"audioStreamEnd":true}}']

    def cancel(self) -> list[bytes]:
        # Gemini has no cancel message: speaking (activityStart) interrupts the reply
        return [b'{"realtimeInput":{"activityStart":{}}}'] if self.turn_mode == "manual" else []

    def tool_result(self, call_id: str, output: str, name: str = "") -> list[bytes]:
        try:
            resp = orjson.loads(output)
        except orjson.JSONDecodeError:
            resp = None
        if not isinstance(resp, dict):
            resp = {"result": output}
        fr: dict = {"id": call_id, "name": name, "response": resp}
        return [orjson.dumps({"toolResponse": {"functionResponses": [fr]}})]

    def user_text(self, text: str) -> list[bytes]:
        return [
            orjson.dumps(
                {"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": True}}
            )
        ]

    def _new_turn(self) -> None:
        self.usage = None
        self.interrupted = False

    # ---- frames -> events --------------------------------------------------------------

    def parse(self, frame: bytes | str) -> tuple[Event, ...]:
        if isinstance(frame, str):  # a lone surrogate stays invalid UTF-8 for orjson to reject
            frame = frame.encode("utf-8", "surrogatepass")
        cut = -1
        if len(frame) >= _FAST_MIN:
            frame, cut, self._cut_b64 = _cut_audio(frame)
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as e:
            raise DialectError(f"malformed JSON frame ({len(frame)} bytes): {e}") from None
        if not isinstance(msg, dict):
            raise DialectError(f"frame is JSON {type(msg).__name__}, not an object")
        try:
            events = self._events(msg, cut)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise DialectError(f"unexpected shape ({type(e).__name__}: {e})") from None
        return tuple(events)

    def _events(self, m: dict, cut: int) -> list[Event]:
        ev: list[Event] = []
        um = get(m, "usageMetadata")
        if um is not None:
            self.usage = parse_usage(um)
        sc = get(m, "serverContent")
        if sc is not None:
            if not isinstance(sc, dict):
                raise DialectError("serverContent is not an object")
            self._server_content(sc, cut, ev)
        sc_ = get(m, "setupComplete")
        if sc_ is not None:
            sid = (get(sc_, "sessionId", "") if isinstance(sc_, dict) else "") or ""
            self.session_id = str(sid)
            ev.append(SessionReady(self.session_id))
        tc = get(m, "toolCall")
        if tc is not None:
            for fc in get(tc, "functionCalls", []) or []:
                args = fc.get("args")
                ev.append(
                    ToolCall(
                        str(fc.get("id") or ""),
                        str(fc.get("name") or ""),
                        orjson.dumps(args if args is not None else {}).decode(),
                    )
                )
        if get(m, "toolCallCancellation") is not None:
            ev.append(Ignored("toolCallCancellation"))
        ga = get(m, "goAway")
        if ga is not None:
            self.go_away_s = parse_duration_s(get(ga, "timeLeft")) if isinstance(ga, dict) else None
            ev.append(GoAway(self.go_away_s))
        sru = get(m, "sessionResumptionUpdate")
        if sru is not None:
            if isinstance(sru, dict) and get(sru, "resumable") and get(sru, "newHandle"):
                self.resumption_handle = str(get(sru, "newHandle"))
            ev.append(Ignored("sessionResumptionUpdate"))
        va = get(m, "voiceActivity")
        if isinstance(va, dict):
            kind = str(get(va, "voiceActivityType") or va.get("type") or "")
            if kind.endswith("ACTIVITY_START"):
                ev.append(SpeechStarted())
            elif kind.endswith("ACTIVITY_END"):
                ev.append(SpeechStopped())
        if not ev:
            known = {"usageMetadata", "usage_metadata", "voiceActivity", "voice_activity",
                     "voiceActivityDetectionSignal", "voice_activity_detection_signal"}
            other = [k for k in m if k not in known]
            if other:
                self.unknown_events += 1
                ev.append(Unknown(str(other[0])))
            elif m:
                ev.append(Ignored(next(iter(m))))
        return ev

    def _server_content(self, sc: dict, cut: int, ev: list[Event]) -> None:
        mt = get(sc, "modelTurn")
        if mt is not None:
            for part in get(mt, "parts", []) or []:
                if not isinstance(part, dict):
                    raise DialectError("modelTurn part is not an object")
                inline = get(part, "inlineData")
                if inline is not None:
                    data = inline.get("data")
                    if data == _CUT and cut >= 0:
                        ev.append(AudioDelta(cut, self._cut_b64))
                    elif isinstance(data, str):
                        d = data.strip()
                        ev.append(AudioDelta(b64_nbytes(len(d), len(d) - len(d.rstrip("="))),
                                             d.encode("utf-8", "surrogatepass")))
                    else:
                        raise DialectError("inlineData.data is not a base64 string")
                text = part.get("text")
                if isinstance(text, str) and not part.get("thought"):
                    ev.append(TextDelta(text))
        ot = get(sc, "outputTranscription")
        if isinstance(ot, dict) and ot.get("text"):
            ev.append(TranscriptDelta(str(ot["text"])))
        it = get(sc, "inputTranscription")
        if isinstance(it, dict) and it.get("text") is not None:
            ev.append(InputTranscript(str(it["text"]), bool(it.get("finished", True))))
        if get(sc, "interrupted"):
            self.interrupted = True
            ev.append(Interrupted())
        if get(sc, "generationComplete"):
            ev.append(Ignored("generationComplete"))
        if get(sc, "turnComplete"):
            usage = self.usage or Usage()
            if self.interrupted:
                ev.append(ResponseDone("cancelled", usage, reason="interrupted"))
            else:
                reason = get(sc, "turnCompleteReason")  # an enum name; str() keeps odd values readable
                ev.append(ResponseDone("completed", usage, reason=None if reason is None else str(reason)))
            self._new_turn()
        if not ev and not sc:
            ev.append(Ignored("serverContent"))


def _cut_audio(frame: bytes) -> tuple[bytes, int, bytes]:
    """Replace the first `"data":"<base64>"` string by a placeholder; return (frame, nbytes,
    the base64 cut out: the engine's audible gate reads it).

    The long base64 is only scanned by memchr, never tokenised by the JSON parser; the rest of
    the frame is still fully parsed (and validated). Any doubt returns the frame unchanged.
    """
    i = frame.find(b'"inline')  # only an inlineData part's data, never e.g. a tool argument
    d = frame.find(_P_DATA, i) if i >= 0 else -1
    if d < 0:
        return frame, -1, b""
    q1 = d + 6
    n = len(frame)
    while q1 < n and frame[q1] in b" \t\r\n:":
        q1 += 1
    if q1 >= n or frame[q1] != 0x22:
        return frame, -1, b""
    q2 = frame.find(b'"', q1 + 1)
    if q2 < 0 or frame.find(b"\\", q1, q2) >= 0:
        return frame, -1, b""
    chars = q2 - q1 - 1
    pad = (frame[q2 - 1] == 0x3D) + (frame[q2 - 2] == 0x3D) if chars >= 2 else 0
    return frame[:q1] + b'"\\u0000"' + frame[q2 + 1 :], b64_nbytes(chars, pad), frame[q1 + 1:q2]
