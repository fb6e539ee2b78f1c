"""Building blocks shared by the model families: attention, positions, feed-forward, norms, sampling,
and the one-stack base of GPT and BERT.

Plain single-device PyTorch. Each family file (``gpt.py``, ``bert.py``, ``t5.py``,
``transformer.py``) composes these; parameter names are kept short and stable because the
Hugging Face export (``training/hf.py``) maps them one to one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "relative")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "gated-gelu", "gated-silu")

Cache = dict  # one per attention layer: {"k": (B, H, T, hs), "v": (B, H, T, hs)}; filled as decoding goes


# --- attention --------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention: self-attention with one fused ``qkv`` projection, or cross-attention
    (``q`` from the decoder, ``kv`` from the encoder's output).

    ``scale=False`` skips the 1/sqrt(head_dim) factor (T5 folds it into its initialisation).
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        d_head: int | None = None,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        cross: bool = False,
        scale: bool = True,
    ):
        super().__init__()
        if d_head is None:
            if d_model % n_head:
                raise ValueError(f"d_model {d_model} is not divisible by n_head {n_head}")
            d_head = d_model // n_head
        self.n_head, self.d_head, self.cross = n_head, d_head, cross
        inner = n_head * d_head
        if cross:
            self.q = nn.Linear(d_model, inner, bias=bias)
            self.kv = nn.Linear(d_model, 2 * inner, bias=bias)
        else:
            self.qkv = nn.Linear(d_model, 3 * inner, bias=bias)
        self.out = nn.Linear(inner, d_model, bias=bias)
        self.scale = 1.0 / math.sqrt(d_head) if scale else 1.0
        self.dropout = dropout

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, _ = t.shape
        return t.view(B, T, self.n_head, self.d_head).transpose(1, 2)  # (B, H, T, hs)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        *,
        bias: torch.Tensor | None = None,
        causal: bool = False,
        rope: RotaryEmbedding | None = None,
        cache: Cache | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` ``(B, Tq, C)`` attends to itself (or to ``memory`` ``(B, Tk, C)`` in cross-attention).

        ``bias`` is added to the attention scores ``(B|1, H|1, Tq, Tk)``: padding masks (``-inf``-like),
        ALiBi or T5 relative-position bias. ``causal`` hides later keys; with a ``cache`` holding
        ``P`` earlier positions, query ``i`` is position ``P + i``. Returns the output ``(B, Tq, C)``
        and, if ``need_weights``, the attention probabilities ``(B, H, Tq, Tk)``.
        """
        B, Tq, _ = x.shape
        if self.cross:
            q = self._heads(self.q(x))
            if cache is not None and "k" in cache:  # the encoder output does not change while decoding
                k, v = cache["k"], cache["v"]
            else:
                k, v = (self._heads(t) for t in self.kv(memory).chunk(2, dim=-1))
                if cache is not None:
                    cache["k"], cache["v"] = k, v
            past = 0
        else:
            q, k, v = (self._heads(t) for t in self.qkv(x).chunk(3, dim=-1))  # 3 × (B, H, Tq, hs)
            past = cache["k"].size(2) if cache is not None and "k" in cache else 0
            if rope is not None:
                q, k = rope(q, past), rope(k, past)
            if cache is not None:
                if past:
                    k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        Tk = k.size(2)
        if causal and (bias is not None or Tq != Tk or need_weights):
            # A cached decode step (Tq < Tk) sees every earlier key: shift the triangle by ``past``.
            hide = torch.ones(Tq, Tk, dtype=torch.bool, device=x.device).triu(Tk - Tq + 1)
            causal_bias = torch.zeros(Tq, Tk, dtype=q.dtype, device=x.device).masked_fill(
                hide, torch.finfo(q.dtype).min
            )
            bias = causal_bias if bias is None else bias + causal_bias
            causal = False
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q @ k.transpose(-2, -1)).float() * self.scale  # (B, H, Tq, Tk)
            if bias is not None:
                scores = scores + bias
            weights = scores.softmax(dim=-1).to(q.dtype)
            y = F.dropout(weights, p, self.training) @ v
        else:
            weights = None
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=p, is_causal=causal, scale=self.scale
            )  # (B, H, Tq, hs)
        y = y.transpose(1, 2).reshape(B, Tq, self.n_head * self.d_head)  # (B, Tq, H·hs)
        return self.out(y), weights


