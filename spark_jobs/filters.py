"""Quality filters: each one says why a document is dropped, or nothing when it is kept."""

from __future__ import annotations

import re

_WORD = re.compile(r"\S+")


class DocumentFilter:
    """Base of every filter. ``name`` prefixes the reasons it gives."""

    name = "filter"

    def reject_reason(self, text: str) -> str | None:
        """Returns ``None`` if the document is kept, else the drop reason."""
        raise NotImplementedError


class GopherQualityFilter(DocumentFilter):
    """Word-count and mean-word-length rules of Gopher's quality filter (Rae et al. 2021, appendix A)."""

    name = "gopher"

    def __init__(self, min_words: int = 50, max_words: int = 100_000, min_mean_word_length: float = 3.0,
                 max_mean_word_length: float = 10.0):
        self.min_words = min_words
        self.max_words = max_words
        self.min_mean_word_length = min_mean_word_length
        self.max_mean_word_length = max_mean_word_length

    def reject_reason(self, text: str) -> str | None:
        words = _WORD.findall(text)
        if not words or not self.min_words <= len(words) <= self.max_words:
            return "gopher_word_count"
        mean_length = sum(len(w) for w in words) / len(words)
        if not self.min_mean_word_length <= mean_length <= self.max_mean_word_length:
            return "gopher_mean_word_length"
        return None
