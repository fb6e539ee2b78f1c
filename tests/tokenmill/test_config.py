"""tokenmill.core.config: precedence, strict keys, type checks, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenmill.core.config import Config, ConfigError, TrainConfig, load_config, resolve_paths
from tokenmill.core.env import REPO_ROOT


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- precedence -------------------------------------------------------------------------------


def test_no_file_no_overrides_gives_dataclass_defaults():
    cfg = load_config()
    assert (cfg.run, cfg.train, cfg.model, cfg.tokenizer, cfg.tracking) == (
        Config().run,
        Config().train,
        Config().model,
        Config().tokenizer,
        Config().tracking,
    )
    assert cfg.data.steps is None  # every registered step: the registry owns the list (tokenmill.resolve)


def test_data_step_options_are_kept_for_the_steps_to_check():
    """The core knows no step: a mapping under data.<name> is kept as that step's options, a scalar is an error."""
    cfg = load_config(overrides=["data.minhash.threshold=0.5", "data.shard_target_mb=64"])
    assert cfg.data.step_options == {"minhash": {"threshold": 0.5}}
    assert cfg.to_dict()["data"]["minhash"] == {"threshold": 0.5}  # written back where the YAML has it
    with pytest.raises(ConfigError, match="unknown config key data.'shard_target_mbb'"):
        load_config(overrides=["data.shard_target_mbb=64"])


def test_file_overrides_defaults_and_overrides_override_file(tmp_path):
    cfg_file = write_yaml(tmp_path / "c.yaml", "train:\n  max_steps: 7\n  lr: 0.5\nmodel:\n  n_layer: 3\n")
    cfg = load_config(cfg_file, ["train.max_steps=11"])
    assert cfg.train.max_steps == 11  # override beats file
    assert cfg.train.lr == 0.5  # file beats default
    assert cfg.model.n_layer == 3  # file beats default
    assert cfg.train.warmup_steps == TrainConfig().warmup_steps  # untouched key keeps its default
    assert cfg.model.n_head == Config().model.n_head


def test_later_override_wins_over_earlier_one():
    cfg = load_config(overrides=["run.seed=1", "run.seed=2"])
    assert cfg.run.seed == 2


def test_override_can_create_section_absent_from_file(tmp_path):
    cfg_file = write_yaml(tmp_path / "c.yaml", "run:\n  name: x\n")
    cfg = load_config(cfg_file, ["tokenizer.vocab_size=300"])
    assert cfg.run.name == "x"
    assert cfg.tokenizer.vocab_size == 300


def test_override_value_is_parsed_as_yaml():
    cfg = load_config(overrides=["model.bias=true", "train.sample_prompt=Once upon", "model.dropout=0.25"])
    assert cfg.model.bias is True
    assert cfg.train.sample_prompt == "Once upon"
    assert cfg.model.dropout == 0.25


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write_yaml(tmp_path / "c.yaml", "")) == load_config()


def test_shipped_configs_load_and_demo_documents_every_key():
    import yaml

    assert load_config(REPO_ROOT / "conf" / "tiny.yaml").run.name == "tiny"
    assert load_config(REPO_ROOT / "conf" / "demo.yaml").run.name == "demo"
    tree = yaml.safe_load((REPO_ROOT / "conf" / "demo.yaml").read_text())
    documented = {f"{s}.{k}" for s, sec in tree.items() for k in sec}
    from tokenmill.resolve import resolve_config  # every data step's options, as resolved

    assert documented == {".".join(k.split(".")[:2]) for k in resolve_config().flat()}


# --- unknown keys -----------------------------------------------------------------------------


def test_unknown_key_in_file_names_key_and_suggests_close_one(tmp_path):
    cfg_file = write_yaml(tmp_path / "c.yaml", "train:\n  max_step: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg_file)
    msg = str(e.value)
    assert "max_step'" in msg
    assert "did you mean" in msg and "max_steps" in msg


def test_unknown_key_in_override_names_key_and_suggests_close_one():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["train.max_step=5"])
    assert "max_step'" in str(e.value)
    assert "max_steps" in str(e.value)


def test_unknown_section_is_an_error_with_suggestion(tmp_path):
    with pytest.raises(ConfigError, match="trian") as e:
        load_config(write_yaml(tmp_path / "c.yaml", "trian:\n  lr: 0.1\n"))
    assert "'train'" in str(e.value)
    with pytest.raises(ConfigError, match="modle"):
        load_config(overrides=["modle.n_layer=2"])


def test_unknown_key_without_close_match_has_no_suggestion():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["train.zzzzzzzz=1"])
    assert "zzzzzzzz" in str(e.value)
    assert "did you mean" not in str(e.value)


# --- types ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "train.max_steps=ten",
        "train.max_steps=1.5",
        "train.max_steps=true",
        "model.bias=1",
        "run.name=[a, b]",
        "model.n_layer=false",
    ],
)
def test_wrong_types_are_rejected_naming_the_field(override):
    field = override.split("=")[0]
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(overrides=[override])


def test_bool_is_not_accepted_for_int_in_file(tmp_path):
    with pytest.raises(ConfigError, match="n_layer"):
        load_config(write_yaml(tmp_path / "c.yaml", "model:\n  n_layer: yes\n"))


