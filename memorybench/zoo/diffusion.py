"""A causal diffusion-forcing transformer (Diffusion Forcing, Chen et al. 2024; DFoT, Song et al. 2025).

Every frame carries its own noise level ``k`` in ``[0, 1]`` (variance-preserving, cosine)::

    z_t = alpha(k_t) (2 x_t - 1) + sigma(k_t) eps_t,     alpha = cos(pi k / 2), sigma = sin(pi k / 2)

so ``k = 0`` is the clean frame and ``k = 1`` pure noise. The network sees, at time ``t``, the
tokens of ``z_t`` (the shared frame encoder) plus ``act(a_t)``, the grid position and an
embedding of ``k_t``, and predicts the clean frame ``x_t`` (x0-prediction; the shared decoder's
sigmoid keeps it in ``[0, 1]``). Attention is frame-causal (``attention.AttentionBlock``, RoPE over
time): the prediction for frame ``t`` uses ``z_{<=t}`` only.

* **Training** (diffusion forcing): independent levels ``k_t ~ U[0, 1]`` for every frame,
  loss ``|x0_hat_t - x_t|^2`` on every frame. The model thereby learns to denoise a frame given a
  history of any noise levels, including the clean one used at inference.
* **Long-context training** (LSSVWM, Po et al. 2025; config ``clean_prefix_prob = p``, off at
  ``0``, the paper's value ``0.5``): with probability ``p`` per sequence, its first ``c`` frames
  are a clean context, ``c`` uniform in ``floor(T/2) + 1 .. T - 1`` (more than half of the ``T``
  frames): level ``k = 0`` there and no loss there; the other frames keep their random levels and
  carry the loss. It asks the model to denoise frames given a long clean history, as at
  inference, instead of mostly noisy ones. The draws come after the levels and the noise, from
  the same generator (so ``p = 0`` leaves the loss exactly as without the option). Train with it:
  ``memorybench train diffusion --config clean_prefix_prob=0.5``.
* **Inference**: the history is clean (``k = 0``): each observed frame is run through the network
  once and its keys/values are cached. The next frame starts from Gaussian noise at ``k = 1`` and
  is denoised with a deterministic DDIM sampler (Song et al. 2021) over ``sampling_steps`` levels
  ``1 = k_0 > k_1 > ... > k_S = 0``::

      x0_hat = net(z, k_i | clean history)
      eps_hat = (z - alpha(k_i) (2 x0_hat - 1)) / sigma(k_i)
      z <- alpha(k_{i+1}) (2 x0_hat - 1) + sigma(k_{i+1}) eps_hat        (the last step returns x0_hat)

  Each denoising step attends to the cached history and writes the current frame's keys/values
  only into scratch space beyond it (room reserved once per ``predict``, so no step copies the
  cache), so ``predict`` leaves the history unchanged. All episodes of a batch go through the
  sampler together. What a generated frame costs is then ``sampling_steps + 1`` passes (the
  denoising steps and the clean frame's commit) of one frame's tokens attending to the whole
  history: about 1.8 s per frame and episode at a 512-frame context, 2.6 s at 768, on one core of
  this project's CPU machine (default config). The initial
  noise comes from one CPU generator per episode, seeded with ``sampler_seed`` and a hash of the
  episode's first observed frame (``sampler_seed`` alone when it predicts before observing): predictions are reproducible on any device, and an episode gets
  the same noise whatever batch it is evaluated in and at whatever position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from .attention import TRANSFORMER_BIBTEX, AttentionBlock, reserve_cache
from .common import NetConfig, NeuralWorldModel, ZooNet, weighted_mse


def alpha_sigma(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise scales of level ``k`` (cosine schedule, ``alpha^2 + sigma^2 = 1``)."""
    return torch.cos(0.5 * math.pi * k), torch.sin(0.5 * math.pi * k)


