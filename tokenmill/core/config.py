"""Typed run configuration: code defaults < YAML file < ``--set key=value`` overrides.

Every section is a dataclass; the YAML file and the overrides may only name fields that
exist (unknown keys are errors, with the closest valid name suggested), and each value is
checked against the field's type, then against ``CHOICES``, ``RANGES`` and the rules between fields
(``check_config``), so a bad value fails when the config is loaded, not in the stage that uses it.
``conf/*.yaml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file or override that cannot be used as given."""


@dataclass
class RunConfig:
    name: str = "demo"
    output_dir: str = "runs"  # every run writes <output_dir>/<name>/
    seed: int = 1234


@dataclass
class DataConfig:
    input: str = "data/sample/*.warc.gz"  # a file, a folder (searched recursively) or a glob; local or a URI
    format: str = "auto"  # auto (by extension), warc (also WET), jsonl, parquet, text
    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"
    spark_shuffle_partitions: int = 16  # raise on a cluster: about 2-3 per executor core
    # Where Spark writes reliable checkpoints (MinHash's signatures and connected-components rounds): a folder or
    # URI every executor reaches (HDFS, S3, a shared mount). Required when spark_master is a cluster: a local
    # checkpoint lives on one executor, and losing it fails the job. null on local[*]: local checkpoints.
    checkpoint_dir: str | None = None
    # Steps run in this order; null: every registered step (`tokenmill.spark_jobs.registry`, where the
    # list lives), in the registry's order. Each step's options are a mapping of the step's name under
    # `data` (e.g. `data.minhash.threshold`), checked against the step's class when the run's config is
    # resolved (`tokenmill.resolve`), its defaults filled in from it.
    steps: list[str] | None = None
    step_options: dict = field(default_factory=dict, metadata={"extra_mappings": True})
    shard_target_mb: int = 256  # kept-text Parquet shards are cut to about this size
    row_group_mb: int = 128

    def to_dict(self) -> dict[str, Any]:
        """The section as its YAML reads: each step's options under ``<step>``, next to the data keys."""
        out = dataclasses.asdict(self)
        out.update(out.pop("step_options"))
        return out


@dataclass
class TokenizerConfig:
    vocab_size: int = 8192
    min_frequency: int = 2
    validation_fraction: float = 0.05  # share of documents (by id hash) held out
    from_pretrained: str | None = None  # a tokenizer.json (or a folder holding one) to use instead of training
    # Text the tokenizer is trained on, at most (UTF-8 bytes): documents whose sha1(id) falls below
    # sample_bytes / kept bytes, so the sample is deterministic and about this big; all of it when smaller.
    sample_bytes: int = 1_000_000_000
    # How the tokenize stage encodes documents: auto = tiktoken's BPE when it gives the same ids as the tokenizers
    # library (a byte-level BPE such as the trained one or GPT-2's; checked on each Spark task's first documents),
    # else the tokenizers library; tokenizers = always the tokenizers library (about 8x slower).
    encoder: str = "auto"


@dataclass
class ModelConfig:
    # Architecture: the family's defaults < the flavour < every key below that is set (null = not set).
    family: str | None = None  # gpt, bert, t5, transformer; null: the flavour's family, else gpt
    flavor: str | None = None  # a named size from `tokenmill models` (debug, gpt2-small, bert-base, t5-small, ...)
    n_layer: int | None = None  # encoder layers for t5 / transformer
    n_decoder_layer: int | None = None  # t5 / transformer; null: n_layer
    n_head: int | None = None
    d_head: int | None = None  # t5's d_kv; null: n_embd / n_head
    n_embd: int | None = None  # model width (d_model)
    d_ff: int | None = None  # feed-forward width; null: the family's rule (4 x n_embd)
    block_size: int | None = None  # sequence length trained on (t5 / transformer: encoder input length)
    dropout: float | None = None
    bias: bool | None = None  # gpt: biases in linear layers and norms
    tie_embeddings: bool | None = None
    position: str | None = None  # learned, sinusoidal, rope, alibi (gpt, bert; bert's default rope); relative (t5)
    activation: str | None = None  # gelu, gelu_tanh, relu, gated-gelu, gated-silu
    norm: str | None = None  # bert: pre (its default) or post (the original BERT; with learned positions: HF export)
    nsp_pool: str | None = None  # bert: segments (its default: NSP compares A's and B's mean states) or cls (original)
    init_from: str | None = None  # a Hugging Face model folder to continue pretraining from


