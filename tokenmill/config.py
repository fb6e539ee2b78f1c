"""Typed run configuration: code defaults < YAML file < ``--set key=value`` overrides.

Every section is a dataclass; the YAML file and the overrides may only name fields that
exist (unknown keys are errors, with the closest valid name suggested), and each value is
checked against the field's type. ``conf/*.yaml`` documents every key.
"""

from __future__ import annotations

import dataclasses
import difflib
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
    input: str = "data/sample"  # a WARC file, a folder of *.warc.gz, or a glob
    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"
    num_shards: int = 2
    min_words: int = 50  # Gopher quality (Rae et al. 2021): 50..100,000 words
    max_words: int = 100_000
    min_mean_word_length: float = 3.0  # Gopher quality: mean word length 3..10
    max_mean_word_length: float = 10.0


@dataclass
class TokenizerConfig:
    vocab_size: int = 8192
    min_frequency: int = 2
    validation_fraction: float = 0.05  # share of documents (by id hash) held out


@dataclass
class ModelConfig:
    family: str = "gpt"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    block_size: int = 128
    dropout: float = 0.0
    bias: bool = False
    tie_embeddings: bool = True


@dataclass
class TrainConfig:
    nproc: int = 2  # processes launched by torchrun on this machine (CPU: gloo, GPU: nccl)
    zero_stage: int = 2
    deepspeed_config: str = "conf/deepspeed/base.json"
    micro_batch_size: int = 8
    grad_accum_steps: int = 1
    max_steps: int = 300
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    log_every: int = 10
    eval_max_blocks: int = 256  # validation blocks evaluated at the end
    sample_prompt: str = "The"
    sample_tokens: int = 48


@dataclass
class TrackingConfig:
    uri: str | None = None  # None: sqlite:///<output_dir>/mlflow.db
    experiment: str = "tokenmill"


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"train.lr": 0.001, ...}``: the form MLflow parameters take."""
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name

    @property
    def tracking_uri(self) -> str:
        if self.tracking.uri:
            return self.tracking.uri
        return f"sqlite:///{Path(self.run.output_dir).resolve()}/mlflow.db"


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
            raise ConfigError(f"{path} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of sections, got {type(loaded).__name__}")
        tree = loaded
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        section, name = key.strip().split(".", 1)
        tree.setdefault(section, {})
        if not isinstance(tree[section], dict):
            raise ConfigError(f"section {section!r} must be a mapping")
        tree[section][name] = yaml.safe_load(raw) if raw.strip() else None
    return _build(Config, tree, where="")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
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
            kwargs[key] = _coerce(value, hint, f"{where}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
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
    repository, so the shipped sample corpus and DeepSpeed configs are found from anywhere.
    """

    def find(p: str) -> str:
        path = Path(p).expanduser()
        if path.is_absolute():
            return str(path)
        if any(ch in p for ch in "*?["):  # a glob: anchor it, don't resolve it
            return str(Path.cwd() / path)
        if path.exists() or not (repo_root / path).exists():
            return str(path.resolve())
        return str(repo_root / path)

    cfg.run.output_dir = str(Path(cfg.run.output_dir).expanduser().resolve())
    cfg.data.input = find(cfg.data.input)
    cfg.train.deepspeed_config = find(cfg.train.deepspeed_config)
    return cfg
