"""spark_jobs.filters: Gopher word-count and mean-word-length rules."""

from __future__ import annotations

import pytest

from spark_jobs.filters import DocumentFilter, GopherQualityFilter


def words(n: int, length: int = 5) -> str:
    return " ".join(["w" * length] * n)


def test_is_a_document_filter_named_gopher():
    f = GopherQualityFilter()
    assert isinstance(f, DocumentFilter)
    assert f.name == "gopher"


def test_word_count_lower_boundary_is_inclusive():
    f = GopherQualityFilter(min_words=50)
    assert f.reject_reason(words(50)) is None
    assert f.reject_reason(words(49)) == "gopher_word_count"


def test_word_count_upper_boundary_is_inclusive():
    f = GopherQualityFilter(min_words=1, max_words=60)
    assert f.reject_reason(words(60)) is None
    assert f.reject_reason(words(61)) == "gopher_word_count"


def test_words_are_split_on_any_whitespace():
    f = GopherQualityFilter(min_words=50)
    text = "\n\n".join(["\t".join(["abcd"] * 5)] * 10)  # 50 words separated by tabs and blank lines
    assert f.reject_reason(text) is None
    assert f.reject_reason("  " + text + "  ") is None
    assert f.reject_reason(text.rsplit("\t", 1)[0]) == "gopher_word_count"  # 49 words


def test_mean_word_length_bounds_are_inclusive():
    f = GopherQualityFilter(min_words=1, min_mean_word_length=3.0, max_mean_word_length=10.0)
    assert f.reject_reason(words(60, 3)) is None
    assert f.reject_reason(words(60, 10)) is None
    assert f.reject_reason(words(60, 2)) == "gopher_mean_word_length"
    assert f.reject_reason(words(60, 11)) == "gopher_mean_word_length"


def test_mean_word_length_is_a_mean_not_a_per_word_rule():
    f = GopherQualityFilter(min_words=1)
    mixed = " ".join(["a", "abcde"] * 30)  # mean 3.0 although half the words are 1 char
    assert f.reject_reason(mixed) is None
    too_short = " ".join(["a", "abcd"] * 30)  # mean 2.5
    assert f.reject_reason(too_short) == "gopher_mean_word_length"


def test_word_count_is_checked_before_mean_length():
    f = GopherQualityFilter(min_words=50)
    assert f.reject_reason(words(10, 1)) == "gopher_word_count"


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_rejected_for_word_count(text):
    assert GopherQualityFilter().reject_reason(text) == "gopher_word_count"


def test_empty_text_with_zero_min_words_does_not_crash():
    """``data.min_words: 0`` is a valid config; an empty document must get a reason, not a ZeroDivisionError."""
    f = GopherQualityFilter(min_words=0)
    assert f.reject_reason("") in {"gopher_word_count", "gopher_mean_word_length"}
