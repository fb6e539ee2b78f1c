"""How each family turns a trained model into text; a family's ``ModelSpec`` names its functions.

``sample`` functions write training's ``sample.txt``: every rank runs them (ZeRO-3 forward passes
are collective). ``generate`` functions are ``tokenmill generate``'s: the ids to decode for a prompt.
"""

from __future__ import annotations

import torch


def continue_prompt(model, tokenizer, specials: dict[str, int], prompt: str, n_tokens: int, seed: int, dev) -> str:
    """A decoder continues ``prompt``."""
    ids = tokenizer.encode(prompt).ids
    gen = torch.Generator(device=dev).manual_seed(seed)
    out = model.generate(
        torch.tensor([ids or [specials["eot"]]], device=dev), n_tokens, temperature=0.8, top_k=40, generator=gen
    )
    return tokenizer.decode(out[0].tolist())


def fill_mask(model, tokenizer, specials: dict[str, int], prompt: str, n_tokens: int, seed: int, dev) -> str:
    """A masked LM lists its top guesses for a [MASK] appended to ``prompt``."""
    ids = tokenizer.encode(prompt).ids
    x = torch.tensor([[specials["cls"], *ids, specials["mask"], specials["sep"]]], device=dev)
    with torch.no_grad():
        mlm_logits, _ = model(input_ids=x, token_type_ids=torch.zeros_like(x), attention_mask=torch.ones_like(x))
    top = mlm_logits[0, len(ids) + 1].topk(5).indices.tolist()
    return f"{prompt} [MASK] → " + " | ".join(repr(tokenizer.decode([t])) for t in top)


def fill_span(model, tokenizer, specials: dict[str, int], prompt: str, n_tokens: int, seed: int, dev) -> str:
    """An encoder-decoder fills a sentinel span appended to ``prompt``."""
    ids = tokenizer.encode(prompt).ids
    gen = torch.Generator(device=dev).manual_seed(seed)
    x = torch.tensor([[*ids, specials["sentinel_0"], specials["eot"]]], device=dev)
    out = model.generate(x, n_tokens, temperature=0.8, top_k=40, generator=gen, eos_id=specials["eot"])
    return f"{prompt} <extra_id_0> → " + tokenizer.decode(out[0, 1:].tolist(), skip_special_tokens=False)


def continue_ids(model, ids: list[int], specials: dict[str, int], max_new_tokens: int, **sampling) -> list[int]:
    """A decoder's continuation of ``ids`` (end-of-text when empty), prompt included."""
    out = model.generate(torch.tensor([ids or [specials["eot"]]]), max_new_tokens, **sampling)
    return out[0].tolist()


def decode_ids(model, ids: list[int], specials: dict[str, int], max_new_tokens: int, **sampling) -> list[int]:
    """An encoder-decoder's target for the source ``ids`` (ended with end-of-text), until end-of-text."""
    out = model.generate(torch.tensor([ids + [specials["eot"]]]), max_new_tokens, eos_id=specials["eot"], **sampling)
    return out[0, 1:].tolist()
