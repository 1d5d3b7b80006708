"""One reply, whatever the protocol: when it starts, what it says, how its deltas are paced, which
faults strike it and what the ground truth records.

A protocol server supplies only its event shapes (a `Wire`) and what its protocol does when a
fault ends a reply (`Host.fault_end`); the schedule, the faults and the truth stamps are here, so
every protocol's timing is the same by construction:

- TTFA: sampled from the profile (times `ttfa_scale`) and stamped as `injected_ttfa_ms`; the first
  delta is due at trigger + TTFA.
- Deltas: `ceil(reply_ms / delta_ms)` slots on an absolute clock (pacing.py), the last one
  partial; the reply's words are spread over them (word j rides with delta j * n // words).
- Faults: picked per turn (plus the session's), keyed by `after_deltas`, applied just before that
  delta; a stall re-anchors the schedule so the stall is the gap.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from websockets.exceptions import ConnectionClosed

from . import audio, markers, pacing
from .faults import MUTE_KINDS, TURN_KINDS, Fault
from .limits import load_ttfa_ms
from .util import abort_rst

if TYPE_CHECKING:
    from .faults import FaultBoard
    from .profiles import Profile
    from .truth import TurnTruth


@dataclass(slots=True, kw_only=True)
class Reply:
    """One turn's reply as every protocol tracks it (a protocol subclasses it for its own)."""

    truth: TurnTruth
    trigger_ns: int  # when what it answers arrived: the TTFA runs from here
    task: asyncio.Task | None = None
    faults: dict[int, list[Fault]] = field(default_factory=dict)  # after_deltas -> faults
    sent: list[str] = field(default_factory=list)  # the reply's words sent (transcript or text)
    input_index: int | None = None  # the user input answered (markers.py counts them)


class Wire(Protocol):
    """One reply's delta frames in a protocol's shapes (bytes ready for the socket)."""

    def audio(self, b64: bytes) -> bytes: ...

    def text(self, text: str) -> bytes:
        """A text delta of a text-only reply."""

    def transcript(self, text: str) -> bytes | None:
        """The transcript of the audio just sent; None when the session did not ask for it."""

    def malformed(self) -> bytes: ...

    def oversized(self, n: int) -> bytes: ...


class Host(Protocol):
    """The session a reply runs in."""

    ws: object
    info: object  # .truth: the SessionTruth
    chan: object  # .write(payload) -> monotonic ns just before the write

    async def fault_end(self, reply: Reply, fault: Fault, due_ns: int) -> bool:
        """A fault the protocol itself acts out (close_1011, error_event, response_failed);
        False when the reply stops here; raises ConnectionClosed when the connection ends."""


def first_delta_ns(prof: Profile, rng, trigger_ns: int, truth: TurnTruth,
                   active: int = 0) -> int:
    """Sample this turn's TTFA (plus the profile's load term for `active` sessions), record it
    as truth, and return when the first delta is due."""
    ttfa_ms = prof.ttfa_ms.sample(rng) * prof.ttfa_scale + load_ttfa_ms(prof, active)
    truth.injected_ttfa_ms = round(ttfa_ms, 3)
    return trigger_ns + int(ttfa_ms * 1e6)


def schedule_faults(session_faults: list[Fault], board: FaultBoard, prof: Profile, model: str,
                    truth: TurnTruth) -> dict[int, list[Fault]]:
    """The turn's faults (the session's, then those picked for this turn) by `after_deltas`."""
    faults = list(session_faults)
    faults += board.pick(prof, model, TURN_KINDS, per="turn")
    out: dict[int, list[Fault]] = {}
    for f in faults:
        out.setdefault(int(f.params.get("after_deltas", 0)), []).append(f)
        truth.faults.append(f.record())
    return out


def take_mute(faults: dict[int, list[Fault]]) -> str:
    """Take the reply's silent-failure faults out of its schedule: "empty_reply" (no audio
    delta at all) wins over "silent_reply" (digital silence only); "" when it has neither."""
    kind = ""
    for i in list(faults):
        for f in faults[i]:
            if f.kind in MUTE_KINDS and kind != "empty_reply":
                kind = f.kind
        keep = [f for f in faults[i] if f.kind not in MUTE_KINDS]
        if keep:
            faults[i] = keep
        else:
            del faults[i]
    return kind


#: the byte of a zero sample: PCM16 0x0000, G.711 mu-law 0xFF, A-law 0xD5
_ZERO = {"pcm16": b"\x00\x00", "pcmu": b"\xff", "pcma": b"\xd5"}
_silence: dict[tuple[str, int], bytes] = {}


