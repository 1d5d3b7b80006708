"""Plain result types of one measured voice session, named exactly as docs/metrics.md's metric table.

Every latency is taken from the *intended* end of speech (E), so a late load generator shows
up as `send_lag_ms`, never as server slowness. The actual-send variant is kept alongside
(`*_sent_ms`). Absolute marks (`*_ns`) are on `time.perf_counter_ns()`, which on Linux is the
same CLOCK_MONOTONIC the simulator's ground truth uses, so tests compare them directly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

OK = "ok"

#: The stable error classes (docs/metrics.md "Outcome"). Parametrised ones are built by the helpers.
ERROR_CLASSES = (
    "dns",
    "connect_refused",
    "connect_timeout",
    "tls",
    "http_<status>",
    "ws_closed_<code>",
    "server_error:<code>",
    "response_failed:<code>",
    "timeout:<phase>",
    "protocol",
    "client_overload",
    "go_away",
    "session_expired",
    "config",  # the API key's environment variable is unset: nothing was sent
    "stopped",  # the caller's stop event ended the session: not a target failure
    "client_error",  # a bug in the engine itself, reported instead of raised
    "empty_reply",  # a reply (audio scenario) completed without one byte of audio
    "silent_reply",  # a reply's audio never crossed the audible gate (probes/audible.py)
)
#: A turn whose reply completed with no audio bytes / with audio that never crossed the gate.
EMPTY_REPLY = "empty_reply"
SILENT_REPLY = "silent_reply"

#: Token counts of a turn's usage: metric name -> `Usage` attribute.
TOKEN_METRICS = {
    "tokens_in_audio": "in_audio",
    "tokens_in_text": "in_text",
    "tokens_out_audio": "out_audio",
    "tokens_out_text": "out_text",
    "tokens_total": "total",
}

#: The metrics a plain voice turn carries, in storage order (fields of the `turn` point). Every
#: one is a `TurnResult` attribute of the same name, except the token counts (`TOKEN_METRICS`).
TURN_METRICS = (
    "ttfa_ms",
    "ttfa_audible_ms",
    "ttft_ms",
    "vad_ms",
    "turn_ms",
    "ttfa_sent_ms",
    "turn_sent_ms",
    "audio_s",
    "rtf",
    "stall_ms",
    "stalls",
    "gap_p95_ms",
    "send_lag_p50_ms",
    "send_lag_p99_ms",
    "send_lag_max_ms",
    "barge_in_ms",
    "barge_in_audio_ms",
    "tool_ms",
    "tool_result_ms",
    "wer",
    *TOKEN_METRICS,
    "cost_usd",
)
#: The turn metrics that are counts (stored as integers, never floats).
TURN_COUNTS = ("stalls", *TOKEN_METRICS)


def http_status(code: int) -> str:
    return f"http_{code}"


def ws_closed(code: int | None) -> str:
    return f"ws_closed_{code if code is not None else 1006}"


def timeout(phase: str) -> str:
    return f"timeout:{phase}"


def server_error(code: str | None) -> str:
    return f"server_error:{code or 'unknown'}"


def response_failed(code: str | None) -> str:
    return f"response_failed:{code or 'unknown'}"


@dataclass(slots=True)
class Usage:
    """Token usage of one response (from `response.done` / `usageMetadata`)."""

    in_audio: int = 0
    in_text: int = 0
    out_audio: int = 0
    out_text: int = 0
    in_cached: int = 0  # cached input tokens, all modalities (part of in_text + in_audio)
    in_cached_audio: int = 0  # the audio share of in_cached, when the server reports it

    @property
    def total(self) -> int:
        return self.in_audio + self.in_text + self.out_audio + self.out_text

    def add(self, other: Usage) -> None:
        self.in_audio += other.in_audio
        self.in_text += other.in_text
        self.out_audio += other.out_audio
        self.out_text += other.out_text
        self.in_cached += other.in_cached
        self.in_cached_audio += other.in_cached_audio


@dataclass(slots=True)
class TurnResult:
    """One user turn and the reply to it. A metric the turn never reached stays None."""

    index: int
    outcome: str = OK
    error: str = ""
    # latencies from the intended end of speech E (docs/metrics.md table)
    ttfa_ms: float | None = None
    ttfa_audible_ms: float | None = None  # E -> the first delta that crossed the audible gate
    ttft_ms: float | None = None
    vad_ms: float | None = None
    turn_ms: float | None = None
    # the same, from the moment the last speech chunk was actually sent
    ttfa_sent_ms: float | None = None
    turn_sent_ms: float | None = None
    # reply audio and its delivery
    audio_s: float = 0.0
    rtf: float | None = None
    stall_ms: float = 0.0
    stalls: int = 0
    gap_p95_ms: float | None = None
    # the generator's own health while sending this turn
    send_lag_p50_ms: float | None = None
    send_lag_p99_ms: float | None = None
    send_lag_max_ms: float | None = None
    # scenario metrics (None when the scenario had no such step)
    barge_in_ms: float | None = None  # user speaks over the reply -> the server stops it
    barge_in_audio_ms: float | None = None  # reply audio that still arrived after the user spoke
    tool_ms: float | None = None
    tool_result_ms: float | None = None
    wer: float | None = None
    checks: dict[str, bool] = field(default_factory=dict)  # scenario checks: name -> passed
    notes: str = ""  # why checks failed, in words
    # usage and price
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    response_status: str = ""
    transcript: str = ""
    transcript_end_ms: int | None = None  # GPT-Live: the reply transcript's end (session timeline)
    # WebRTC (probes/rtc.py): the onset packet's arrival -> its decoded frame out of the jitter
    # buffer; E -> Realtime's output_audio_buffer.started on the data channel (its own mark)
    playout_delay_ms: float | None = None
    audio_buffer_started_ms: float | None = None
    input_transcript: str = ""
    # absolute marks on perf_counter_ns (== CLOCK_MONOTONIC): E, first audio, done
    speech_end_ns: int | None = None
    speech_sent_ns: int | None = None
    first_audio_ns: int | None = None
    first_audible_ns: int | None = None
    response_done_ns: int | None = None
    barge_in_ns: int | None = None  # when the speech over this reply was due to start
    tool_result_sent_ns: int | None = None

    def metrics(self) -> dict[str, float | int]:
        """The numeric metrics that were measured, under their storage names (TURN_METRICS)."""
        out: dict[str, float | int] = {}
        for name in TURN_METRICS:
            attr = TOKEN_METRICS.get(name)
            v = getattr(self.usage, attr) if attr else getattr(self, name)
            if v is not None:
                out[name] = v
        return out


@dataclass(slots=True)
class SessionResult:
    """One whole session: connection, setup and its turns."""

    target: str
    provider: str
    model: str
    scenario: str = "default"
    kind: str = "probe"  # probe | load
    agent: str = ""
    run_id: str = ""
    session_id: str = ""
    server_session_id: str = ""  # the id the server gave the session (session.created), if any
    outcome: str = OK
    error: str = ""
    started_at: float = 0.0  # wall clock (epoch seconds) of connect start: the storage anchor
    connect_ms: float | None = None
    ready_ms: float | None = None
    duration_s: float = 0.0
    turns: list[TurnResult] = field(default_factory=list)
    send_lag_p99_ms: float | None = None
    unknown_events: int = 0
    go_away: bool = False
    # a scenario that expects the provider's session limit (`expect: session_expired`): how the
    # session ended (session_expired / go_away; the outcome stays ok) and ready -> that end
    ended_by: str = ""
    expiry_s: float | None = None
    connect_start_ns: int | None = None  # perf_counter_ns of connect start
    start_lag_ms: float | None = None  # connect start - intended start (load model), if given
    # per-second billing (GPT-Live): the server's cumulative usage.seconds and the session's
    # cost from it (probes.prices.session_cost_usd); turns then carry no cost of their own
    usage_seconds: float | None = None
    session_cost_usd: float | None = None
    # how the session reached the target, and (webrtc) the received RTP stream's health
    transport: str = "websocket"
    rtp_received: int | None = None
    rtp_lost: int | None = None
    rtp_late: int | None = None
    rtp_jitter_ms: float | None = None
    # a load run's synthetic caller (probes/callers.py Caller.label), "" when not drawn
    caller: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == OK

    @property
    def cost_usd(self) -> float | None:
        if self.session_cost_usd is not None:
            return self.session_cost_usd
        costs = [t.cost_usd for t in self.turns if t.cost_usd is not None]
        return sum(costs) if costs else None

    def to_dict(self) -> dict:
        return asdict(self)
