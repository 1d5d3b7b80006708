"""GPT-Live (`/v1/live/sessions`, OpenAI and Azure) as a sans-I/O dialect.

Reference: /work/shared/protocols/gpt-live.md; the schema is the official openai package's
`types/live/*` (where they disagree the package wins). What differs from OpenAI Realtime and
matters to the engine:

- the client speaks first: `session.start` (strict config: model, instructions, audio format,
  voice, delegation; any other field is refused) goes out right after the upgrade, and
  `session.started` is the ready event (`setup_first`); nothing else configures the session;
- the model owns turn-taking (`model_owns_turns`): no VAD settings, no speech_started/stopped,
  commit, cancel or response.done. `end_turn`, `start_activity` and `cancel` send nothing, and
  no `ResponseDone` is ever parsed: the engine infers turn ends from quiet output;
- output audio is continuous and real-time paced, silence included (`continuous_output`), so
  every `AudioDelta` carries its base64 (`audio`) for the engine's audible-onset gate: the first
  byte says nothing;
- transcripts are fragments with `start_ms`/`end_ms` on the session timeline, no `.done`, so
  input transcripts are `InputTranscript(final=False)`;
- tools go through delegation. Client mode: `session.delegation.created{target: client}` is
  parsed as a `DelegationCreated` plus a `ToolCall(name="delegation", arguments="{}")` and the
  result goes back as `session.commentary.append`. Responses mode: a nested
  `response.output_item.done` function call is a `ToolCall` with its real name and arguments,
  answered with `response.item.create` function_call_output, then one `response.create` once
  every call of that delegation has its output. `tool_result()` picks the right one by call id.

Auth: OpenAI takes `Authorization: Bearer`; an Azure URL (`*.openai.azure.com`,
`*.cognitiveservices.azure.com`, `*.services.ai.azure.com`, or the `/openai/v1/live/sessions`
path) takes `api-key` unless `auth="bearer"` (Entra ID tokens, as Microsoft's sample sends).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import orjson

from probes.dialects.base import (
    Ack,
    AudioDelta,
    AudioFormat,
    BackendEvent,
    ConnectRequest,
    DelegationCreated,
    DialectError,
    Event,
    Ignored,
    Info,
    InputTranscript,
    ServerError,
    SessionClosed,
    SessionConfigured,
    SessionReady,
    ToolCall,
    TranscriptDelta,
    Unknown,
    UsageUpdated,
    typed_object,
)
from probes.dialects.openai_realtime import b64_decoded_len, parse_usage

PROVIDER = "openai-live"
OPENAI_PATH = "/v1/live/sessions"
AZURE_PATH = "/openai/v1/live/sessions"
#: the ToolCall name of a client-mode delegation (the wire carries no name and no arguments)
CLIENT_DELEGATION_NAME = "delegation"
#: the Responses backend model when tools need one and the target names none (reference §3)
DEFAULT_BACKEND_MODEL = "gpt-5.5"
#: delegations whose calls we remember (a hostile server must not grow this without bound)
MAX_DELEGATIONS = 256

#: audio format names (probes.spec.Target's, plus the 16 kHz PCM GPT-Live also takes)
FORMATS = {
    "pcm16": AudioFormat("pcm16", 24000),
    "pcm16_24k": AudioFormat("pcm16", 24000),
    "pcm16_16k": AudioFormat("pcm16", 16000),
    "g711_ulaw": AudioFormat("g711_ulaw", 8000),
    "g711_alaw": AudioFormat("g711_alaw", 8000),
}
_WIRE_FORMAT = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
DELEGATIONS = ("client", "responses")
#: `delegation.responses` keys of the package's ResponsesDelegationConfig (all but `model`)
BACKEND_KEYS = ("instructions", "max_output_tokens", "parallel_tool_calls", "reasoning",
                "service_tier", "text", "tool_choice")
_BACKEND_DONE = frozenset({"response.completed", "response.failed", "response.incomplete",
                           "response.cancelled"})
_ACKS = frozenset({"session.input_audio.muted", "session.input_audio.unmuted",
                   "session.instructions.appended", "session.thinking.appended",
                   "session.commentary.appended"})
#: server events of the package we know and have no use for (sideband, SIP, fixtures, Decisions)
_IGNORED = frozenset({
    "session.input_audio.append", "session.output_audio.fixture.playing",
    "session.output_audio.fixture.played", "session.paused", "session.resumed",
    "decision.event", "decision.item.created", "decision.item.deleted",
    "transport.dtmf.received", "transport.dtmf.send", "transport.dtmf.sent",
    "transport.ringing", "transport.answered", "transport.failed",
})
_AUDIO_TYPE = "session.output_audio.delta"
_P_DELTA = b'"delta"'
_FAST_MIN = 256
_APPEND_HEAD = b'{"type":"session.input_audio.append","audio":"'


def is_azure(url: str) -> bool:
    p = urlsplit(url)
    host = p.hostname or ""
    return host.endswith((".openai.azure.com", ".cognitiveservices.azure.com",
                          ".services.ai.azure.com")) or p.path.rstrip("/").startswith("/openai/")


def _function_tool(t: dict) -> dict:
    """An OpenAI-style tool dict -> the package's FunctionTool (only its fields)."""
    out = {"type": "function", "name": t["name"]}
    for k in ("description", "parameters", "strict"):
        if k in t:
            out[k] = t[k]
    return out


