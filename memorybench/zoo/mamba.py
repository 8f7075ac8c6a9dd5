"""Mamba-2: a selective state-space model along time, one sequence per spatial token position.

The block is Mamba-2 (``zoo.ssd.Mamba2``, Dao & Gu 2024): per head ``h`` (``H = expand * D / P``
heads of ``P`` channels, state ``N``), with a scalar decay ``A_h < 0`` and input-dependent
``dt_t``, ``B_t``, ``C_t``::

    H_t = exp(dt_t A_h) H_{t-1} + dt_t x_t B_t^T        (H_t in R^{P x N})
    y_t = H_t C_t + D_h x_t

inside ``W_out RMSNorm(SSD(silu(conv(W_x u))) * silu(W_z u))``. Training runs the chunked
state-space-duality scan (``ssd.ssd_scan``: matrix products inside chunks of 64 frames, a short
recurrence across chunks); generation runs the one-step recurrence, so memory and time per
generated frame do not grow with the episode.

The zoo's Mamba world model runs the block along time for each of the ``h * w`` token positions
independently (channels = ``D``; one sequence of ``T`` frames per position), then mixes space
with attention inside each frame, then an MLP::

    x += Mamba2(norm(x));  x += SpatialAttn(norm(x));  x += MLP(norm(x))

Default: 6 layers, ``expand 2`` (``E = 256``), 4 heads of ``P = 64``, state ``N = 64``, conv 4.
"""

from __future__ import annotations

from dataclasses import dataclass

from .common import NetConfig, NeuralWorldModel, NextFrameNet, PerPositionLayer
from .ssd import Mamba2


@dataclass(frozen=True)
class MambaConfig(NetConfig):
    layers: int = 6
    d_state: int = 64  # N: state size per channel of a head
    expand: int = 2  # E = expand * D inner channels
    head_dim: int = 64  # P: channels per head (H = E / P heads, one decay rate each)
    d_conv: int = 4

    def __post_init__(self):
        if (self.expand * self.width) % self.head_dim:
            raise ValueError(
                f"expand * width = {self.expand * self.width} is not a multiple of head_dim {self.head_dim}"
            )


class MambaLayer(PerPositionLayer):
    """Mamba-2 along time at every token position, then attention within each frame, then an MLP."""

    def __init__(self, c: MambaConfig):
        super().__init__(c.width, c.heads, c.mlp_ratio, Mamba2(c.width, c.d_state, c.expand, c.head_dim, c.d_conv))


class MambaNet(NextFrameNet):
    Config = MambaConfig
    architecture = 2
    architecture_note = "version 1: Mamba-1 selective scans, version 2: Mamba-2 (SSD) blocks"

    def __init__(self, config: MambaConfig):
        super().__init__(config)
        self.layers.extend(MambaLayer(config) for _ in range(config.layers))


MAMBA_BIBTEX = """@inproceedings{dao2024transformers,
  title     = {Transformers are {SSMs}: Generalized Models and Efficient Algorithms Through Structured State Space Duality},
  author    = {Dao, Tri and Gu, Albert},
  booktitle = {Proceedings of the 41st International Conference on Machine Learning (ICML)},
  year      = {2024}
}
@article{gu2023mamba,
  title   = {Mamba: Linear-Time Sequence Modeling with Selective State Spaces},
  author  = {Gu, Albert and Dao, Tri},
  journal = {arXiv preprint arXiv:2312.00752},
  year    = {2023}
}"""


class Mamba(NeuralWorldModel):
    """Mamba-2 (SSD) along time per token position + within-frame attention."""

    name = "mamba"
    citation = MAMBA_BIBTEX
    net_class = MambaNet
