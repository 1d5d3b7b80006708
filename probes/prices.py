"""Per-model prices, USD per 1M tokens, and the cost of a response's usage.

Values from the protocol reference §10 (openai-realtime.md; gpt-realtime's come from third
parties, marked there). A model missing from the table costs None, never a guess; a price can
be overridden per target (Target.prices) or for the whole process (`PRICES.update(...)`).
Snapshot names (`gpt-realtime-2025-08-28`) resolve to their base model by longest prefix.

GPT-Live bills per second of session instead (silence, mute and backend waits included), not per
token: `SECOND_PRICES` and `session_cost_usd`, from the server's cumulative `usage.seconds`, or
the session's wall time when the server reported none. Its backend (Responses) tokens are billed
apart and are not counted here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from probes.results import Usage

_M = 1_000_000.0


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens."""

    text_in: float
    text_cached: float
    text_out: float
    audio_in: float
    audio_cached: float
    audio_out: float

    def cost(self, u: Usage) -> float:
        cached_audio = min(u.in_cached_audio, u.in_audio)
        cached_text = min(max(u.in_cached - cached_audio, 0), u.in_text)
        return (
            (u.in_text - cached_text) * self.text_in
            + cached_text * self.text_cached
            + u.out_text * self.text_out
            + (u.in_audio - cached_audio) * self.audio_in
            + cached_audio * self.audio_cached
            + u.out_audio * self.audio_out
        ) / _M


FREE = Price(0, 0, 0, 0, 0, 0)

PRICES: dict[str, Price] = {
    "gpt-realtime": Price(4.0, 0.40, 16.0, 32.0, 0.40, 64.0),
    "gpt-realtime-1.5": Price(4.0, 0.40, 16.0, 32.0, 0.40, 64.0),
    "gpt-realtime-mini": Price(0.60, 0.06, 2.40, 10.0, 0.30, 20.0),
    "gpt-4o-realtime-preview": Price(5.0, 2.50, 20.0, 40.0, 2.50, 80.0),
    "gpt-4o-realtime-preview-2024-10-01": Price(5.0, 2.50, 20.0, 100.0, 20.0, 200.0),
    "gpt-4o-mini-realtime-preview": Price(0.60, 0.30, 2.40, 10.0, 0.30, 20.0),
    # Gemini Live, paid tier (protocol reference gemini-live.md §6, quoted by third parties from
    # ai.google.dev/gemini-api/docs/pricing, not checked against it): CONFIGURABLE, override per
    # target (`prices:`) or with PRICES.update(). No cached-input discount is published for Live:
    # cached = uncached. No prices are known for gemini-3.1/3.8 Live: they cost None until set.
    "gemini-2.5-flash-native-audio*": Price(0.50, 0.50, 2.00, 3.00, 3.00, 12.00),
    "gemini-live-2.5-flash*": Price(0.50, 0.50, 2.00, 3.00, 3.00, 12.00),  # Vertex names
    "gemini-2.0-flash-live*": Price(0.35, 0.35, 1.50, 2.10, 2.10, 8.50),  # shut down 2025-12-09
    # the simulator's models: free, but priced (0 is a price, None is not)
    "sim-*": FREE,
}

_FIELDS = ("text_in", "text_cached", "text_out", "audio_in", "audio_cached", "audio_out")


def price_for(model: str, table: dict[str, Price] | None = None) -> Price | None:
    """The price of `model`: exact name, else the longest table name it starts with
    (`gpt-realtime-2025-08-28` -> `gpt-realtime`, a dated snapshot), `*` suffixes are prefixes."""
    table = PRICES if table is None else table
    if "/" in model and model not in table:  # Gemini `models/M`, Vertex `projects/.../models/M`
        model = model.rsplit("/", 1)[-1]
    if model in table:
        return table[model]
    best: tuple[int, Price] | None = None
    for name, price in table.items():
        prefix = name[:-1] if name.endswith("*") else name + "-"
        if model.startswith(prefix) and (best is None or len(prefix) > best[0]):
            # a dated snapshot must not take a sibling's price: "-mini" is not a date
            rest = model[len(prefix) :]
            if name.endswith("*") or rest[:1].isdigit():
                best = (len(prefix), price)
    return best[1] if best else None


