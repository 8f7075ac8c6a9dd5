"""Mamba-2: the state-space-duality (SSD) block (Dao & Gu 2024, "Transformers are SSMs").

**The recurrence.** The ``E = expand * D`` inner channels are split into ``H`` heads of ``P``
channels (``E = H P``). Each head ``h`` carries a ``P x N`` state and has one scalar decay rate
``A_h = -exp(A_log_h) < 0``; the input-dependent step ``dt_t``, input vector ``B_t`` and output
vector ``C_t`` (``N`` each, shared by the heads) make it *selective*::

    dt_t = softplus(dt_raw_t + dt_bias)                    (per head, > 0)
    H_t  = exp(dt_t A) H_{t-1} + dt_t x_t B_t^T            (H_t in R^{P x N}, x_t in R^P)
    y_t  = H_t C_t + D x_t                                 (D: a skip per head)

(zero-order hold for ``A``, Euler for ``B``, as in Mamba). Unlike Mamba-1's diagonal ``A`` (a
decay per channel and state entry), the decay is a scalar per head and time step, which is what
makes the sequence transform a matrix product, below.

**The duality.** Unrolled, ``y = M x`` with the lower-triangular ``L x L`` matrix (per head)::

    M[i, j] = (C_i . B_j) * exp(a_{j+1} + ... + a_i) * dt_j      for j <= i (0 above),  a_t = dt_t A <= 0

i.e. masked attention with queries ``C``, keys ``B`` and the *decay mask*
``Lmask = exp(segsum(a))``. ``ssd_scan`` computes it in chunks of ``Q`` steps (the SSD algorithm):

1. **inside each chunk** (diagonal blocks): ``Y_diag = ((C B^T) * Lmask) (dt x)``: matrix
   products of ``Q x Q`` blocks, all chunks and heads at once;
2. **each chunk's own state** (from a zero state): ``S_c = sum_j exp(a_{j+1} + ... + a_end) dt_j x_j B_j^T``;
3. **across chunks**: the state entering chunk ``c + 1`` is ``H_{c+1} = exp(a_start + ... + a_end) H_c + S_c``
   (``H_0`` = the carried-in state): a short recurrence, ``L / Q`` steps of ``P x N`` matrices;
4. **the entering state's output** (off-diagonal blocks): ``Y_off_i = exp(a_start + ... + a_i) H_c C_i``.

``y = Y_diag + Y_off`` (+ ``D x``). Cost: ``O(L Q (N + P))`` per head for 1 and ``O(L P N)`` for
2-4, with ``L / Q`` sequential steps instead of ``L``. Numerically safe: every exponent is a sum of
``a_t <= 0`` within one chunk, so every ``exp`` is of a non-positive number (decays in ``[0, 1]``,
never an overflow; ``segsum`` says why this holds in floating point too).

``ssd_recurrence`` is the step-by-step definition (the reference the tests hold the scan to) and
``ssd_step`` one step of it (generation).

**The block** (``Mamba2``), on sequences ``u [b, L, D]``::

    z, xBC, dt_raw = split(W_in u)                     (E, E + 2N, H channels)
    x, B, C        = split(silu(causal_depthwise_conv(xBC)))     (width d_conv, along the sequence)
    y              = SSD(x; dt, A, B, C) + D x
    out            = W_out RMSNorm(y * silu(z))        (the gated RMSNorm of Mamba-2)

Its state between calls (``SSDState``) is the last ``d_conv - 1`` inputs of the convolution and
the ``H x P x N`` SSM state, so a sequence may be fed in pieces of any length (the adapter's
streaming generation: one frame's tokens at a time) with the same result as in one piece.
This file is the reference implementation in plain PyTorch (no fused kernel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

#: steps per chunk of the SSD scan (a sequence shorter than this is one chunk)
CHUNK = 64


def segsum(a: torch.Tensor) -> torch.Tensor:
    """Segment sums ``S[..., i, j] = a_{j+1} + ... + a_i`` for ``j <= i`` (0 on the diagonal) and
    ``-inf`` above it (``exp`` of it is 0 there): ``[..., Q] -> [..., Q, Q]``, for ``a <= 0``.

    Computed as ``cs_i - cs_j`` with ``cs = cumsum(a)`` (two passes over ``Q x Q`` instead of four;
    the chunks are short). For ``a <= 0`` it is never positive in floating point too: ``cs`` never
    increases (adding a non-positive number never rounds up), so ``cs_i - cs_j <= 0`` for ``i >= j``
    and ``exp`` only sees non-positive numbers. The price is rounding: an entry is off by about
    ``|cs_i| * 2^-24`` in float32, so the decay ``exp(S)`` by that much relatively, e.g. ``6e-6``
    once the chunk has decayed by ``exp(-100)`` since its start (float64: ``1e-14``).
    """
    Q = a.shape[-1]
    cs = a.cumsum(-1)
    upper = torch.ones(Q, Q, dtype=torch.bool, device=a.device).triu(1)
    return (cs[..., :, None] - cs[..., None, :]).masked_fill_(upper, -math.inf)


def ssd_step(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: ``H = exp(dt A) H + dt x B^T``, ``y = H C`` (without ``D x``).

    ``x [b, H, P]``, ``dt [b, H]``, ``A [H]``, ``B, C [b, N]``, ``h [b, H, P, N]`` -> ``(y [b, H, P], h)``.
    """
    h = torch.exp(dt * A)[..., None, None] * h + (dt[..., None] * x)[..., None] * B[:, None, None, :]
    return (h @ C[:, None, :, None]).squeeze(-1), h


