"""Energy-based voice activity detection on the simulator's input timeline.

Audio is judged in 10 ms frames. A frame is speech when its RMS level is above a level derived from
the session's `threshold` (0..1 -> -70..-10 dBFS, so the default 0.5 is -40 dBFS). Speech starts on
the first speech frame (reported `prefix_padding_ms` earlier, as the real service pads the item) and
stops once `silence_duration_ms` of non-speech follows the last speech frame. As in the real
service's events, `audio_end_ms` = end of the last speech frame + `silence_duration_ms`.
"""

from __future__ import annotations

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
        energy = np.einsum("ij,ij->i", x, x) / self.frame
        voiced = energy > self.level
        events: list[VadEvent] = []
        base = self.frames_done
        self.frames_done += n
        any_voiced = bool(voiced.any())
        if not any_voiced and not self.in_speech:
            return events, False
        idx = np.flatnonzero(voiced)
        # Walk only the transitions: speech frames and the silence deadline.
        for i in range(n):
            t_end = (base + i + 1) * FRAME_MS
            if voiced[i]:
                if not self.in_speech:
                    self.in_speech = True
                    start = (base + i) * FRAME_MS
                    events.append(VadEvent("start", max(0, start - self.prefix_padding_ms), start))
                self.last_speech_end_ms = t_end
            elif self.in_speech and t_end - self.last_speech_end_ms >= self.silence_duration_ms:
                self.in_speech = False
                events.append(VadEvent("stop", self.last_speech_end_ms + self.silence_duration_ms,
                                       self.last_speech_end_ms))
                if not idx.size or idx[-1] < i:
                    break
        return events, any_voiced
