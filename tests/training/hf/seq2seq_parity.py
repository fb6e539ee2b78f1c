"""Parity checks shared by the encoder-decoder Hugging Face mappings (``hf/t5.py``, ``hf/marian.py``).

``mapping`` is one of those modules; ``model`` one of our encoder-decoder models built with
``SPECIALS``'s pad id. Logits are compared on ``padded_batch`` within ``TOL``.
"""

from __future__ import annotations

import torch
import transformers

SPECIALS = {"eot": 0, "pad": 1, "cls": 2, "sep": 3, "mask": 4}
TOL = 1e-4


def jitter(model: torch.nn.Module, norm: str) -> None:
    """Biases ~ N(0, 0.3) and the weights of parameters named ``*{norm}*`` ~ U(0.5, 1.5), in place: away
    from their initial zeros and ones, so that a misplaced bias or norm would show."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.3)
            elif norm in name:
                p.uniform_(0.5, 1.5)


def export(mapping, hf_class, model):
    """``model`` exported: ``hf_class`` built from the mapped config, loaded (strictly) with the mapped state."""
    hf = hf_class(mapping.hf_config(model.cfg, SPECIALS)).eval()
    hf.load_state_dict(mapping.to_hf_state(model.state_dict(), model.cfg), strict=True)
    return hf


def exported_state(mapping, hf_class, model):
    """``(mapped state of model, hf_class's own state dict)``, having checked that they have the same keys."""
    hf_state = hf_class(mapping.hf_config(model.cfg, SPECIALS)).state_dict()
    state = mapping.to_hf_state(model.state_dict(), model.cfg)
    assert set(state) == set(hf_state)
    return state, hf_state


def padded_batch(vocab: int):
    """Source and target batches with right padding in both, and their masks."""
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(2, vocab, (3, 20), generator=g), torch.randint(2, vocab, (3, 18), generator=g)
    tgt[:, 0] = SPECIALS["pad"]  # the decoder start id
    src_mask, tgt_mask = torch.ones_like(src), torch.ones_like(tgt)
    src_mask[1, 13:] = src_mask[2, 4:] = 0
    tgt_mask[0, 11:] = tgt_mask[2, 3:] = 0
    src[src_mask == 0] = SPECIALS["pad"]
    tgt[tgt_mask == 0] = SPECIALS["pad"]
    return src, src_mask, tgt, tgt_mask


def max_diff(ours, hf) -> float:
    src, src_mask, tgt, tgt_mask = padded_batch(ours.cfg.vocab_size)
    with torch.no_grad():
        a = ours(src, src_mask, tgt, tgt_mask)
        b = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask).logits
    keep = tgt_mask.bool()  # logits at padded target positions are never used
    return (a - b)[keep].abs().max().item()


def check_round_trip_is_exact(mapping, model) -> None:
    """Export then import gives back the same config and, key for key, the same tensors."""
    original = model.state_dict()
    cfg, state = mapping.from_hf(mapping.hf_config(model.cfg, SPECIALS), mapping.to_hf_state(original, model.cfg))
    assert cfg == model.cfg
    assert set(state) == set(original)
    assert all(torch.equal(state[k], original[k]) for k in original)


def check_save_pretrained_loads_without_custom_code(mapping, hf, model, folder) -> None:
    """``hf`` (``model`` exported) saved to ``folder`` loads with plain ``transformers`` and matches ``model``."""
    hf.save_pretrained(folder)
    loaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    assert type(loaded).__name__ == mapping.HF_ARCHITECTURE
    assert max_diff(model, loaded) <= TOL


def check_greedy_generation_matches_hf(model, hf, **generate_kw) -> None:
    """Greedy decoding of ``padded_batch`` equals ``hf.generate``'s, with ``eot`` as eos and with a token the
    first row produces (that row is padded after it); ``generate_kw`` go to ``hf.generate``."""
    src, src_mask, _, _ = padded_batch(model.cfg.vocab_size)
    n = 12
    free = model.generate(src, n, src_mask, temperature=0)
    eos = int(free[0, 2])  # a token the model does produce, so eos handling is exercised
    assert eos != SPECIALS["pad"] and len(set(free[0].tolist())) > 2
    for eos_id in (SPECIALS["eot"], eos):
        ours = model.generate(src, n, src_mask, temperature=0, eos_id=eos_id)
        theirs = hf.generate(
            input_ids=src,
            attention_mask=src_mask,
            do_sample=False,
            num_beams=1,
            max_new_tokens=n,
            eos_token_id=eos_id,
            **generate_kw,
        )
        assert torch.equal(ours, theirs), (eos_id, ours, theirs)
    assert torch.all(ours[0, 3:] == SPECIALS["pad"])  # the row that produced eos is padded after it