def _int_or_none(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def refused_turn_setting(turn_mode: str, interrupt_response: bool,
                         silence_ms: int | None) -> tuple[str, str] | None:
    """The first scenario key GPT-Live cannot honour, with why, or None. The model owns
    turn-taking: no manual turns, no VAD silence, no reply the user cannot interrupt. One rule for
    the dialect and for the config check, so a bad scenario is refused before anything runs."""
    if turn_mode == "manual":
        return "turn_mode", "GPT-Live has no manual turns: the model decides when to answer"
    for key, asked in (("silence_ms", silence_ms is not None),
                       ("interrupt_response", not interrupt_response)):
        if asked:
            return key, ("GPT-Live has no turn-detection settings (silence_ms, "
                         "interrupt_response): the model owns turn-taking")
    return None


class GptLive:
    """One session's GPT-Live codec (stateful for delegations and the latest usage)."""

    waits_for_configured = False
    setup_first = True  # the engine sends configure() (session.start) before waiting for ready
    tool_call_ends_response = False  # no response.done: answer as soon as the call is complete
    model_owns_turns = True  # no VAD events, no commit/cancel: infer turns from the output
    continuous_output = True  # output deltas flow all session, silence included
    transcribes_input = True  # input transcript fragments always come (WER needs no config)
    continuous_input = True  # the model hears a stream: the engine keeps the mic open (silence)

    def __init__(
        self,
        *,
        url: str,
        model: str,
        auth: str | None = None,
        voice: str | dict | None = None,
        instructions: str | None = None,
        audio_format: str = "pcm16",
        delegation: str | None = None,
        backend_model: str | None = None,
        backend: dict | None = None,
        tools: list[dict] | None = None,
        acknowledgement_delay_ms: int | None = None,
        store: bool | None = None,
    ) -> None:
        if audio_format not in FORMATS:
            raise ValueError(f"audio format must be one of {sorted(FORMATS)}, not {audio_format!r}")
        tools = [t for t in (tools or []) if isinstance(t, dict)]
        if delegation is None:
            delegation = "responses" if tools else "client"
        if delegation not in DELEGATIONS:
            raise ValueError(f"delegation must be client or responses, not {delegation!r}")
        if delegation == "client" and tools:
            raise ValueError("client delegation takes no tools: the app answers every delegation "
                             "(use delegation: responses for function tools)")
        if auth not in (None, "bearer", "api-key"):
            raise ValueError(f"auth must be bearer or api-key, not {auth!r}")
        bad = set(backend or {}) - set(BACKEND_KEYS)
        if bad:
            raise ValueError(f"unknown delegation.responses keys {sorted(bad)}; "
                             f"expected some of {list(BACKEND_KEYS)}")
        self.url = url
        self.model = model
        self.azure = is_azure(url)
        self.auth = auth or ("api-key" if self.azure else "bearer")
        self.voice = voice
        self.instructions = instructions
        self.input_format = self.output_format = FORMATS[audio_format]
        self.delegation = delegation
        self.backend_model = backend_model or DEFAULT_BACKEND_MODEL
        self.backend = dict(backend or {})
        self.tools = tools
        self.acknowledgement_delay_ms = acknowledgement_delay_ms
        self.store = store
        self.unknown_events = 0
        self.session_id = ""
        self.expires_at: int | None = None
        self.usage_seconds: float | None = None  # the latest cumulative usage.seconds
        self.paused_seconds: int | None = None  # and of it, paused (standby-priced) seconds
        self.close_reason: str | None = None
        self.delegations: dict[str, str] = {}  # delegation id -> target (client | responses)
        self._calls: dict[str, str] = {}  # call_id -> delegation id (responses mode)
        self._open_calls: dict[str, set[str]] = {}  # delegation id -> calls awaiting output

    @classmethod
    def for_target(cls, target, turn_mode: str = "server_vad", *, interrupt_response: bool = True,
                   silence_ms: int | None = None) -> GptLive:
        """Build from a probes.spec.Target (duck-typed). The model owns turn-taking, so manual
        turns, a VAD silence and a reply the user cannot interrupt cannot be asked for."""
        refused = refused_turn_setting(turn_mode, interrupt_response, silence_ms)
        if refused is not None:
            raise ValueError(refused[1])
        if target.input_format != target.output_format:
            raise ValueError("GPT-Live uses one audio format both ways: input_format and "
                             "output_format must match")
        return cls(
            url=target.url,
            model=target.model,
            auth=getattr(target, "auth", None),
            voice=target.voice,
            instructions=target.instructions,
            audio_format=target.input_format,
            delegation=getattr(target, "delegation", None),
            backend_model=getattr(target, "backend_model", None),
            tools=target.tools,
        )

    # ---- intents -> messages -----------------------------------------------------------

    def connect_request(self, api_key: str | None) -> ConnectRequest:
        """The URL as given (the model goes in session.start, never in the query); a bare host,
        or a base ending in /v1 as the SDK's websocket_base_url, gets the live path."""
        p = urlsplit(self.url)
        path = p.path.rstrip("/")
        if path in ("", "/openai"):
            path = AZURE_PATH if self.azure else OPENAI_PATH
        elif path.endswith("/v1"):
            path += "/live/sessions"
        url = urlunsplit((p.scheme, p.netloc, path, p.query, ""))
        headers: list[tuple[str, str]] = []
        if api_key:
            if self.auth == "api-key":
                headers.append(("api-key", api_key))
            else:
                headers.append(("Authorization", f"Bearer {api_key}"))
        return ConnectRequest(url, tuple(headers))

    def delegation_config(self) -> dict:
        d: dict = {"type": self.delegation}
        if self.delegation == "responses":
            r: dict = {"model": self.backend_model, **self.backend}
            if self.tools:
                r["tools"] = [_function_tool(t) if "name" in t and t.get("type", "function")
                              == "function" else t for t in self.tools]
                r.setdefault("tool_choice", "auto")
            d["responses"] = r
        if self.acknowledgement_delay_ms is not None:
            d["acknowledgement_delay_ms"] = int(self.acknowledgement_delay_ms)
        return d

    def session_config(self) -> dict:
        """`session.start.session`: only fields of the package's SessionConfig."""
        fmt = self.output_format
        f: dict = {"type": _WIRE_FORMAT[fmt.codec], "rate": fmt.rate}
        audio: dict = {"format": f}
        if self.voice:
            audio["output"] = {"voice": self.voice}
        s: dict = {"model": self.model}
        if self.instructions:
            s["instructions"] = self.instructions
        s["audio"] = audio
        s["delegation"] = self.delegation_config()
        if self.store is not None:
            s["store"] = bool(self.store)
        return s

    def configure(self) -> list[bytes]:
        return [orjson.dumps({"type": "session.start", "event_id": "evt_start",
                              "session": self.session_config()})]

    def append_audio(self, b64: str) -> bytes:
        return _APPEND_HEAD + b64.encode("ascii") + b'"}'

    def start_activity(self) -> list[bytes]:
        return []

    def end_turn(self) -> list[bytes]:
        return []  # the model hears the silence after the speech: nothing marks a turn's end

    def cancel(self) -> list[bytes]:
        return []  # barge-in is the model's: speaking over it is the only way to stop a reply

    def close(self) -> list[bytes]:
        """`session.close`: the server answers `session.closed` (reason, final usage)."""
        return [b'{"type":"session.close"}']

    def mute(self) -> list[bytes]:
        return [b'{"type":"session.input_audio.mute"}']

    def unmute(self) -> list[bytes]:
        return [b'{"type":"session.input_audio.unmute"}']

    def _append(self, kind: str, content: str, delegation_id: str | None) -> bytes:
        # delegation_id is required and nullable: always sent
        return orjson.dumps({"type": f"session.{kind}.append", "content": content,
                             "delegation_id": delegation_id})

    def commentary(self, content: str, delegation_id: str | None = None) -> list[bytes]:
        """Text the model should say (a client delegation's result, or a nudge to speak)."""
        return [self._append("commentary", content, delegation_id)]

    def thinking(self, content: str, delegation_id: str | None = None) -> list[bytes]:
        """Silent context (a client delegation's progress)."""
        return [self._append("thinking", content, delegation_id)]

    def append_instructions(self, content: str, delegation_id: str | None = None) -> list[bytes]:
        return [self._append("instructions", content, delegation_id)]

    def update_delegation(self, **changes) -> list[bytes]:
        """`session.update`: only delegation can change, and only within its type."""
        d = {"type": self.delegation}
        if self.delegation == "responses":
            d["responses"] = changes
        elif changes:
            raise ValueError("a client delegation has nothing to update")
        return [orjson.dumps({"type": "session.update", "session": {"delegation": d}})]

    def function_output(self, call_id: str, output: str) -> bytes:
        item = {"type": "function_call_output", "call_id": call_id, "output": output}
        return orjson.dumps({"type": "response.item.create", "item": item})

    def response_create(self) -> list[bytes]:
        """Continue the Responses backend (it waits for this after function outputs)."""
        return [b'{"type":"response.create"}']

    def delegation_result(self, delegation_id: str, content: str) -> list[bytes]:
        """Client mode: the delegation's answer, for the model to speak."""
        self.delegations.pop(delegation_id, None)
        return self.commentary(content, delegation_id)

    def tool_results(self, results: list[tuple[str, str]]) -> list[bytes]:
        """Responses mode, several calls answered at once: every output, then one
        response.create."""
        out = []
        for call_id, output in results:
            self._answered(call_id)
            out.append(self.function_output(call_id, output))
        return out + self.response_create()

    def tool_result(self, call_id: str, output: str, name: str = "") -> list[bytes]:
        """The answer to a ToolCall: commentary for a client delegation; else the function's
        output, plus response.create once no other call of its delegation awaits an output."""
        if self.delegations.get(call_id) == "client" or (
                call_id not in self._calls and self.delegation == "client"):
            return self.delegation_result(call_id, output)
        last = self._answered(call_id)
        msgs = [self.function_output(call_id, output)]
        return msgs + self.response_create() if last else msgs

    def _answered(self, call_id: str) -> bool:
        """Mark a call answered; True when its delegation has no other call awaiting output."""
        did = self._calls.pop(call_id, None)
        if did is None:
            return True
        waiting = self._open_calls.get(did)
        if waiting is not None:
            waiting.discard(call_id)
            if waiting:
                return False
            del self._open_calls[did]
        return True

    def user_text(self, text: str) -> list[bytes]:
        raise ValueError("GPT-Live has no typed user message: the model only hears audio "
                         "(commentary() makes it say something)")

    # ---- frames -> events --------------------------------------------------------------

    def parse(self, frame: bytes | str) -> tuple[Event, ...]:
        if isinstance(frame, str):  # a lone surrogate stays invalid UTF-8 for orjson to reject
            frame = frame.encode("utf-8", "surrogatepass")
        if len(frame) >= _FAST_MIN:
            ev = _fast_audio(frame)
            if ev is not None:
                return (ev,)
        t, msg = typed_object(frame)
        try:
            events = self._events(t, msg)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise DialectError(f"{t}: unexpected shape ({type(e).__name__}: {e})") from None
        return events

    def _events(self, t: str, m: dict) -> tuple[Event, ...]:
        if t == _AUDIO_TYPE:
            d = m["delta"]
            if not isinstance(d, str):
                raise DialectError("delta is not a base64 string")
            return (AudioDelta(b64_decoded_len(len(d), min(2, len(d) - len(d.rstrip("=")))),
                               d.encode("utf-8", "surrogatepass")),)
        if t == "session.output_transcript.delta":
            return (TranscriptDelta(_text(m), _int_or_none(m.get("start_ms")),
                                    _int_or_none(m.get("end_ms"))),)
        if t == "session.input_transcript.delta":
            return (InputTranscript(_text(m), False, _int_or_none(m.get("start_ms")),
                                    _int_or_none(m.get("end_ms"))),)
        if t == "session.usage.updated":
            return (self._usage(m),)
        if t == "session.delegation.created":
            return self._delegation(m)
        if t == "response.event":
            return self._backend(m)
        if t in _ACKS:
            return (Ack(t, _int_or_none(m.get("start_ms")), _int_or_none(m.get("end_ms"))),)
        if t == "session.started":
            s = _obj(m.get("session"), "session")
            self.session_id = str(s.get("id") or "")
            self.expires_at = _int_or_none(s.get("expires_at"))
            return (SessionReady(self.session_id),)
        if t == "session.updated":
            return (SessionConfigured(),)
        if t == "session.closed":
            reason = m.get("reason")
            self.close_reason = reason if isinstance(reason, str) else "unknown"
            u = m.get("usage")
            sec = _seconds(u.get("seconds")) if isinstance(u, dict) else None
            if sec is not None:
                self.usage_seconds = sec
                self.paused_seconds = _int_or_none(u.get("paused_seconds"))
            return (SessionClosed(self.close_reason, sec),)
        if t == "error":
            e = _obj(m.get("error") or {}, "error")
            return (ServerError(str(e.get("code") or e.get("type") or "unknown"),
                                str(e.get("message") or ""), str(e.get("type") or "")),)
        if t == "info":
            return (Info(str(m.get("code") or ""), str(m.get("message") or "")),)
        if t in _IGNORED:
            return (Ignored(t),)
        self.unknown_events += 1
        return (Unknown(t),)

    def _usage(self, m: dict) -> UsageUpdated:
        u = _obj(m["usage"], "usage")
        sec = _seconds(u.get("seconds"))
        if sec is None:
            raise DialectError("usage.seconds is not a number")
        self.usage_seconds = sec
        self.paused_seconds = paused = _int_or_none(u.get("paused_seconds"))  # cumulative too
        cw = m.get("context_window")
        ratio = cw.get("usage_ratio") if isinstance(cw, dict) else None
        return UsageUpdated(sec, _int_or_none(u.get("active_seconds")), paused,
                            float(ratio) if isinstance(ratio, int | float)
                            and not isinstance(ratio, bool) else None)

    def _remember(self, delegation_id: str, target: str) -> None:
        if len(self.delegations) >= MAX_DELEGATIONS:  # oldest first (dicts keep order)
            old = next(iter(self.delegations))
            del self.delegations[old]
            for c in self._open_calls.pop(old, ()):
                self._calls.pop(c, None)
        self.delegations[delegation_id] = target

    def _delegation(self, m: dict) -> tuple[Event, ...]:
        d = _obj(m["delegation"], "delegation")
        did = d["id"]
        if not isinstance(did, str) or not did:
            raise DialectError("delegation.id is not a string")
        target = str(d.get("target") or "")
        rid = d.get("response_id")
        ev = DelegationCreated(did, target, rid if isinstance(rid, str) else "",
                               _int_or_none(m.get("offset_ms")))
        self._remember(did, target)
        if target == "client":
            return ev, ToolCall(did, CLIENT_DELEGATION_NAME, "{}", did)
        return (ev,)

    def _backend(self, m: dict) -> tuple[Event, ...]:
        did = m.get("delegation_id")
        did = did if isinstance(did, str) else ""
        inner = _obj(m["event"], "event")
        it = inner.get("type")
        if not isinstance(it, str):
            raise DialectError("response.event.event has no string 'type'")
        if it == "response.output_item.done":
            item = _obj(inner["item"], "item")
            if item.get("type") == "function_call":
                call_id = str(item.get("call_id") or item.get("id") or "")
                args = item.get("arguments")
                if did:
                    if did not in self.delegations:
                        self._remember(did, "responses")
                    self._open_calls.setdefault(did, set()).add(call_id)
                    self._calls[call_id] = did
                return (ToolCall(call_id, str(item.get("name") or ""),
                                 args if isinstance(args, str) else "", did),)
        if it in _BACKEND_DONE or it == "response.created":
            r = inner.get("response")
            r = r if isinstance(r, dict) else {}
            status = r.get("status")
            status = status if isinstance(status, str) else it.rsplit(".", 1)[-1]
            err = r.get("error")
            code = err.get("code") if isinstance(err, dict) else None
            return (BackendEvent(did, it, str(r.get("id") or ""), status,
                                 parse_usage(_backend_usage(r.get("usage"))),
                                 code if isinstance(code, str) else None),)
        return (BackendEvent(did, it),)


def _obj(v, name: str) -> dict:
    if not isinstance(v, dict):
        raise DialectError(f"{name} is not an object")
    return v


def _text(m: dict) -> str:
    d = m.get("delta")
    return d if isinstance(d, str) else ""


def _seconds(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    v = float(v)
    return v if v == v and abs(v) != float("inf") else None


def _backend_usage(u) -> dict | None:
    """Responses usage (input_tokens_details / output_tokens_details) in Realtime's names, so
    one parser reads both; only the text counts, as the backend's tokens are text."""
    if not isinstance(u, dict):
        return None
    ind = u.get("input_tokens_details")
    cached = ind.get("cached_tokens") if isinstance(ind, dict) else 0
    nums = {k: u.get(k) for k in ("input_tokens", "output_tokens")}
    nums = {k: v for k, v in nums.items() if isinstance(v, int) and not isinstance(v, bool)}
    if not nums:
        return None
    return {**nums, "input_token_details": {"text_tokens": nums.get("input_tokens", 0),
                                            "cached_tokens": cached if isinstance(cached, int)
                                            and not isinstance(cached, bool) else 0},
            "output_token_details": {"text_tokens": nums.get("output_tokens", 0)}}


def _fast_audio(frame: bytes) -> AudioDelta | None:
    """An output audio delta without tokenising its base64: the string is cut out and the
    small rest parsed (so the frame is still validated as JSON); None lets the full parse
    decide. The base64 is kept as a bytes slice for the engine's onset gate."""
    d = frame.find(_P_DELTA)
    if d < 0:
        return None
    q1 = d + 7
    n = len(frame)
    while q1 < n and frame[q1] in b" \t\r\n:":
        q1 += 1
    if q1 >= n or frame[q1] != 0x22:
        return None
    q2 = frame.find(b'"', q1 + 1)
    if q2 < 0 or frame.find(b"\\", q1, q2) >= 0:
        return None
    try:
        rest = orjson.loads(frame[:q1] + b"0" + frame[q2 + 1:])
    except orjson.JSONDecodeError:
        return None
    if type(rest) is not dict or rest.get("type") != _AUDIO_TYPE:
        return None
    chars = q2 - q1 - 1
    pad = (frame[q2 - 1] == 0x3D) + (frame[q2 - 2] == 0x3D) if chars >= 2 else 0
    return AudioDelta(b64_decoded_len(chars, pad), frame[q1 + 1:q2])
