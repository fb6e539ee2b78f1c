"""Stage caching: a rerun skips a stage whose inputs, config and code did not change, and only that stage.

The key is the stage's fingerprint (``tokenmill.core.fingerprint.stage_key``: config part, input
fingerprints, code, output folder). The key records live in the stage's output folder
(``<out>/.prefect-cache``), so deleting an output folder also forgets its cache entry and the stage
runs again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy

from tokenmill.core.fingerprint import stage_key


@dataclass
class StageCachePolicy(CachePolicy):
    """Prefect cache policy for a stage task called as ``task(cfg, ..., out_dir=...)``: the key is
    ``stage_key`` over the ``cfg`` argument, the fingerprints ``fingerprint`` computes from the call's
    arguments, and ``out_dir``; records are kept under ``out_dir``."""

    stage: str = ""
    fingerprint: Any = None  # (arguments) -> list[str]
    extra: list[str] = field(default_factory=list)

    def compute_key(
        self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        return stage_key(self.stage, inputs["cfg"], [*self.fingerprint(inputs), *self.extra], inputs["out_dir"])


def stage_cache(stage: str, out_dir: str | Path, fingerprint, extra: list[str] | None = None) -> StageCachePolicy:
    """The policy for one call of a stage task whose outputs go to ``out_dir``."""
    return StageCachePolicy(stage=stage, fingerprint=fingerprint, extra=list(extra or [])).configure(
        key_storage=str(Path(out_dir).resolve() / ".prefect-cache")
    )