@dataclass
class TrainConfig:
    nproc: int = 2  # processes per node (CPU: gloo, GPU: nccl; one per GPU)
    launcher: str = "torchrun"  # torchrun, deepspeed (with train.hostfile, over ssh), or slurm (sbatch, below)
    nnodes: int = 1  # >1: torchrun rendezvous at train.rdzv_endpoint, started on every node
    rdzv_endpoint: str | None = None  # host:port of the rendezvous (multi-node torchrun)
    hostfile: str | None = None  # DeepSpeed hostfile ("host slots=N" lines) for launcher deepspeed
    # launcher slurm: submit infra/slurm/train.sbatch with sbatch (train.nnodes nodes, train.nproc ranks per
    # node) and follow the job from the submitting process; the job logs into the MLflow run it opened.
    # Extra sbatch options, before the script's own #SBATCH lines (which they override): the partition,
    # account, time limit, and on CPU-only nodes e.g. ["--gpus-per-node=0", "--cpus-per-task=2"].
    slurm_args: list[str] = field(default_factory=list)
    poll_seconds: float = 5.0  # launcher slurm: seconds between squeue/scontrol looks at the job
    zero_stage: int = 2
    deepspeed_config: str = "conf/deepspeed/base.json"
    # auto: bf16 where every rank's device computes it natively (CUDA compute capability >= 8.0; a CPU with
    # AVX512-BF16 or AMX), else fp32; or fp32, bf16, fp16 (with dynamic loss scaling) as written.
    precision: str = "auto"
    offload_optimizer: bool = False  # optimizer states (and the step) on the CPU; ZeRO 1-3
    offload_params: bool = False  # parameters on the CPU between uses; ZeRO 3 only
    activation_checkpointing: bool = False  # recompute each block's activations in the backward pass
    micro_batch_size: int = 8
    grad_accum_steps: int | None = None  # null: 1, or derived from global_batch_size
    global_batch_size: int | None = None  # sequences per step; must be micro_batch_size x world x accum
    max_steps: int = 300
    lr: float = 1e-3
    min_lr: float = 1e-4
    schedule: str = "cosine"  # after linear warmup: cosine or linear decay to min_lr, or constant
    warmup_steps: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # global gradient norm; 0 disables clipping
    log_every: int = 10
    eval_every: int = 0  # steps between validation passes (0: only at the end)
    eval_max_blocks: int = 256  # validation examples scored at each evaluation
    checkpoint_every: int = 0  # steps between checkpoints (0: none by step count)
    # minutes between checkpoints (0: none by time); either rule triggers one. Also at the end and on SIGTERM/SIGINT.
    checkpoint_minutes: float = 30.0
    max_restarts: int = 3  # torchrun restarts every rank this often after one fails; they resume from the checkpoint
    resume: bool = True  # continue from <out>/checkpoints when a checkpoint is there
    peak_flops: float | None = None  # per device, for MFU; null: from the table for the detected GPU
    sample_prompt: str = "The"
    sample_tokens: int = 48
    # t5 / transformer: train on paired text instead of span corruption, from a JSONL file of
    # {"source": ..., "target": ...} lines (held out by hash like documents).
    pairs: str | None = None
    target_length: int | None = None  # decoder length for pairs; null: model.block_size


