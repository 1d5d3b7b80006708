"""Markers that let a scenario steer the simulated model deterministically.

- `[call:NAME {json args}]` in the latest user text item, the response.create instructions or the
  session instructions: the next response calls function NAME (if declared in tools) with those
  arguments. `[call!:NAME {json}]` sends the arguments as broken JSON (to test argument checks).
- `[call@K:NAME {json}]` / `[call!@K:NAME {json}]`: the same, but only for a response to user
  input K. An `@K` marker for the response's input wins over a plain one.
- `[transcript: words ...]` in the session instructions: the input transcription text. With
  several, the k-th transcribed user audio turn (0-based) gets the k-th; later turns repeat the last.
The simulator cannot understand audio, so these stand in for what the model "heard" and "decided".

User inputs are counted per session from 0, the same way for OpenAI Realtime and Gemini Live:
each committed user audio turn (OpenAI: server-VAD speech_stopped or input_audio_buffer.commit;
Gemini: a VAD- or activityEnd-ended turn; a barge-in's speech too) and each user text turn (OpenAI:
a conversation.item.create user message; Gemini: each user turn in clientContent, or a
realtimeInput text) is one input. A response belongs to the latest input before it; a response
that follows a function_call_output / toolResponse is not a new input and never calls.
Gemini reads markers from the session's systemInstruction only.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from dataclasses import dataclass

_CALL = re.compile(r"\[call(!?)(?:@(\d+))?:\s*([A-Za-z0-9_\-.]+)\s*")
_TRANSCRIPT = re.compile(r"\[transcript:\s*(.*?)\s*\]", re.S)

_FILLER = ("banana", "window", "orange", "pencil", "river", "candle", "marble", "ticket", "violet",
           "garden")


@dataclass(slots=True)
class CallMarker:
    name: str
    arguments: str  # exactly what goes on the wire (valid JSON unless broken)
    broken: bool


def _parse_call(m: re.Match, text: str) -> CallMarker | None:
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
    return CallMarker(m.group(3), payload, broken)


def call_for(text: str | None, input_index: int | None) -> CallMarker | None:
    """The call a response to user input `input_index` makes: the first `[call@K:...]` with
    K == input_index, else the first plain `[call:...]`. None for input_index means the response
    follows no user input, so only plain markers apply."""
    if not text:
        return None
    plain = None
    for m in _CALL.finditer(text):
        k = m.group(2)
        if k is None:
            if plain is None:
                plain = m
        elif input_index is not None and int(k) == input_index:
            return _parse_call(m, text)
    return _parse_call(plain, text) if plain is not None else None


def find_call(text: str | None) -> CallMarker | None:
    """The first plain `[call:...]` marker (per-input `@K` markers are ignored)."""
    return call_for(text, None)


def find_transcript(text: str | None) -> str | None:
    if not text:
        return None
    m = _TRANSCRIPT.search(text)
    return m.group(1) if m else None


def transcripts(text: str | None) -> list[str]:
    """Every `[transcript: ...]` marker's words, in order."""
    return _TRANSCRIPT.findall(text) if text else []


def transcript_for(text: str | None, k: int) -> str | None:
    """What user audio turn k (0-based) said: the k-th marker, the last one past the end."""
    found = transcripts(text)
    return found[min(k, len(found) - 1)] if found else None


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
