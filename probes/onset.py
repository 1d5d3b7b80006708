"""The stage between dialect and receiver that derives what a protocol leaves implicit from the
sound itself (docs/design.md, "One engine"): the audible onset of a reply and, for continuous
output, the reply's end.

It takes one frame's events and receive stamp and returns groups of (events, stamp) for the
receiver (probes/marks.py), which it never sees; the receive loop calls it like the dialect.

- `OnsetGate` (OpenAI Realtime, Gemini Live): puts an `AudibleOnset` right after the first
  AudioDelta of each reply that crosses the audible gate (probes/audible.py). It decodes only
  until that onset is found, and again after the reply's end (ResponseDone / Interrupted).
- `QuietGate` (continuous output, GPT-Live): the server streams quiet between replies, so a
  delta is reply audio only from a reply's audible onset (or its first output transcript: a
  reply the model said without sound) until the output has stayed below the gate for
  `quiet_ms`. Quiet deltas between replies are dropped; those inside a reply (a pause) are held
  and passed on, with their own stamps, when sound or transcript resumes; the end is a
  synthesised `ResponseDone(reason=output_quiet)` stamped with the first quiet delta's arrival
  (when the output fell below the gate), fed when the quiet stretch completes.
"""

from __future__ import annotations

from probes import audible
from probes.dialects.base import (
    OUTPUT_QUIET,
    AudibleOnset,
    AudioDelta,
    AudioFormat,
    Interrupted,
    ResponseDone,
    TranscriptDelta,
)

#: a reply's end after this much quiet output (continuous output); scenario/target `quiet_ms`
QUIET_MS = 800.0
_ONSET = AudibleOnset()


class OnsetGate:
    """The audible onset of each reply, for protocols that mark replies themselves."""

    __slots__ = ("fmt", "mean_square", "found")

    def __init__(self, fmt: AudioFormat, gate_dbfs: float = audible.GATE_DBFS) -> None:
        self.fmt = fmt
        self.mean_square = audible.threshold(gate_dbfs)
        self.found = False  # this reply's onset was seen: no more decoding until its end

    def feed(self, events: tuple, t: int) -> tuple:
        out: list | None = None
        for i, ev in enumerate(events):
            cls = type(ev)
            if cls is AudioDelta:
                if not self.found and ev.audio and audible.audible(ev.audio, self.fmt,
                                                                   self.mean_square):
                    self.found = True
                    out = list(events[:i + 1]) if out is None else out + [ev]
                    out.append(_ONSET)
                    continue
            elif cls is ResponseDone or cls is Interrupted:
                self.found = False
            if out is not None:
                out.append(ev)
        return ((events if out is None else tuple(out), t),)


class QuietGate:
    """Reply boundaries of a continuous output stream, from its sound (see the module doc)."""

    __slots__ = ("fmt", "mean_square", "quiet_ms", "ms_per_byte", "in_reply", "onset",
                 "pending", "quiet_from", "quiet_run_ms")

    def __init__(self, fmt: AudioFormat, quiet_ms: float = QUIET_MS,
                 gate_dbfs: float = audible.GATE_DBFS) -> None:
        self.fmt = fmt
        self.mean_square = audible.threshold(gate_dbfs)
        self.quiet_ms = quiet_ms
        self.ms_per_byte = 1000.0 / fmt.bytes_per_s
        self.in_reply = False
        self.onset = False  # the current reply has crossed the gate
        self.pending: list[tuple[AudioDelta, int]] = []  # quiet deltas inside a reply, held
        self.quiet_from: int | None = None  # arrival of the first delta of the quiet stretch
        self.quiet_run_ms = 0.0

    def feed(self, events: tuple, t: int) -> list:
        groups: list = []
        cur: list = []  # this frame's events, stamped t, in order
        for ev in events:
            cls = type(ev)
            if cls is AudioDelta:
                loud = audible.audible(ev.audio, self.fmt, self.mean_square)
                if loud:
                    if self.pending:  # flush the held pause before this frame's events
                        if cur:
                            groups.append((tuple(cur), t))
                            cur = []
                        groups.extend(((e,), ts) for e, ts in self.pending)
                        self.pending = []
                    self.quiet_from, self.quiet_run_ms = None, 0.0
                    self.in_reply = True
                    cur.append(ev)
                    if not self.onset:
                        self.onset = True
                        cur.append(_ONSET)
                elif self.in_reply:
                    if self.quiet_from is None:
                        self.quiet_from = t
                    self.pending.append((ev, t))
                    self.quiet_run_ms += ev.nbytes * self.ms_per_byte
                    if self.quiet_run_ms >= self.quiet_ms:
                        if cur:
                            groups.append((tuple(cur), t))
                            cur = []
                        groups.append(((ResponseDone("completed", reason=OUTPUT_QUIET),),
                                       self.quiet_from))
                        self.in_reply = self.onset = False
                        self.pending, self.quiet_from, self.quiet_run_ms = [], None, 0.0
                # quiet between replies: not reply audio, dropped
            elif cls is TranscriptDelta:
                if self.pending:
                    if cur:
                        groups.append((tuple(cur), t))
                        cur = []
                    groups.extend(((e,), ts) for e, ts in self.pending)
                    self.pending = []
                self.quiet_from, self.quiet_run_ms = None, 0.0
                self.in_reply = True  # the model is saying something, audible or not
                cur.append(ev)
            else:
                cur.append(ev)
        if cur:
            groups.append((tuple(cur), t))
        return groups


def gate_for(dialect, *, quiet_ms: float = QUIET_MS, gate_dbfs: float = audible.GATE_DBFS):
    """The stage for a dialect: QuietGate for continuous output (`continuous_output`), else
    OnsetGate."""
    fmt = dialect.output_format
    if getattr(dialect, "continuous_output", False):
        return QuietGate(fmt, quiet_ms, gate_dbfs)
    return OnsetGate(fmt, gate_dbfs)