def padding_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``(B, T)`` 1/0 key mask → additive bias ``(B, 1, 1, T)`` (0 where attended, very negative where padded)."""
    if attention_mask is None:
        return None
    keep = attention_mask[:, None, None, :].to(torch.bool)
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def add_bias(*biases: torch.Tensor | None) -> torch.Tensor | None:
    """Sum of the given attention biases, ignoring ``None``; broadcasting shapes are fine."""
    present = [b for b in biases if b is not None]
    if not present:
        return None
    total = present[0]
    for b in present[1:]:
        total = total + b
    return total.clamp_min(torch.finfo(total.dtype).min)  # two -inf-like masks must not overflow to -inf


# --- positions --------------------------------------------------------------------------------


def sinusoidal_positions(n_positions: int, dim: int) -> torch.Tensor:
    """The fixed encoding of "Attention is all you need": sin(pos / 10000^(2i/d)) and cos of the same.

    Laid out as [sin of all frequencies | cos of all frequencies] (as tensor2tensor and Marian
    do) rather than interleaved; the two are the same encoding up to a fixed permutation of dims.
    """
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    inv_freq = 1.0 / torch.pow(10000.0, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = pos * inv_freq  # (P, ceil(d/2))
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    return table[:, :dim].float()


class RotaryEmbedding(nn.Module):
    """RoPE (Su et al.): rotate pairs of query/key dims by position-dependent angles (GPT-NeoX half layout).

    Angles are computed in fp32 at every call rather than kept in buffers, which ``model.to(bf16)``
    would round: in bf16, positions in the thousands would lose their angle entirely.
    """

    def __init__(self, d_head: int, max_positions: int, base: float = 10000.0):
        super().__init__()
        self.d_head, self.max_positions, self.base = d_head, max_positions, base

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``x`` ``(B, H, T, hs)`` at positions ``offset … offset + T - 1``."""
        T = x.size(2)
        inv_freq = 1.0 / self.base ** (
            torch.arange(0, self.d_head, 2, dtype=torch.float32, device=x.device) / self.d_head
        )
        angles = torch.outer(torch.arange(offset, offset + T, dtype=torch.float32, device=x.device), inv_freq)
        cos, sin = angles.cos(), angles.sin()  # (T, hs/2)
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """ALiBi's per-head slopes (Press et al.): a geometric sequence from 2^(-8/n), extended for non-powers of 2."""

    def powers(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(n_head))
    slopes = powers(closest)
    if closest != n_head:
        slopes += powers(2 * closest)[0::2][: n_head - closest]
    return torch.tensor(slopes)


def alibi_bias(slopes: torch.Tensor, q_len: int, k_len: int, causal: bool) -> torch.Tensor:
    """``(1, H, Tq, Tk)`` linear distance penalty; queries are the last ``q_len`` of ``k_len`` positions."""
    q_pos = torch.arange(k_len - q_len, k_len, device=slopes.device)[:, None]
    k_pos = torch.arange(k_len, device=slopes.device)[None, :]
    dist = (q_pos - k_pos).abs() if not causal else (q_pos - k_pos).clamp_min(0)
    return (-slopes[:, None, None] * dist)[None]