def with_override(base: Price | None, override: dict[str, float] | None) -> Price | None:
    """Apply a partial per-1M override ({"audio_out": 64, ...}); a full override prices an
    unknown model, a partial one on an unknown model stays None (half a price is a guess)."""
    if not override:
        return base
    bad = set(override) - set(_FIELDS) - set(_SECOND_FIELDS)
    if bad:
        raise ValueError(f"unknown price keys {sorted(bad)}; expected some of "
                         f"{list(_FIELDS + _SECOND_FIELDS)}")
    override = {k: v for k, v in override.items() if k in _FIELDS}  # per-second keys: not here
    if not override:
        return base
    if base is None:
        if set(override) != set(_FIELDS):
            return None
        return Price(**{k: float(v) for k, v in override.items()})
    return replace(base, **{k: float(v) for k, v in override.items()})


def cost_usd(model: str, usage: Usage, override: dict[str, float] | None = None) -> float | None:
    price = with_override(price_for(model), override)
    return None if price is None else price.cost(usage)


# ---- per-second pricing (GPT-Live) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecondPrice:
    """USD per minute of session: active, and (gpt-live-1.1, WebRTC sessions configured for it)
    standby while inference is paused. Billed per second, not rounded (gpt-live.md §11)."""

    active_per_min: float
    standby_per_min: float | None = None

    def cost(self, seconds: float, paused_seconds: float = 0.0) -> float:
        paused = min(max(paused_seconds, 0.0), seconds) if self.standby_per_min is not None else 0.0
        return ((seconds - paused) * self.active_per_min
                + paused * (self.standby_per_min or 0.0)) / 60.0


SECOND_PRICES: dict[str, SecondPrice] = {
    "gpt-live-1": SecondPrice(0.05),
    "gpt-live-1.1": SecondPrice(0.05, 0.02),
    # the simulator's live models: priced like gpt-live-1, so a cost can be checked against the
    # seconds the simulator reports (its token models stay free)
    "sim-live*": SecondPrice(0.05),
}
_SECOND_FIELDS = ("active_per_min", "standby_per_min")
#: every key a target's `prices:` override may hold (per-1M-token and per-minute prices)
PRICE_KEYS = _FIELDS + _SECOND_FIELDS


def second_price_for(model: str, override: dict[str, float] | None = None,
                     table: dict[str, SecondPrice] | None = None) -> SecondPrice | None:
    """The per-second price of `model` (same name rules as price_for), None when it is not
    billed by the second. An override ({"active_per_min": 0.05}) may price an unknown model
    when it names the active rate."""
    base = price_for(model, SECOND_PRICES if table is None else table)
    over = {k: v for k, v in (override or {}).items() if k in _SECOND_FIELDS}
    if not over:
        return base
    if base is None:
        if "active_per_min" not in over:
            return None
        return SecondPrice(float(over["active_per_min"]),
                           None if over.get("standby_per_min") is None
                           else float(over["standby_per_min"]))
    return replace(base, **{k: float(v) for k, v in over.items()})


def session_cost_usd(model: str, seconds: float | None, wall_s: float | None,
                     override: dict[str, float] | None = None,
                     paused_seconds: float | None = None) -> float | None:
    """A per-second model's session cost: the server's cumulative usage `seconds` (the latest
    usage.updated or session.closed), else `wall_s` (the session's wall time) when the server
    reported none. None for a model not billed by the second, or with no duration at all."""
    price = second_price_for(model, override)
    if price is None:
        return None
    s = seconds if seconds is not None else wall_s
    if s is None or s < 0:
        return None
    return price.cost(float(s), float(paused_seconds or 0.0))


#: GPT-Live over WebRTC: a session is billed this many seconds when it is created, credited once
#: it runs (90 s cost 90 s, not 105 s); one that never starts still costs them (gpt-live.md §11)
WEBRTC_SETUP_S = 15.0


def webrtc_setup_cost_usd(model: str, override: dict[str, float] | None = None) -> float | None:
    """What a GPT-Live WebRTC session costs when it was answered but never started."""
    price = second_price_for(model, override)
    return None if price is None else price.cost(WEBRTC_SETUP_S)
