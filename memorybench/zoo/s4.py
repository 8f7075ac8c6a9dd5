"""S4D: a diagonal structured state space along time, one sequence per spatial token position.

For each of the ``H = D`` channels, a linear time-invariant system with ``S/2`` complex modes
(the conjugate modes are implicit, hence the ``2 Re``), from Gu et al. 2022::

    continuous:  h'(s) = A h(s) + B u(s),   y(s) = 2 Re(C h(s)) + D u(s)
                 A = -exp(A_re_log) + i A_im (diagonal, complex; S4D-Lin init A_n = -1/2 + i pi n),
                 B = 1, C complex (learned), dt = exp(log_dt) per channel
    discrete (zero-order hold, step dt):
                 Abar = exp(dt A),   Bbar = (exp(dt A) - 1) / A * B
                 h_t = Abar h_{t-1} + Bbar u_t,   y_t = 2 Re(C . h_t) + D u_t

Unrolled, ``y = K * u + D u`` with the convolution kernel ``K_l = 2 Re(sum_n C_n Bbar_n Abar_n^l)``:
a Vandermonde product (``Abar_n^l = exp(l dt A_n)``). Training computes it for the whole episode
and convolves by FFT (``O(L log L)``); generation runs the recurrence one frame at a time. With a
state ``h_0`` carried in from earlier frames, the chunk's outputs gain ``2 Re(C . Abar^{t+1} h_0)``
and its final state is ``Abar^L h_0 + sum_j Abar^{L-1-j} Bbar u_j`` (both Vandermonde too), so
the adapter can feed the context in chunks.

The S4 layer is ``GLU(W gelu(SSM(u)))`` (the S4D paper's output mixing). The zoo's S4 world model
runs it along time for every token position independently, then attention inside each frame,
then an MLP: ``x += S4(norm(x)); x += SpatialAttn(norm(x)); x += MLP(norm(x))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import NetConfig, NeuralWorldModel, NextFrameNet, PerPositionLayer


def fft_causal_conv(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``y_t = sum_{j <= t} kernel_{t-j} u_j`` for ``u [b, H, L]``, ``kernel [H, L]`` (zero-padded FFT)."""
    L = u.shape[-1]
    n = 2 * L
    return torch.fft.irfft(torch.fft.rfft(u, n) * torch.fft.rfft(kernel, n), n)[..., :L]


class S4D(nn.Module):
    """The diagonal SSM on ``u [b, H, L]`` with state ``h [b, H, S/2]`` (complex)."""

    def __init__(self, channels: int, d_state: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        H, half = channels, d_state // 2
        self.log_dt = nn.Parameter(torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.A_re_log = nn.Parameter(torch.full((H, half), math.log(0.5)))
        self.A_im = nn.Parameter(math.pi * torch.arange(half, dtype=torch.float32).repeat(H, 1))
        self.C = nn.Parameter(torch.randn(H, half, 2) * math.sqrt(0.5))  # complex, as (re, im)
        self.D = nn.Parameter(torch.randn(H))
        self.A_re_log._no_weight_decay = self.A_im._no_weight_decay = True  # decay rates and frequencies

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``dt A``, ``Abar``, ``Bbar`` and ``C`` (each ``[H, S/2]``, complex) under zero-order hold."""
        A = torch.complex(-torch.exp(self.A_re_log), self.A_im)
        dtA = self.log_dt.exp()[:, None] * A
        Abar = torch.exp(dtA)
        return dtA, Abar, (Abar - 1) / A, torch.view_as_complex(self.C)  # B = 1

    def forward(self, u: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        L = u.shape[-1]
        dtA, Abar, Bbar, C = self.discretize()
        if L == 1 and h0 is not None:  # generation: the recurrence
            h = Abar * h0 + Bbar * u[..., 0, None]
            y = 2 * (C * h).sum(-1).real + self.D * u[..., 0]
            return y[..., None], h
        powers = torch.exp(dtA[..., None] * torch.arange(L, device=u.device))  # Abar^l: [H, S/2, L]
        kernel = 2 * torch.einsum("hn,hnl->hl", C * Bbar, powers).real
        y = fft_causal_conv(u, kernel) + self.D[:, None] * u
        h = torch.einsum("bhl,hnl->bhn", u.to(powers.dtype), powers.flip(-1)) * Bbar  # sum_j Abar^{L-1-j} Bbar u_j
        if h0 is not None:  # the carried-in state: 2 Re(C Abar^{t+1} h0) on the outputs, Abar^L h0 on the state
            y = y + 2 * torch.einsum("hn,bhn,hnl->bhl", C, h0, powers * Abar[..., None]).real
            h = h + torch.exp(L * dtA) * h0
        return y, h


class S4Block(nn.Module):
    """``GLU(W gelu(S4D(u)))`` on sequences ``u [b, L, H]``."""

    def __init__(self, width: int, d_state: int):
        super().__init__()
        self.ssm = S4D(width, d_state)
        self.out = nn.Linear(width, 2 * width)

    def forward(self, u: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y, state = self.ssm(u.transpose(1, 2), state)
        return F.glu(self.out(F.gelu(y.transpose(1, 2))), -1), state


@dataclass(frozen=True)
class S4Config(NetConfig):
    layers: int = 8
    d_state: int = 64  # S: state size per channel (S/2 complex modes)


class S4Layer(PerPositionLayer):
    """S4D along time at every token position, then attention within each frame, then an MLP."""

    def __init__(self, c: S4Config):
        super().__init__(c.width, c.heads, c.mlp_ratio, S4Block(c.width, c.d_state))


class S4Net(NextFrameNet):
    Config = S4Config

    def __init__(self, config: S4Config):
        super().__init__(config)
        self.layers.extend(S4Layer(config) for _ in range(config.layers))


S4D_BIBTEX = """@inproceedings{gu2022s4d,
  title     = {On the Parameterization and Initialization of Diagonal State Space Models},
  author    = {Gu, Albert and Gupta, Ankit and Goel, Karan and R{\\'e}, Christopher},
  booktitle = {Advances in Neural Information Processing Systems},
  volume    = {35},
  year      = {2022}
}"""


class S4(NeuralWorldModel):
    """Diagonal S4 (S4D) along time per token position + within-frame attention."""

    name = "s4"
    citation = S4D_BIBTEX
    net_class = S4Net
