"""tokenmill.spark_jobs.filters: Gopher quality, Gopher repetition, C4 and FineWeb filters.

Every threshold is tested at its boundary: one example just inside (kept) and one just outside
(dropped with the rule's reason), built here so the measured value is known exactly.
"""

from __future__ import annotations

import inspect
import math
import random
from collections import Counter

import pytest
import yaml

import tokenmill.spark_jobs.steps as steps
from tokenmill.spark_jobs.filters import (
    C4QualityFilter,
    DocumentFilter,
    DocumentStep,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    WordNgrams,
    count_sentences,
)

# ------------------------------------------------------------------------------------------------
# text builders


def words(n: int, length: int = 5) -> str:
    return " ".join(["w" * length] * n)


class Vocab:
    """Distinct alphabetic words ("qaaa", "qaab", ...) of a fixed length, never repeated."""

    def __init__(self, length: int = 4):
        self.length = length
        self.i = 0

    def word(self) -> str:
        i, letters = self.i, []
        self.i += 1
        for _ in range(self.length - 1):
            i, r = divmod(i, 26)
            letters.append(chr(97 + r))
        assert i == 0, "vocabulary exhausted"
        return "q" + "".join(reversed(letters))

    def words(self, n: int) -> list[str]:
        return [self.word() for _ in range(n)]

    def line(self, chars: int, end: str = ".") -> str:
        """Distinct words, exactly ``chars`` characters, ending with ``end``."""
        n = (chars - len(end) + 1) // (self.length + 1)
        ws = self.words(n)
        ws[-1] += "z" * (chars - len(end) - (n * (self.length + 1) - 1))
        out = " ".join(ws) + end
        assert len(out) == chars
        return out


# Real words, with stop words, mean length ~4.5: passes every Gopher quality rule.
FILLER = "the river ran past an old mill and under a narrow stone bridge near town".split()
NO_STOP_WORDS = "river ran past an old mill under a narrow stone bridge near town".split()


def filler(n: int) -> list[str]:
    return [FILLER[i % len(FILLER)] for i in range(n)]


PROSE = """The village of Aldermoor sits where two slow rivers meet, and for most of its history the town lived from the water. Barges carried grain downstream to the coast, and the mills along the banks ground it into flour that was sold in markets three days' travel away.

In the early part of the last century a railway line reached the valley. Within a decade the barges had almost disappeared, and the mills were turned into workshops, warehouses and, eventually, apartments with large windows facing the current.

Local historians still argue about whether the railway saved the town or slowly emptied it. Some point to the new school and the hospital that followed the line; others note that the population today is smaller than it was when the first train arrived.

What nobody disputes is that the rivers remain the heart of the place. On summer evenings families walk the old towpath, anglers wait patiently under the willows, and children race paper boats from the footbridge to the weir.

Visitors who stay for more than a day often say the same thing: the town feels unhurried, as if it has decided that it no longer needs to keep up with anything. For the people who live there, that is exactly the point."""

NEWS = """Harbour ferry returns after winter repairs

The ferry that links the island to the mainland resumed its regular timetable on Monday, six weeks after a damaged propeller shaft forced it out of service in late January.

"We are very relieved to have it back," said Maria Lindqvist, who runs a bakery near the pier and had been sending her bread across on a private fishing boat. "The last month and a half has been expensive for everybody."

The operator said the repairs cost about 240,000 euros and took longer than planned because the replacement shaft had to be made to order. During the closure a smaller vessel carried passengers twice a day, but it could not take cars or freight.

Islanders have long asked for a second ferry to cover breakdowns. The regional council is expected to discuss the request in April, although officials have warned that a new vessel would not be available before 2027.

For now, the timetable is back to eleven crossings a day in each direction, with an extra late sailing on Fridays and Saturdays during the summer season."""

ALL_FILTERS = [GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter(), FineWebQualityFilter()]


def doc(text: str, **extra) -> dict:
    return {"id": "d", "url": "http://x", "source": "test", "text": text, "stats": {}, **extra}


# ------------------------------------------------------------------------------------------------
# contracts


def test_document_filter_is_the_one_from_steps():
    assert DocumentFilter is steps.DocumentFilter
    assert DocumentStep is steps.DocumentStep


@pytest.mark.parametrize(
    "cls, name, is_filter",
    [
        (GopherQualityFilter, "gopher_quality", True),
        (GopherRepetitionFilter, "gopher_repetition", True),
        (C4QualityFilter, "c4", False),
        (FineWebQualityFilter, "fineweb", True),
    ],
)
def test_names_and_kinds(cls, name, is_filter):
    step = cls()
    assert step.name == name
    assert isinstance(step, DocumentStep)
    assert isinstance(step, DocumentFilter) is is_filter
    step.setup()  # nothing heavy to load, but the hook must work
    contract = cls.__doc__.strip().splitlines()[0]  # one-line contract, citing its source
    assert contract.endswith(".") and any(year in contract for year in ("2020", "2021", "2024"))