def test_string_for_int_in_file_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="micro_batch_size"):
        load_config(write_yaml(tmp_path / "c.yaml", "train:\n  micro_batch_size: '8'\n"))


def test_int_is_accepted_for_float_and_becomes_float(tmp_path):
    cfg = load_config(write_yaml(tmp_path / "c.yaml", "train:\n  lr: 1\n"), ["train.min_lr=0"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.min_lr == 0.0 and isinstance(cfg.train.min_lr, float)


def test_bool_is_not_accepted_for_float():
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(overrides=["train.lr=true"])


def test_scientific_notation_float_is_accepted(tmp_path):
    """``3e-4`` is how learning rates are usually written (and how the code's own defaults are).

    PyYAML follows YAML 1.1 and reads ``3e-4`` (no dot) as a *string*, so the override and the
    same value in a config file must still end up as the float 0.0003.
    """
    assert load_config(overrides=["train.lr=3e-4"]).train.lr == pytest.approx(3e-4)
    cfg = load_config(write_yaml(tmp_path / "c.yaml", "train:\n  min_lr: 1e-5\n"))
    assert cfg.train.min_lr == pytest.approx(1e-5)


def test_null_allowed_only_for_optional_fields(tmp_path):
    cfg = load_config(write_yaml(tmp_path / "c.yaml", "tracking:\n  uri: null\n"))
    assert cfg.tracking.uri is None
    assert load_config(overrides=["tracking.uri=http://x:5000", "tracking.uri="]).tracking.uri is None
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(write_yaml(tmp_path / "d.yaml", "train:\n  lr: null\n"))
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(overrides=["train.lr="])


def test_section_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="train"):
        load_config(write_yaml(tmp_path / "c.yaml", "train: 5\n"))
    with pytest.raises(ConfigError, match="train"):
        load_config(write_yaml(tmp_path / "d.yaml", "train: 5\n"), ["train.lr=0.1"])


# --- syntax / file errors ---------------------------------------------------------------------


@pytest.mark.parametrize("override", ["train.lr", "lr=0.1", "=3", "trainlr=0.1"])
def test_malformed_overrides_are_errors(override):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(overrides=[override])


def test_missing_file_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as e:
        load_config(missing)
    assert str(missing) in str(e.value)


def test_invalid_yaml_is_a_config_error(tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", "train:\n  lr: [0.1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write_yaml(tmp_path / "list.yaml", "- a\n- b\n"))


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# --- paths and derived values -----------------------------------------------------------------


def test_resolve_paths_finds_repo_files_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve_paths(load_config(), REPO_ROOT)
    ds = Path(cfg.train.deepspeed_config)
    assert ds.is_absolute() and ds.is_file()
    assert ds == REPO_ROOT / "conf" / "deepspeed" / "base.json"
    assert Path(cfg.data.input) == REPO_ROOT / "data" / "sample" / "*.warc.gz"  # a glob, anchored in the repo
    # the output folder is the working directory's, not the repository's
    assert Path(cfg.run.output_dir) == tmp_path.resolve() / "runs"


def test_resolve_paths_prefers_working_directory_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "conf" / "deepspeed" / "base.json"
    local.parent.mkdir(parents=True)
    local.write_text("{}")
    cfg = resolve_paths(load_config(), REPO_ROOT)
    assert Path(cfg.train.deepspeed_config) == local.resolve()


def test_resolve_paths_keeps_absolute_and_anchors_globs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve_paths(
        load_config(overrides=[f"train.deepspeed_config={tmp_path}/x.json", "data.input=shards/*.warc.gz"]), REPO_ROOT
    )
    assert cfg.train.deepspeed_config == f"{tmp_path}/x.json"
    assert cfg.data.input == str(Path.cwd() / "shards" / "*.warc.gz")


def test_missing_relative_input_resolves_against_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve_paths(load_config(overrides=["data.input=nowhere/x.warc.gz"]), REPO_ROOT)
    assert Path(cfg.data.input) == tmp_path.resolve() / "nowhere" / "x.warc.gz"


def test_flat_has_one_dotted_key_per_field():
    cfg = load_config(overrides=["train.lr=0.25"])
    flat = cfg.flat()
    assert flat["train.lr"] == 0.25
    assert flat["run.name"] == "demo"
    assert flat["tracking.uri"] is None
    cfg.data.step_options["langid"] = {"threshold": 0.65}
    assert cfg.flat()["data.langid.threshold"] == 0.65  # step options flatten one level deeper
    sections = cfg.to_dict()
    assert {k.split(".")[0] for k in flat} == set(sections)
    assert all(k.count(".") == 1 for k in flat if not k.startswith("data."))


def test_run_dir_and_default_tracking_uri(tmp_path):
    cfg = load_config(overrides=[f"run.output_dir={tmp_path}", "run.name=abc"])
    assert cfg.run_dir == tmp_path / "abc"
    assert cfg.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    cfg.tracking.uri = "http://127.0.0.1:5000"
    assert cfg.tracking_uri == "http://127.0.0.1:5000"
