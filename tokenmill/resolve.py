"""The run's config as every stage sees it, resolved once by the CLI or the first flow.

``resolve_config`` = defaults < file < ``--set`` overrides (``tokenmill.core.config``, which checks
every value's type, choices, range and the rules between keys), ``model.family`` checked against the
family registry, each data step's options checked against its class and completed
(``tokenmill.spark_jobs.registry``), what this machine cannot run refused (``machine_problems``), and
every path made absolute. What runs after it (subflows, training ranks, the evaluation process) reads its
one dump, ``<run>/config.yaml``, which resolves to the same value again.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from tokenmill.core.config import Config, ConfigError, dump_config, load_config, resolve_paths
from tokenmill.core.env import REPO_ROOT
from tokenmill.spark_jobs.registry import complete_step_options
from tokenmill.training.families import FAMILIES


def resolve_config(
    path: str | Path | None = None, overrides: list[str] | None = None, *, this_machine: bool = True
) -> Config:
    """The checked, completed config with absolute paths; raises ConfigError on any bad key or value.

    ``this_machine=False`` leaves out ``machine_problems`` (for printing a config meant for another machine).
    """
    cfg = load_config(path, overrides)
    family = cfg.model.family
    if family is not None and family not in FAMILIES:
        close = difflib.get_close_matches(family, FAMILIES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"model.family must be one of {', '.join(FAMILIES)}, got {family!r}{hint}")
    complete_step_options(cfg.data)
    if this_machine and (problems := machine_problems(cfg)):
        raise ConfigError(problems[0])
    return resolve_paths(cfg, REPO_ROOT)


def machine_problems(cfg: Config) -> list[str]:
    """What of ``cfg`` this machine cannot run (fp16 needs a GPU: DeepSpeed refuses it on the CPU)."""
    problems = []
    if cfg.train.precision == "fp16":
        import torch

        if not torch.cuda.is_available():
            problems.append("train.precision=fp16 needs a GPU (none here): use fp32 or bf16 on the CPU")
    return problems


def resolve_and_dump(path: str | Path | None = None, overrides: list[str] | None = None) -> tuple[Config, str]:
    """``resolve_config``, written to ``<run>/config.yaml``: the one dump the stages after it read."""
    cfg = resolve_config(path, overrides)
    run_dir = cfg.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    return cfg, str(run_dir / "config.yaml")
