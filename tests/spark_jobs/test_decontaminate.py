"""tokenmill.spark_jobs.decontaminate.NGramDecontaminator: word 13-gram overlap with evaluation texts (no Spark)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
from step_checks import assert_document_step, doc, ready

from tokenmill.spark_jobs.decontaminate import NGramDecontaminator, NGramHasher, normalized_words

EVAL = (
    "Which of the following best describes the primary function of mitochondria in eukaryotic cells "
    "during aerobic respiration and the production of adenosine triphosphate"
)
EVAL_WORDS = EVAL.split()
FILLER = "Gardening in spring requires patience, good soil and a steady supply of water for young plants."


@pytest.fixture()
def eval_dir(tmp_path):
    (tmp_path / "mmlu").mkdir()
    (tmp_path / "mmlu" / "biology.txt").write_text(EVAL + "\n(A) energy (B) storage\n", encoding="utf-8")
    return tmp_path


@pytest.fixture()
def step(eval_dir):
    return ready(NGramDecontaminator(eval_dir=str(eval_dir)))


def test_is_a_document_step_named_decontaminate():
    assert_document_step(NGramDecontaminator(), "decontaminate", eval_dir=None, ngram_size=13)


def test_exact_13_gram_is_dropped(step):
    window = " ".join(EVAL_WORDS[3:16])  # 13 words from the middle
    assert len(window.split()) == 13
    d = doc(f"{FILLER} {window} {FILLER}")
    assert step.process(d) == "decontaminate_ngram_overlap"
    assert d["stats"] == {"decontaminate_ngram_hits": 1}


def test_whole_eval_text_in_a_document_counts_every_ngram(step):
    d = doc(f"{FILLER} {EVAL} {FILLER}")
    assert step.process(d) == "decontaminate_ngram_overlap"
    assert d["stats"]["decontaminate_ngram_hits"] == len(EVAL_WORDS) - 13 + 1


def test_12_gram_overlap_is_kept(step):
    for start in range(len(EVAL_WORDS) - 12 + 1):
        window = " ".join(EVAL_WORDS[start : start + 12])
        d = doc(f"{FILLER} {window} {FILLER}")
        assert step.process(d) is None, window
        assert d["stats"] == {}


def test_13_words_with_a_gap_are_kept(step):
    broken = " ".join(EVAL_WORDS[0:7] + ["banana"] + EVAL_WORDS[7:13])
    assert step.process(doc(broken)) is None


def test_match_ignores_case_punctuation_and_whitespace(step):
    noisy = "WHICH of the following -- best describes, the PRIMARY function of\n\nmitochondria (in) eukaryotic...?"
    assert normalized_words(noisy) == normalized_words(" ".join(EVAL_WORDS[:13]))
    assert step.process(doc(noisy)) == "decontaminate_ngram_overlap"


def test_ngrams_may_cross_lines_of_an_eval_file(step):
    text = " ".join(EVAL_WORDS[-9:]) + " A energy B storage"  # crosses the file's line break
    assert step.process(doc(text)) == "decontaminate_ngram_overlap"


def test_unrelated_and_empty_documents_are_kept(step):
    for text in [FILLER * 20, "", None, "short"]:
        assert step.process(doc(text)) is None


def test_jsonl_text_fields_recursively(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    other = "the quick brown fox jumps over the lazy dog while the farmer sleeps under an old oak tree"
    lines = [json.dumps({"text": other}), "", "not json", json.dumps({"question": EVAL}), json.dumps([1, 2])]
    (tmp_path / "a" / "b" / "set.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "a" / "notes.md").write_text(EVAL, encoding="utf-8")  # neither .txt nor .jsonl: ignored
    s = NGramDecontaminator(eval_dir=str(tmp_path))
    assert s.process(doc(f"{FILLER} {other.upper()}!")) == "decontaminate_ngram_overlap"
    assert s.process(doc(EVAL)) is None  # only the 'text' field counts
    assert s.eval_stats == {"files": 1, "texts": 1, "short_texts": 0, "ngrams": 6}


def test_custom_ngram_size(eval_dir):
    s = NGramDecontaminator(eval_dir=str(eval_dir), ngram_size=5)
    assert s.process(doc("we saw the primary function of mitochondria today")) == "decontaminate_ngram_overlap"
    assert s.process(doc("we saw the primary function of cells today")) is None


def test_no_eval_dir_is_a_no_op():
    s = NGramDecontaminator(eval_dir=None)
    s.setup()
    assert s.process(doc(EVAL)) is None


def test_missing_eval_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"decontaminate.eval_dir .*does not exist"):
        NGramDecontaminator(eval_dir=str(tmp_path / "nope"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="decontaminate.eval_dir"):
        NGramDecontaminator(eval_dir=str(tmp_path / "file.txt"))


def test_empty_eval_dir_keeps_everything(tmp_path):
    s = NGramDecontaminator(eval_dir=str(tmp_path))
    assert s.process(doc(EVAL)) is None


def test_process_sets_up_lazily_and_pickles_without_the_table(eval_dir):
    s = NGramDecontaminator(eval_dir=str(eval_dir))
    assert s.process(doc(EVAL)) == "decontaminate_ngram_overlap"
    copy = pickle.loads(pickle.dumps(s))
    assert copy._eval_hashes is None
    assert copy.process(doc(EVAL)) == "decontaminate_ngram_overlap"


def test_hashes_are_deterministic_across_processes():
    code = (
        "from tokenmill.spark_jobs.decontaminate import NGramHasher; "
        "print(NGramHasher(3).hashes('one two three four').tolist())"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(runs) == 1
    assert json.loads(runs.pop()) == NGramHasher(3).hashes("one two three four").tolist()


def test_hashes_depend_on_word_order_and_boundaries():
    h = NGramHasher(2)
    assert len(h.hashes("a b c")) == 2
    assert h.hashes("a b")[0] != h.hashes("b a")[0]
    assert h.hashes("ab c")[0] != h.hashes("a bc")[0]
    assert h.hashes("a b")[0] == h.hashes("A, b!")[0]


def test_table_is_loaded_once_per_process_and_reloaded_when_files_change(eval_dir):
    first, second = NGramDecontaminator(eval_dir=str(eval_dir)), NGramDecontaminator(eval_dir=str(eval_dir))
    first.setup()
    second.setup()
    assert first._eval_hashes is second._eval_hashes
    new_text = "an entirely new evaluation question about the migration patterns of arctic terns over the pacific"
    (eval_dir / "mmlu" / "extra.txt").write_text(new_text, encoding="utf-8")
    third = NGramDecontaminator(eval_dir=str(eval_dir))
    assert third.process(doc(new_text)) == "decontaminate_ngram_overlap"
    assert third.process(doc(EVAL)) == "decontaminate_ngram_overlap"
    assert first.process(doc(new_text)) is None  # an already set-up step keeps its table
