"""Stage fingerprints: what a stage's output depends on, hashed into one key.

A stage's key hashes the config keys that can change its output (execution-only keys such as the
Spark master are left out), fingerprints of its input files (the upstream manifest's hash, or size
and mtime of raw crawl files), the source of the code it runs, and its output folder. The Prefect
cache (``tokenmill.flows.caching``) and the train stage's checkpoint check both use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from tokenmill.core.env import REPO_ROOT

# Keys that change how a stage runs but not what it writes.
_EXECUTION_ONLY = {
    "data": {"spark_master", "spark_driver_memory", "spark_shuffle_partitions", "checkpoint_dir"},
    "tokenize": {"encoder"},  # tiktoken or tokenizers: the same ids
    "train": {"launcher", "rdzv_endpoint", "hostfile", "slurm_args", "poll_seconds", "resume"}
    | {"checkpoint_every", "checkpoint_minutes", "max_restarts"},  # when to checkpoint and restart: not what is trained
}

# The code each stage runs, as globs under the repository root.
STAGE_CODE = {
    "data": ["spark_jobs/**/*.py"],
    "tokenize": ["spark_jobs/tokenize.py", "tokenmill/core/tokenizer.py", "tokenmill/core/indexed.py"],
    "train": ["training/**/*.py", "tokenmill/core/tracking.py", "conf/deepspeed/*.json"],
    "evaluate": ["training/**/*.py"],
}
# Files a stage's globs match that are another stage's code.
STAGE_CODE_EXCLUDE = {"data": ["spark_jobs/tokenize.py"]}


def config_part(cfg, stage: str) -> dict[str, Any]:
    """The config keys ``stage``'s output depends on."""
    drop = _EXECUTION_ONLY.get(stage, set())
    if stage == "data":
        part = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in drop}
    elif stage == "tokenize":
        tokenizer = {k: v for k, v in dataclasses.asdict(cfg.tokenizer).items() if k not in drop}
        part = {"tokenizer": tokenizer, "seed": cfg.run.seed}
    elif stage == "train":
        part = {
            "model": dataclasses.asdict(cfg.model),
            "seed": cfg.run.seed,
            "tracking": cfg.tracking_uri,
            "experiment": cfg.tracking.experiment,
            "train": {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in drop},
        }
    elif stage == "evaluate":
        part = {"eval_max_blocks": cfg.train.eval_max_blocks, "seed": cfg.run.seed, "tracking": cfg.tracking_uri}
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return part


def file_fingerprint(path: str | Path) -> str:
    """Size and modification time: enough to notice a replaced input without reading gigabytes of crawl."""
    st = Path(path).stat()
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def manifest_fingerprint(path: str | Path) -> str:
    """A manifest's content hash: it names every output file of the stage that wrote it, with hashes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def code_fingerprint(stage: str, root: Path = REPO_ROOT) -> str:
    h = hashlib.sha256()
    excluded = {root / name for name in STAGE_CODE_EXCLUDE.get(stage, [])}
    for pattern in STAGE_CODE[stage]:
        for path in sorted(set(root.glob(pattern)) - excluded):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def stage_key(stage: str, cfg, inputs: list[str], out_dir: str | Path) -> str:
    """The cache key of one stage run: config part, input fingerprints, code, output folder."""
    blob = json.dumps(
        {
            "stage": stage,
            "config": config_part(cfg, stage),
            "inputs": inputs,
            "code": code_fingerprint(stage),
            "out": str(Path(out_dir).resolve()),
        },
        sort_keys=True,
        default=str,
    )
    return f"{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:32]}"