class RelativePositionBias(nn.Module):
    """T5's learned bias per head and relative-distance bucket (exact buckets near, log-spaced far)."""

    def __init__(self, n_head: int, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.bidirectional, self.num_buckets, self.max_distance = bidirectional, num_buckets, max_distance
        self.embedding = nn.Embedding(num_buckets, n_head)

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        """Bucket of each ``key - query`` distance."""
        n = self.num_buckets
        out = torch.zeros_like(relative)
        if self.bidirectional:
            n //= 2
            out += (relative > 0).long() * n  # keys after the query get the upper half of the buckets
            distance = relative.abs()
        else:
            distance = (-relative).clamp_min(0)  # a causal decoder only looks back
        exact = n // 2
        # Distances from ``exact`` to ``max_distance`` share log-spaced buckets; beyond it, the last one.
        log_bucket = (
            exact
            + (
                torch.log(distance.float().clamp_min(1) / exact) / math.log(self.max_distance / exact) * (n - exact)
            ).long()
        )
        log_bucket = log_bucket.clamp_max(n - 1)
        return out + torch.where(distance < exact, distance, log_bucket)

    def forward(self, q_len: int, k_len: int) -> torch.Tensor:
        """``(1, H, Tq, Tk)`` for queries at the last ``q_len`` of ``k_len`` positions."""
        device = self.embedding.weight.device
        q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
        k_pos = torch.arange(k_len, device=device)[None, :]
        values = self.embedding(self.bucket(k_pos - q_pos))  # (Tq, Tk, H)
        return values.permute(2, 0, 1)[None]


# --- feed-forward and norms -------------------------------------------------------------------


class FeedForward(nn.Module):
    """Position-wise MLP ``d → d_ff → d``; the gated variants (T5 v1.1, LLaMA) multiply by a second projection."""

    def __init__(
        self, d_model: int, d_ff: int, activation: str = "gelu_tanh", *, bias: bool = True, dropout: float = 0.0
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.activation = activation
        self.fc = nn.Linear(d_model, d_ff, bias=bias)
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if activation.startswith("gated") else None
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)  # (B, T, d_ff)
        if self.activation == "relu":
            h = F.relu(h)
        elif self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "gelu_tanh":
            h = F.gelu(h, approximate="tanh")
        elif self.activation == "gated-gelu":
            h = F.gelu(h, approximate="tanh") * self.gate(x)
        else:
            h = F.silu(h) * self.gate(x)
        return self.proj(self.dropout(h))


class RMSNorm(nn.Module):
    """Scale by the root mean square, no centring and no bias (T5's LayerNorm); computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype) * self.weight


# --- output layer and loss ---------------------------------------------------------------------

IGNORE_INDEX = -100  # label of positions that are not scored (torch's cross_entropy default)
_CHUNK_ELEMENTS = 2**23  # logits per chunk: 8M floats (32 MiB in fp32); 1,024 rows of an 8,192-token vocabulary


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_rows: int | None = None
) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T, labels, ignore_index=-100, reduction="sum")`` with the logits computed
    in float32, without ever holding the ``(N, V)`` logits.

    ``hidden`` ``(..., C)``, ``weight`` ``(V, C)`` (the output projection, no bias), ``labels`` ``(...)``. Rows are
    taken ``chunk_rows`` at a time: each chunk's logits, log-softmax and, when gradients are wanted, its gradients
    with respect to ``hidden`` and ``weight`` are computed in one go while the chunk is in cache, so the forward
    pass already holds the backward pass's result (the backward only scales it by the incoming gradient). The same
    math as the unfused layer and loss, up to float rounding (sums in another order).
    """
    hidden = hidden.reshape(-1, hidden.size(-1))
    labels = labels.reshape(-1)
    if chunk_rows is None:
        chunk_rows = max(1, _CHUNK_ELEMENTS // weight.size(0))
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, labels, chunk_rows)
    total, _, _ = _linear_cross_entropy(hidden, weight, labels, chunk_rows, grads=False)
    return total


def _linear_cross_entropy(hidden, weight, labels, chunk_rows: int, grads: bool):
    """(summed float32 loss, d loss / d hidden or None, d loss / d weight in float32 or None)."""
    n = hidden.size(0)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if grads else None
    grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if grads else None
    for start in range(0, n, chunk_rows):
        h = hidden[start : start + chunk_rows]
        y = labels[start : start + chunk_rows]
        scored = y != IGNORE_INDEX
        target = y.clamp_min(0)[:, None]
        log_probs = torch.log_softmax((h @ weight.t()).float(), dim=-1)  # (rows, V)
        picked = log_probs.gather(1, target)[:, 0]
        total -= torch.where(scored, picked, 0.0).sum()
        if grads:
            grad_logits = log_probs.exp_()  # softmax, in place: d loss / d logits = softmax - one-hot
            grad_logits.scatter_add_(1, target, torch.full_like(picked, -1.0)[:, None])
            if not bool(scored.all()):
                grad_logits.masked_fill_(~scored[:, None], 0.0)
            grad_logits = grad_logits.to(weight.dtype)
            torch.mm(grad_logits, weight, out=grad_hidden[start : start + chunk_rows])
            if grad_weight.dtype == h.dtype:
                grad_weight.addmm_(grad_logits.t(), h)
            else:  # bf16 / fp16: each chunk's product in the weights' dtype, the sum over chunks in float32
                grad_weight += grad_logits.t() @ h
    return total, grad_hidden, grad_weight


class LMHead(nn.Linear):
    """The output projection to the vocabulary: ``head(x)`` gives the logits; ``head(x, labels=labels)`` gives the
    summed float32 cross entropy over ``labels != -100`` through :func:`linear_cross_entropy`, without the logits.

    Being the module that owns the weight, it is what ZeRO-3 gathers the (tied) weight for before either call.
    """

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            return super().forward(x)
        if self.bias is not None:
            raise ValueError("linear_cross_entropy takes an output projection without bias")
        return linear_cross_entropy(x, self.weight, labels)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_rows):
        total, grad_hidden, grad_weight = _linear_cross_entropy(hidden, weight, labels, chunk_rows, grads=True)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_total.to(torch.float32)
        return (
            grad_hidden * scale.to(grad_hidden.dtype),
            (grad_weight * scale).to(ctx.weight_dtype),
            None,
            None,
        )


