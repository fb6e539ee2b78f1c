"""The data steps a config can name, and how one is built from its options.

``STEPS`` is the one list of steps: its order is the default order of ``data.steps``. A step's
options are its constructor's keyword arguments; their defaults (with the published sources cited
next to them) live in the step's class, nowhere else.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from tokenmill.core.config import ConfigError, DataConfig, coerce

STEPS = {
    "extract": "tokenmill.spark_jobs.extract:HtmlExtractor",
    "langid": "tokenmill.spark_jobs.langid:LanguageFilter",
    "gopher_quality": "tokenmill.spark_jobs.filters:GopherQualityFilter",
    "gopher_repetition": "tokenmill.spark_jobs.filters:GopherRepetitionFilter",
    "c4": "tokenmill.spark_jobs.filters:C4QualityFilter",
    "fineweb": "tokenmill.spark_jobs.filters:FineWebQualityFilter",
    "pii": "tokenmill.spark_jobs.pii:PIIRedactor",
    "decontaminate": "tokenmill.spark_jobs.decontaminate:NGramDecontaminator",
    "exact_dedup": "tokenmill.spark_jobs.dedup:ExactDeduplicator",
    "url_dedup": "tokenmill.spark_jobs.dedup:UrlDeduplicator",
    "minhash": "tokenmill.spark_jobs.minhash:MinhashDeduplicator",
}


def step_class(name: str) -> type:
    if name not in STEPS:
        raise KeyError(f"unknown data step {name!r}; known steps: {', '.join(STEPS)}")
    module, cls = STEPS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def step_defaults(name: str) -> dict[str, Any]:
    """The step's options with their defaults, from its constructor's signature."""
    params = inspect.signature(step_class(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}


def build_step(name: str, options: dict[str, Any]):
    return step_class(name)(**options)


def complete_step_options(data: DataConfig) -> DataConfig:
    """Check ``data.steps`` and every step's options against the step classes; fill in their defaults.

    ``data.steps`` null becomes every step in ``STEPS`` order; ``data.step_options`` ends up holding
    every registered step's full options. Raises ConfigError naming the closest valid name.
    """
    if data.steps is None:
        data.steps = list(STEPS)
    for name in [*data.steps, *data.step_options]:
        if name not in STEPS:
            where = "in data.steps" if name in data.steps else f"(data.{name} is not a step's options)"
            raise ConfigError(
                f"unknown data step {name!r} {where}{_did_you_mean(name, STEPS)}; known: {', '.join(STEPS)}"
            )
    for name in STEPS:
        defaults = step_defaults(name)
        given = dict(data.step_options.get(name, {}))
        for key, value in given.items():
            if key not in defaults:
                raise ConfigError(
                    f"unknown option data.{name}.{key!r}{_did_you_mean(key, defaults)}; valid: {', '.join(defaults)}"
                )
            default = defaults[key]
            if default is not None and not isinstance(default, (list, dict)):
                given[key] = coerce(value, type(default), f"data.{name}.{key}")
        data.step_options[name] = {**defaults, **given}
    return data


def _did_you_mean(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
