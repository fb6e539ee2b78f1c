"""Benchmark decontamination: drop training documents that share a word n-gram with evaluation text.

The GPT-3 recipe (Brown et al. 2020, appendix C): text is normalised (lower-case, words only:
punctuation and whitespace differences do not matter) and a document sharing any word 13-gram
with any evaluation text is dropped.

Evaluation texts come from ``eval_dir``, searched recursively: every ``*.txt`` file is one text;
every line of a ``*.jsonl`` file is a JSON object whose ``"text"`` field is one text (lines
without one are skipped). Texts shorter than ``ngram_size`` words contribute no n-gram.

Hashing is deterministic, the same in every process and run: each word is hashed with
BLAKE2b-64, an n-gram's hash is a polynomial over its words' hashes modulo 2^64 followed by
the splitmix64 finaliser, computed for a whole document at once with NumPy. The evaluation
hashes are kept as a sorted ``uint64`` array (8 bytes per n-gram, ~80 MB for 10 M n-grams),
looked up with binary search.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from tokenmill.spark_jobs.steps import DocumentStep

log = logging.getLogger("tokenmill.data")

_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script; punctuation and '_' split words
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible modulo 2^64
_WORD_CACHE_LIMIT = 1_000_000


def normalized_words(text: str) -> list[str]:
    """Lower-cased words of a text, punctuation and whitespace dropped."""
    return _WORD.findall(text.lower())


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


# ASCII bytes that are not letters or digits become spaces; bytes >= 0x80 (UTF-8 sequences) stay.
_ASCII_SEPARATORS = bytes(b if (b >= 0x80 or chr(b).isalnum()) else 0x20 for b in range(256))


class NGramHasher:
    """Deterministic 64-bit hashes of the word n-grams of a text."""

    def __init__(self, n: int):
        self.n = n
        self._cache: dict[bytes, int] = {}

    def _word_hash(self, word: bytes) -> int:
        h = self._cache.get(word)
        if h is None:
            h = self._cache[word] = int.from_bytes(hashlib.blake2b(word, digest_size=8).digest(), "little")
        return h

    def word_hashes(self, text: str) -> np.ndarray:
        """One uint64 per word of ``normalized_words(text)``, in order.

        Fast path for the common case: the lower-cased UTF-8 bytes are split on ASCII
        non-alphanumerics with ``bytes.translate``; only the tokens that still hold non-ASCII
        characters go through the Unicode word regex. The words are exactly those of
        ``normalized_words``.
        """
        cache = self._cache
        if len(cache) > _WORD_CACHE_LIMIT:
            cache.clear()
        get = cache.get
        out: list[int] = []
        append = out.append
        for token in text.lower().encode("utf-8", "surrogatepass").translate(_ASCII_SEPARATORS).split():
            h = get(token)
            if h is not None:
                append(h)
            elif token.isalnum():  # bytes.isalnum: ASCII letters and digits only
                append(self._word_hash(token))
            else:
                for word in _WORD.findall(token.decode("utf-8", "surrogatepass")):
                    append(self._word_hash(word.encode("utf-8", "surrogatepass")))
        return np.array(out, dtype=np.uint64)

    def hashes(self, text: str) -> np.ndarray:
        """One uint64 per n-gram (empty when the text has fewer than ``n`` words)."""
        w = self.word_hashes(text)
        if len(w) < self.n:
            return np.empty(0, dtype=np.uint64)
        count = len(w) - self.n + 1
        acc = np.zeros(count, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for i in range(self.n):  # acc = sum w[j+i] * MULT^(n-1-i)  (mod 2^64), Horner's rule
                acc = acc * _MULT + w[i : i + count]
            return _splitmix64(acc)


def iter_eval_texts(eval_dir: Path):
    """(path, text) of every evaluation text under ``eval_dir``, in a stable order."""
    for path in _eval_files(eval_dir):
        suffix = path.suffix.lower()
        if suffix == ".txt":
            yield path, path.read_text(encoding="utf-8", errors="replace")
        elif suffix == ".jsonl":
            with path.open(encoding="utf-8", errors="replace") as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(obj, dict) and isinstance(obj.get("text"), str):
                        yield path, obj["text"]


_TABLES: dict[tuple, tuple[np.ndarray, dict[str, int]]] = {}


def _eval_files(eval_dir: Path) -> list[Path]:
    return sorted(p for p in eval_dir.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".jsonl"))


def _fingerprint(eval_dir: Path) -> tuple:
    return tuple((str(p), st.st_size, st.st_mtime_ns) for p in _eval_files(eval_dir) for st in [p.stat()])


def _load_table(eval_dir: Path, n: int) -> tuple[np.ndarray, dict[str, int]]:
    """Sorted unique n-gram hashes of every evaluation text, and what was read."""
    hasher = NGramHasher(n)
    parts, files, texts, short = [], set(), 0, 0
    for path, text in iter_eval_texts(eval_dir):
        files.add(path)
        texts += 1
        h = hasher.hashes(text)
        if len(h):
            parts.append(h)
        else:
            short += 1
    table = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)
    stats = {"files": len(files), "texts": texts, "short_texts": short, "ngrams": int(len(table))}
    if not texts:
        log.warning("decontaminate: no .txt or .jsonl evaluation text under %s", eval_dir)
    log.info(
        "decontaminate: %d %d-grams from %d texts in %d files (%d texts shorter than %d words)",
        len(table),
        n,
        texts,
        len(files),
        short,
        n,
    )
    return table, stats


class NGramDecontaminator(DocumentStep):
    """Drops documents sharing a word ``ngram_size``-gram with any text under ``eval_dir``.

    Reason ``decontaminate_ngram_overlap``; counter ``decontaminate_ngram_hits`` (how many of the
    document's n-grams were found, only for dropped documents). ``eval_dir=None`` makes the step a
    no-op.
    """

    name = "decontaminate"

    def __init__(self, eval_dir: str | None = None, ngram_size: int = 13):
        if ngram_size < 1:
            raise ValueError(f"decontaminate.ngram_size must be at least 1, got {ngram_size}")
        self.ngram_size = int(ngram_size)
        if eval_dir in (None, ""):
            self.eval_dir = None
        else:
            if not Path(eval_dir).is_dir():
                raise FileNotFoundError(f"decontaminate.eval_dir {str(eval_dir)!r} does not exist (or is not a folder)")
            # Absolute, so Spark's Python workers find it whatever their working directory; on a
            # cluster it must be a path every worker can read (a shared file system).
            self.eval_dir = str(Path(eval_dir).resolve())
        self._hasher: NGramHasher | None = None
        self._eval_hashes: np.ndarray | None = None
        self.eval_stats: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Ship the configuration to Spark workers, not the (possibly large) n-gram table.
        return {**self.__dict__, "_hasher": None, "_eval_hashes": None}

    def setup(self) -> None:
        if self._eval_hashes is not None or self.eval_dir is None:
            return
        eval_dir = Path(self.eval_dir)
        if not eval_dir.is_dir():
            raise FileNotFoundError(f"decontaminate.eval_dir {self.eval_dir!r} does not exist (or is not a folder)")
        # One table per Python process and evaluation set (Spark reuses workers across tasks);
        # the files' sizes and mtimes are part of the key, so edited files are read again.
        key = (str(eval_dir.resolve()), self.ngram_size, _fingerprint(eval_dir))
        if key not in _TABLES:
            if len(_TABLES) >= 4:
                _TABLES.clear()
            _TABLES[key] = _load_table(eval_dir, self.ngram_size)
        self._eval_hashes, self.eval_stats = _TABLES[key]
        self._hasher = NGramHasher(self.ngram_size)

    def overlap(self, text: str | None) -> int:
        """How many of the text's n-grams occur in the evaluation set."""
        if self.eval_dir is None or not text:
            return 0
        if self._eval_hashes is None:
            self.setup()
        table = self._eval_hashes
        if not len(table):
            return 0
        h = self._hasher.hashes(text)
        if not len(h):
            return 0
        idx = np.searchsorted(table, h)
        np.minimum(idx, len(table) - 1, out=idx)
        return int(np.count_nonzero(table[idx] == h))

    def process(self, doc: dict[str, Any]) -> str | None:
        hits = self.overlap(doc.get("text"))
        if not hits:
            return None
        stats = doc.setdefault("stats", {})
        stats["decontaminate_ngram_hits"] = stats.get("decontaminate_ngram_hits", 0) + hits
        return "decontaminate_ngram_overlap"
