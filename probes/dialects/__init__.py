"""Provider protocols as sans-I/O codecs (see base.py for the contract)."""

from __future__ import annotations

from probes.dialects.base import Dialect, DialectError
from probes.dialects.gemini_live import GeminiLive
from probes.dialects.gpt_live import GptLive
from probes.dialects.openai_realtime import OpenAIRealtime

__all__ = ["Dialect", "DialectError", "GeminiLive", "GptLive", "OpenAIRealtime", "dialect_for"]


def dialect_for(target, turn_mode: str = "server_vad", *, interrupt_response: bool = True,
                silence_ms: int | None = None) -> Dialect:
    """The dialect for a probes.spec.Target. Raises ValueError for a provider we cannot speak.

    interrupt_response=False asks the server to finish its reply when the user speaks over it;
    silence_ms sets how long a pause ends the user's turn (server VAD), for real speech whose
    pauses between phrases are longer than the provider's default.
    """
    opts = {"interrupt_response": interrupt_response, "silence_ms": silence_ms}
    if target.provider in ("openai", "azure"):
        return OpenAIRealtime.for_target(target, turn_mode, **opts)
    if target.provider == "gemini":  # Gemini API, or Vertex AI by its URL (see gemini_live.py)
        return GeminiLive.for_target(target, turn_mode, **opts)
    if target.provider == "openai-live":  # GPT-Live, OpenAI or Azure by its URL (gpt_live.py)
        return GptLive.for_target(target, turn_mode, **opts)
    raise ValueError(f"provider {target.provider!r} has no dialect "
                     "(openai, azure, gemini, openai-live)")
