"""Mamba: a selective state-space model along time, one sequence per spatial token position.

The selective SSM (Gu & Dao 2023), for one channel ``e`` of the expanded input and state size
``S``, with an input-dependent step ``dt_t``, input matrix ``B_t`` and output matrix ``C_t``::

    h_t = exp(dt_t A) * h_{t-1} + dt_t B_t x_t          h_t in R^S, A = -exp(A_log) < 0 (diagonal)
    y_t = C_t . h_t + D x_t

(zero-order hold for ``A``, Euler for ``B``, as in Mamba). Around it, one Mamba block::

    x, z   = split(W_in u)                               (expand: E = expand * D channels each)
    x      = silu(causal_depthwise_conv(x))              (width d_conv, along the sequence)
    dt, B, C = softplus(W_dt (W_x x)[:R] + b_dt), (W_x x)[R:R+S], (W_x x)[R+S:]
    y      = SSM(x; dt, A, B, C, D) * silu(z)            (the gate)
    out    = W_out y

The scan (``selective_scan``) is exact and numerically safe in float32: it only exponentiates
non-positive numbers (decays ``<= 1``). The sequence of length ``L`` is cut into chunks of ``Q``
steps (``Q ~ sqrt(L)``):

1. inside every chunk, the recurrence runs from a zero state, all chunks at once (``Q`` steps);
2. the state entering each chunk is carried across chunk boundaries (``L / Q`` steps):
   ``h0_{c+1} = exp(sum of dt A over chunk c) * h0_c + h_local_c[end]``;
3. each step adds the decayed entering state: ``h_t = h_local_t + exp(s_t) h0_c`` where
   ``s_t = A * (dt_start + ... + dt_t)`` is the log-decay since the chunk start (``<= 0``).

So training costs ``O(Q + L/Q)`` sequential steps instead of ``L``; generation uses the one-step
recurrence ``selective_step``. (A fused kernel such as the ``mamba-ssm`` package computes the
same thing faster on a GPU; this is the reference.)

The zoo's Mamba world model runs the block along time for each of the ``h * w`` token
positions independently (channels = ``D``), then mixes space with attention inside each frame,
then an MLP: ``x += Mamba(norm(x)); x += SpatialAttn(norm(x)); x += MLP(norm(x))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import NetConfig, NeuralWorldModel, NextFrameNet, PerPositionLayer


def selective_step(x, dt, A, B, C, D, h):
    """One step of the recurrence. ``x, dt [b, E]``, ``A [E, S]``, ``B, C [b, S]``, ``D [E]``,
    ``h [b, E, S]`` -> ``(y [b, E], h)``."""
    h = torch.exp(dt[..., None] * A) * h + (dt * x)[..., None] * B[:, None, :]
    return (h * C[:, None, :]).sum(-1) + D * x, h


def selective_scan(x, dt, A, B, C, D, h0=None, chunk: int | None = None):
    """The recurrence over a whole sequence, chunked (see the module docstring).

    ``x, dt [b, L, E]``, ``A [E, S]``, ``B, C [b, L, S]``, ``D [E]``, ``h0 [b, E, S]`` or None
    -> ``(y [b, L, E], h_L [b, E, S])``.
    """
    b, L, E = x.shape
    S = A.shape[1]
    Q = chunk or math.isqrt(L - 1) + 1  # ceil(sqrt(L))
    pad = -L % Q
    if pad:  # padded steps have dt = 0: they neither decay (exp 0 = 1) nor inject; the final state is unchanged
        x, dt, B, C = (F.pad(v, (0, 0, 0, pad)) for v in (x, dt, B, C))
    n = (L + pad) // Q
    dt_c = dt.view(b, n, Q, E)
    decay = torch.exp(dt_c[..., None] * A)  # exp(dt_t A): [b, n, Q, E, S]
    inject = (dt * x).view(b, n, Q, E, 1) * B.view(b, n, Q, 1, S)  # dt_t B_t x_t

    # 1. every chunk from a zero state, all chunks at once
    h, local = x.new_zeros(b, n, E, S), []
    for decay_i, inject_i in zip(decay.unbind(2), inject.unbind(2)):
        h = decay_i * h + inject_i
        local.append(h)
    local = torch.stack(local, 2)  # [b, n, Q, E, S]

    # 2. the state entering each chunk; exp(s_t) = exp(A * sum of dt from the chunk start through t)
    since_start = torch.exp(dt_c.cumsum(2)[..., None] * A)
    h = x.new_zeros(b, E, S) if h0 is None else h0
    entering = []
    for through, last in zip(since_start[:, :, -1].unbind(1), local[:, :, -1].unbind(1)):
        entering.append(h)
        h = through * h + last
    entering = torch.stack(entering, 1)  # [b, n, E, S]

    # 3. add each chunk's decayed entering state, read out
    states = local + since_start * entering[:, :, None]
    y = torch.einsum("bnqes,bnqs->bnqe", states, C.view(b, n, Q, S)).reshape(b, n * Q, E)[:, :L]
    return y + D * x[:, :L], h


@dataclass
class MambaState:
    conv: torch.Tensor  # [b, E, d_conv - 1]: the last inputs of the causal convolution
    ssm: torch.Tensor  # [b, E, S]


class SelectiveSSM(nn.Module):
    """The Mamba block on sequences ``u [b, L, D]`` (``b`` independent sequences)."""

    def __init__(self, width: int, d_state: int = 16, expand: int = 2, d_conv: int = 4, dt_rank: int | None = None,
                 dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        E = self.inner = expand * width
        R = self.dt_rank = dt_rank or math.ceil(width / 16)
        self.d_state, self.d_conv = d_state, d_conv
        self.in_proj = nn.Linear(width, 2 * E, bias=False)
        self.conv = nn.Conv1d(E, E, d_conv, groups=E)
        self.x_proj = nn.Linear(E, R + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(R, E)
        # dt starts log-uniform in [dt_min, dt_max]: the bias is softplus^-1(dt) = dt + log(1 - exp(-dt))
        dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real initialisation: A[e, n] = -(n + 1)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(E, 1))
        self.A_log._no_weight_decay = True  # the decay rates are not pulled towards A = -1
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, width, bias=False)

    def forward(self, u: torch.Tensor, state: MambaState | None = None) -> tuple[torch.Tensor, MambaState]:
        b, L, _ = u.shape
        x, z = self.in_proj(u).chunk(2, -1)
        # causal depthwise convolution: prepend the last d_conv - 1 inputs (zeros at the start)
        x = x.transpose(1, 2)  # [b, E, L]
        past = state.conv if state is not None else x.new_zeros(b, self.inner, self.d_conv - 1)
        x = torch.cat([past, x], -1)
        conv_state = x[:, :, x.shape[-1] - (self.d_conv - 1):]
        x = F.silu(self.conv(x)).transpose(1, 2)  # [b, L, E]
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], -1)
        dt = F.softplus(self.dt_proj(dt))
        A = -torch.exp(self.A_log)
        h = state.ssm if state is not None else None
        if L == 1 and h is not None:  # generation: the recurrent step
            y, h = selective_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], self.D, h)
            y = y[:, None]
        else:
            y, h = selective_scan(x, dt, A, B, C, self.D, h)
        return self.out_proj(y * F.silu(z)), MambaState(conv_state, h)


@dataclass(frozen=True)
class MambaConfig(NetConfig):
    layers: int = 6
    d_state: int = 16  # S
    expand: int = 2  # E = expand * D
    d_conv: int = 4


class MambaLayer(PerPositionLayer):
    """Mamba along time at every token position, then attention within each frame, then an MLP."""

    def __init__(self, c: MambaConfig):
        super().__init__(c.width, c.heads, c.mlp_ratio, SelectiveSSM(c.width, c.d_state, c.expand, c.d_conv))

class MambaNet(NextFrameNet):
    Config = MambaConfig

    def __init__(self, config: MambaConfig):
        super().__init__(config)
        self.layers.extend(MambaLayer(config) for _ in range(config.layers))


MAMBA_BIBTEX = """@article{gu2023mamba,
  title   = {Mamba: Linear-Time Sequence Modeling with Selective State Spaces},
  author  = {Gu, Albert and Dao, Tri},
  journal = {arXiv preprint arXiv:2312.00752},
  year    = {2023}
}"""


class Mamba(NeuralWorldModel):
    """Selective SSM (Mamba) along time per token position + within-frame attention."""

    name = "mamba"
    citation = MAMBA_BIBTEX
    net_class = MambaNet