@pytest.mark.parametrize("cls", [GopherQualityFilter, GopherRepetitionFilter, C4QualityFilter, FineWebQualityFilter])
def test_options_are_keyword_arguments_with_yaml_safe_defaults(cls):
    """The registry reads a step's options and defaults from its signature; the run dumps them as YAML."""
    params = [p for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"]
    assert params and all(p.default is not inspect.Parameter.empty for p in params)
    defaults = {p.name: p.default for p in params}
    assert yaml.safe_load(yaml.safe_dump(defaults)) == defaults
    cls(**defaults)  # the dumped options build the step again


def test_real_prose_is_kept_by_all_four():
    d = doc(PROSE)
    for step in ALL_FILTERS:
        assert step.process(d) is None, step.name
    assert d["stats"] == {"c4_lines_removed": 0}
    assert d["text"] == PROSE.replace("\n\n", "\n")  # C4 keeps every line, joined by newlines


def test_news_article_is_kept_and_c4_removes_only_its_headline():
    d = doc(NEWS)
    for step in ALL_FILTERS:
        assert step.process(d) is None, step.name
    assert d["stats"] == {"c4_lines_removed": 1}
    assert d["text"] == "\n".join(NEWS.split("\n\n")[1:])


def test_filters_process_delegates_to_reject_reason():
    f = GopherQualityFilter()
    assert f.process(doc("too short")) == f.reject_reason("too short") == "gopher_quality_word_count"


# ------------------------------------------------------------------------------------------------
# Gopher quality: word count and mean word length (stop-word rule off: these texts have none)

LENGTH_ONLY = {"min_stop_words": 0}


def test_word_count_lower_boundary_is_inclusive():
    f = GopherQualityFilter(min_words=50, **LENGTH_ONLY)
    assert f.reject_reason(words(50)) is None
    assert f.reject_reason(words(49)) == "gopher_quality_word_count"


def test_word_count_upper_boundary_is_inclusive():
    f = GopherQualityFilter(min_words=1, max_words=60, **LENGTH_ONLY)
    assert f.reject_reason(words(60)) is None
    assert f.reject_reason(words(61)) == "gopher_quality_word_count"


def test_default_word_count_bounds_are_gophers():
    f = GopherQualityFilter()
    assert (f.min_words, f.max_words) == (50, 100_000)
    assert f.reject_reason(" ".join(filler(50))) is None
    assert f.reject_reason(" ".join(filler(49))) == "gopher_quality_word_count"
    assert f.reject_reason(" ".join(filler(100_000))) is None
    assert f.reject_reason(" ".join(filler(100_001))) == "gopher_quality_word_count"


def test_words_are_split_on_any_whitespace():
    f = GopherQualityFilter(min_words=50, **LENGTH_ONLY)
    text = "\n\n".join(["\t".join(["abcd"] * 5)] * 10)  # 50 words separated by tabs and blank lines
    assert f.reject_reason(text) is None
    assert f.reject_reason("  " + text + "  ") is None
    assert f.reject_reason(text.rsplit("\t", 1)[0]) == "gopher_quality_word_count"  # 49 words


def test_mean_word_length_bounds_are_inclusive():
    f = GopherQualityFilter(min_words=1, min_mean_word_length=3.0, max_mean_word_length=10.0, **LENGTH_ONLY)
    assert f.reject_reason(words(60, 3)) is None
    assert f.reject_reason(words(60, 10)) is None
    assert f.reject_reason(words(60, 2)) == "gopher_quality_mean_word_length"
    assert f.reject_reason(words(60, 11)) == "gopher_quality_mean_word_length"


def test_mean_word_length_is_a_mean_not_a_per_word_rule():
    f = GopherQualityFilter(min_words=1, **LENGTH_ONLY)
    mixed = " ".join(["a", "abcde"] * 30)  # mean 3.0 although half the words are 1 char
    assert f.reject_reason(mixed) is None
    too_short = " ".join(["a", "abcd"] * 30)  # mean 2.5
    assert f.reject_reason(too_short) == "gopher_quality_mean_word_length"


def test_word_count_is_checked_before_mean_length():
    f = GopherQualityFilter(min_words=50)
    assert f.reject_reason(words(10, 1)) == "gopher_quality_word_count"


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_rejected_for_word_count(text):
    assert GopherQualityFilter().reject_reason(text) == "gopher_quality_word_count"


def test_empty_text_with_zero_min_words_does_not_crash():
    """``data.min_words: 0`` is a valid config; an empty document must get a reason, not a ZeroDivisionError."""
    f = GopherQualityFilter(min_words=0)
    assert f.reject_reason("") == "gopher_quality_word_count"


def test_gopher_quality_positional_arguments_keep_their_order():
    """``tokenmill.spark_jobs.clean`` passes the first four positionally."""
    f = GopherQualityFilter(10, 20, 2.0, 8.0)
    assert (f.min_words, f.max_words, f.min_mean_word_length, f.max_mean_word_length) == (10, 20, 2.0, 8.0)


# ------------------------------------------------------------------------------------------------
# Gopher quality: the other rules, each at its boundary (100 words, 10 lines of 10)


def lines_of(ws: list[str], per_line: int = 10) -> list[str]:
    return [" ".join(ws[i : i + per_line]) for i in range(0, len(ws), per_line)]


@pytest.mark.parametrize("symbol, reason", [("#", "hash"), ("...", "ellipsis"), ("\u2026", "ellipsis")])
def test_symbol_to_word_ratio_boundary(symbol, reason):
    f = GopherQualityFilter()
    assert f.max_symbol_word_ratio == 0.1

    def text(k):  # k of 100 words carry the symbol, never at a line end
        ws = filler(100)
        for i in range(k):
            ws[10 * (i % 10) + 1 + 2 * (i // 10)] = "wait" + symbol if symbol != "#" else "#tag"
        assert all(not line.endswith(symbol) for line in lines_of(ws))
        return "\n".join(lines_of(ws))

    assert f.reject_reason(text(10)) is None  # 10 / 100 = 0.10
    assert f.reject_reason(text(11)) == f"gopher_quality_{reason}_ratio"  # 0.11


def test_symbol_ratio_counts_occurrences_not_words():
    f = GopherQualityFilter()
    ws = filler(100)
    for i in range(5):
        ws[1 + 9 * i] = "##tag"  # 5 words, 10 hashes
    assert f.reject_reason(" ".join(ws)) is None
    ws[60] = "#x"
    assert f.reject_reason(" ".join(ws)) == "gopher_quality_hash_ratio"


@pytest.mark.parametrize("bullet", ["\u2022", "-", "*", "\u25aa", "\u2013"])
def test_bullet_lines_boundary(bullet):
    f = GopherQualityFilter()
    assert f.max_bullet_lines_ratio == 0.9
    lines = lines_of(filler(100))

    def text(k):  # k of 10 lines start with a bullet (after leading spaces)
        return "\n".join(f"  {bullet} {line}" if i < k else line for i, line in enumerate(lines))

    assert f.reject_reason(text(9)) is None  # 0.9
    assert f.reject_reason(text(10)) == "gopher_quality_bullet_lines"  # 1.0


def test_blank_lines_do_not_count_as_lines():
    f = GopherQualityFilter()
    lines = [f"\u2022 {line}" for line in lines_of(filler(100))]
    text = "\n\n\n".join(lines[:9] + ["no bullet " + lines[9][2:]])  # 9 / 10, not 9 / 28
    assert f.reject_reason(text) is None


def test_ellipsis_lines_boundary():
    f = GopherQualityFilter()
    assert f.max_ellipsis_lines_ratio == 0.3
    lines = lines_of(filler(100))

    def text(k):  # k of 10 lines end with an ellipsis ("..." or "…")
        return "\n".join(line + ("...  " if i % 2 else "\u2026") if i < k else line for i, line in enumerate(lines))

    assert f.reject_reason(text(3)) is None
    assert f.reject_reason(text(4)) == "gopher_quality_ellipsis_lines"


def test_alpha_words_boundary():
    f = GopherQualityFilter()
    assert f.min_alpha_words_ratio == 0.8

    def text(k):  # k of 100 words have no letter
        ws = filler(100)
        for i in range(k):
            ws[99 - 4 * i] = ["2024", "12.5", "--", "$30", "_42_"][i % 5]
        return " ".join(ws)

    assert f.reject_reason(text(20)) is None  # 80 / 100 words have a letter
    assert f.reject_reason(text(21)) == "gopher_quality_alpha_words"  # 79 / 100


def test_a_word_with_any_letter_counts_as_alphabetic():
    f = GopherQualityFilter()
    ws = filler(100)
    for i in range(30):
        ws[99 - 3 * i] = ["1st", "(a)", "x86", "\u00e9t\u00e9,", "\u0434\u0430"][i % 5]
    assert f.reject_reason(" ".join(ws)) is None


def test_stop_words_boundary():
    f = GopherQualityFilter()
    assert f.min_stop_words == 2
    assert f.stop_words == ("the", "be", "to", "of", "and", "that", "have", "with")
    base = [NO_STOP_WORDS[i % len(NO_STOP_WORDS)] for i in range(60)]
    assert f.reject_reason(" ".join(base)) == "gopher_quality_stop_words"
    assert f.reject_reason(" ".join(base + ["with"])) == "gopher_quality_stop_words"  # 1 < 2
    assert f.reject_reason(" ".join(base + ["with", "have"])) is None  # 2
    assert f.reject_reason(" ".join(base + ["the", "the"])) is None  # occurrences, not distinct words


def test_stop_words_are_whole_words_in_any_case_with_punctuation():
    f = GopherQualityFilter()
    base = [NO_STOP_WORDS[i % len(NO_STOP_WORDS)] for i in range(60)]
    assert f.reject_reason(" ".join(base + ["The", "(OF"])) is None
    assert f.reject_reason(" ".join(base + ["with,", "that."])) is None
    assert f.reject_reason(" ".join(base + ["theory", "bethe", "tooth"])) == "gopher_quality_stop_words"


def test_stop_words_are_configurable():
    base = [NO_STOP_WORDS[i % len(NO_STOP_WORDS)] for i in range(60)]
    text = " ".join(base + ["der", "die", "das"])
    assert GopherQualityFilter().reject_reason(text) == "gopher_quality_stop_words"
    assert GopherQualityFilter(stop_words=["der", "die", "und"]).reject_reason(text) is None
    assert GopherQualityFilter(stop_words=["der"], min_stop_words=2).reject_reason(text) == "gopher_quality_stop_words"
    assert GopherQualityFilter(min_stop_words=0).reject_reason(" ".join(base)) is None
    assert GopherQualityFilter(min_stop_words=3).reject_reason(" ".join(base + ["the", "of"])) == (
        "gopher_quality_stop_words"
    )


def test_bulleted_list_page_is_dropped_for_bullets():
    items = [
        "Free shipping on all orders over fifty dollars",
        "Returns accepted within thirty days",
        "Gift wrapping is available at the checkout",
        "Our support team answers within a day",
        "Secure payment with all major cards",
        "Track your parcel with the link in the email",
    ]
    text = "\n".join(f"\u2022 {item}" for item in items * 2)
    assert GopherQualityFilter().reject_reason(text) == "gopher_quality_bullet_lines"


# ------------------------------------------------------------------------------------------------
# Gopher repetition: lines and paragraphs

LINES_ONLY = {"max_top_ngram_char_frac": {}, "max_dup_ngram_char_frac": {}}


def test_gopher_repetition_defaults_are_gophers():
    f = GopherRepetitionFilter()
    assert (f.max_dup_line_frac, f.max_dup_para_frac) == (0.3, 0.3)
    assert (f.max_dup_line_char_frac, f.max_dup_para_char_frac) == (0.2, 0.2)
    assert f.max_top_ngram_char_frac == ((2, 0.20), (3, 0.18), (4, 0.16))
    assert f.max_dup_ngram_char_frac == ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))


@pytest.mark.parametrize("kind, sep", [("line", "\n"), ("para", "\n\n")])
def test_duplicate_element_fraction_boundary(kind, sep):
    """A repeat is a copy of an earlier element: c copies of X among u unique ones is (c - 1) / (u + c)."""
    f = GopherRepetitionFilter(
        max_dup_line_char_frac=1.0,
        max_dup_para_char_frac=1.0,
        **({"max_dup_line_frac": 1.0} if kind == "para" else {}),
        **LINES_ONLY,
    )

    def text(copies):
        v = Vocab()
        unique = [v.line(40) for _ in range(69)]
        x = "Read more."
        mixed = []  # interleaved: u0 X u1 X ... then the remaining unique ones
        for i, u in enumerate(unique):
            mixed.append(u)
            if i < copies:
                mixed.append(x)
        assert len(mixed) == 69 + copies and mixed.count(x) == copies
        return sep.join(mixed)

    assert f.reject_reason(text(31)) is None  # 30 repeats / 100 = 0.30
    assert f.reject_reason(text(32)) == f"gopher_repetition_dup_{kind}_frac"  # 31 / 101


@pytest.mark.parametrize("kind, sep", [("line", "\n"), ("para", "\n\n")])
def test_duplicate_element_char_fraction_boundary(kind, sep):
    f = GopherRepetitionFilter(
        **({"max_dup_line_frac": 1.0, "max_dup_line_char_frac": 1.0} if kind == "para" else {}), **LINES_ONLY
    )
    v = Vocab()
    unique = [v.line(100) for _ in range(3)]
    inside, outside = v.line(100), v.line(101)
    # 3 x 100 + 2 x 100 chars, 100 of them repeated: 0.2; with a 101-char line: 101 / 502
    assert f.reject_reason(sep.join([inside, *unique, inside])) is None
    assert f.reject_reason(sep.join([outside, *unique, outside])) == f"gopher_repetition_dup_{kind}_char_frac"


def test_first_occurrence_is_not_a_duplicate():
    f = GopherRepetitionFilter(max_dup_line_frac=0.5, max_dup_line_char_frac=1.0, **LINES_ONLY)
    assert f.reject_reason("same line.\nsame line.\nsame line.\nother line.") is None  # 2 / 4
    assert f.reject_reason("same line.\nsame line.\nsame line.\nsame line.") == "gopher_repetition_dup_line_frac"


def test_lines_are_compared_stripped_and_blank_lines_ignored():
    f = GopherRepetitionFilter(**LINES_ONLY)
    assert f.reject_reason("  Subscribe now\nSubscribe now  \n\n\n\nThe end of the story.") == (
        "gopher_repetition_dup_line_frac"
    )  # 1 repeat / 3 non-blank lines


def test_repeated_boilerplate_lines_are_dropped():
    lines = PROSE.split("\n\n")
    text = "\n".join(line for p in lines for line in (p, "Share this article on social media."))
    assert GopherRepetitionFilter().reject_reason(text) == "gopher_repetition_dup_line_frac"  # 4 / 10 repeats


# ------------------------------------------------------------------------------------------------
# Gopher repetition: n-grams. A phrase of n words, k times, among u distinct 4-letter words:
# the covered characters are k x len(phrase), the total k x len(phrase) + 4u.


def phrase_text(phrase: list[str], k: int, u: int) -> str:
    """``phrase`` k times, a distinct word between consecutive copies, the other distinct words after."""
    v = Vocab()
    assert u >= k - 1
    out = []
    for i in range(k):
        out += phrase
        if i < k - 1:
            out.append(v.word())
    return " ".join(out + v.words(u - (k - 1)))


def boundary_u(covered: int, thr: float, fixed: int | None = None) -> int:
    """Smallest number of distinct 4-letter words for which covered / (fixed + 4u) <= thr
    (``fixed`` defaults to ``covered``: text made only of the covered words and the distinct ones)."""
    fixed = covered if fixed is None else fixed
    u = max(0, math.ceil((covered / thr - fixed) / 4) - 1)
    while covered / (fixed + 4 * u) > thr:
        u += 1
    assert covered / (fixed + 4 * (u - 1)) > thr
    return u


@pytest.mark.parametrize("n, thr", [(2, 0.20), (3, 0.18), (4, 0.16)])
def test_top_ngram_boundary(n, thr):
    f = GopherRepetitionFilter()
    phrase = ["alpha", "beta", "gamma", "delta"][:n]
    k = 8
    covered = k * sum(map(len, phrase))
    u = boundary_u(covered, thr)
    assert f.reject_reason(phrase_text(phrase, k, u)) is None
    assert f.reject_reason(phrase_text(phrase, k, u - 1)) == f"gopher_repetition_top_{n}gram"


def test_top_2gram_exactly_at_threshold_is_kept():
    f = GopherRepetitionFilter()
    # 7 x "abc def" = 42 chars of 42 + 4 x 42 = 210: exactly 0.20
    assert f.reject_reason(phrase_text(["abc", "def"], 7, 42)) is None
    assert f.reject_reason(phrase_text(["abc", "def"], 7, 41)) == "gopher_repetition_top_2gram"


def test_top_ngram_overlapping_occurrences_count_each_word_once():
    f = GopherRepetitionFilter(max_top_ngram_char_frac={2: 0.2}, max_dup_ngram_char_frac={})
    v = Vocab()
    # "xyz" x 5: the 2-gram occurs 4 times (24 chars if overlaps were double counted) but covers 15 chars
    text = " ".join(["xyz"] * 5 + v.words(15))  # 15 / (15 + 60) = 0.2
    assert f.reject_reason(text) is None
    assert WordNgrams(text).top_ngram_fraction(2) == 15 / 75
    assert f.reject_reason(" ".join(["xyz"] * 5 + v.words(14))) == "gopher_repetition_top_2gram"


def test_a_unique_ngram_is_not_repetition():
    f = GopherRepetitionFilter()
    assert f.reject_reason("just three words") is None
    assert WordNgrams("just three words").top_ngram_fraction(2) == 0.0


@pytest.mark.parametrize("n, thr", [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)])
def test_duplicate_ngram_boundary(n, thr):
    """A repeated n-word phrase of long words: every m-gram for m <= n is repeated over the same words,
    so the fraction is the same for all m <= n and the n-gram threshold (the smallest) decides."""
    f = GopherRepetitionFilter(max_top_ngram_char_frac={})  # top n-grams count the original too: off here
    phrase = [f"{w}{w}" for w in "abcdefghij"[:n]]
    k = 2
    covered = (k - 1) * sum(map(len, phrase))  # the repeat, not the original
    u = boundary_u(covered, thr, fixed=k * sum(map(len, phrase)))
    assert f.reject_reason(phrase_text(phrase, k, u)) is None
    assert f.reject_reason(phrase_text(phrase, k, u - 1)) == f"gopher_repetition_dup_{n}gram"


