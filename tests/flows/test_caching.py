"""Stage cache keys: they move with what a stage's output depends on, and only with that."""

import os

from tokenmill.core.config import load_config
from tokenmill.core.fingerprint import code_fingerprint, config_part, file_fingerprint, stage_key


def _cfg(*overrides):
    return load_config(None, list(overrides))


def test_key_is_stable_and_names_its_stage(tmp_path):
    cfg = _cfg()
    assert stage_key("data", cfg, ["a"], tmp_path) == stage_key("data", _cfg(), ["a"], tmp_path)
    assert stage_key("data", cfg, ["a"], tmp_path).startswith("data-")


def test_output_changing_keys_change_the_key_and_execution_keys_do_not(tmp_path):
    base = stage_key("data", _cfg(), [], tmp_path)
    assert stage_key("data", _cfg("data.langid.threshold=0.9"), [], tmp_path) != base
    elsewhere = _cfg("data.spark_master=spark://elsewhere:7077", "data.checkpoint_dir=/shared/checkpoints")
    assert stage_key("data", elsewhere, [], tmp_path) == base
    assert stage_key("data", _cfg("train.lr=0.1"), [], tmp_path) == base  # another stage's key

    tokens = stage_key("tokenize", _cfg(), [], tmp_path)
    assert stage_key("tokenize", _cfg("tokenizer.vocab_size=4096"), [], tmp_path) != tokens
    assert stage_key("tokenize", _cfg("tokenizer.encoder=tokenizers"), [], tmp_path) == tokens  # the same ids

    train = stage_key("train", _cfg(), [], tmp_path)
    assert stage_key("train", _cfg("train.lr=0.1"), [], tmp_path) != train
    assert stage_key("train", _cfg("model.n_layer=3"), [], tmp_path) != train
    assert stage_key("train", _cfg("train.resume=false"), [], tmp_path) == train
    assert stage_key("train", _cfg("tracking.uri=http://127.0.0.1:5000"), [], tmp_path) != train

    tok = stage_key("tokenize", _cfg(), [], tmp_path)
    assert stage_key("tokenize", _cfg("tokenizer.vocab_size=2048"), [], tmp_path) != tok
    assert stage_key("tokenize", _cfg("train.lr=0.1"), [], tmp_path) == tok


def test_inputs_and_output_folder_are_part_of_the_key(tmp_path):
    cfg = _cfg()
    assert stage_key("tokenize", cfg, ["x"], tmp_path) != stage_key("tokenize", cfg, ["y"], tmp_path)
    assert stage_key("tokenize", cfg, ["x"], tmp_path / "a") != stage_key("tokenize", cfg, ["x"], tmp_path / "b")


def test_a_replaced_input_file_changes_its_fingerprint(tmp_path):
    f = tmp_path / "crawl.warc.gz"
    f.write_bytes(b"one")
    before = file_fingerprint(f)
    f.write_bytes(b"two!")
    assert file_fingerprint(f) != before
    os.utime(f, ns=(1, 1))
    touched = file_fingerprint(f)
    os.utime(f, ns=(2, 2))
    assert file_fingerprint(f) != touched


def test_the_data_stage_keys_its_inputs_by_the_listing_without_reading_them(tmp_path, monkeypatch):
    """Size and mtime from ``expand_inputs`` (local files here; an object store's listing the same way)."""
    from tokenmill.flows.tasks import _data_inputs
    from tokenmill.spark_jobs import readers

    f = tmp_path / "crawl.warc.gz"
    f.write_bytes(b"one")
    monkeypatch.setattr(readers, "open_input", None)  # no input is opened
    args = {"cfg": _cfg(f"data.input={tmp_path}")}
    before = _data_inputs(args)
    assert before == [f"{f}:3:{f.stat().st_mtime_ns}"]
    f.write_bytes(b"two!")
    assert _data_inputs(args) != before


def test_code_fingerprint_follows_the_stage_sources(tmp_path):
    (tmp_path / "spark_jobs").mkdir()
    (tmp_path / "training").mkdir()
    (tmp_path / "spark_jobs" / "clean.py").write_text("x = 1\n")
    (tmp_path / "spark_jobs" / "tokenize.py").write_text("y = 1\n")
    data, tok = code_fingerprint("data", tmp_path), code_fingerprint("tokenize", tmp_path)
    (tmp_path / "spark_jobs" / "clean.py").write_text("x = 2\n")
    assert code_fingerprint("data", tmp_path) != data
    assert code_fingerprint("tokenize", tmp_path) == tok
    data = code_fingerprint("data", tmp_path)
    (tmp_path / "spark_jobs" / "tokenize.py").write_text("y = 2\n")  # the tokenize job is not the data job's code
    assert code_fingerprint("tokenize", tmp_path) != tok
    assert code_fingerprint("data", tmp_path) == data


def test_config_parts_are_plain_data():
    cfg = _cfg()
    assert "spark_master" not in config_part(cfg, "data")
    assert "resume" not in config_part(cfg, "train")["train"]
    assert config_part(cfg, "evaluate")["eval_max_blocks"] == cfg.train.eval_max_blocks
