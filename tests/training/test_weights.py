"""tokenmill.training.weights: safetensors round-trip, tied tensors stored once."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from tokenmill.training.models.gpt import GPT, GPTConfig
from tokenmill.training.weights import load_weights, save_weights


def tiny(tie: bool, seed: int, bias: bool = False) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16, tie_embeddings=tie, bias=bias))


def stored_keys(path) -> set[str]:
    with safe_open(str(path), "pt") as f:
        return set(f.keys())


@pytest.mark.parametrize("bias", [False, True])
def test_tied_round_trip_is_exact_and_stores_tied_tensor_once(tmp_path, bias):
    src, dst = tiny(True, 0, bias), tiny(True, 1, bias)
    assert not torch.equal(src.wte.weight, dst.wte.weight)
    path = save_weights(src.state_dict(), tmp_path / "w.safetensors")
    keys = stored_keys(path)
    assert len({"wte.weight", "lm_head.weight"} & keys) == 1
    assert keys | {"wte.weight", "lm_head.weight"} == set(src.state_dict())
    load_weights(dst, path)
    for name, t in src.state_dict().items():
        assert torch.equal(dst.state_dict()[name], t), name
    assert dst.lm_head.weight.data_ptr() == dst.wte.weight.data_ptr()  # still tied after loading


def test_untied_round_trip_stores_every_tensor(tmp_path):
    src, dst = tiny(False, 0), tiny(False, 1)
    path = save_weights(src.state_dict(), tmp_path / "w.safetensors")
    assert stored_keys(path) == set(src.state_dict())
    load_weights(dst, path)
    for name, t in src.state_dict().items():
        assert torch.equal(dst.state_dict()[name], t), name
    assert dst.lm_head.weight.data_ptr() != dst.wte.weight.data_ptr()


def test_same_outputs_after_round_trip(tmp_path):
    src, dst = tiny(True, 0).eval(), tiny(True, 1).eval()
    load_weights(dst, save_weights(src.state_dict(), tmp_path / "w.safetensors"))
    idx = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(src(idx)[0], dst(idx)[0])


def test_cloned_tied_state_with_shared_copy_is_stored_once(tmp_path):
    """The shape full_state_dict produces: fp32 clones where tied names share one clone."""
    src = tiny(True, 0)
    copies, state = {}, {}
    for name, t in src.state_dict().items():
        state[name] = copies.setdefault(t.data_ptr(), t.detach().clone())
    path = save_weights(state, tmp_path / "w.safetensors")
    assert len(stored_keys(path)) == len(state) - 1
    dst = tiny(True, 1)
    load_weights(dst, path)
    assert torch.equal(dst.lm_head.weight, src.wte.weight)


def test_tied_weights_load_into_untied_model_as_two_equal_tensors(tmp_path):
    src = tiny(True, 0)
    dst = tiny(False, 1)
    load_weights(dst, save_weights(src.state_dict(), tmp_path / "w.safetensors"))
    assert torch.equal(dst.lm_head.weight, src.wte.weight)
    assert torch.equal(dst.wte.weight, src.wte.weight)


def test_loading_into_a_different_architecture_fails(tmp_path):
    path = save_weights(tiny(True, 0).state_dict(), tmp_path / "w.safetensors")
    torch.manual_seed(0)
    deeper = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=16))
    with pytest.raises(RuntimeError, match="Missing key"):
        load_weights(deeper, path)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o027, 0o640)])
def test_weights_are_written_with_the_umasks_mode(tmp_path, umask, expected):
    """safetensors writes through a 0600 temp file; the weights get the mode a plain open() would give."""
    import os
    import stat

    old = os.umask(umask)
    try:
        path = save_weights(tiny(True, 0).state_dict(), tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == expected