def test_duplicate_ngrams_count_the_repeats_not_the_first_occurrence():
    f = GopherRepetitionFilter(max_top_ngram_char_frac={})
    phrase = ["aaaaaa", "bbbbbb", "cccccc", "dddddd", "eeeeee"]  # 30 chars
    # the copy's 30 of 60 + 4 x 35 = 200: exactly 0.15 (it would be 0.30 counting the original too)
    assert f.reject_reason(phrase_text(phrase, 2, 35)) is None
    assert f.reject_reason(phrase_text(phrase, 2, 34)) == "gopher_repetition_dup_5gram"


def test_duplicate_ngram_overlaps_count_each_word_once():
    v = Vocab()
    text = " ".join(
        ["aa", "bb", "cc", "dd", "ee", "ff"] + v.words(3) + ["aa", "bb", "cc", "dd", "ee", "ff"] + v.words(20)
    )
    # two 5-grams repeat ("aa".."ee" and "bb".."ff"), overlapping: the copy's 6 words of 2 chars, once each
    assert WordNgrams(text).duplicate_ngram_fraction(5) == 12 / (24 + 4 * 23)
    assert WordNgrams(text).duplicate_ngram_fraction(6) == 12 / (24 + 4 * 23)
    assert WordNgrams(text).duplicate_ngram_fraction(7) == 0.0


