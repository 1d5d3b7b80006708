"""Energy-based voice activity detection on the simulator's input timeline.

Audio is judged in 10 ms frames. A frame is speech when its RMS level is above a level derived from
the session's `threshold` (0..1 -> -70..-10 dBFS, so the default 0.5 is -40 dBFS). Speech starts on
the first speech frame (reported `prefix_padding_ms` earlier, as the real service pads the item) and
stops once `silence_duration_ms` of non-speech follows the last speech frame. As in the real
service's events, `audio_end_ms` = end of the last speech frame + `silence_duration_ms`.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

import numpy as np

FRAME_MS = 10


def threshold_level(threshold: float) -> float:
    """Mean-square level (of int16 samples) above which a frame counts as speech."""
    dbfs = -70.0 + 60.0 * min(max(threshold, 0.0), 1.0)
    rms = 32768.0 * 10 ** (dbfs / 20)
    return rms * rms


@dataclass(slots=True)
class VadEvent:
    kind: str  # "start" | "stop"
    audio_ms: int  # audio_start_ms or audio_end_ms, on the input timeline
    speech_ms: int  # start: first speech frame; stop: end of the last speech frame


class EnergyVAD:
    def __init__(self, rate: int, threshold: float = 0.5, prefix_padding_ms: int = 300,
                 silence_duration_ms: int = 200):
        self.frame = rate * FRAME_MS // 1000
        self.level = threshold_level(threshold)
        self.prefix_padding_ms = int(prefix_padding_ms)
        self.silence_duration_ms = int(silence_duration_ms)
        self.frames_done = 0  # 10 ms frames consumed (input timeline position)
        self.carry = np.zeros(0, dtype=np.int16)
        self.in_speech = False
        self.last_speech_end_ms = 0  # end of the most recent speech frame

    def reset(self, position_ms: int | None = None) -> None:
        self.in_speech = False
        if position_ms is not None:
            self.frames_done = position_ms // FRAME_MS

    def feed(self, samples: np.ndarray) -> tuple[list[VadEvent], bool]:
        """Consume samples; return (events, whether any speech frame was seen in them)."""
        if self.carry.size:
            samples = np.concatenate((self.carry, samples))
        n = samples.size // self.frame
        self.carry = samples[n * self.frame:].copy() if samples.size % self.frame else self.carry[:0]
        if n == 0:
            return [], False
        x = samples[: n * self.frame].reshape(n, self.frame).astype(np.float32)
        return self.feed_energy(np.einsum("ij,ij->i", x, x) / self.frame)

    def feed_energy(self, energy: np.ndarray) -> tuple[list[VadEvent], bool]:
        """Consume whole 10 ms frames given as their mean-square levels."""
        n = energy.size
        base = self.frames_done
        self.frames_done += n
        voiced = (energy > self.level).tolist()  # small: Python any/all beat numpy calls here
        any_voiced = any(voiced)
        if not any_voiced and not self.in_speech:
            return [], False
        if self.in_speech and all(voiced):
            self.last_speech_end_ms = (base + n) * FRAME_MS  # still talking: the common case
            return [], True
        events: list[VadEvent] = []
        for i, v in enumerate(voiced):
            t_end = (base + i + 1) * FRAME_MS
            if v:
                if not self.in_speech:
                    self.in_speech = True
                    start = (base + i) * FRAME_MS
                    events.append(VadEvent("start", max(0, start - self.prefix_padding_ms), start))
                self.last_speech_end_ms = t_end
            elif self.in_speech and t_end - self.last_speech_end_ms >= self.silence_duration_ms:
                self.in_speech = False
                events.append(VadEvent("stop", self.last_speech_end_ms + self.silence_duration_ms,
                                       self.last_speech_end_ms))
        return events, any_voiced

    def feed_pcm16_b64(self, b64: bytes) -> tuple[list[VadEvent], bool] | None:
        """Fast path for 24 kHz pcm16 appends of whole frames: judge each 10 ms frame on a quarter
        of its samples, decoded straight from a strided view of the base64 (8 chars = 3 samples).
        Returns None when the chunk does not fit (then decode everything and call feed)."""
        fg = self.frame // 3  # base64 groups of 8 chars per frame
        if self.carry.size or self.frame % 3 or not b64 or len(b64) % (fg * 8):
            return None
        n = len(b64) // (fg * 8)
        picked = np.frombuffer(b64, dtype="S8").reshape(n, fg)[:, ::4]
        try:
            raw = binascii.a2b_base64(picked.tobytes())
        except binascii.Error:
            return None
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32).reshape(n, -1)
        return self.feed_energy((x * x).sum(axis=1) / x.shape[1])
