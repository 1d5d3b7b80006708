"""Word error rate of the server's input transcription against what was really said.

Both sides are normalised the same way first (case, punctuation, whitespace), so "Hello,
world." against "hello world" is 0: WER should count mis-heard words, not formatting.
"""

from __future__ import annotations

import re
import unicodedata

import jiwer

_PUNCT = re.compile(r"[^\w\s']|_")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub(" ", text).replace("'", "")
    return " ".join(text.split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words; 1.0 for an empty hypothesis
    of a non-empty reference (everything was missed)."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    if not hyp:
        return 1.0
    return float(jiwer.wer(ref, hyp))
