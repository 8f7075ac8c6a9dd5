"""The Mamba-1 selective scan the zoo used before the Mamba-2 (SSD) block: kept here only so that
``train_throughput.py`` can time the old and the new scans side by side in one run.

``legacy_net(name)`` builds the default ``lssvwm`` or ``mamba`` network of the zoo with every
Mamba-2 block replaced by this ``SelectiveSSM`` (state 16, ``expand 2``, conv 4: the zoo's former
defaults); everything else (codec, attention, MLPs, block order) is the same module, so a
comparison of the two measures the scan. This file is the zoo's former ``mamba.py`` code, unchanged
apart from this docstring and ``legacy_net``.

The selective SSM (Gu & Dao 2023), for one channel ``e`` of the expanded input and state size
``S``::

    h_t = exp(dt_t A) * h_{t-1} + dt_t B_t x_t          h_t in R^S, A = -exp(A_log) < 0 (diagonal)
    y_t = C_t . h_t + D x_t

``selective_scan`` cuts the sequence into chunks of ``Q ~ sqrt(L)`` steps, runs the recurrence
inside every chunk from a zero state (all chunks at once, ``Q`` Python steps over ``[b, n, E, S]``
states), carries the state across chunk boundaries (``L / Q`` steps) and adds each chunk's decayed
entering state: it materialises ``[b, n, Q, E, S]`` states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


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

    def __init__(
        self,
        width: int,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ):
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
        conv_state = x[:, :, x.shape[-1] - (self.d_conv - 1) :]
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


def legacy_net(name: str, overrides: dict | None = None, seed: int = 0):
    """The default ``name`` network (``lssvwm`` or ``mamba``) of the zoo with its Mamba-2 blocks
    swapped for ``SelectiveSSM(width, d_state=16, expand=2, d_conv=4)``, seeded by ``seed``."""
    from memorybench.models import resolve

    net = resolve(name).build_net(overrides, seed=seed)
    width = net.config.width
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in net.layers:
            if name == "lssvwm":
                layer.ssm.ssm = SelectiveSSM(width, 16, 2, 4)  # BlockSSM keeps its block shape and order
            elif name == "mamba":
                layer.ssm = SelectiveSSM(width, 16, 2, 4)
            else:
                raise ValueError(f"no legacy scan for {name!r}")
    return net
