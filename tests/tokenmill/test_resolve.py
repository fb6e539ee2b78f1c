"""tokenmill.resolve: the run's config resolved once (step options checked and completed, absolute paths)."""

from __future__ import annotations

import pytest

from tokenmill.core.config import ConfigError, load_config
from tokenmill.resolve import resolve_and_dump, resolve_config
from tokenmill.spark_jobs.registry import STEPS


def test_step_options_are_filled_from_the_step_class_and_checked():
    from tokenmill.spark_jobs.filters import GopherQualityFilter

    cfg = resolve_config(overrides=["data.gopher_quality.min_words=20", "data.langid.threshold=5e-1"])
    assert cfg.data.steps == list(STEPS)  # null: every registered step, in the registry's order
    assert cfg.data.step_options["gopher_quality"]["min_words"] == 20
    assert cfg.data.step_options["gopher_quality"]["max_words"] == GopherQualityFilter().max_words  # class default
    assert cfg.data.step_options["langid"]["threshold"] == 0.5
    assert set(cfg.data.step_options) == set(STEPS)
    with pytest.raises(ConfigError, match="did you mean 'min_words'"):
        resolve_config(overrides=["data.gopher_quality.min_word=20"])
    with pytest.raises(ConfigError, match="data.gopher_quality.min_words must be int"):
        resolve_config(overrides=["data.gopher_quality.min_words=many"])
    with pytest.raises(ConfigError, match="unknown data step 'minhsh'.*did you mean 'minhash'"):
        resolve_config(overrides=["data.steps=[extract, minhsh]"])
    with pytest.raises(ConfigError, match="unknown data step 'minhsh'.*did you mean 'minhash'"):
        resolve_config(overrides=["data.minhsh.threshold=0.5"])


def test_the_dump_resolves_to_the_same_config(tmp_path):
    """Stages after the first read the one dump: loading it again (core only, no step registry) gives the
    same value, so nothing downstream resolves differently."""
    cfg, dump = resolve_and_dump(
        overrides=[
            f"run.output_dir={tmp_path}",
            "run.name=r",
            "data.steps=[extract, c4]",
            "data.c4.min_words_per_line=5",
            "train.lr=0.25",
        ]
    )
    assert dump == str(tmp_path / "r" / "config.yaml")
    again = load_config(dump)
    assert again == cfg
    assert again.data.steps == ["extract", "c4"] and again.data.step_options["c4"]["min_words_per_line"] == 5
    assert resolve_config(dump) == cfg


def test_model_family_must_be_a_registered_family():
    from tokenmill.training.families import FAMILIES

    with pytest.raises(ConfigError, match=r"model.family must be one of gpt, .*got 'gpz' \(did you mean 'gpt'\?\)"):
        resolve_config(overrides=["model.family=gpz"])
    assert load_config(overrides=["model.family=gpz"]).model.family == "gpz"  # the core knows no families
    for family in FAMILIES:
        assert resolve_config(overrides=[f"model.family={family}"]).model.family == family


def test_fp16_needs_a_gpu_on_the_machine_that_resolves_the_run(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="train.precision=fp16 needs a GPU"):
        resolve_config(overrides=["train.precision=fp16"])
    assert resolve_config(overrides=["train.precision=fp16"], this_machine=False).train.precision == "fp16"
    assert load_config(overrides=["train.precision=fp16"]).train.precision == "fp16"  # the core loads it anywhere
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_config(overrides=["train.precision=fp16"]).train.precision == "fp16"
