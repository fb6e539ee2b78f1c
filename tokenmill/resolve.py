"""The run's config as every stage sees it, resolved once by the CLI or the first flow.

``resolve_config`` = defaults < file < ``--set`` overrides (``tokenmill.core.config``), each data
step's options checked against its class and completed (``tokenmill.spark_jobs.registry``), and every
path made absolute. What runs after it (subflows, training ranks, the evaluation process) reads its
one dump, ``<run>/config.yaml``, which resolves to the same value again.
"""

from __future__ import annotations

from pathlib import Path

from tokenmill.core.config import Config, dump_config, load_config, resolve_paths
from tokenmill.core.env import REPO_ROOT
from tokenmill.spark_jobs.registry import complete_step_options


def resolve_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The checked, completed config with absolute paths; raises ConfigError on any bad key or value."""
    cfg = load_config(path, overrides)
    complete_step_options(cfg.data)
    return resolve_paths(cfg, REPO_ROOT)


def resolve_and_dump(path: str | Path | None = None, overrides: list[str] | None = None) -> tuple[Config, str]:
    """``resolve_config``, written to ``<run>/config.yaml``: the one dump the stages after it read."""
    cfg = resolve_config(path, overrides)
    run_dir = cfg.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    return cfg, str(run_dir / "config.yaml")
