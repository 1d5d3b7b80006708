"""Gemini Live's wire shapes, as the simulator writes and reads them: paths, close codes and
reasons, key spelling, base64 flavours, a reply's delta frames and usage metadata."""

from __future__ import annotations

import binascii
import math
import re

import orjson

IN_RATE = 16000
OUT_MIME = b"audio/pcm;rate=24000"
AUDIO_TOKENS_PER_S = 25
QUOTA_REASON = "You exceeded your current quota, please check your plan and billing details."
INTERNAL_REASON = "Internal error encountered."
GO_AWAY_REASON = "The operation was aborted."
RATE_RE = re.compile(r"rate=(\d+)")
AUDIO_HEAD = b'{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":"'
AUDIO_TAIL = b'"}}}'
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_PART_HEAD = (b'{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"' + OUT_MIME
              + b'","data":"')
_PART_TAIL = b'"}}]}}}'

#: Paths served (after collapsing leading slashes); group 1 is the API version.
PATH_RE = re.compile(
    r"^/ws/google\.ai\.generativelanguage\.(v1|v1beta|v1alpha)\.GenerativeService\."
    r"BidiGenerateContent(Constrained)?$"
    r"|^/ws/google\.cloud\.aiplatform\.(v1|v1beta1)\.LlmBidiService/BidiGenerateContent$"
)


def close_for(code: str | None) -> tuple[int, str]:
    """A fault's error code -> (close code, reason) as Gemini reports it."""
    c = str(code or "").lower()
    if c in ("1007", "invalid_argument", "invalid_value", "invalid_request_error"):
        return 1007, "Request contains an invalid argument."
    if c in ("1008", "not_found", "policy_violation", "permission_denied"):
        return 1008, "Requested entity was not found."
    if c in ("rate_limit_exceeded", "quota", "resource_exhausted", "quota_exceeded"):
        return 1011, QUOTA_REASON
    return 1011, INTERNAL_REASON


def camel(k: str) -> str:
    if "_" not in k:
        return k
    head, *rest = k.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def camelize(obj):
    """snake_case keys -> camelCase, at every level."""
    if isinstance(obj, dict):
        return {camel(k) if isinstance(k, str) else k: camelize(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [camelize(v) for v in obj]
    return obj


def b64decode_any(b64: bytes | str) -> bytes:
    """Standard or URL-safe base64 (padding optional); raises ValueError."""
    if isinstance(b64, str):
        b64 = b64.encode("ascii", "replace")
    b64 = b64.translate(_URLSAFE)
    b64 += b"=" * (-len(b64) % 4)
    try:
        return binascii.a2b_base64(b64, strict_mode=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(str(e)) from None


class ReplyWire:
    """A reply's delta frames: `modelTurn` inline audio, `outputTranscription` if asked for."""

    __slots__ = ("transcribe",)

    def __init__(self, transcribe: bool):
        self.transcribe = transcribe

    def audio(self, b64: bytes) -> bytes:
        return _PART_HEAD + b64 + _PART_TAIL

    def text(self, text: str) -> bytes:  # Gemini replies are always audio
        raise NotImplementedError

    def transcript(self, text: str) -> bytes | None:
        if not self.transcribe:
            return None
        return orjson.dumps({"serverContent": {"outputTranscription": {"text": text}}})

    def malformed(self) -> bytes:
        return b'{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"data":"AAAA'

    def oversized(self, n: int) -> bytes:
        return _PART_HEAD + b"A" * n + _PART_TAIL


def usage(input_ms: float, in_text: int, reply_audio_ms: float) -> dict:
    """usageMetadata: 25 audio tokens a second in and out, plus the input's text tokens."""
    in_audio = math.ceil(input_ms * AUDIO_TOKENS_PER_S / 1000)
    out_audio = math.ceil(reply_audio_ms * AUDIO_TOKENS_PER_S / 1000)
    return {"promptTokenCount": in_audio + in_text, "responseTokenCount": out_audio,
            "totalTokenCount": in_audio + in_text + out_audio,
            "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": in_audio},
                                    {"modality": "TEXT", "tokenCount": in_text}],
            "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": out_audio}]}
