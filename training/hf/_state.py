"""What the converters share: reading a Hugging Face state dict key by key (so that an import can name the
weights it left unread), and Hugging Face's names for the activations."""

from __future__ import annotations

import torch

# Hugging Face's activation names -> ours: "gelu" and "gelu_python" are erf GELU; "gelu_new",
# "gelu_pytorch_tanh", "gelu_python_tanh" and "gelu_fast" are the tanh approximation.
ACT_FROM_HF = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_python_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
}


class StateReader:
    """``reader(key)`` is ``state[key]``, remembered as read; a missing key is a ValueError naming it.

    ``what`` names the state in that error (``"HF state"`` gives ``HF state has no 'x.weight'``);
    ``unread()`` lists, sorted, the keys nothing has read, which an exact import must not have.
    """

    def __init__(self, state: dict[str, torch.Tensor], what: str):
        self.state, self.what = state, what
        self.read: set[str] = set()

    def __call__(self, key: str) -> torch.Tensor:
        if key not in self.state:
            raise ValueError(f"{self.what} has no {key!r}")
        self.read.add(key)
        return self.state[key]

    def skip(self, key: str) -> None:
        """Count ``key`` as read without reading it (a tied copy of a tensor read under another name)."""
        self.read.add(key)

    def unread(self) -> list[str]:
        return sorted(set(self.state) - self.read)