@dataclass
class TrackingConfig:
    uri: str | None = None  # None: $MLFLOW_TRACKING_URI (set by `tokenmill up`), else sqlite:///<output_dir>/mlflow.db
    experiment: str = "tokenmill"
    register_model: bool = True  # export at the end of training and register it in the model registry
    model_name: str | None = None  # registered model name; null: tokenmill-<run.name>-<family>
    system_metrics: bool = True  # sample CPU/memory/GPU use into the run during training


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as its YAML reads: step options under ``data.<step>``, next to the data keys."""
        return {**dataclasses.asdict(self), "data": self.data.to_dict()}

    def flat(self) -> dict[str, Any]:
        """``{"train.lr": 0.001, "data.langid.threshold": 0.65, ...}``: the form MLflow parameters take."""
        out: dict[str, Any] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict) and node:
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = node

        walk("", self.to_dict())
        return out

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name

    @property
    def tracking_uri(self) -> str:
        if self.tracking.uri:
            return self.tracking.uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return f"sqlite:///{Path(self.run.output_dir).resolve()}/mlflow.db"


# Allowed values of the enumerated keys. The stages that consume them keep their own lists (the core
# imports no stage); tests/tokenmill/test_config.py checks that the two agree. model.family is checked
# against the family registry where the run is resolved (tokenmill.resolve).
CHOICES: dict[str, tuple] = {
    "data.format": ("auto", "warc", "jsonl", "parquet", "text"),  # spark_jobs.readers.READERS, or auto
    "model.position": ("learned", "sinusoidal", "rope", "alibi", "relative"),  # training.models.layers
    "model.activation": ("gelu", "gelu_tanh", "relu", "gated-gelu", "gated-silu"),  # training.models.layers
    "model.norm": ("pre", "post"),  # training.models.bert.BERT_NORMS
    "model.nsp_pool": ("segments", "cls"),  # training.models.bert.BERT_NSP_POOLS
    "train.launcher": ("torchrun", "deepspeed", "slurm"),  # training.launch.LAUNCHERS
    "tokenizer.encoder": ("auto", "tokenizers"),  # core.tokenizer.ENCODERS
    "train.zero_stage": (0, 1, 2, 3),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),  # training.distributed.PRECISIONS
    "train.schedule": ("cosine", "linear", "constant"),  # training.schedule.SCHEDULES
}

# Ranges of the numeric keys: "> 0", ">= 0", or an interval such as "[0, 1)". An unset (null) key passes.
RANGES: dict[str, str] = {
    "run.seed": ">= 0",
    "data.spark_shuffle_partitions": "> 0",
    "data.shard_target_mb": "> 0",
    "data.row_group_mb": "> 0",
    "tokenizer.vocab_size": "> 0",
    "tokenizer.min_frequency": ">= 0",
    "tokenizer.validation_fraction": "(0, 1)",
    "tokenizer.sample_bytes": "> 0",
    "model.n_layer": "> 0",
    "model.n_decoder_layer": "> 0",
    "model.n_head": "> 0",
    "model.d_head": "> 0",
    "model.n_embd": "> 0",
    "model.d_ff": "> 0",
    "model.block_size": "> 0",
    "model.dropout": "[0, 1)",
    "train.nproc": "> 0",
    "train.nnodes": "> 0",
    "train.poll_seconds": "> 0",
    "train.micro_batch_size": "> 0",
    "train.grad_accum_steps": "> 0",
    "train.global_batch_size": "> 0",
    "train.max_steps": "> 0",
    "train.lr": "> 0",
    "train.min_lr": ">= 0",
    "train.warmup_steps": ">= 0",
    "train.weight_decay": ">= 0",
    "train.grad_clip": ">= 0",
    "train.log_every": "> 0",
    "train.eval_every": ">= 0",
    "train.eval_max_blocks": "> 0",
    "train.checkpoint_every": ">= 0",
    "train.checkpoint_minutes": ">= 0",
    "train.max_restarts": ">= 0",
    "train.peak_flops": "> 0",
    "train.sample_tokens": ">= 0",
    "train.target_length": "> 0",
}


def _in_range(value: float, spec: str) -> bool:
    if m := re.fullmatch(r"(>=?) (\S+)", spec):
        op, bound = m.group(1), float(m.group(2))
        return value >= bound if op == ">=" else value > bound
    m = re.fullmatch(r"([\[(])(\S+), (\S+)([\])])", spec)
    if m is None:
        raise ValueError(f"bad range {spec!r}")
    lo, hi = float(m.group(2)), float(m.group(3))
    return (value >= lo if m.group(1) == "[" else value > lo) and (value <= hi if m.group(4) == "]" else value < hi)


def check_config(cfg: Config) -> Config:
    """Every key's allowed values and range, and the rules between keys; the first problem as a ConfigError.

    Only what holds on any machine: ``tokenmill.resolve`` adds what needs the stages (model.family, data
    step options) or this machine (fp16 needs a GPU), and the CLI checks that the inputs exist.
    """
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value is not None and value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))}, got {value!r}")
    for key, spec in RANGES.items():
        value = _get(cfg, key)
        if value is not None and not _in_range(value, spec):
            raise ConfigError(f"{key} must be {spec if spec[0] in '<>' else 'in ' + spec}, got {value!r}")
    d = cfg.data
    if not d.spark_master.startswith("local") and not d.checkpoint_dir:
        raise ConfigError(
            f"data.checkpoint_dir is required when data.spark_master is a cluster ({d.spark_master}): a folder or "
            "URI every executor reaches (hdfs://..., a shared mount), where Spark checkpoints survive the loss "
            "of an executor"
        )
    t = cfg.train
    if t.min_lr > t.lr:
        raise ConfigError(f"train.min_lr {t.min_lr} is above train.lr {t.lr}: the schedule decays from lr to min_lr")
    check_offload(t)
    if t.global_batch_size is not None:  # the rule of training.distributed.batch_sizes, with nproc x nnodes
        world = t.nproc * t.nnodes
        per_step = t.micro_batch_size * world
        if t.global_batch_size % per_step:
            raise ConfigError(
                f"train.global_batch_size {t.global_batch_size} is not divisible by micro_batch_size "
                f"{t.micro_batch_size} x world size {world} (nproc x nnodes) = {per_step}; "
                f"choose a multiple of {per_step}"
            )
        accum = t.global_batch_size // per_step
        if t.grad_accum_steps is not None and t.grad_accum_steps != accum:
            raise ConfigError(
                f"train.grad_accum_steps {t.grad_accum_steps} contradicts global_batch_size "
                f"{t.global_batch_size} = {t.micro_batch_size} x {world} x {accum}; set only one of them"
            )
    return cfg


def check_offload(t: TrainConfig) -> None:
    """ZeRO offload needs the stage that partitions what it moves: a ConfigError otherwise."""
    if t.offload_optimizer and t.zero_stage == 0:
        raise ConfigError(
            "train.offload_optimizer needs ZeRO stage 1, 2 or 3 (train.zero_stage=0 keeps the "
            "optimizer whole on every device)"
        )
    if t.offload_params and t.zero_stage != 3:
        raise ConfigError(
            f"train.offload_params needs train.zero_stage=3 (got {t.zero_stage}): only ZeRO-3 "
            "partitions the parameters themselves"
        )


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Resolve defaults < ``path`` < ``overrides`` (each ``section.key=value``, value parsed as YAML)."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(_yaml_error(str(path), e)) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of sections, got {type(loaded).__name__}")
        tree = loaded
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        *parents, name = key.strip().split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part!r} is not a mapping")
        try:
            node[name] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(_yaml_error(f"--set {key}", e)) from None
    return check_config(_build(Config, tree, where=""))


def _yaml_error(where: str, e: yaml.YAMLError) -> str:
    """PyYAML's error as one line: ``conf/x.yaml:3:5: not valid YAML: <what>`` (line and column 1-based)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    what = f"{context}, {problem}" if context else problem
    at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None and where[:2] != "--" else where
    return f"{at}: not valid YAML: {what}"


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    # A field marked extra_mappings collects the mappings under keys that are not fields (the data steps'
    # options): the layer that owns those names checks them.
    extra = next((f.name for f in fields.values() if f.metadata.get("extra_mappings")), None)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {extra: {}} if extra else {}
    for key, value in values.items():
        if extra and key not in fields and isinstance(value, dict):
            kwargs[extra][key] = dict(value)
            continue
        if key == extra:
            raise ConfigError(f"unknown config key {where}{key!r}: give each step's options as {where}<step>")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {where}{close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {where}{key!r}{hint}; valid: {', '.join(fields)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key} must be a mapping")
            kwargs[key] = _build(hint, value, where=f"{where}{key}.")
        else:
            kwargs[key] = coerce(value, hint, f"{where}{key}")
    return cls(**kwargs)


def coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` as the type ``hint`` names (``int``, ``float | None``, ``list[str]``, ...), or a ConfigError."""
    if isinstance(hint, types.UnionType) and isinstance(value, list):  # `list[str] | None` given a list
        hint = next((a for a in typing.get_args(hint) if typing.get_origin(a) is list), hint)
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{name} may not be empty")
    for t in allowed:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is float and isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if t is bool and isinstance(value, bool):
            return value
        if t in (int, str) and isinstance(value, t) and not isinstance(value, bool):
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"{name} must be {names}, got {value!r}")


def dump_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def resolve_paths(cfg: Config, repo_root: Path) -> Config:
    """Make the config's paths absolute, so every stage and process reads the same files.

    ``run.output_dir`` is taken from the working directory. Input files (``data.input``,
    ``train.deepspeed_config``) are looked up in the working directory first and then in the
    repository, so the shipped sample corpus and DeepSpeed configs are found from anywhere. URIs
    (``data.input: s3://bucket/crawl/``) are kept as they are.
    """

    def find(p: str) -> str:
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]+://", p):  # a URI (s3://bucket/crawl/, hdfs://...): as it is
            return p
        path = Path(p).expanduser()
        if path.is_absolute():
            return str(path)
        if any(ch in p for ch in "*?["):  # a glob: anchor it where it matches something
            here = Path.cwd() / path
            return str(
                here
                if glob.glob(str(here), recursive=True) or not glob.glob(str(repo_root / path), recursive=True)
                else repo_root / path
            )
        if path.exists() or not (repo_root / path).exists():
            return str(path.resolve())
        return str(repo_root / path)

    cfg.run.output_dir = str(Path(cfg.run.output_dir).expanduser().resolve())
    cfg.data.input = find(cfg.data.input)
    if cfg.data.checkpoint_dir and "://" not in cfg.data.checkpoint_dir:
        cfg.data.checkpoint_dir = str(Path(cfg.data.checkpoint_dir).expanduser().resolve())
    cfg.train.deepspeed_config = find(cfg.train.deepspeed_config)
    if cfg.tokenizer.from_pretrained:
        cfg.tokenizer.from_pretrained = find(cfg.tokenizer.from_pretrained)
    if cfg.train.hostfile:
        cfg.train.hostfile = find(cfg.train.hostfile)
    if cfg.train.pairs:
        cfg.train.pairs = find(cfg.train.pairs)
    if cfg.model.init_from:
        cfg.model.init_from = find(cfg.model.init_from)
    return cfg
