"""Causal attention over frames: the full-context transformer and its frame-local ablation.

Tokens are ``x [B, T, h, w, D]``: ``N = h * w`` tokens per frame (time step). One attention layer::

    q, k, v = x W_q, x W_k, x W_v                           (per head, size d = D / heads)
    q, k   <- RoPE(q, t), RoPE(k, t)                        (t: the token's frame index)
    out_i   = sum_j softmax_j(q_i . k_j / sqrt(d) + M_ij) v_j
    M_ij    = 0 if t_i - window < t_j <= t_i else -inf     (frame-causal; window = None: no limit)

*Frame-causal*: a token of frame ``t`` sees every token of frames ``<= t`` (its own frame
included: in the zoo's convention the element of time ``t`` holds ``frame_{t-1}`` and ``a_t``,
so nothing of ``frame_t`` leaks). *RoPE* (Su et al. 2021) rotates each pair of channels
``(x_a, x_{a+d/2})`` by the angle ``t * base^(-a / (d/2))``, so ``q_i . k_j`` depends on the frames
only through ``t_i - t_j``: the model runs on episodes longer than any it was trained on
(512-768 frames at the standard tier). Space is encoded by the additive grid embedding.

* ``full-attention`` (``window=None``): every past frame is in reach; generation keeps a KV cache
  of all past frames (memory and time per step grow linearly with the episode).
* ``frame-local-attention`` (``window=k``, default 4 = the tasks' ``recent_window``): a token
  sees the last ``k`` elements, i.e. the last ``k`` frames; the cache is bounded to ``k - 1``
  frames. It has the same weights' shapes and count as full attention: the difference between
  the two models' scores is what long-range memory adds.

Each layer: ``x <- x + Attn(norm(x)); x <- x + MLP(norm(x))`` (pre-norm residuals, RMSNorm).

``frame_causal_attention`` has two interchangeable backends. On CUDA, training (gradients on,
whole episodes, no cache) uses FlexAttention (compiled) with a block mask, which skips the tiles above the
frame-causal diagonal (and outside the window). Elsewhere (the CPU, and cached generation) it
runs scaled-dot-product attention over chunks of query frames, so that the boolean mask of one
call stays under ``MASK_BUDGET`` entries even for 768-frame episodes (``768 * 64`` tokens); each
chunk only reads the keys it may see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import MLP, NetConfig, NeuralWorldModel, NextFrameNet

#: boolean mask entries allowed per attention call
MASK_BUDGET = 1 << 24


def rope(x: torch.Tensor, frame: torch.Tensor, base: float) -> torch.Tensor:
    """Rotary position embedding of ``x [..., L, d]`` at frame indices ``frame [L]``."""
    half = x.shape[-1] // 2
    freq = base ** (-torch.arange(half, device=x.device, dtype=x.dtype) / half)
    angle = frame.to(x.dtype)[:, None] * freq  # [L, d/2]
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


@dataclass
class KVCache:
    """Rotated keys and values of the frames an attention layer has seen.

    ``k``, ``v`` are ``[B, heads, capacity, d]`` buffers whose first ``length`` tokens hold the
    last ``held`` frames; ``frames`` counts every frame ever appended (the index of the next one).
    An unbounded cache appends in place into spare capacity (doubling when full), which leaves
    every state with a smaller ``length`` valid: a cache may be extended from any state, but
    extending an older state overwrites what newer states derived from it hold beyond its length.
    The adapter only extends its newest committed state, so this never happens.
    """

    k: torch.Tensor
    v: torch.Tensor
    length: int
    held: int
    frames: int


def reserve_cache(cache: KVCache | None, tokens: int) -> KVCache | None:
    """``cache`` with room for ``tokens`` more tokens in its buffer (an unbounded cache only; grown
    by doubling, holding the same entries), so that extending it without committing the result
    (a sampler's denoising steps, each extending the same history) does not copy the whole buffer
    every time."""
    if cache is None or cache.length + tokens <= cache.k.shape[2]:
        return cache
    shape = (*cache.k.shape[:2], max(cache.length + tokens, 2 * cache.k.shape[2]), cache.k.shape[3])
    k, v = cache.k.new_empty(shape), cache.v.new_empty(shape)
    k[:, :, : cache.length], v[:, :, : cache.length] = cache.k[:, :, : cache.length], cache.v[:, :, : cache.length]
    return KVCache(k, v, cache.length, cache.held, cache.frames)


def extend_cache(
    cache: KVCache | None, k: torch.Tensor, v: torch.Tensor, new_frames: int, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor, int, KVCache]:
    """Append ``new_frames`` frames of keys/values ``[B, heads, new_frames * N, d]``.

    Returns the keys and values the new queries attend to (cached + new), the absolute frame
    index of the first of them, and the new cache (holding at most ``limit`` frames).
    """
    n_new = k.shape[2]
    if cache is None:
        keys, values, held, frames = k, v, new_frames, new_frames
        buf_k, buf_v = k, v
    elif limit is not None:
        keys, values = (
            torch.cat([cache.k[:, :, : cache.length], k], 2),
            torch.cat([cache.v[:, :, : cache.length], v], 2),
        )
        held, frames = cache.held + new_frames, cache.frames + new_frames
    else:
        n = cache.length + n_new
        buf_k, buf_v = cache.k, cache.v
        if n > buf_k.shape[2]:  # grow: a fresh buffer of twice the size (amortised O(1) per token)
            shape = (*buf_k.shape[:2], max(n, 2 * buf_k.shape[2]), buf_k.shape[3])
            buf_k, buf_v = buf_k.new_empty(shape), buf_v.new_empty(shape)
            buf_k[:, :, : cache.length], buf_v[:, :, : cache.length] = (
                cache.k[:, :, : cache.length],
                cache.v[:, :, : cache.length],
            )
        buf_k[:, :, cache.length : n], buf_v[:, :, cache.length : n] = k, v
        keys, values, held, frames = (
            buf_k[:, :, :n],
            buf_v[:, :, :n],
            cache.held + new_frames,
            cache.frames + new_frames,
        )
    first = frames - held
    if limit is None:  # the cache keeps the whole buffer, so that its spare room serves the next extensions
        return keys, values, first, KVCache(buf_k, buf_v, keys.shape[2], held, frames)
    keep = min(held, limit)
    tokens = keep * (n_new // new_frames)
    start = keys.shape[2] - tokens
    kept = KVCache(keys[:, :, start:].clone(), values[:, :, start:].clone(), tokens, keep, frames)
    return keys, values, first, kept


def frame_causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tokens: int,
    q_frame0: int,
    k_frame0: int,
    window: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention of queries ``[B, heads, Tq * N, d]`` (frames ``q_frame0 ..``) over keys/values
    ``[B, heads, Tk * N, d]`` (frames ``k_frame0 .. q_frame0 + Tq - 1``) under the frame-causal
    mask (and the window, if any).

    ``backend``: ``"sdpa"`` (chunks of query frames, one boolean mask each), ``"flex"`` (one
    FlexAttention call whose block mask skips the masked tiles; compiled on CUDA; no backward
    pass on the CPU) or ``"auto"``: flex for training on CUDA (gradients on, no cache: about 12x
    faster than sdpa on 768-frame episodes on an H200), sdpa otherwise. Both compute the same
    function.
    """
    if backend == "auto":
        training = torch.is_grad_enabled() and q_frame0 == k_frame0 and q.shape[2] > tokens
        backend = "flex" if q.is_cuda and training else "sdpa"
    if backend == "flex":
        return _flex_attention(q, k, v, tokens, q_frame0, k_frame0, window)
    Tq, Tk = q.shape[2] // tokens, k.shape[2] // tokens
    if window is not None and Tq > 1:
        return _windowed_attention(q, k, v, tokens, q_frame0, k_frame0, window)
    if window is None:
        chunk = max(1, MASK_BUDGET // (tokens * tokens * Tk))
    else:  # a chunk of c frames reads c + window - 1 frames of keys: keep c near the window
        chunk = max(1, min(2 * window, math.isqrt(MASK_BUDGET) // tokens))
    outs = []
    for a in range(0, Tq, chunk):
        b = min(Tq, a + chunk)
        ta, tb = q_frame0 + a, q_frame0 + b  # absolute frames of this chunk of queries
        lo = k_frame0 if window is None else max(k_frame0, ta - window + 1)
        keys = slice((lo - k_frame0) * tokens, (tb - k_frame0) * tokens)
        mask = None
        if b - a > 1:  # a single query frame sees every key it is given
            qt = torch.arange(ta, tb, device=q.device).repeat_interleave(tokens)
            kt = torch.arange(lo, tb, device=q.device).repeat_interleave(tokens)
            mask = kt[None, :] <= qt[:, None]
            if window is not None:
                mask &= kt[None, :] > qt[:, None] - window
        outs.append(
            F.scaled_dot_product_attention(
                q[:, :, a * tokens : b * tokens], k[:, :, keys], v[:, :, keys], attn_mask=mask
            )
        )
    return torch.cat(outs, 2)


def _windowed_attention(q, k, v, tokens: int, q_frame0: int, k_frame0: int, window: int) -> torch.Tensor:
    """The windowed case of ``frame_causal_attention`` as one batched call: query frame ``t`` sees
    exactly the ``window`` key frames ``t - window + 1 .. t``, so the keys are laid out as one
    window per query frame (an overlapping view of the keys, front-padded with ``P`` frames for the
    first frames, which have fewer predecessors; those are masked out). No key outside a query's
    window is computed, and the backward pass is one call too (about 2x faster on the CPU than
    chunks of frames under a boolean mask)."""
    B, heads, _, d = q.shape
    Tq, _Tk = q.shape[2] // tokens, k.shape[2] // tokens
    pad = max(0, window - 1 - (q_frame0 - k_frame0))  # frames before k_frame0 that some window reaches
    start = q_frame0 - k_frame0 + pad - (window - 1)  # the first query's window, in padded key frames
    k, v = (F.pad(x, (0, 0, pad * tokens, 0))[:, :, start * tokens :] for x in (k, v))
    k, v = (x.unfold(2, window * tokens, tokens).transpose(-1, -2) for x in (k, v))  # [B, heads, Tq, window*N, d]
    # key j of the window of query frame t is frame t - window + 1 + j: masked if before k_frame0
    t = torch.arange(q_frame0, q_frame0 + Tq, device=q.device)
    key_frame = (t[:, None] - window + 1 + torch.arange(window, device=q.device)).repeat_interleave(tokens, 1)
    mask = None if pad == 0 else (key_frame >= k_frame0)[:, None, :]
    o = F.scaled_dot_product_attention(q.view(B, heads, Tq, tokens, d), k, v, attn_mask=mask)
    return o.reshape(B, heads, Tq * tokens, d)


@cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


@lru_cache(maxsize=16)
def _block_mask(q_len: int, k_len: int, tokens: int, q_frame0: int, k_frame0: int, window: int | None, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    def frame_causal(b, h, i, j):
        tq, tk = q_frame0 + i // tokens, k_frame0 + j // tokens
        return (tk <= tq) & (tk > tq - window) if window is not None else tk <= tq

    return create_block_mask(frame_causal, None, None, q_len, k_len, device=device)


def _flex_attention(q, k, v, tokens, q_frame0, k_frame0, window):
    from torch.nn.attention.flex_attention import flex_attention

    mask = _block_mask(q.shape[2], k.shape[2], tokens, q_frame0, k_frame0, window, str(q.device))
    return (_compiled_flex() if q.is_cuda else flex_attention)(q, k, v, block_mask=mask)


class FrameAttention(nn.Module):
    """Multi-head frame-causal self-attention with RoPE over time and a KV cache (the state)."""

    def __init__(self, width: int, heads: int, window: int | None = None, rope_base: float = 10_000.0):
        super().__init__()
        self.heads, self.window, self.rope_base = heads, window, rope_base
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        B, T, h, w, D = x.shape
        N = h * w
        t0 = cache.frames if cache is not None else 0
        q, k, v = self.qkv(x).view(B, T * N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        frame = torch.arange(t0, t0 + T, device=x.device).repeat_interleave(N)
        q, k = rope(q, frame, self.rope_base), rope(k, frame, self.rope_base)
        limit = None if self.window is None else self.window - 1
        keys, values, k_frame0, cache = extend_cache(cache, k, v, T, limit)
        o = frame_causal_attention(q, keys, values, N, t0, k_frame0, self.window)
        return self.proj(o.transpose(1, 2).reshape(B, T, h, w, D)), cache


class AttentionBlock(nn.Module):
    """``x + Attn(norm(x))`` then ``x + MLP(norm(x))``."""

    def __init__(self, config: NetConfig, window: int | None, rope_base: float):
        super().__init__()
        self.norm_attn, self.norm_mlp = nn.RMSNorm(config.width), nn.RMSNorm(config.width)
        self.attn = FrameAttention(config.width, config.heads, window, rope_base)
        self.mlp = MLP(config.width, config.mlp_ratio)

    def forward(self, x: torch.Tensor, state: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        a, state = self.attn(self.norm_attn(x), state)
        x = x + a
        return x + self.mlp(self.norm_mlp(x)), state


@dataclass(frozen=True)
class AttentionConfig(NetConfig):
    layers: int = 10
    window: int | None = None  # frames a token sees (None: all past frames)
    rope_base: float = 10_000.0

    def __post_init__(self):
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1 or None, got {self.window}")


class AttentionNet(NextFrameNet):
    Config = AttentionConfig

    def __init__(self, config: AttentionConfig):
        super().__init__(config)
        self.layers.extend(AttentionBlock(config, config.window, config.rope_base) for _ in range(config.layers))


TRANSFORMER_BIBTEX = """@inproceedings{vaswani2017attention,
  title     = {Attention Is All You Need},
  author    = {Vaswani, Ashish and Shazeer, Noam and Parmar, Niki and Uszkoreit, Jakob and Jones, Llion and
               Gomez, Aidan N. and Kaiser, {\\L}ukasz and Polosukhin, Illia},
  booktitle = {Advances in Neural Information Processing Systems},
  volume    = {30},
  year      = {2017}
}
@article{su2024roformer,
  title   = {{RoFormer}: Enhanced Transformer with Rotary Position Embedding},
  author  = {Su, Jianlin and Ahmed, Murtadha and Lu, Yu and Pan, Shengfeng and Bo, Wen and Liu, Yunfeng},
  journal = {Neurocomputing},
  volume  = {568},
  pages   = {127063},
  year    = {2024}
}"""


class FullAttention(NeuralWorldModel):
    """Transformer with frame-causal attention over every past frame (KV cache)."""

    name = "full-attention"
    citation = TRANSFORMER_BIBTEX
    net_class = AttentionNet


class FrameLocalAttention(NeuralWorldModel):
    """Frame-local attention only (the last 4 frames): what memory adds."""

    name = "frame-local-attention"
    citation = TRANSFORMER_BIBTEX
    net_class = AttentionNet
    defaults = {"window": 4}