class LevelEmbedding(nn.Module):
    """Noise level ``k [B, T]`` -> ``[B, T, D]``: sinusoidal features of ``1000 k``, then an MLP."""

    def __init__(self, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        half = self.mlp[0].in_features // 2
        freq = torch.exp(-math.log(10_000.0) * torch.arange(half, device=k.device, dtype=k.dtype) / half)
        angle = 1000.0 * k[..., None] * freq
        return self.mlp(torch.cat([angle.cos(), angle.sin()], -1))


@dataclass(frozen=True)
class DiffusionConfig(NetConfig):
    layers: int = 10
    rope_base: float = 10_000.0
    sampling_steps: int = 6
    sampler_seed: int = 0
    #: training only: probability per sequence of a clean prefix of more than half of it (no loss there)
    clean_prefix_prob: float = 0.0

    inference_fields: ClassVar[tuple[str, ...]] = ("sampling_steps", "sampler_seed")

    def __post_init__(self):
        if self.sampling_steps < 1:
            raise ValueError(f"sampling_steps must be >= 1, got {self.sampling_steps}")
        if not 0 <= self.clean_prefix_prob <= 1:
            raise ValueError(f"clean_prefix_prob must be in [0, 1], got {self.clean_prefix_prob}")


class DiffusionNet(ZooNet):
    """The denoiser: ``forward(z, actions, levels) -> x0_hat``, causal over frames."""

    Config = DiffusionConfig
    loss_description = "per-pixel MSE of the clean-frame estimates at independent per-frame noise levels k ~ U[0, 1]"

    def __init__(self, config: DiffusionConfig):
        super().__init__(config)
        self.level = LevelEmbedding(config.width)
        if config.clean_prefix_prob > 0:  # what the model card says the loss is
            self.loss_description = (
                f"{self.loss_description}; long-context training: with probability "
                f"{config.clean_prefix_prob:g} per sequence a clean prefix of more than half "
                "of it (level 0, no loss there)"
            )
        self.layers.extend(AttentionBlock(config, None, config.rope_base) for _ in range(config.layers))

    def inputs(self, z: torch.Tensor, actions: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Tokens of the (noisy) frames ``z [B, T, 3, H, W]`` (``2 x - 1`` scale) with their conditioning."""
        tokens = self.encoder((z + 1) / 2)  # clean frames enter the encoder in [0, 1], as elsewhere in the zoo
        h, w = tokens.shape[2:4]
        cond = self.actions(actions) + self.level(levels.to(z.dtype))
        return tokens + cond[:, :, None, None, :] + self.position(h, w)

    def forward(self, z: torch.Tensor, actions: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        y, _ = self.trunk(self.inputs(z, actions, levels))
        return self.decode(y)

    def clean_prefix(
        self, batch: int, frames: int, generator: torch.Generator | None = None, device=None
    ) -> torch.Tensor:
        """Lengths ``[batch]`` of the clean prefixes of long-context training (module docstring):
        with probability ``clean_prefix_prob`` uniform in ``floor(T/2) + 1 .. T - 1``, else 0."""
        p = self.config.clean_prefix_prob
        lo = frames // 2 + 1
        if p == 0 or lo > frames - 1:  # off, or too short a sequence for a prefix and a frame after it
            return torch.zeros(batch, dtype=torch.long, device=device)
        used = torch.rand(batch, generator=generator, device=device) < p
        length = torch.randint(lo, frames, (batch,), generator=generator, device=device)
        return torch.where(used, length, 0)

    def loss(self, frames, actions, weight=None, generator=None) -> torch.Tensor:
        B, T = frames.shape[:2]
        levels = torch.rand(B, T, generator=generator, device=frames.device, dtype=frames.dtype)
        eps = torch.randn(frames.shape, generator=generator, device=frames.device, dtype=frames.dtype)
        if self.config.clean_prefix_prob > 0:  # long-context training: clean prefix, loss on the rest
            length = self.clean_prefix(B, T, generator, frames.device)
            prefix = torch.arange(T, device=frames.device) < length[:, None]  # [B, T]
            levels = levels.masked_fill(prefix, 0.0)
            keep = (~prefix)[:, :, None, None].to(frames.dtype).expand(B, T, *frames.shape[3:])
            weight = keep if weight is None else weight * keep
        a, s = alpha_sigma(levels[:, :, None, None, None])
        return weighted_mse(self(a * (2 * frames - 1) + s * eps, actions, levels), frames, weight)

    def sample(self, state: list | None, actions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The next frame ``[B, 1, 3, H, W]`` after the history in ``state`` (DDIM from ``noise``)."""
        steps = self.config.sampling_steps
        z = noise
        levels = torch.ones(noise.shape[:2], device=noise.device, dtype=noise.dtype)
        for i in range(steps):
            k, k_next = 1 - i / steps, 1 - (i + 1) / steps
            y, _ = self.trunk(self.inputs(z, actions, levels * k), state)
            x0 = self.decode(y)
            if i + 1 < steps:
                a, s = alpha_sigma(torch.tensor(k, dtype=z.dtype))
                a_next, s_next = alpha_sigma(torch.tensor(k_next, dtype=z.dtype))
                eps = (z - a * (2 * x0 - 1)) / s
                z = a_next * (2 * x0 - 1) + s_next * eps
        return x0


DIFFUSION_BIBTEX = (
    """@inproceedings{chen2024diffusionforcing,
  title     = {Diffusion Forcing: Next-token Prediction Meets Full-Sequence Diffusion},
  author    = {Chen, Boyuan and Mart{\\'i} Mons{\\'o}, Diego and Du, Yilun and Simchowitz, Max and
               Tedrake, Russ and Sitzmann, Vincent},
  booktitle = {Advances in Neural Information Processing Systems},
  volume    = {37},
  year      = {2024}
}
@article{song2025historyguided,
  title   = {History-Guided Video Diffusion},
  author  = {Song, Kiwhan and Chen, Boyuan and Simchowitz, Max and Du, Yilun and Tedrake, Russ and
             Sitzmann, Vincent},
  journal = {arXiv preprint arXiv:2502.06764},
  year    = {2025}
}
@inproceedings{song2021ddim,
  title     = {Denoising Diffusion Implicit Models},
  author    = {Song, Jiaming and Meng, Chenlin and Ermon, Stefano},
  booktitle = {International Conference on Learning Representations},
  year      = {2021}
}
"""
    + TRANSFORMER_BIBTEX
)


class DiffusionForcing(NeuralWorldModel):
    """Causal diffusion-forcing transformer: clean KV-cached history, few-step DDIM for the next frame."""

    name = "diffusion"
    citation = DIFFUSION_BIBTEX
    net_class = DiffusionNet

    def reset(self, spec, batch_size: int) -> None:
        super().reset(spec, batch_size)
        self.noise: list[torch.Generator] | None = None  # one per episode, seeded at the first observe
        self.shape = (1, 1, 3, *spec.resolution)

    def _seed_noise(self, first_frames: torch.Tensor) -> None:
        """Per-episode generators: seeded by ``sampler_seed`` and the episode's first frame (as 8-bit
        pixels), never by its row in the batch, so batching does not change an episode's samples."""
        import hashlib

        pixels = (first_frames.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        self.noise = []
        for row in pixels:
            digest = hashlib.sha256(row.tobytes() + str(self.net.config.sampler_seed).encode()).digest()
            self.noise.append(torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1))

    @torch.no_grad()
    def observe(self, frames: torch.Tensor, actions: torch.Tensor) -> None:
        if self.noise is None:
            self._seed_noise(frames[:, 0])
        frames = frames.to(self.device, self._dtype())
        clean = torch.zeros(frames.shape[:2], device=self.device, dtype=frames.dtype)
        _, self.state = self.net.trunk(self.net.inputs(2 * frames - 1, actions.to(self.device), clean), self.state)

    @torch.no_grad()
    def predict(self, actions: torch.Tensor) -> torch.Tensor:
        out_device = actions.device
        actions = actions.to(self.device)
        if self.state is not None:  # room in the caches for the frames to sample: no copy per denoising step
            tokens = self._grid[0] * self._grid[1] * actions.shape[1]
            self.state = [reserve_cache(cache, tokens) for cache in self.state]
        state, frames = self.state, []
        for i in range(actions.shape[1]):
            if self.noise is None:  # nothing observed yet: every episode alike, seeded by sampler_seed alone
                self.noise = [
                    torch.Generator().manual_seed(self.net.config.sampler_seed) for _ in range(actions.shape[0])
                ]
            noise = torch.cat([torch.randn(self.shape, generator=g) for g in self.noise]).to(self.device, self._dtype())
            frame = self.net.sample(state, actions[:, i : i + 1], noise)
            frames.append(frame)
            if i + 1 < actions.shape[1]:  # later frames are conditioned on this sample (not committed)
                clean = torch.zeros(frame.shape[:2], device=self.device, dtype=frame.dtype)
                _, state = self.net.trunk(self.net.inputs(2 * frame - 1, actions[:, i : i + 1], clean), state)
        return torch.cat(frames, 1).float().to(out_device)
