"""A training rank whose process group, as NCCL's, has no backend for host tensors.

    torchrun ... tests/training/accelerator_only.py <tokenmill.training.train arguments>

On a CPU-only machine nothing can live on an accelerator, so this makes the engine's device distinguishable
instead: ``distributed.device()`` returns ``cpu:0``, the "accelerator", and a tensor counts as on it when it was
made or moved there (``device=cpu:0``, ``.to(cpu:0)``) or derived from one that is. A collective that tokenmill's
code calls on any other tensor fails the way NCCL does: "No backend type associated with device type cpu".
DeepSpeed's own collectives are not checked (their tensors are DeepSpeed's business).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCELERATOR = torch.device("cpu", 0)  # compares unequal to torch.device("cpu"), the host


def _is_accelerator(x) -> bool:
    return (isinstance(x, torch.device) and x == ACCELERATOR) or (isinstance(x, str) and x == "cpu:0")


class TrackPlacement(TorchFunctionMode):
    """Marks every tensor made on, moved to, or computed from a tensor on the accelerator."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [*args, *kwargs.values()]
        placed = any(_is_accelerator(a) for a in inputs) or any(
            isinstance(a, torch.Tensor) and getattr(a, "_on_accelerator", False) for a in inputs
        )
        if placed:
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    t._on_accelerator = True
        return out


def tokenmill_file(path: Path) -> bool:
    """tokenmill's own source: under the checkout, not its tests, not an installed package (a .venv inside it)."""
    inside = path.is_relative_to(REPO_ROOT) and not path.is_relative_to(REPO_ROOT / "tests")
    return inside and "site-packages" not in path.parts


def accelerator_only(collective, checked_caller=tokenmill_file):
    """``collective``, refusing host tensors when the calling file passes ``checked_caller``."""

    @functools.wraps(collective)
    def checked(*args, **kwargs):
        if checked_caller(Path(sys._getframe(1).f_code.co_filename).resolve()):
            flat = [a for x in [*args, *kwargs.values()] for a in (x if isinstance(x, (list, tuple)) else [x])]
            for t in flat:
                if isinstance(t, torch.Tensor) and not getattr(t, "_on_accelerator", False):
                    raise RuntimeError(
                        f"No backend type associated with device type cpu ({collective.__name__} of a host tensor)"
                    )
        return collective(*args, **kwargs)

    return checked


def main() -> int:
    from tokenmill.training import distributed, train

    distributed.device = lambda: ACCELERATOR
    for name in ("all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce", "reduce_scatter"):
        setattr(dist, name, accelerator_only(getattr(dist, name)))
    with TrackPlacement():
        return train.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
