"""OpenAI Realtime's wire shapes (GA and beta), as the simulator writes them: event names, a
reply's delta frames, response objects and usage.

Audio deltas are spliced from pre-encoded base64 into a bytes template, so a delta costs no JSON
encoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import orjson

MAX_APPEND_BYTES = 15 * 1024 * 1024  # the real service's per-append limit
APPEND_HEAD = b'{"type":"input_audio_buffer.append","audio":"'
RATE_LIMITS = [{"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60},
               {"name": "tokens", "limit": 50000, "remaining": 49950, "reset_seconds": 60}]
_OUTPUT_FORMAT_BETA = {"pcm16": "pcm16", "pcmu": "g711_ulaw", "pcma": "g711_alaw"}


@dataclass(slots=True)
class Names:
    """Event names that differ between the GA and beta shapes."""

    audio_delta: str
    audio_done: str
    transcript_delta: str
    transcript_done: str
    text_delta: str
    text_done: str
    out_audio_part: str
    out_text_part: str


GA_NAMES = Names("response.output_audio.delta", "response.output_audio.done",
                 "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
                 "response.output_text.delta", "response.output_text.done",
                 "output_audio", "output_text")
BETA_NAMES = Names("response.audio.delta", "response.audio.done",
                   "response.audio_transcript.delta", "response.audio_transcript.done",
                   "response.text.delta", "response.text.done", "audio", "text")


class ReplyWire:
    """One message response's delta frames; `eid` gives each frame its event_id."""

    __slots__ = ("names", "eid", "rid", "item_id", "_head", "_mid")

    def __init__(self, names: Names, eid: Callable[[], str], rid: str, item_id: str,
                 text_only: bool):
        self.names, self.eid, self.rid, self.item_id = names, eid, rid, item_id
        self._head = (b'{"type":"' + (names.text_delta if text_only else names.audio_delta).encode()
                      + b'","event_id":"')
        self._mid = (b'","response_id":"' + rid.encode() + b'","item_id":"' + item_id.encode()
                     + b'","output_index":0,"content_index":0,"delta":"')

    def audio(self, b64: bytes) -> bytes:
        return b"".join((self._head, self.eid().encode(), self._mid, b64, b'"}'))

    def text(self, text: str) -> bytes:
        return b"".join((self._head, self.eid().encode(), self._mid, orjson.dumps(text)[1:-1],
                         b'"}'))

    def transcript(self, text: str) -> bytes:
        return orjson.dumps({"type": self.names.transcript_delta, "response_id": self.rid,
                             "item_id": self.item_id, "output_index": 0, "content_index": 0,
                             "delta": text, "event_id": self.eid()})

    def malformed(self) -> bytes:
        return (b'{"type":"' + self.names.audio_delta.encode() + b'","event_id":"'
                + self.eid().encode() + b'","delta":"AAAA')

    def oversized(self, n: int) -> bytes:
        return (b'{"type":"' + self.names.audio_delta.encode() + b'","event_id":"'
                + self.eid().encode() + b'","response_id":"' + self.rid.encode()
                + b'","delta":"' + b"A" * n + b'"}')


def response(rid: str, conversation_id: str, status: str = "in_progress",
             details: dict | None = None, output: list | None = None,
             usage: dict | None = None) -> dict:
    return {"object": "realtime.response", "id": rid, "status": status,
            "status_details": details, "output": output or [], "conversation_id": conversation_id,
            "usage": usage, "metadata": None}


def done_response(ga: bool, cfg, text_only: bool, r: dict) -> dict:
    """Complete a response object for response.done with the session's output settings."""
    if ga:
        r["output_modalities"] = ["text"] if text_only else ["audio"]
        r["max_output_tokens"] = cfg.max_output_tokens
        if not text_only:
            r["audio"] = {"output": {"format": {"type": "audio/pcm", "rate": 24000}
                                     if cfg.output_format == "pcm16" else
                                     {"type": "audio/" + cfg.output_format},
                                     "voice": cfg.voice}}
    else:
        r["modalities"] = ["text"] if text_only else ["audio", "text"]
        r["output_audio_format"] = _OUTPUT_FORMAT_BETA[cfg.output_format]
    return r


def usage(ga: bool, in_text: int, input_audio_ms: float, text_tokens: int,
          audio_tokens: int) -> dict:
    """A response's usage: input audio at 10 tokens a second, the rest as counted."""
    in_audio = math.ceil(input_audio_ms / 100)
    out_details = {"text_tokens": text_tokens, "audio_tokens": audio_tokens}
    in_details = {"text_tokens": in_text, "audio_tokens": in_audio, "cached_tokens": 0}
    if ga:
        in_details["image_tokens"] = 0
        in_details["cached_tokens_details"] = {"text_tokens": 0, "audio_tokens": 0,
                                               "image_tokens": 0}
    return {"total_tokens": in_text + in_audio + text_tokens + audio_tokens,
            "input_tokens": in_text + in_audio, "output_tokens": text_tokens + audio_tokens,
            "input_token_details": in_details, "output_token_details": out_details}


def message_item(item_id: str, status: str, content: list) -> dict:
    return {"id": item_id, "object": "realtime.item", "type": "message", "status": status,
            "role": "assistant", "content": content}


def content_part(names: Names, text_only: bool, text: str) -> dict:
    return ({"type": names.out_text_part, "text": text} if text_only else
            {"type": names.out_audio_part, "transcript": text})