def ssd_recurrence(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence step by step (the definition; slow). Shapes as ``ssd_scan``."""
    b, L, H, P = x.shape
    h = x.new_zeros(b, H, P, B.shape[-1]) if h0 is None else h0
    ys = []
    for t in range(L):
        y, h = ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], h)
        ys.append(y)
    return torch.stack(ys, 1), h


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor | None = None,
    chunk: int = CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence over whole sequences by the chunked SSD algorithm (module docstring, 1-4).

    ``x [b, L, H, P]``, ``dt [b, L, H]`` (> 0), ``A [H]`` (< 0), ``B, C [b, L, N]``,
    ``h0 [b, H, P, N]`` or None (zeros) -> ``(y [b, L, H, P], h_L [b, H, P, N])``, without ``D x``.
    """
    b, L, H, P = x.shape
    N = B.shape[-1]
    Q = min(chunk, L)
    pad = -L % Q
    if pad:  # padded steps have dt = 0: no decay (exp 0 = 1) and no input, so h_L is unchanged
        x, B, C = (F.pad(v, (0, 0, 0, pad)) for v in (x.flatten(2), B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
        x = x.unflatten(2, (H, P))
    n = (L + pad) // Q
    # heads side by side (HP = H * P channels), as the block produces them: the state of a chunk is
    # kept transposed, [N, HP], so that steps 2 and 4 are plain matrix products over all heads at once
    a = (dt * A).view(b, n, Q, H).transpose(2, 3)  # log-decays a_t = dt_t A <= 0: [b, n, H, Q]
    xdt = (x * dt[..., None]).view(b, n, Q, H, P)  # dt_t x_t: [b, n, Q, H, P]
    B, C = B.view(b, n, Q, N), C.view(b, n, Q, N)

    # 1. inside each chunk: Y_diag = ((C B^T) * exp(segsum(a))) (dt x)
    decay = segsum(a).exp_()  # Lmask[i, j] = exp(a_{j+1} + ... + a_i): [b, n, H, Q, Q]
    y_diag = ((C @ B.transpose(-1, -2))[:, :, None] * decay) @ xdt.transpose(2, 3)  # [b, n, H, Q, P]

    # 2. each chunk's final state from a zero state: S_c^T = sum_j exp(a_{j+1} + ... + a_end) B_j (dt_j x_j)^T
    to_end = decay[..., -1, :].transpose(2, 3)[..., None]  # the last row of Lmask: [b, n, Q, H, 1]
    states = B.transpose(-1, -2) @ (xdt * to_end).view(b, n, Q, H * P)  # [b, n, N, HP]

    # 3. across chunks: the state entering each chunk, h_{c+1} = exp(a_start + ... + a_end) h_c + S_c
    from_start = torch.exp(a.cumsum(-1))  # exp(a_start + ... + a_i): [b, n, H, Q]
    through = from_start[..., -1][:, :, None, :, None]  # the decay over a whole chunk: [b, n, 1, H, 1]
    h = x.new_zeros(b, N, H, P) if h0 is None else h0.permute(0, 3, 1, 2)  # transposed: [b, N, H, P]
    entering = []
    for decay_c, state_c in zip(through.unbind(1), states.view(b, n, N, H, P).unbind(1)):  # unbind: one backward op
        entering.append(h)
        h = decay_c * h + state_c
    entering = torch.stack(entering, 1).view(b, n, N, H * P)

    # 4. the entering state read out inside the chunk: Y_off_i = exp(a_start + ... + a_i) h_c C_i
    y_off = (C @ entering).view(b, n, Q, H, P) * from_start.transpose(2, 3)[..., None]  # [b, n, Q, H, P]
    y = y_off + y_diag.transpose(2, 3)
    return y.view(b, n * Q, H, P)[:, :L], h.permute(0, 2, 3, 1)


@dataclass
class SSDState:
    """What a ``Mamba2`` block carries between calls on the same sequences."""

    conv: torch.Tensor  # [b, E + 2N, d_conv - 1]: the last inputs of the causal convolution
    ssm: torch.Tensor  # [b, H, P, N]


class Mamba2(nn.Module):
    """The Mamba-2 block on sequences ``u [b, L, D]`` (``b`` independent sequences); see the module
    docstring. ``forward(u, state) -> (out [b, L, D], new_state)``; ``state=None`` starts the sequences."""

    def __init__(
        self,
        width: int,
        d_state: int = 64,
        expand: int = 2,
        head_dim: int = 64,
        d_conv: int = 4,
        chunk: int = CHUNK,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        a_init: tuple[float, float] = (1, 16),
    ):
        super().__init__()
        E = self.inner = expand * width
        if E % head_dim:
            raise ValueError(f"expand * width = {E} is not a multiple of head_dim {head_dim}")
        self.heads, self.head_dim, self.d_state, self.d_conv, self.chunk = (
            E // head_dim,
            head_dim,
            d_state,
            d_conv,
            chunk,
        )
        H, N = self.heads, d_state
        self.in_proj = nn.Linear(width, 2 * E + 2 * N + H, bias=False)  # z, x, B, C, dt
        self.conv = nn.Conv1d(E + 2 * N, E + 2 * N, d_conv, groups=E + 2 * N)
        # dt starts log-uniform in [dt_min, dt_max]: the bias is softplus^-1(dt) = dt + log(1 - exp(-dt))
        dt = torch.exp(torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # decay rates A_h = -exp(A_log_h), uniform in -a_init (Mamba-2's initialisation)
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(*a_init)))
        self.D = nn.Parameter(torch.ones(H))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.norm = nn.RMSNorm(E, eps=1e-5)
        self.out_proj = nn.Linear(E, width, bias=False)

    def forward(self, u: torch.Tensor, state: SSDState | None = None) -> tuple[torch.Tensor, SSDState]:
        b, L, _ = u.shape
        E, H, P, N = self.inner, self.heads, self.head_dim, self.d_state
        z, xBC, dt = self.in_proj(u).split([E, E + 2 * N, H], -1)
        # causal depthwise convolution: prepend the last d_conv - 1 inputs (zeros at the start)
        xBC = xBC.transpose(1, 2)  # [b, E + 2N, L]
        past = state.conv if state is not None else xBC.new_zeros(b, E + 2 * N, self.d_conv - 1)
        xBC = torch.cat([past, xBC], -1)
        conv_state = xBC[:, :, xBC.shape[-1] - (self.d_conv - 1) :]
        x, B, C = F.silu(self.conv(xBC)).transpose(1, 2).split([E, N, N], -1)
        x = x.unflatten(-1, (H, P))  # [b, L, H, P]
        dt = F.softplus(dt + self.dt_bias)  # [b, L, H]
        A = -torch.exp(self.A_log)
        h = state.ssm if state is not None else None
        if L == 1:  # generation: the recurrent step
            y, h = ssd_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], x.new_zeros(b, H, P, N) if h is None else h)
            y = y[:, None]
        else:
            y, h = ssd_scan(x, dt, A, B, C, h, self.chunk)
        y = torch.addcmul(y, x, self.D[:, None]).flatten(-2)  # y + D x: [b, L, E]
        return self.out_proj(self.norm(y * F.silu(z))), SSDState(conv_state, h)
