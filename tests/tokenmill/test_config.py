"""tokenmill.core.config: precedence, strict keys, type checks, allowed values and ranges, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenmill.core.config import CHOICES, RANGES, Config, ConfigError, TrainConfig, load_config, resolve_paths
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


def test_invalid_yaml_is_one_line_naming_the_file_line_and_column(tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", "train:\n  lr: 0.1\n    max_steps: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    message = str(e.value)
    assert message.startswith(f"{bad}:3:14: not valid YAML: ") and "mapping values are not allowed" in message
    assert "\n" not in message and "<unicode string>" not in message
    with pytest.raises(ConfigError, match=r"^--set run\.name: not valid YAML: .*flow sequence") as e:
        load_config(overrides=["run.name=[a"])
    assert "\n" not in str(e.value)


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


@pytest.mark.parametrize("uri", ["s3://crawl-bucket/2026-10/", "gs://b/x/*.warc.gz", "hdfs://nn:8020/crawl"])
def test_resolve_paths_keeps_uris_as_they_are(tmp_path, monkeypatch, uri):
    monkeypatch.chdir(tmp_path)
    cfg = resolve_paths(load_config(overrides=[f"data.input={uri}"]), REPO_ROOT)
    assert cfg.data.input == uri


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


# --- allowed values, ranges and the rules between keys ----------------------------------------

BAD_VALUES = [
    ("data.format=csv", "data.format must be one of auto, warc, jsonl, parquet, text, got 'csv'"),
    ("model.position=absolute", "model.position must be one of learned, sinusoidal, rope, alibi, relative"),
    ("model.activation=swish", "model.activation must be one of gelu, gelu_tanh, relu, gated-gelu, gated-silu"),
    ("model.norm=sandwich", "model.norm must be one of pre, post, got 'sandwich'"),
    ("model.nsp_pool=mean", "model.nsp_pool must be one of segments, cls, got 'mean'"),
    ("train.launcher=mpirun", "train.launcher must be one of torchrun, deepspeed, slurm, got 'mpirun'"),
    ("train.zero_stage=4", "train.zero_stage must be one of 0, 1, 2, 3, got 4"),
    ("train.precision=fp8", "train.precision must be one of auto, fp32, bf16, fp16, got 'fp8'"),
    ("train.schedule=step", "train.schedule must be one of cosine, linear, constant, got 'step'"),
    ("run.seed=-1", "run.seed must be >= 0, got -1"),
    ("train.poll_seconds=0", "train.poll_seconds must be > 0, got 0"),
    ("data.spark_shuffle_partitions=0", "data.spark_shuffle_partitions must be > 0, got 0"),
    ("data.shard_target_mb=0", "data.shard_target_mb must be > 0"),
    ("data.row_group_mb=-1", "data.row_group_mb must be > 0"),
    ("tokenizer.vocab_size=0", "tokenizer.vocab_size must be > 0, got 0"),
    ("tokenizer.min_frequency=-1", "tokenizer.min_frequency must be >= 0"),
    ("tokenizer.validation_fraction=0", "tokenizer.validation_fraction must be in (0, 1), got 0.0"),
    ("tokenizer.validation_fraction=1", "tokenizer.validation_fraction must be in (0, 1), got 1.0"),
    ("tokenizer.sample_bytes=0", "tokenizer.sample_bytes must be > 0, got 0"),
    ("tokenizer.encoder=fast", "tokenizer.encoder must be one of auto, tokenizers, got 'fast'"),
    ("model.n_layer=0", "model.n_layer must be > 0"),
    ("model.n_decoder_layer=0", "model.n_decoder_layer must be > 0"),
    ("model.n_head=0", "model.n_head must be > 0"),
    ("model.d_head=-8", "model.d_head must be > 0"),
    ("model.n_embd=0", "model.n_embd must be > 0"),
    ("model.d_ff=0", "model.d_ff must be > 0"),
    ("model.block_size=0", "model.block_size must be > 0"),
    ("model.dropout=1", "model.dropout must be in [0, 1), got 1.0"),
    ("model.dropout=-0.1", "model.dropout must be in [0, 1), got -0.1"),
    ("train.nproc=0", "train.nproc must be > 0, got 0"),
    ("train.nnodes=0", "train.nnodes must be > 0, got 0"),
    ("train.micro_batch_size=0", "train.micro_batch_size must be > 0, got 0"),
    ("train.grad_accum_steps=0", "train.grad_accum_steps must be > 0"),
    ("train.global_batch_size=0", "train.global_batch_size must be > 0"),
    ("train.max_steps=0", "train.max_steps must be > 0, got 0"),
    ("train.lr=-5", "train.lr must be > 0, got -5.0"),
    ("train.min_lr=-1e-5", "train.min_lr must be >= 0"),
    ("train.warmup_steps=-1", "train.warmup_steps must be >= 0"),
    ("train.weight_decay=-0.1", "train.weight_decay must be >= 0"),
    ("train.grad_clip=-1", "train.grad_clip must be >= 0"),
    ("train.log_every=0", "train.log_every must be > 0"),
    ("train.eval_every=-1", "train.eval_every must be >= 0"),
    ("train.eval_max_blocks=0", "train.eval_max_blocks must be > 0"),
    ("train.checkpoint_every=-10", "train.checkpoint_every must be >= 0"),
    ("train.checkpoint_minutes=-1", "train.checkpoint_minutes must be >= 0"),
    ("train.max_restarts=-1", "train.max_restarts must be >= 0"),
    ("train.peak_flops=0", "train.peak_flops must be > 0"),
    ("train.sample_tokens=-1", "train.sample_tokens must be >= 0"),
    ("train.target_length=0", "train.target_length must be > 0"),
    # rules between keys
    ("train.min_lr=0.01", "train.min_lr 0.01 is above train.lr 0.001"),
    ("train.offload_optimizer=true train.zero_stage=0", "train.offload_optimizer needs ZeRO stage 1, 2 or 3"),
    ("train.offload_params=true train.zero_stage=2", "train.offload_params needs train.zero_stage=3 (got 2)"),
    ("train.global_batch_size=100", "global_batch_size 100 is not divisible by micro_batch_size 8 x world size 2"),
    (
        "train.global_batch_size=64 train.nnodes=3",
        "not divisible by micro_batch_size 8 x world size 6 (nproc x nnodes) = 48",
    ),
    ("train.global_batch_size=64 train.grad_accum_steps=2", "grad_accum_steps 2 contradicts global_batch_size 64"),
    ("data.spark_master=spark://m:7077", "data.checkpoint_dir is required when data.spark_master is a cluster"),
]


def test_a_cluster_master_with_a_checkpoint_dir_loads_and_the_dir_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(overrides=["data.spark_master=spark://m:7077", "data.checkpoint_dir=ckpt"])
    assert cfg.data.checkpoint_dir == "ckpt"
    assert resolve_paths(cfg, tmp_path).data.checkpoint_dir == str(tmp_path / "ckpt")
    uri = load_config(overrides=["data.spark_master=spark://m:7077", "data.checkpoint_dir=hdfs://nn/ckpt"])
    assert resolve_paths(uri, tmp_path).data.checkpoint_dir == "hdfs://nn/ckpt"


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_values_outside_their_choices_or_range_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=overrides.split())
    assert message in str(e.value) and "\n" not in str(e.value)


def test_every_constrained_key_has_a_failing_case_and_names_a_field():
    flat = Config().flat()
    tested = {o.split("=")[0] for case, _ in BAD_VALUES for o in case.split()}
    for key in [*CHOICES, *RANGES]:
        assert key in flat, key
        assert key in tested, f"no BAD_VALUES case for {key}"


def test_values_at_the_edges_of_their_ranges_load(tmp_path):
    cfg = load_config(
        overrides=[
            "train.min_lr=0",
            "train.warmup_steps=0",
            "train.grad_clip=0",
            "model.dropout=0",
            "train.zero_stage=3",
            "train.offload_params=true",
            "train.offload_optimizer=true",
            "train.precision=fp16",  # the core loads it on any machine; tokenmill.resolve asks for a GPU
            "train.global_batch_size=64",
            "train.grad_accum_steps=4",
            "train.min_lr=0.001",  # == lr
            "model.position=rope",
        ]
    )
    assert cfg.train.precision == "fp16" and cfg.train.grad_accum_steps == 4
    # A run shorter than its warmup is allowed (smoke runs): the schedule stays in warmup.
    assert load_config(overrides=["train.max_steps=2"]).train.warmup_steps == 30


def test_choices_agree_with_the_stages_that_use_them():
    from tokenmill.spark_jobs.readers import READERS
    from tokenmill.training.distributed import PRECISIONS
    from tokenmill.training.launch import LAUNCHERS
    from tokenmill.training.models.bert import BERT_NORMS, BERT_NSP_POOLS
    from tokenmill.training.models.layers import ACTIVATIONS, POSITIONS
    from tokenmill.training.schedule import SCHEDULES

    assert CHOICES["data.format"] == ("auto", *READERS)
    assert CHOICES["train.precision"] == PRECISIONS
    assert CHOICES["train.schedule"] == SCHEDULES
    assert CHOICES["model.position"] == POSITIONS
    assert CHOICES["model.activation"] == ACTIVATIONS
    assert CHOICES["model.norm"] == BERT_NORMS
    assert CHOICES["model.nsp_pool"] == BERT_NSP_POOLS
    assert CHOICES["train.launcher"] == LAUNCHERS