def silence_b64(fmt: str, samples: int) -> bytes:
    """Base64 of `samples` of digital silence in `fmt` (cached)."""
    key = (fmt, samples)
    b = _silence.get(key)
    if b is None:
        b = _silence[key] = base64.b64encode(_ZERO[fmt] * samples)
    return b


async def sleep_until(ns: int) -> None:
    wait = ns - time.monotonic_ns()
    if wait > 0:
        await asyncio.sleep(wait / 1e9)


async def apply_faults(host: Host, reply: Reply, wire: Wire, i: int, slot: list[int]) -> bool:
    """Apply the faults due before delta i. Returns False when the reply must stop here."""
    for f in reply.faults.pop(i, ()):
        k = f.kind
        if k == "stall":
            await asyncio.sleep(float(f.params["stall_s"]))
            slot[0] = time.monotonic_ns() - i * slot[1]  # re-anchor: the stall is the gap
        elif k == "malformed_json":
            await host.chan.write(wire.malformed())
        elif k == "oversized":
            await host.chan.write(wire.oversized(int(f.params["bytes"]) // 4 * 4))
        elif k == "drop":
            reply.truth.status = "dropped"
            host.info.truth.outcome = "dropped"
            abort_rst(host.ws)
            raise ConnectionClosed(None, None)
        elif not await host.fault_end(reply, f, slot[0] + i * slot[1]):
            return False
    return True


class ReplyPlan:
    """A spoken (or text-only) reply: its length, its words per delta and its delta schedule."""

    __slots__ = ("reply_ms", "delta_ms", "n", "per_delta", "slot", "jitter", "clip", "offset",
                 "text_only", "rng", "fmt", "lead")

    def __init__(self, prof: Profile, rng, first_ns: int, truth: TurnTruth, fmt: str,
                 text_only: bool = False):
        self.reply_ms = reply_ms = max(1, round(prof.reply_s.sample(rng) * 1000))
        self.delta_ms = delta_ms = prof.delta_ms
        self.n = n = math.ceil(reply_ms / delta_ms)
        truth.planned_audio_ms = reply_ms
        words = markers.reply_text(reply_ms / 1000, prof.reply_text).split()
        self.per_delta: list[list[str]] = [[] for _ in range(n)]
        for j, w in enumerate(words):
            self.per_delta[j * n // len(words)].append(w)
        self.slot = [first_ns, int(delta_ms * 1e6 / prof.speed)]  # a stall moves slot[0]
        self.jitter = pacing.jitter_of(prof)
        self.clip = audio.reply_clip(fmt, delta_ms)
        self.offset = rng.randrange(len(self.clip.chunks_b64))
        self.text_only = text_only
        self.rng = rng
        self.fmt = fmt
        self.lead = round(prof.lead_silence_ms / delta_ms)  # deltas of leading silence

    async def play(self, host: Host, reply: Reply, wire: Wire, lateness) -> bool:
        """Write the deltas on schedule, stamping the reply's truth around each write; the words
        sent go to `reply.sent`. Returns False when a fault ended the reply (it has then said so
        itself)."""
        slot, jitter, rng, clip, offset = self.slot, self.jitter, self.rng, self.clip, self.offset
        n, delta_ms, per_delta = self.n, self.delta_ms, self.per_delta
        truth, faults, sent = reply.truth, reply.faults, reply.sent
        write = host.chan.write
        mute = take_mute(faults)
        rate, width = audio.FORMATS[self.fmt]
        for i in range(n):
            if i in faults and not await apply_faults(host, reply, wire, i, slot):
                return False
            deadline = await pacing.until_due(i, slot, jitter, rng)
            words = per_delta[i]
            if self.text_only:
                if not words:
                    continue
                t = await write(wire.text(" ".join(words) + " "))
                if truth.first_text_ns is None:
                    truth.first_text_ns = t
                sent.extend(words)
                continue
            chunk_ms = delta_ms if i < n - 1 else self.reply_ms - (n - 1) * delta_ms
            if mute == "silent_reply" or i < self.lead:
                b64 = silence_b64(self.fmt, int(rate * chunk_ms / 1000))
            else:
                b64 = clip.chunk(offset + i) if chunk_ms == delta_ms else clip.partial(
                    offset + i, chunk_ms)
            if mute != "empty_reply":
                t = await write(wire.audio(b64))
                pacing.audio_sent(truth, lateness, t, deadline, chunk_ms)
            if words:
                frame = wire.transcript(" ".join(words) + " ")
                if frame is not None:
                    t2 = await write(frame)
                    if truth.first_text_ns is None:
                        truth.first_text_ns = t2
                    sent.extend(words)
        for i in sorted(faults):
            if not await apply_faults(host, reply, wire, i, slot):
                return False
        return True
