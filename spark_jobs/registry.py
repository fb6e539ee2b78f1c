"""The data steps a config can name, and how one is built from its options.

A step's options are its constructor's keyword arguments; their defaults (with the
published sources cited next to them) live in the step's class, nowhere else.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

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