def test_ngram_thresholds_accept_mappings_and_pairs():
    a = GopherRepetitionFilter(max_top_ngram_char_frac={3: 0.5, 2: 0.4}, max_dup_ngram_char_frac=[[6, 0.3]])
    assert a.max_top_ngram_char_frac == ((2, 0.4), (3, 0.5))
    assert a.max_dup_ngram_char_frac == ((6, 0.3),)
    with pytest.raises(ValueError):
        GopherRepetitionFilter(max_dup_ngram_char_frac={0: 0.1})


def reference_fractions(text: str) -> tuple[list[float], list[float]]:
    """The definitions, written the slow and obvious way: top 2..4-gram and duplicate 5..10-gram fractions."""
    ws = text.split()
    total = sum(map(len, ws))

    def covered(starts, n):
        marked = set()
        for s in starts:
            marked.update(range(s, s + n))
        return sum(len(ws[i]) for i in marked) / total

    tops, dups = [], []
    for n in range(2, 11):
        grams = [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]
        counts = Counter(grams)
        if n <= 4:
            best = max(counts.values(), default=0)
            top = next((g for g in grams if counts[g] == best), None)
            tops.append(covered([i for i, g in enumerate(grams) if g == top], n) if best >= 2 else 0.0)
        else:
            seen: set = set()
            repeats = []
            for i, g in enumerate(grams):
                if g in seen:
                    repeats.append(i)
                seen.add(g)
            dups.append(covered(repeats, n))
    return tops, dups


