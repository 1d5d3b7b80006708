"""Markers that let a scenario steer the simulated model deterministically.

- `[call:NAME {json args}]` in the latest user text item, the response.create instructions or the
  session instructions: the next response calls function NAME (if declared in tools) with those
  arguments. `[call!:NAME {json}]` sends the arguments as broken JSON (to test argument checks).
- `[transcript: words ...]` in the session instructions: the input transcription text.
The simulator cannot understand audio, so these stand in for what the model "heard" and "decided".
"""

from __future__ import annotations

import json
import random
import re
import zlib
from dataclasses import dataclass

_CALL = re.compile(r"\[call(!?):\s*([A-Za-z0-9_\-.]+)\s*")
_TRANSCRIPT = re.compile(r"\[transcript:\s*(.*?)\s*\]", re.S)

_FILLER = ("banana", "window", "orange", "pencil", "river", "candle", "marble", "ticket", "violet",
           "garden")


@dataclass(slots=True)
class CallMarker:
    name: str
    arguments: str  # exactly what goes on the wire (valid JSON unless broken)
    broken: bool


def find_call(text: str | None) -> CallMarker | None:
    if not text:
        return None
    m = _CALL.search(text)
    if not m:
        return None
    rest = text[m.end():]
    args: object = {}
    if rest.startswith("{"):
        try:
            args, _end = json.JSONDecoder().raw_decode(rest)
        except ValueError:
            return None
    payload = json.dumps(args, separators=(",", ":"))
    broken = m.group(1) == "!"
    if broken:
        payload = payload[:-1] if len(payload) > 1 else "{"  # drop the closing brace
    return CallMarker(m.group(2), payload, broken)


def find_transcript(text: str | None) -> str | None:
    if not text:
        return None
    m = _TRANSCRIPT.search(text)
    return m.group(1) if m else None


def inject_wer(text: str, wer: float, seed_key: str) -> str:
    """Substitute round(wer * words) words, chosen by a seed from `seed_key` (deterministic)."""
    words = text.split()
    n_err = round(wer * len(words))
    if n_err <= 0 or not words:
        return text
    rng = random.Random(zlib.crc32(seed_key.encode()))
    for i in rng.sample(range(len(words)), min(n_err, len(words))):
        choices = [w for w in _FILLER if w != words[i].lower()]
        words[i] = rng.choice(choices)
    return " ".join(words)


_REPLY_WORDS = ("Sure, I can help with that. The short answer is yes, and here is why: the "
                "weather today is mild, with light wind from the west and a chance of rain later "
                "in the evening, so take a coat if you go out.").split()


def reply_text(seconds: float, custom: str | None = None) -> str:
    """A reply transcript of about 2.5 words per second of audio."""
    if custom:
        return custom
    n = max(1, round(seconds * 2.5))
    return " ".join(_REPLY_WORDS[i % len(_REPLY_WORDS)] for i in range(n))
