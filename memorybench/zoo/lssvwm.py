"""LSSVWM: Long-Context State-Space Video World Model (Po et al., ICCV 2025).

Each layer combines a long-term memory that costs the same at every frame with a short-term,
high-fidelity one::

    x <- x + BlockSSM(norm(x))            (a) long memory: block-wise Mamba-2 scan over time
    x <- x + FrameLocalAttn(norm(x))      (b) short memory: dense attention over the last k frames
    x <- x + MLP(norm(x))                 (c)

**(a) Block-wise SSM.** The ``h x w`` token grid of each frame is cut into spatial blocks of
``b_h x b_w`` tokens. For every block, the block's tokens over the whole episode form one
sequence, ordered by time and then row-major inside the block::

    block grid (2x2 blocks of 2x2 tokens)      the scan of one block
    +----+----+                                 (t=0: p00 p01 p10 p11), (t=1: p00 p01 p10 p11), ...
    |b0  |b1  |
    +----+----+                                 state carried from frame to frame
    |b2  |b3  |
    +----+----+

and a Mamba-2 block (``ssd.Mamba2``: heads with a scalar decay each, input-dependent ``dt, B,
C``, ``D`` skip, short causal convolution, gated RMSNorm; Mamba-2 is also the SSM baseline the
LSSVWM paper compares with) scans it. Blocks are independent (one state per block). A large
block mixes space well but squeezes many tokens through one state; a small block gives each
region its own state and so a longer memory. The block size is set per layer (``blocks``,
cycled over the layers; ``0`` = the whole grid side), e.g. whole grid / 2x2 tokens alternating.
Tokens of frame ``t`` only see tokens of frames ``<= t``: the scan is causal in time, and within
frame ``t`` all tokens come from the same input element (``frame_{t-1}``, ``a_t``), so the
in-frame order leaks nothing.

**(b) Frame-local attention.** The tokens of frame ``t`` attend densely to all tokens of frames
``t-k+1 .. t`` (``attention.FrameAttention`` with ``window=k``, default ``k = 4``; its cache holds
``k - 1`` frames). The ``frame-local-attention`` model uses the same window, so that the
difference between the two is what the SSM adds.

Training: the chunked state-space-duality scan (``ssd.ssd_scan``, chunks of 64 tokens) over
each block's ``T * b_h * b_w`` tokens. Generation: per frame, the block's ``b_h * b_w`` new
tokens are scanned from the state carried over from the previous frame (the recurrent step when
the block is one token), so memory and time per frame are constant.

Default: 6 layers, blocks alternating whole grid / 2x2 tokens, window 4; Mamba-2 with
``expand 2``, 4 heads of 64 channels, state 64, conv 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import MemorybenchError
from .attention import FrameAttention, KVCache
from .common import MLP, NetConfig, NeuralWorldModel, NextFrameNet
from .ssd import Mamba2, SSDState


def to_blocks(x: torch.Tensor, bh: int, bw: int) -> torch.Tensor:
    """``[B, T, h, w, D]`` -> ``[B * (h/bh) * (w/bw), T * bh * bw, D]``: one sequence per block,
    in (time, then row-major within the block) order."""
    B, T, h, w, D = x.shape
    x = x.view(B, T, h // bh, bh, w // bw, bw, D).permute(0, 2, 4, 1, 3, 5, 6)  # B, nh, nw, T, bh, bw, D
    return x.reshape(B * (h // bh) * (w // bw), T * bh * bw, D)


def from_blocks(y: torch.Tensor, B: int, T: int, h: int, w: int, bh: int, bw: int) -> torch.Tensor:
    """The inverse of ``to_blocks``."""
    D = y.shape[-1]
    y = y.view(B, h // bh, w // bw, T, bh, bw, D).permute(0, 3, 1, 4, 2, 5, 6)  # B, T, nh, bh, nw, bw, D
    return y.reshape(B, T, h, w, D)


class BlockSSM(nn.Module):
    """A Mamba-2 block scanning each ``b_h x b_w`` spatial block of the grid along time."""

    def __init__(self, width: int, block: tuple[int, int], d_state: int, expand: int, head_dim: int, d_conv: int):
        super().__init__()
        self.block = block
        self.ssm = Mamba2(width, d_state, expand, head_dim, d_conv)

    def block_shape(self, h: int, w: int) -> tuple[int, int]:
        return self.block[0] or h, self.block[1] or w

    def forward(self, x: torch.Tensor, state: SSDState | None = None) -> tuple[torch.Tensor, SSDState]:
        B, T, h, w, _ = x.shape
        bh, bw = self.block_shape(h, w)
        y, state = self.ssm(to_blocks(x, bh, bw), state)
        return from_blocks(y, B, T, h, w, bh, bw), state


@dataclass
class LSSVWMState:
    ssm: SSDState
    attn: KVCache


class LSSVWMLayer(nn.Module):
    def __init__(self, c: LSSVWMConfig, block: tuple[int, int]):
        super().__init__()
        self.norm_ssm, self.norm_attn, self.norm_mlp = (nn.RMSNorm(c.width) for _ in range(3))
        self.ssm = BlockSSM(c.width, block, c.d_state, c.expand, c.head_dim, c.d_conv)
        self.attn = FrameAttention(c.width, c.heads, window=c.window)
        self.mlp = MLP(c.width, c.mlp_ratio)

    def forward(self, x: torch.Tensor, state: LSSVWMState | None = None) -> tuple[torch.Tensor, LSSVWMState]:
        y, ssm_state = self.ssm(self.norm_ssm(x), state.ssm if state else None)
        x = x + y
        a, attn_state = self.attn(self.norm_attn(x), state.attn if state else None)
        x = x + a
        return x + self.mlp(self.norm_mlp(x)), LSSVWMState(ssm_state, attn_state)


@dataclass(frozen=True)
class LSSVWMConfig(NetConfig):
    layers: int = 6
    #: (b_h, b_w) block sizes in tokens, cycled over the layers; 0 = the whole grid side
    blocks: tuple[tuple[int, int], ...] = ((0, 0), (2, 2))
    window: int = 4  # k: frames of dense attention (= frame-local-attention's window)
    d_state: int = 64  # N: state size per channel of a head
    expand: int = 2  # E = expand * D inner channels
    head_dim: int = 64  # P: channels per head (H = E / P heads, one decay rate each)
    d_conv: int = 4

    def __post_init__(self):
        if not self.blocks or any(len(b) != 2 or min(b) < 0 for b in self.blocks):
            raise ValueError(f"blocks must be a list of [b_h, b_w] pairs >= 0, got {self.blocks}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if (self.expand * self.width) % self.head_dim:
            raise ValueError(
                f"expand * width = {self.expand * self.width} is not a multiple of head_dim {self.head_dim}"
            )


class LSSVWMNet(NextFrameNet):
    Config = LSSVWMConfig
    architecture = 2
    architecture_note = "version 1: Mamba-1 selective scans, version 2: Mamba-2 (SSD) blocks"

    def __init__(self, config: LSSVWMConfig):
        super().__init__(config)
        self.layers.extend(
            LSSVWMLayer(config, tuple(config.blocks[i % len(config.blocks)])) for i in range(config.layers)
        )

    def check_task(self, resolution: tuple[int, int], nvec: tuple[int, ...]) -> None:
        super().check_task(resolution, nvec)
        h, w = resolution[0] // self.config.patch, resolution[1] // self.config.patch
        for layer in self.layers:
            bh, bw = layer.ssm.block_shape(h, w)
            if h % bh or w % bw:
                raise MemorybenchError(
                    f"block {bh}x{bw} does not tile the {h}x{w} token grid of {resolution[0]}x{resolution[1]} frames"
                )


LSSVWM_BIBTEX = """@inproceedings{po2025lssvwm,
  title     = {Long-Context State-Space Video World Models},
  author    = {Po, Ryan and Nitzan, Yotam and Zhang, Richard and Chen, Berlin and Dao, Tri and
               Shechtman, Eli and Wetzstein, Gordon and Huang, Xun},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2025}
}"""


class LSSVWM(NeuralWorldModel):
    """Block-wise Mamba-2 scans over time + frame-local attention (Po et al., ICCV 2025)."""

    name = "lssvwm"
    citation = LSSVWM_BIBTEX
    net_class = LSSVWMNet