@pytest.mark.parametrize("seed", range(40))
def test_ngram_fractions_match_the_reference_definition(seed):
    rng = random.Random(seed)
    vocab = ["a", "bb", "the", "cat", "sat", "on", "mat", "ccccc", "dd.", "E"][: rng.randint(2, 10)]
    text = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 120)))
    grams = WordNgrams(text)
    tops, dups = reference_fractions(text)
    assert [grams.top_ngram_fraction(n) for n in (2, 3, 4)] == pytest.approx(tops, abs=1e-12)
    assert [grams.duplicate_ngram_fraction(n) for n in range(5, 11)] == pytest.approx(dups, abs=1e-12)
    # and in any order of n (ids are rebuilt when n goes down)
    assert grams.duplicate_ngram_fraction(5) == pytest.approx(dups[0], abs=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_repetition_filter_agrees_with_the_reference_definition(seed):
    rng = random.Random(1000 + seed)
    vocab = [f"w{i}" * rng.randint(1, 3) for i in range(rng.randint(20, 200))]
    body = [rng.choice(vocab) for _ in range(300)]
    for _ in range(rng.randint(0, 4)):  # paste a few copies of a random span
        i, j = rng.randrange(300), rng.randrange(300)
        span = body[i : i + rng.randint(3, 15)]
        body[j : j + len(span)] = span
    text = " ".join(body)
    tops, dups = reference_fractions(text)
    expected = next(
        (f"gopher_repetition_top_{n}gram" for n, v, t in zip((2, 3, 4), tops, (0.2, 0.18, 0.16)) if v > t), None
    ) or next(
        (
            f"gopher_repetition_dup_{n}gram"
            for n, v, t in zip(range(5, 11), dups, (0.15, 0.14, 0.13, 0.12, 0.11, 0.10))
            if v > t
        ),
        None,
    )
    assert GopherRepetitionFilter().reject_reason(text) == expected


def test_empty_and_tiny_texts_are_not_repetition():
    f = GopherRepetitionFilter()
    for text in ["", "   ", "word", "two words"]:
        assert f.reject_reason(text) is None


# ------------------------------------------------------------------------------------------------
# C4


def test_c4_defaults():
    f = C4QualityFilter()
    assert (f.filter_no_terminal_punct, f.min_words_per_line, f.min_sentences) == (True, 5, 3)


def test_c4_removes_boilerplate_lines_and_counts_them():
    prose = PROSE.split("\n\n")
    text = "\n".join(
        [
            "Home | News | Sport | Weather",
            prose[0],
            "This website uses cookies to improve your experience.",
            prose[1],
            "Please enable JavaScript to view the comments.",
            "Read more...",
            "",
            prose[2],
            "Copyright 2024",
        ]
    )
    d = doc(text, stats={"other": 3})
    assert C4QualityFilter().process(d) is None
    assert d["text"] == "\n".join(prose[:3])
    assert d["stats"] == {"other": 3, "c4_lines_removed": 5}  # the blank line is not counted


def test_c4_stats_counter_adds_up_and_is_created_when_missing():
    f = C4QualityFilter()
    d = doc(PROSE + "\nMenu", stats={"c4_lines_removed": 2})
    assert f.process(d) is None
    assert d["stats"]["c4_lines_removed"] == 3
    d = doc(PROSE)
    del d["stats"]
    assert f.process(d) is None
    assert d["stats"] == {"c4_lines_removed": 0}


def c4_lines(*lines: str, f: C4QualityFilter | None = None) -> str | None:
    """Text kept by C4 from three good lines plus ``lines``, or the drop reason."""
    good = ["The first good line is here.", "The second good line is here.", "The third good line is here."]
    d = doc("\n".join([*good, *lines]))
    reason = (f or C4QualityFilter()).process(d)
    return reason or d["text"].split("\n")[3:]


@pytest.mark.parametrize("end", [".", "!", "?", '"', "'", "\u201d", "\u2019"])
def test_c4_terminal_punctuation_keeps_line(end):
    assert c4_lines(f"This line ends with a mark{end}") == [f"This line ends with a mark{end}"]


@pytest.mark.parametrize(
    "line",
    [
        "This line has no final mark",
        "This line ends with a colon:",
        "This line just trails off...",
        "This line just trails off\u2026",
        "This line ends (in brackets)",
    ],
)
def test_c4_line_without_terminal_punctuation_is_removed(line):
    assert c4_lines(line) == []
    assert c4_lines(line, f=C4QualityFilter(filter_no_terminal_punct=False)) == [line]


def test_c4_min_words_per_line_boundary():
    assert c4_lines("Five words are here now.") == ["Five words are here now."]
    assert c4_lines("Four words are here.") == []
    assert c4_lines("Four words are here.", f=C4QualityFilter(min_words_per_line=4)) == ["Four words are here."]


def test_c4_javascript_lines_are_removed():
    assert c4_lines("You need to enable JavaScript to run this app.") == []
    assert c4_lines("You need to enable JavaScript to run this app.", f=C4QualityFilter(filter_javascript=False)) == [
        "You need to enable JavaScript to run this app."
    ]


@pytest.mark.parametrize(
    "phrase", ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"]
)
def test_c4_policy_lines_are_removed(phrase):
    line = f"Please read our {phrase.upper()} before you continue."
    assert c4_lines(line) == []
    assert c4_lines(line, f=C4QualityFilter(filter_policy=False)) == [line]


def test_c4_lorem_ipsum_drops_the_document():
    assert c4_lines("Lorem Ipsum dolor sit amet, consectetur adipiscing elit.") == "c4_lorem_ipsum"


def test_c4_curly_bracket_drops_the_document():
    assert c4_lines("The function returns {a: 1} for every input.") == "c4_curly_bracket"
    assert c4_lines("The function returns {a: 1} for every input.", f=C4QualityFilter(filter_curly_bracket=False)) == [
        "The function returns {a: 1} for every input."
    ]


def test_c4_page_rules_only_look_at_lines_that_survived_the_line_rules():
    """As in T5's c4_utils: a "{" or "lorem ipsum" on a line already removed does not drop the page."""
    assert c4_lines("function main() {", "}") == []
    assert c4_lines("lorem ipsum") == []


def test_c4_min_sentences_boundary():
    f = C4QualityFilter()
    d = doc("One two three four five six. Seven eight nine ten eleven twelve! And thirteen fourteen fifteen?")
    assert f.process(d) is None
    d = doc("One two three four five six. Seven eight nine ten eleven twelve!")
    assert f.process(d) == "c4_too_few_sentences"
    assert C4QualityFilter(min_sentences=2).process(d) is None


def test_c4_sentences_are_only_counted_in_kept_lines():
    d = doc("A good line with five words.\nA second one with five words.\nNav\nMenu\nLogin")
    assert C4QualityFilter().process(d) == "c4_too_few_sentences"


def test_c4_empty_document_has_too_few_sentences():
    assert C4QualityFilter(min_sentences=0).process(doc("")) == "c4_too_few_sentences"
    assert C4QualityFilter().process(doc("Home\nAbout\nContact")) == "c4_too_few_sentences"


def test_c4_dropped_document_is_left_untouched():
    text = "Home\nAbout us\nThe only sentence in the page is here."
    d = doc(text)
    assert C4QualityFilter().process(d) == "c4_too_few_sentences"
    assert d["text"] == text and d["stats"] == {}


def test_c4_word_longer_than_max_removes_the_line():
    assert c4_lines("Here is " + "x" * 1000 + " in a line.") == ["Here is " + "x" * 1000 + " in a line."]
    assert c4_lines("Here is " + "x" * 1001 + " in a line.") == []


def test_c4_citation_markers_are_removed_first():
    assert c4_lines("Rivers are full of water here.[1]", "Rivers were used for trade[citation needed].") == [
        "Rivers are full of water here.",
        "Rivers were used for trade.",
    ]
    assert c4_lines("Keep it.[1]", f=C4QualityFilter(remove_citations=False)) == []


def test_count_sentences():
    assert count_sentences("One sentence.") == 1
    assert count_sentences("One. Two! Three? Four") == 4
    assert count_sentences('He said "stop." Then he left.') == 2
    assert count_sentences("Version 3.5 is out.") == 1


# ------------------------------------------------------------------------------------------------
# FineWeb


def test_fineweb_defaults():
    f = FineWebQualityFilter()
    assert (f.line_punct_thr, f.short_line_thr, f.short_line_length) == (0.12, 0.67, 30)
    assert (f.char_duplicates_ratio, f.new_line_ratio, f.line_punct_exclude_zero) == (0.1, 0.3, False)


def test_fineweb_line_punct_ratio_boundary():
    f = FineWebQualityFilter()
    v = Vocab()
    lines = [v.line(60, end="") for _ in range(100)]  # 12 words, no final mark

    def text(k):
        return "\n".join(line + "." if i < k else line for i, line in enumerate(lines))

    assert f.reject_reason(text(12)) is None  # 0.12
    assert f.reject_reason(text(11)) == "fineweb_line_punct_ratio"
    assert FineWebQualityFilter(line_punct_exclude_zero=True).reject_reason(text(0)) is None
    assert FineWebQualityFilter(line_punct_exclude_zero=True).reject_reason(text(11)) == "fineweb_line_punct_ratio"


def test_fineweb_short_line_ratio_boundary():
    f = FineWebQualityFilter()
    v = Vocab()

    def text(k):  # k of 100 lines have 30 characters (short), the others 120
        return "\n".join(v.line(30) if i < k else v.line(120) for i in range(100))

    assert f.reject_reason(text(67)) is None
    assert f.reject_reason(text(68)) == "fineweb_short_line_ratio"


def test_fineweb_short_line_length_is_inclusive():
    f = FineWebQualityFilter(short_line_thr=0.0)
    v = Vocab()
    assert f.reject_reason(v.line(30)) == "fineweb_short_line_ratio"
    assert f.reject_reason(v.line(31)) is None


def test_fineweb_char_duplicates_ratio_boundary():
    f = FineWebQualityFilter()
    v = Vocab()
    unique = [v.line(100) for _ in range(8)]
    inside, outside = v.line(100), v.line(101)
    assert f.reject_reason("\n".join([inside, *unique, inside])) is None  # 100 / 1000
    assert f.reject_reason("\n".join([outside, *unique, outside])) == "fineweb_char_dup_ratio"  # 101 / 1002


def test_fineweb_list_ratio_boundary():
    """Newlines in the raw text (blank lines too) per word."""
    f = FineWebQualityFilter()
    v = Vocab()
    text = "\n".join(v.line(104) for _ in range(10))  # 10 lines x 20 words, 9 newlines
    assert text.count("\n") == 9 and len(text.split()) == 200
    assert f.reject_reason(text + "\n" * 51) is None  # 60 / 200 = 0.3
    assert f.reject_reason(text + "\n" * 52) == "fineweb_list_ratio"


def test_fineweb_navigation_menu_is_dropped():
    menu = ["Home", "About us", "Products", "Blog", "Careers", "Contact", "Login", "Sign up"]
    assert FineWebQualityFilter().reject_reason("\n".join(menu)) == "fineweb_line_punct_ratio"
    prose = PROSE.split("\n\n")
    assert FineWebQualityFilter().reject_reason("\n".join(prose + menu)) is None  # 8 short lines of 13
    assert FineWebQualityFilter().reject_reason("\n".join(prose + menu * 2)) == "fineweb_short_line_ratio"  # 16 / 21


def test_fineweb_repeated_lines_are_dropped():
    prose = PROSE.split("\n\n")
    line = "Subscribe to our newsletter for the latest stories from the valley."
    assert FineWebQualityFilter().reject_reason("\n".join(prose + [line] * 2)) is None
    assert FineWebQualityFilter().reject_reason("\n".join(prose + [line] * 6)) == "fineweb_char_dup_ratio"


def test_fineweb_empty_document():
    assert FineWebQualityFilter().reject_reason(" \n\n ") == "fineweb_empty"


# ------------------------------------------------------------------------------------------------
# all four in sequence, as a pipeline runs them


def run_all(text: str) -> str | None:
    d = doc(text)
    for step in [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter()]:
        reason = step.process(d)
        if reason:
            return reason
    return None


def test_pipeline_keeps_prose_and_drops_boilerplate_with_the_right_reason():
    prose = PROSE.split("\n\n")
    assert run_all(PROSE) is None
    assert run_all("\n".join(["Home", "About", "Contact"] * 20)) == "gopher_repetition_dup_line_frac"
    assert run_all("Click here. " * 60) == "gopher_repetition_top_2gram"
    assert run_all(" ".join(PROSE.split()[:49])) == "gopher_quality_word_count"
    assert run_all("\n".join(f"- {p}" for p in prose)) == "gopher_quality_bullet_lines"
    assert run_all(PROSE + "\nThe settings are written as {name: value} pairs in this file.") == "c4_curly_bracket"
    # a menu that is not repeated gets past Gopher; C4 then removes its lines, so FineWeb never sees them
    assert run_all(PROSE + "\n" + "\n".join(["Home", "About", "Contact", "Blog", "Shop", "Login"])) is None