# --- one stack of blocks: what GPT and BERT share -----------------------------------------------


@dataclass
class StackConfig:
    """The sizes of a one-stack model; ``GPTConfig`` and ``BERTConfig`` add their own fields after these."""

    vocab_size: int = 8192
    block_size: int = 128  # longest sequence (learned and sinusoidal tables have this many rows)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    d_ff: int | None = None  # None: 4 × n_embd


class SingleStack(nn.Module):
    """Positions and attention bias for a model with one stack of blocks over token embeddings (GPT, BERT).

    A subclass sets ``cfg`` (with ``position`` one of learned, sinusoidal, rope, alibi) and calls
    ``_init_positions`` right after creating its token embedding ``wte``.
    """

    def _init_positions(self, cfg) -> None:
        """What ``cfg.position`` needs, under the names the state dicts and Hugging Face mappings use:
        ``wpe`` (learned table), the ``wpe_table`` buffer (sinusoidal), ``rope`` (None unless RoPE) and
        the ``slopes`` buffer (ALiBi)."""
        if cfg.position == "learned":
            self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        elif cfg.position == "sinusoidal":
            self.register_buffer("wpe_table", sinusoidal_positions(cfg.block_size, cfg.n_embd), persistent=False)
        self.rope = RotaryEmbedding(cfg.n_embd // cfg.n_head, cfg.block_size) if cfg.position == "rope" else None
        if cfg.position == "alibi":
            self.register_buffer("slopes", alibi_slopes(cfg.n_head), persistent=False)

    def _add_positions(self, x: torch.Tensor, past: int) -> torch.Tensor:
        """``x`` ``(B, T, C)`` plus the learned or sinusoidal encodings of positions ``past … past + T - 1``
        (RoPE and ALiBi act inside attention instead: ``x`` is returned as is)."""
        pos = torch.arange(past, past + x.size(1), device=x.device)
        if self.cfg.position == "learned":
            x = x + self.wpe(pos)
        elif self.cfg.position == "sinusoidal":
            x = x + self.wpe_table[pos].to(x.dtype)
        return x

    def _attention_bias(
        self, attention_mask: torch.Tensor | None, dtype: torch.dtype, T: int, past: int, causal: bool
    ) -> torch.Tensor | None:
        """The padding bias ``(B, 1, 1, P + T)`` of ``attention_mask``, plus with ALiBi the distance penalty
        ``(1, H, T, P + T)`` of ``T`` queries after ``past`` cached positions (only looking back if ``causal``)."""
        bias = padding_bias(attention_mask, dtype)
        if self.cfg.position == "alibi":
            bias = add_bias(bias, alibi_bias(self.slopes, T, past + T, causal=causal).to(dtype))
        return bias

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2's initialisation, which BERT shares: weights ~ N(0, 0.02), biases zero."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --- sampling ---------------------------------------------------------------------------------


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids ``(B, 1)`` from last-position logits ``(B, V)``: greedy at ``temperature=0``,
    otherwise sampled after top-k and nucleus (top-p) filtering."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token once the tokens before it already hold top_p of the mass; the first always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop_sorted[..., 0] = False  # also for top_p <= 0, which would otherwise drop every token
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
