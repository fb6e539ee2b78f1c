"""Published web-text quality filters: Gopher quality, Gopher repetition, C4 and FineWeb.

Each class is a ``DocumentFilter`` (keep / drop) or, for C4, a ``DocumentStep`` that also
rewrites the text. ``name`` is the step name used in configs; every drop reason starts with it.
Constructor keyword arguments are the config keys; their defaults are the published thresholds,
as plain YAML types (numbers, booleans, lists, ``{n: threshold}`` mappings).

Shared definitions (used by every filter below unless its docstring says otherwise):

* word: a maximal run of non-whitespace characters (``str.split()``), punctuation included;
* line: one element of ``text.splitlines()``, stripped of surrounding whitespace; blank lines
  are ignored (they are neither counted nor compared);
* paragraph: a block separated from the next by one or more blank lines, stripped.

Boundaries: a ``min_*`` threshold keeps a value equal to it and a ``max_*`` threshold keeps a
value equal to it (a document is dropped strictly below a minimum or strictly above a maximum).

The rules are re-implemented here from the papers (and the behaviour of the public reference
pipelines where a paper leaves a detail open); see each class for the choices made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from itertools import filterfalse
from operator import methodcaller
from typing import Any

import numpy as np

from tokenmill.spark_jobs.steps import DocumentFilter, DocumentStep

__all__ = [
    "DocumentFilter",
    "DocumentStep",
    "GopherQualityFilter",
    "GopherRepetitionFilter",
    "C4QualityFilter",
    "FineWebQualityFilter",
    "WordNgrams",
    "count_sentences",
    "TERMINAL_PUNCTUATION",
]

# ---------------------------------------------------------------------------------------------
# shared helpers


def _lines(text: str) -> list[str]:
    """Stripped non-blank lines."""
    return list(filter(None, map(str.strip, text.splitlines())))


_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def _paragraphs(text: str) -> list[str]:
    """Stripped non-blank paragraphs (blocks separated by one or more blank lines)."""
    return list(filter(None, map(str.strip, _PARAGRAPH_BREAK.split(text))))


def _repeats(elements: list[str]) -> tuple[int, int, int]:
    """``(repeated elements, characters in them, characters in all elements)``.

    An element is a repeat when an equal element came before it: the first occurrence of a
    line is not a duplicate, every later copy is (so ``a a a b`` has 2 repeats out of 4).
    """
    total = sum(map(len, elements))
    distinct = set(elements)
    if len(distinct) == len(elements):
        return 0, 0, total
    return len(elements) - len(distinct), total - sum(map(len, distinct)), total


# A line ends in terminal punctuation when its last character is one of these. C4 (Raffel et al.
# 2020, T5 c4_utils) uses . ? ! and "; we add ' (as DataTrove does), the typographic closing quotes,
# the ellipsis character (C4 already accepts the "." of "...") and the CJK full-width marks.
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "\u201d", "\u2019", "\u00bb", "\u2026", "\u3002", "\uff01", "\uff1f")
ELLIPSES = ("...", "\u2026")
_ends_terminal = methodcaller("endswith", TERMINAL_PUNCTUATION)


# ---------------------------------------------------------------------------------------------
# Gopher quality


BULLETS = ("\u2022", "\u2023", "\u25e6", "\u25aa", "\u25cf", "\u25cb", "\u25a0", "\u25a1", "\u2013", "-", "*")
_ALPHA = re.compile(r"[^\W\d_]")  # a letter: a word character that is not a digit or underscore


class GopherQualityFilter(DocumentFilter):
    """Drops documents failing MassiveText's quality rules (Rae et al. 2021, "Scaling Language Models", app. A).

    Rules, checked in this order, first failure wins:

    * ``word_count``: number of words (whitespace-separated, punctuation included) outside
      ``[min_words, max_words]``; an empty document always fails it, even with ``min_words=0``;
    * ``mean_word_length``: mean characters per word outside the bounds;
    * ``hash_ratio`` / ``ellipsis_ratio``: occurrences of ``#``, resp. of ``...`` or ``…``
      (non-overlapping), per word above ``max_symbol_word_ratio``;
    * ``bullet_lines``: share of non-blank lines starting with a bullet (``BULLETS``) above the max;
    * ``ellipsis_lines``: share of non-blank lines ending with ``...`` or ``…`` above the max;
    * ``alpha_words``: share of words containing at least one letter below ``min_alpha_words_ratio``;
    * ``stop_words``: fewer than ``min_stop_words`` occurrences of the stop words (whole words,
      case-insensitive; occurrences, not distinct words, as DataTrove and Dolma count them).
    """

    name = "gopher_quality"

    def __init__(
        self,
        min_words: int = 50,  # Rae et al. 2021, app. A: 50..100,000 words
        max_words: int = 100_000,  # Rae et al. 2021, app. A
        min_mean_word_length: float = 3.0,  # Rae et al. 2021, app. A: mean word length 3..10 characters
        max_mean_word_length: float = 10.0,  # Rae et al. 2021, app. A
        *,
        max_symbol_word_ratio: float = 0.1,  # Rae et al. 2021, app. A: "#" or ellipsis per word > 0.1
        max_bullet_lines_ratio: float = 0.9,  # Rae et al. 2021, app. A: > 90% of lines start with a bullet
        max_ellipsis_lines_ratio: float = 0.3,  # Rae et al. 2021, app. A: > 30% of lines end with an ellipsis
        min_alpha_words_ratio: float = 0.8,  # Rae et al. 2021, app. A: 80% of words contain a letter
        min_stop_words: int = 2,  # Rae et al. 2021, app. A: at least two of the stop words
        stop_words: Iterable[str] = ["the", "be", "to", "of", "and", "that", "have", "with"],  # Rae et al. 2021, app. A
    ):
        self.min_words = min_words
        self.max_words = max_words
        self.min_mean_word_length = min_mean_word_length
        self.max_mean_word_length = max_mean_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio = max_bullet_lines_ratio
        self.max_ellipsis_lines_ratio = max_ellipsis_lines_ratio
        self.min_alpha_words_ratio = min_alpha_words_ratio
        self.min_stop_words = min_stop_words
        self.stop_words = tuple(stop_words)
        alternatives = "|".join(sorted(map(re.escape, self.stop_words), key=len, reverse=True)) or "(?!)"
        self._stop_word = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def reject_reason(self, text: str) -> str | None:
        words = text.split()
        n_words = len(words)
        if not n_words or not self.min_words <= n_words <= self.max_words:
            return "gopher_quality_word_count"
        if not self.min_mean_word_length <= sum(map(len, words)) / n_words <= self.max_mean_word_length:
            return "gopher_quality_mean_word_length"
        if text.count("#") / n_words > self.max_symbol_word_ratio:
            return "gopher_quality_hash_ratio"
        if (text.count("...") + text.count("\u2026")) / n_words > self.max_symbol_word_ratio:
            return "gopher_quality_ellipsis_ratio"
        lines = _lines(text)  # not empty: there is at least one word
        if sum(map(methodcaller("startswith", BULLETS), lines)) / len(lines) > self.max_bullet_lines_ratio:
            return "gopher_quality_bullet_lines"
        if sum(map(methodcaller("endswith", ELLIPSES), lines)) / len(lines) > self.max_ellipsis_lines_ratio:
            return "gopher_quality_ellipsis_lines"
        # Words without a letter: only words that are not all letters need the regex.
        no_alpha = len(list(filterfalse(None, map(_ALPHA.search, filterfalse(str.isalpha, words)))))
        if (n_words - no_alpha) / n_words < self.min_alpha_words_ratio:
            return "gopher_quality_alpha_words"
        if self.min_stop_words > 0:
            found = 0
            for _ in self._stop_word.finditer(text):
                found += 1
                if found >= self.min_stop_words:
                    break
            else:
                return "gopher_quality_stop_words"
        return None


# ---------------------------------------------------------------------------------------------
# Gopher repetition


def _thresholds(value: Mapping[int, float] | Iterable[tuple[int, float]]) -> tuple[tuple[int, float], ...]:
    """``{n: threshold}`` or ``[[n, threshold], ...]`` (YAML gives either) as pairs sorted by n."""
    pairs = value.items() if isinstance(value, Mapping) else value
    out = tuple(sorted((int(n), float(t)) for n, t in pairs))
    if any(n < 1 for n, _ in out):
        raise ValueError(f"n-gram sizes must be >= 1, got {[n for n, _ in out]}")
    return out


_GRAM_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: x -> x * M + h mixes without losing bits


class WordNgrams:
    """A document's words as 64-bit ids, with word n-grams as 64-bit ids too (no string joins).

    A word's id is Python's string hash; an n-gram's id is the polynomial
    ``((h1 * M + h2) * M + h3) ...`` modulo 2**64, built from the (n-1)-gram ids in one vectorised
    step. Two different n-grams of one document share an id with probability about 2**-64.
    Character counts are over the words only (whitespace excluded).
    """

    def __init__(self, text: str):
        words = text.split()
        self.n_words = len(words)
        self.lengths = np.fromiter(map(len, words), dtype=np.int64, count=self.n_words)
        self.total_chars = int(self.lengths.sum())
        self.longest = int(self.lengths.max()) if self.n_words else 0
        self._word_ids = np.fromiter(map(hash, words), dtype=np.int64, count=self.n_words).view(np.uint64)
        self._ids, self._n = self._word_ids, 1

    def ids(self, n: int) -> np.ndarray:
        """Ids of the ``n_words - n + 1`` n-grams, by start position (call with increasing n: cheapest)."""
        if n < self._n:
            self._ids, self._n = self._word_ids, 1
        ids = self._ids
        for k in range(self._n, n):
            ids = ids[:-1] * _GRAM_MULTIPLIER + self._word_ids[k:]
        self._ids, self._n = ids, n
        return ids

    def covered_chars(self, starts: np.ndarray, n: int) -> int:
        """Characters of the words inside at least one n-gram whose start is marked in ``starts``
        (a bool array over n-gram positions): overlapping n-grams count each word once."""
        covered = np.convolve(starts, np.ones(n, dtype=np.int32)) > 0  # word j: a marked start in [j-n+1, j]
        return int(self.lengths[covered].sum())

    def top_ngram_fraction(self, n: int, at_most: float | None = None) -> float:
        """Share of characters covered by the most frequent n-gram (first seen among ties), 0.0 if no
        n-gram occurs twice. With ``at_most``, any value not above it may be returned as an upper bound
        (cheap bounds are tried before the exact count)."""
        if self.n_words < n:
            return 0.0
        ids = self.ids(n)
        ordered = np.sort(ids)
        boundaries = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1], [True])))
        runs = np.diff(boundaries)  # occurrences of each distinct n-gram, in id order
        top = int(runs.max())
        if top < 2:
            return 0.0
        bound = top * n * self.longest / self.total_chars  # overlaps counted twice: never below the exact value
        if at_most is not None and bound <= at_most:
            return bound
        candidates = ordered[boundaries[:-1][runs == top]]  # sorted ids of the most frequent n-grams
        if len(candidates) == 1:
            first = int(np.argmax(ids == candidates[0]))
        else:  # first position holding any of them
            first = int(np.argmax(candidates[np.searchsorted(candidates, ids).clip(max=len(candidates) - 1)] == ids))
        bound = top * int(self.lengths[first : first + n].sum()) / self.total_chars
        if at_most is not None and bound <= at_most:
            return bound
        return self.covered_chars(ids == ids[first], n) / self.total_chars

    def duplicate_ngram_fraction(self, n: int) -> float:
        """Share of characters covered by the repeats (every occurrence after the first) of any n-gram."""
        if self.n_words < n:
            return 0.0
        ids = self.ids(n)
        order = np.argsort(ids, kind="stable")  # equal ids stay in position order: the first is the original
        ordered = ids[order]
        equal_next = ordered[1:] == ordered[:-1]
        if not equal_next.any():
            return 0.0
        repeated = np.zeros(len(ids), dtype=bool)
        repeated[1:] = equal_next
        starts = np.empty_like(repeated)
        starts[order] = repeated
        return self.covered_chars(starts, n) / self.total_chars


class GopherRepetitionFilter(DocumentFilter):
    """Drops documents with repeated lines, paragraphs or word n-grams (Rae et al. 2021, app. A, table A1).

    Definitions (words, lines, paragraphs as in the module docstring; comparisons are exact,
    case and punctuation included):

    * ``dup_line_frac`` / ``dup_para_frac``: repeated lines (paragraphs) / all lines (paragraphs),
      where a repeat is a copy of an earlier line: its first occurrence does not count;
    * ``dup_line_char_frac`` / ``dup_para_char_frac``: characters in those repeats / characters
      in all lines (paragraphs), both measured on the stripped elements;
    * ``top_{n}gram``: characters of the words covered by the occurrences of the most frequent
      word n-gram / characters of all words (whitespace excluded). Only an n-gram occurring at
      least twice counts (a unique n-gram is not repetition); among equally frequent n-grams the
      first to appear is taken. Overlapping occurrences (``a a a``) count each word once;
    * ``dup_{n}gram``: characters of the words covered by the repeats of any n-gram (every
      occurrence after its first, as DataTrove and Dolma count them) / characters of all words;
      a word covered by several repeats counts once. Counting first occurrences too would drop
      about three times as much real prose (measured on docstring prose: 29 % against 10 %).

    Rules are checked in the order lines, paragraphs, top n-grams, duplicate n-grams (n
    increasing); the first failure wins. ``dup_{n}gram`` can only shrink as n grows (a repeated
    (n+1)-gram is made of repeated n-grams), so larger n are skipped once a smaller n is under
    their threshold. N-grams are counted on 64-bit ids with numpy (see ``WordNgrams``).
    """

    name = "gopher_repetition"

    def __init__(
        self,
        *,
        max_dup_line_frac: float = 0.30,  # Rae et al. 2021, table A1: duplicate line fraction
        max_dup_para_frac: float = 0.30,  # Rae et al. 2021, table A1: duplicate paragraph fraction
        max_dup_line_char_frac: float = 0.20,  # Rae et al. 2021, table A1: duplicate line character fraction
        max_dup_para_char_frac: float = 0.20,  # Rae et al. 2021, table A1: duplicate paragraph character fraction
        # Rae et al. 2021, table A1: top 2-gram 0.20, 3-gram 0.18, 4-gram 0.16 character fraction
        max_top_ngram_char_frac: Mapping[int, float] | Iterable[tuple[int, float]] = {2: 0.20, 3: 0.18, 4: 0.16},
        # Rae et al. 2021, table A1: duplicate 5..10-gram character fraction 0.15, 0.14, 0.13, 0.12, 0.11, 0.10
        max_dup_ngram_char_frac: Mapping[int, float] | Iterable[tuple[int, float]] = {
            5: 0.15,
            6: 0.14,
            7: 0.13,
            8: 0.12,
            9: 0.11,
            10: 0.10,
        },
    ):
        self.max_dup_line_frac = max_dup_line_frac
        self.max_dup_para_frac = max_dup_para_frac
        self.max_dup_line_char_frac = max_dup_line_char_frac
        self.max_dup_para_char_frac = max_dup_para_char_frac
        self.max_top_ngram_char_frac = _thresholds(max_top_ngram_char_frac)
        self.max_dup_ngram_char_frac = _thresholds(max_dup_ngram_char_frac)

    def reject_reason(self, text: str) -> str | None:
        for kind, elements, max_frac, max_char_frac in (
            ("line", _lines(text), self.max_dup_line_frac, self.max_dup_line_char_frac),
            ("para", _paragraphs(text), self.max_dup_para_frac, self.max_dup_para_char_frac),
        ):
            if not elements:
                continue
            repeats, repeat_chars, total = _repeats(elements)
            if repeats / len(elements) > max_frac:
                return f"gopher_repetition_dup_{kind}_frac"
            if repeat_chars / total > max_char_frac:
                return f"gopher_repetition_dup_{kind}_char_frac"

        grams = WordNgrams(text)
        if grams.total_chars == 0:
            return None
        for n, max_frac in self.max_top_ngram_char_frac:
            if grams.top_ngram_fraction(n, at_most=max_frac) > max_frac:
                return f"gopher_repetition_top_{n}gram"
        bound = 1.0  # an upper bound of dup_{n}gram for the n's still to check
        for n, max_frac in self.max_dup_ngram_char_frac:
            if bound <= max_frac:
                continue
            bound = grams.duplicate_ngram_fraction(n)
            if bound > max_frac:
                return f"gopher_repetition_dup_{n}gram"
        return None


# ---------------------------------------------------------------------------------------------
# C4


C4_POLICY_SUBSTRINGS = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)  # Raffel et al. 2020, T5 c4_utils
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)  # Wikipedia-style markers, T5 c4_utils
# A sentence ends at terminal punctuation (optionally closed by quotes/brackets) followed by whitespace.
_SENTENCE_BREAK = re.compile(r"[.!?\u2026\u3002\uff01\uff1f]+[\"'\u201d\u2019\u00bb)\]]*\s+(?=\S)")


def count_sentences(line: str) -> int:
    """Sentences in a stripped non-empty line: sentence breaks + 1 (a light stand-in for NLTK's punkt,
    which T5 used; abbreviations such as "e.g. " are counted as breaks)."""
    return len(_SENTENCE_BREAK.findall(line)) + 1


class C4QualityFilter(DocumentStep):
    """Keeps a document's prose lines and drops the document if too little remains (Raffel et al. 2020, C4).

    Line by line, on stripped non-blank lines, in the order of T5's ``c4_utils.clean_page``:

    1. a line with a word longer than ``max_word_length`` is removed;
    2. Wikipedia citation markers (``[1]``, ``[edit]``, ``[citation needed]``) are deleted
       (``remove_citations``);
    3. a line not ending in terminal punctuation (``TERMINAL_PUNCTUATION``), or ending in an
       ellipsis, is removed (``filter_no_terminal_punct``; FineWeb sets it to False);
    4. a line of fewer than ``min_words_per_line`` words is removed;
    5. a line containing "lorem ipsum" (any case) drops the document: ``c4_lorem_ipsum``;
    6. a line containing "javascript" (any case) is removed;
    7. a line containing "{" drops the document: ``c4_curly_bracket``;
    8. a line containing a policy phrase (``C4_POLICY_SUBSTRINGS``, any case) is removed.

    As in the reference code, rules 5 and 7 only look at lines that survived rules 1-4 (a "{" on a
    short or unpunctuated line, already removed, does not drop the page). Finally the document is
    dropped with ``c4_too_few_sentences`` if the kept lines hold fewer than ``min_sentences``
    sentences (``count_sentences``). A kept document's text becomes its kept lines joined by
    "\\n" and ``doc["stats"]["c4_lines_removed"]`` is increased by the number of non-blank lines
    removed; a dropped document is left untouched.
    """

    name = "c4"

    def __init__(
        self,
        *,
        filter_no_terminal_punct: bool = True,  # Raffel et al. 2020, 2.2: keep lines ending in terminal punctuation
        min_words_per_line: int = 5,  # Raffel et al. 2020, 2.2: discard lines with fewer than 5 words
        min_sentences: int = 3,  # Raffel et al. 2020, 2.2: discard pages with fewer than 3 sentences
        max_word_length: int = 1000,  # T5 c4_utils: lines with a word over 1000 characters are removed
        remove_citations: bool = True,  # T5 c4_utils: citation markers are deleted
        filter_lorem_ipsum: bool = True,  # Raffel et al. 2020, 2.2: remove pages with "lorem ipsum"
        filter_javascript: bool = True,  # Raffel et al. 2020, 2.2: remove lines with the word "javascript"
        filter_curly_bracket: bool = True,  # Raffel et al. 2020, 2.2: remove pages with a curly bracket
        filter_policy: bool = True,  # Raffel et al. 2020, 2.2 / T5 c4_utils: remove policy and cookie notices
    ):
        self.filter_no_terminal_punct = filter_no_terminal_punct
        self.min_words_per_line = min_words_per_line
        self.min_sentences = min_sentences
        self.max_word_length = max_word_length
        self.remove_citations = remove_citations
        self.filter_lorem_ipsum = filter_lorem_ipsum
        self.filter_javascript = filter_javascript
        self.filter_curly_bracket = filter_curly_bracket
        self.filter_policy = filter_policy

    def clean(self, text: str) -> tuple[str | None, str | None, int]:
        """``(kept text, None, lines removed)`` or ``(None, drop reason, lines removed so far)``."""
        kept: list[str] = []
        removed = 0
        sentences = 0
        for line in _lines(text):
            words = line.split()
            if self.max_word_length > 0 and max(map(len, words)) > self.max_word_length:
                removed += 1
                continue
            if self.remove_citations and "[" in line:
                line = _CITATION.sub("", line).strip()
                words = line.split()
                if not words:
                    removed += 1
                    continue
            if self.filter_no_terminal_punct and (not line.endswith(TERMINAL_PUNCTUATION) or line.endswith(ELLIPSES)):
                removed += 1
                continue
            if len(words) < self.min_words_per_line:
                removed += 1
                continue
            lower = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in lower:
                return None, "c4_lorem_ipsum", removed
            if self.filter_javascript and "javascript" in lower:
                removed += 1
                continue
            if self.filter_curly_bracket and "{" in line:
                return None, "c4_curly_bracket", removed
            if self.filter_policy and any(p in lower for p in C4_POLICY_SUBSTRINGS):
                removed += 1
                continue
            kept.append(line)
            sentences += count_sentences(line)
        if sentences < self.min_sentences or not kept:
            return None, "c4_too_few_sentences", removed
        return "\n".join(kept), None, removed

    def process(self, doc: dict[str, Any]) -> str | None:
        text, reason, removed = self.clean(doc["text"])
        if reason is not None:
            return reason
        doc["text"] = text
        stats = doc.get("stats")
        if stats is None:
            stats = doc["stats"] = {}
        stats["c4_lines_removed"] = stats.get("c4_lines_removed", 0) + removed
        return None


# ---------------------------------------------------------------------------------------------
# FineWeb


class FineWebQualityFilter(DocumentFilter):
    """Drops list-like, short-line and line-duplicated documents (Penedo et al. 2024, FineWeb's custom filters).

    On stripped non-blank lines, in this order, first failure wins:

    * ``fineweb_empty``: no non-blank line;
    * ``fineweb_line_punct_ratio``: share of lines ending in terminal punctuation
      (``TERMINAL_PUNCTUATION``) below ``line_punct_thr`` (a share of exactly 0 is kept when
      ``line_punct_exclude_zero``);
    * ``fineweb_short_line_ratio``: share of lines of at most ``short_line_length`` characters
      above ``short_line_thr`` (DataTrove, which produced FineWeb, counts ``len(line) <= 30``);
    * ``fineweb_char_dup_ratio``: characters in repeated lines (copies of an earlier line, as in
      ``GopherRepetitionFilter``) / characters in all lines above ``char_duplicates_ratio``;
    * ``fineweb_list_ratio``: newline characters in the raw text (blank lines included) per word
      above ``new_line_ratio``.
    """

    name = "fineweb"

    def __init__(
        self,
        *,
        line_punct_thr: float = 0.12,  # Penedo et al. 2024, FineWeb custom filters: lines ending in punctuation <= 0.12
        line_punct_exclude_zero: bool = False,  # DataTrove FineWebQualityFilter default
        short_line_thr: float = 0.67,  # Penedo et al. 2024: fraction of lines shorter than 30 chars >= 0.67
        short_line_length: int = 30,  # Penedo et al. 2024 / DataTrove: len(line) <= 30
        # Penedo et al. 2024: characters in duplicated lines >= 0.1 (DataTrove's code default is 0.01)
        char_duplicates_ratio: float = 0.1,
        new_line_ratio: float = 0.3,  # DataTrove FineWebQualityFilter (list-like documents): newlines / words > 0.3
    ):
        self.line_punct_thr = line_punct_thr
        self.line_punct_exclude_zero = line_punct_exclude_zero
        self.short_line_thr = short_line_thr
        self.short_line_length = short_line_length
        self.char_duplicates_ratio = char_duplicates_ratio
        self.new_line_ratio = new_line_ratio

    def reject_reason(self, text: str) -> str | None:
        lines = _lines(text)
        if not lines:
            return "fineweb_empty"
        n_lines = len(lines)
        punct = sum(map(_ends_terminal, lines)) / n_lines
        if punct < self.line_punct_thr and not (self.line_punct_exclude_zero and punct == 0):
            return "fineweb_line_punct_ratio"
        lengths = list(map(len, lines))
        if sum(map(self.short_line_length.__ge__, lengths)) / n_lines > self.short_line_thr:
            return "fineweb_short_line_ratio"
        _, repeat_chars, total = _repeats(lines)
        if repeat_chars / total > self.char_duplicates_ratio:
            return "fineweb_char_dup_ratio"
        if text.count("\n") / len(text.split()) > self.new_line_ratio:
            return "fineweb_list_ratio"
        return None
