"""What every model of the reference zoo shares: frame codec, embeddings, checkpoints, adapter.

The six zoo models differ only in how they mix information over time (their *trunk*). Everything
else is this file, so that a comparison between them is a comparison of memory mechanisms:

* **Frame codec.** ``FrameEncoder`` turns a ``H x W`` RGB frame into a ``h x w`` grid of
  ``D``-dimensional tokens (``h = H / p``, ``w = W / p``, patch ``p = 8``: 8x8 tokens at 64x64,
  4x4 at the 32x32 smoke tier): a 3x3 convolution stem at full resolution, then a ``p x p``
  patchify (a convolution with stride ``p``). ``FrameDecoder`` goes back: a linear map from each
  token to ``p * p`` pixels of ``c`` channels (a pixel shuffle), a 3x3 convolution refinement and
  a sigmoid, so predictions are always in ``[0, 1]``.
* **Position.** A learned row table plus a learned column table (``max_grid`` entries each), so
  one set of weights works on every grid up to ``max_grid x max_grid``.
* **Actions.** An action is a vector of ``A`` integer components (``spec.action_space.nvec``).
  One table of ``16 x 8`` (component, value) embeddings, summed over the components: the same
  weights serve every task (occlusion-recall has 9 components of 3 values, the scene tasks 1 of 5).
* **Sequence convention** (all models but diffusion, which denoises frame ``t`` itself)::

      x_t = enc(frame_{t-1}) + act(a_t) + pos        (enc(frame_{-1}) = a learned BOS token)
      pred_t = dec(trunk(x)_t)                        (trunk causal in t)

  so the prediction of frame ``t`` depends only on frames ``< t`` and actions ``<= t``. Since
  ``x_{t+1}`` does not involve ``frame_{t+1}``, ``predict(a_{t+1})`` computes the next trunk state
  and keeps it aside; the ``observe(frame_{t+1}, a_{t+1})`` that follows just commits it.

* **Trunk API.** A trunk is a stack of layers; each maps ``x [B, T, h, w, D]`` and its *state*
  (``None`` at the start of an episode) to ``(y, new_state)``. ``T`` may be a whole episode
  (training: parallel/chunked computation) or one frame (generation: recurrent step). States are
  never modified in place, with one documented exception: the full-attention KV cache
  (``attention.KVCache``) appends into spare room of a shared buffer, which is safe because the
  adapter only ever extends its newest committed state.

Checkpoints are safetensors files whose metadata (one key, ``memorybench``: JSON) holds the model
name, its architecture version (``ZooNet.architecture``: a checkpoint of an older version of the
model, e.g. lssvwm and mamba before their Mamba-2 blocks, is refused with a message to retrain)
and its config, so loading needs nothing else; ``load_checkpoint`` reports a missing, truncated or corrupt file as a
``MemorybenchError`` naming it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as grad_checkpoint

import memorybench

from .._io import atomic_write_bytes
from ..adapter import WorldModel
from ..errors import MemorybenchError

#: written into every checkpoint's metadata; bump when the file layout changes
CHECKPOINT_FORMAT = "memorybench-zoo/1"
#: capacity of the action table: components x values per component
MAX_ACTION_COMPONENTS, MAX_ACTION_VALUES = 16, 8


# ------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class NetConfig:
    """Hyper-parameters shared by every zoo model (subclasses add their own)."""

    width: int = 128  # D: channels of every token
    layers: int = 6  # trunk layers
    heads: int = 4  # attention heads (head size D / heads)
    mlp_ratio: int = 4  # hidden width of the MLPs, in multiples of D
    patch: int = 16  # pixels per token side (4x4 tokens at 64x64: one per occlusion slot)
    stem_channels: int = 16  # channels of the codec's full-resolution convolutions
    max_grid: int = 16  # largest token grid side the position tables cover

    #: fields that may be overridden when loading a checkpoint (they do not change the weights)
    inference_fields: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


def make_config(cls: type[NetConfig], values: dict, where: str) -> NetConfig:
    """``cls(**values)`` with JSON lists turned into tuples and unknown fields reported clearly."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise MemorybenchError(f"{where}: unknown config field(s) {', '.join(unknown)} (known: {', '.join(known)})")
    hints = typing.get_type_hints(cls)
    values = dict(values)
    for name, v in values.items():  # numbers must be numbers: `width=abc` is a user's typo, not a crash
        allowed = set(typing.get_args(hints[name])) or {hints[name]}
        if type(None) in allowed and isinstance(v, str) and v.lower() in ("none", "null"):
            values[name] = v = None  # `window=none`, as `checkpoint=none`
        if v is None and type(None) in allowed or not allowed & {int, float}:
            continue
        is_int = isinstance(v, int) and not isinstance(v, bool)
        if not (is_int or (float in allowed and isinstance(v, float))):
            kind = "a number" if float in allowed else "an integer"
            raise MemorybenchError(
                f"{where}: config field {name} must be {kind}"
                + (" or none" if type(None) in allowed else "")
                + f", got {v!r}"
            )
    try:
        return cls(**{k: _tuples(v) for k, v in values.items()})
    except (TypeError, ValueError) as e:
        raise MemorybenchError(f"{where}: invalid config: {e}") from None


# ------------------------------------------------------------------------------------------------
# shared modules


class FrameEncoder(nn.Module):
    """Frames ``[B, T, 3, H, W]`` in ``[0, 1]`` -> tokens ``[B, T, H/p, W/p, D]``."""

    def __init__(self, width: int, patch: int, stem: int):
        super().__init__()
        self.stem = nn.Conv2d(3, stem, 3, padding=1)
        self.patchify = nn.Conv2d(stem, width, patch, stride=patch)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        B, T = frames.shape[:2]
        x = frames.flatten(0, 1) * 2 - 1
        x = self.patchify(F.gelu(self.stem(x)))  # [B*T, D, h, w]
        return x.permute(0, 2, 3, 1).unflatten(0, (B, T))


class FrameDecoder(nn.Module):
    """Tokens ``[B, T, h, w, D]`` -> frames ``[B, T, 3, h*p, w*p]`` in ``[0, 1]``."""

    def __init__(self, width: int, patch: int, stem: int):
        super().__init__()
        self.patch = patch
        self.unpatchify = nn.Linear(width, stem * patch * patch)
        self.refine = nn.Sequential(nn.Conv2d(stem, stem, 3, padding=1), nn.GELU(), nn.Conv2d(stem, 3, 3, padding=1))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        B, T = y.shape[:2]
        x = self.unpatchify(y).flatten(0, 1).permute(0, 3, 1, 2)  # [B*T, c*p*p, h, w]
        x = F.pixel_shuffle(x, self.patch)  # [B*T, c, H, W]
        return torch.sigmoid(self.refine(x)).unflatten(0, (B, T))


class SpatialPosition(nn.Module):
    """Learned position of a token in the grid: ``row[i] + col[j]``, for any grid up to ``size``."""

    def __init__(self, size: int, width: int):
        super().__init__()
        self.row = nn.Parameter(torch.randn(size, width) * 0.02)
        self.col = nn.Parameter(torch.randn(size, width) * 0.02)

    def forward(self, h: int, w: int) -> torch.Tensor:
        return self.row[:h, None, :] + self.col[None, :w, :]  # [h, w, D]


class ActionEmbedding(nn.Module):
    """``act(a) = sum_i E[i, a_i]`` over the components ``i`` of a multi-discrete action."""

    def __init__(self, width: int):
        super().__init__()
        self.table = nn.Embedding(MAX_ACTION_COMPONENTS * MAX_ACTION_VALUES, width)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:  # [B, T, A] -> [B, T, D]
        component = torch.arange(actions.shape[-1], device=actions.device)
        return self.table(component * MAX_ACTION_VALUES + actions).sum(-2)


class MLP(nn.Module):
    """``W2 gelu(W1 x)``, hidden width ``ratio * D``."""

    def __init__(self, width: int, ratio: int):
        super().__init__()
        self.fc = nn.Linear(width, ratio * width, bias=False)
        self.proj = nn.Linear(ratio * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class SpatialAttention(nn.Module):
    """Multi-head self-attention among the ``h * w`` tokens of each frame (no mixing over time).

    ``softmax(Q K^T / sqrt(d)) V`` with ``Q, K, V = x W_q, x W_k, x W_v`` per frame; position comes
    from the additive grid embedding. It has no state: frames are independent.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, h, w, D = x.shape
        q, k, v = self.qkv(x).view(B * T, h * w, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)  # [B*T, heads, h*w, D/heads]
        return self.proj(o.transpose(1, 2).reshape(B, T, h, w, D))


class PerPositionLayer(nn.Module):
    """A temporal mixer (``ssm``: S4D or Mamba) along time at every token position, then attention
    within each frame, then an MLP (pre-norm residuals). ``ssm`` maps ``[N, T, D]`` sequences and
    its state to ``(y, new_state)``; the layer's state is the mixer's."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, ssm: nn.Module):
        super().__init__()
        self.norm_ssm, self.norm_attn, self.norm_mlp = (nn.RMSNorm(width) for _ in range(3))
        self.ssm = ssm
        self.attn = SpatialAttention(width, heads)
        self.mlp = MLP(width, mlp_ratio)

    def forward(self, x: torch.Tensor, state=None):
        B, T, h, w, D = x.shape
        seq = self.norm_ssm(x).permute(0, 2, 3, 1, 4).reshape(B * h * w, T, D)  # one sequence per position
        y, state = self.ssm(seq, state)
        x = x + y.view(B, h, w, T, D).permute(0, 3, 1, 2, 4)
        x = x + self.attn(self.norm_attn(x))
        return x + self.mlp(self.norm_mlp(x)), state


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over frames ``[B, T, 3, H, W]``; ``weight [B, T, H, W]`` (per pixel) or None."""
    err = (pred - target).square()
    if weight is None:
        return err.mean()
    w = weight.unsqueeze(2).to(err.dtype)
    return (err * w).sum() / (w.sum() * err.shape[2])


# ------------------------------------------------------------------------------------------------
# the network base class


class ZooNet(nn.Module):
    """Codec, embeddings and a causal trunk (``self.layers``, filled by the subclass).

    Each layer is called as ``layer(x, state) -> (x, state)`` on ``x [B, T, h, w, D]``.
    """

    Config: ClassVar[type[NetConfig]] = NetConfig
    #: what ``loss`` computes, for the model card
    loss_description: ClassVar[str] = ""
    #: version of the network's architecture, written into checkpoints: bump it when the same
    #: registry name and config build another network, so that older checkpoints are refused
    #: with a clear message (a checkpoint without the entry is version 1)
    architecture: ClassVar[int] = 1
    #: what the versions are, for that message
    architecture_note: ClassVar[str] = ""

    def __init__(self, config: NetConfig):
        super().__init__()
        c = self.config = config
        if c.width % c.heads:
            raise MemorybenchError(f"width {c.width} is not a multiple of heads {c.heads}")
        self.encoder = FrameEncoder(c.width, c.patch, c.stem_channels)
        self.decoder = FrameDecoder(c.width, c.patch, c.stem_channels)
        self.position = SpatialPosition(c.max_grid, c.width)
        self.actions = ActionEmbedding(c.width)
        self.norm_out = nn.RMSNorm(c.width)
        self.layers = nn.ModuleList()
        #: recompute each layer in the backward pass instead of storing its activations
        self.grad_checkpointing = False

    def trunk(self, x: torch.Tensor, state: list | None = None) -> tuple[torch.Tensor, list]:
        """Run every layer; ``state`` is one entry per layer (``None``: start of the episode)."""
        state = state or [None] * len(self.layers)
        new_state = []
        for layer, s in zip(self.layers, state):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = grad_checkpoint(lambda x, layer=layer: layer(x, None)[0], x, use_reentrant=False)
                s = None
            else:
                x, s = layer(x, s)
            new_state.append(s)
        return x, new_state

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm_out(y))

    def param_groups(self, weight_decay: float) -> list[dict]:
        """The optimiser's parameter groups: weight decay on the matrices (``ndim >= 2``), none
        on biases, norms and parameters marked ``_no_weight_decay`` (e.g. an SSM's ``A_log``)."""
        params = list(self.parameters())
        no_decay = [p.ndim < 2 or getattr(p, "_no_weight_decay", False) for p in params]
        return [
            {"params": [p for p, n in zip(params, no_decay) if not n], "weight_decay": weight_decay},
            {"params": [p for p, n in zip(params, no_decay) if n], "weight_decay": 0.0},
        ]

    def loss(
        self,
        frames: torch.Tensor,
        actions: torch.Tensor,
        weight: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Training loss of a batch; ``weight [B, T, H, W]`` per pixel; ``generator`` for any noise."""
        raise NotImplementedError

    def check_task(self, resolution: tuple[int, int], nvec: tuple[int, ...]) -> None:
        """Raise a ``MemorybenchError`` if frames of ``resolution`` or actions ``nvec`` do not fit."""
        c = self.config
        H, W = resolution
        if H % c.patch or W % c.patch:
            raise MemorybenchError(f"frames of {H}x{W} are not a multiple of the patch size {c.patch}")
        if max(H, W) // c.patch > c.max_grid:
            raise MemorybenchError(f"frames of {H}x{W} make a token grid larger than max_grid={c.max_grid}")
        if len(nvec) > MAX_ACTION_COMPONENTS or max(nvec) > MAX_ACTION_VALUES:
            raise MemorybenchError(
                f"actions with nvec {list(nvec)} exceed the action table "
                f"({MAX_ACTION_COMPONENTS} components of up to {MAX_ACTION_VALUES} values)"
            )


class NextFrameNet(ZooNet):
    """A deterministic next-frame predictor: ``x_t = enc(frame_{t-1}) + act(a_t) + pos``.

    ``forward(frames, actions)`` is the parallel, teacher-forced pass used for training:
    ``pred[:, t]`` predicts ``frames[:, t]`` from ``frames[:, :t]`` and ``actions[:, :t+1]``.
    """

    loss_description = "per-pixel MSE of the teacher-forced next-frame predictions"

    def __init__(self, config: NetConfig):
        super().__init__(config)
        self.bos = nn.Parameter(torch.zeros(config.width))  # stands for enc(frame_{-1})

    def bos_tokens(self, batch: int, h: int, w: int) -> torch.Tensor:
        return self.bos.expand(batch, 1, h, w, -1)

    def inputs(self, prev_tokens: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``x_t = enc(frame_{t-1}) + act(a_t) + pos``: ``[B, T, h, w, D]``."""
        h, w = prev_tokens.shape[2:4]
        return prev_tokens + self.actions(actions)[:, :, None, None, :] + self.position(h, w)

    def forward(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(frames)
        B, _, h, w, _ = tokens.shape
        prev = torch.cat([self.bos_tokens(B, h, w), tokens[:, :-1]], 1)
        y, _ = self.trunk(self.inputs(prev, actions))
        return self.decode(y)

    def loss(self, frames, actions, weight=None, generator=None) -> torch.Tensor:
        return weighted_mse(self(frames, actions), frames, weight)


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------------
# checkpoints


def baselines_dir() -> Path:
    """Where the shipped checkpoints live: ``memorybench/_data/baselines`` in a wheel, else the
    repository's ``baselines/``."""
    here = Path(memorybench.__file__).resolve().parent
    packaged = here / "_data" / "baselines"
    return packaged if packaged.is_dir() else here.parent / "baselines"


def default_checkpoint(name: str) -> Path:
    return baselines_dir() / name / "model.safetensors"


def save_checkpoint(net: ZooNet, name: str, path: str | Path, extra: dict | None = None) -> Path:
    """Write the weights of ``net`` atomically, with the metadata ``{"memorybench": JSON}`` where the
    JSON (sorted keys) holds ``format``, ``model``, ``architecture``, ``config`` and ``extra``. One metadata key keeps
    the file byte-for-byte reproducible (safetensors writes several keys in a random order)."""
    from safetensors.torch import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    meta = {
        **(extra or {}),
        "format": CHECKPOINT_FORMAT,
        "model": name,
        "architecture": net.architecture,
        "config": net.config.to_dict(),
    }
    atomic_write_bytes(path, save(tensors, metadata={"memorybench": json.dumps(meta, sort_keys=True)}))
    return path


def read_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The metadata and tensors of a checkpoint; a ``MemorybenchError`` naming the file if unreadable."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MemorybenchError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("memorybench")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors reports truncation and corruption with several types
        raise MemorybenchError(f"cannot read checkpoint {path}: it is truncated or corrupt ({e})") from None
    try:
        meta = json.loads(raw) if raw is not None else {}
    except json.JSONDecodeError:
        meta = {}
    if meta.get("format") != CHECKPOINT_FORMAT or "model" not in meta or "config" not in meta:
        raise MemorybenchError(
            f"{path} is not a memorybench zoo checkpoint (its metadata has no "
            f"'memorybench' entry of format {CHECKPOINT_FORMAT!r})"
        )
    return meta, tensors


# ------------------------------------------------------------------------------------------------
# the adapter


def _nbytes(x) -> int:
    """Bytes of the tensors in a (nested) state; a KV cache counts its ``length`` used tokens."""
    if x is None:
        return 0
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(v) for v in x)
    if isinstance(x, dict):
        return sum(_nbytes(v) for v in x.values())
    if hasattr(x, "k") and hasattr(x, "v") and hasattr(x, "length"):  # attention.KVCache
        per_token = x.k.shape[0] * x.k.shape[1] * x.k.shape[3] * x.k.element_size()
        return 2 * per_token * x.length
    if dataclasses.is_dataclass(x):
        return sum(_nbytes(getattr(x, f.name)) for f in dataclasses.fields(x))
    return 0


@dataclass
class _Pending:
    """The trunk state after ``predict(action)``, ready for the ``observe`` that confirms it."""

    action: torch.Tensor
    state: list


class NeuralWorldModel(WorldModel):
    """Adapter of a zoo network. Subclasses set ``name``, ``citation``, ``net_class`` and ``defaults``.

    ``checkpoint``: ``"default"`` (the shipped ``baselines/<name>/model.safetensors``), a path,
    or ``"none"`` (random weights, seeded by ``seed``: for tests). Other keyword arguments are
    config fields: any field with ``checkpoint=none``; with a checkpoint, only the config's
    ``inference_fields`` (e.g. the diffusion sampler's steps).
    """

    net_class: ClassVar[type[ZooNet]] = NextFrameNet
    #: config values of this registry name that differ from ``net_class.Config``'s defaults
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, checkpoint: str | None = "default", seed: int = 0, **config):
        if checkpoint is None or str(checkpoint).lower() == "none":
            self.net = self.build_net(config, seed=seed)
            self._checkpoint: Path | None = None
        else:
            path = default_checkpoint(self.name) if checkpoint == "default" else Path(checkpoint)
            if checkpoint == "default" and not path.exists():
                raise MemorybenchError(
                    f"model '{self.name}' has no trained checkpoint at {path}. Train one with "
                    f"`memorybench train {self.name}` (see memorybench/train.py for the recipes) and put its "
                    f"model.safetensors there, pass checkpoint=PATH, or checkpoint=none for random weights"
                )
            self.net = self.load_net(path, config)
            self._checkpoint = path.resolve()
        self.net.eval()
        self.device = "cpu"

    # -- building and loading -------------------------------------------------------------------
    @classmethod
    def make_config(cls, overrides: dict | None = None) -> NetConfig:
        return make_config(cls.net_class.Config, {**cls.defaults, **(overrides or {})}, f"model '{cls.name}'")

    @classmethod
    def build_net(cls, overrides: dict | None = None, seed: int = 0) -> ZooNet:
        """A freshly initialised network; the initial weights depend only on ``seed``."""
        config = cls.make_config(overrides)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls.net_class(config)

    @classmethod
    def load_net(cls, path: str | Path, overrides: dict | None = None) -> ZooNet:
        meta, tensors = read_checkpoint(path)
        if meta["model"] != cls.name:
            raise MemorybenchError(f"checkpoint {path} holds a '{meta['model']}' model, not '{cls.name}'")
        version, current = meta.get("architecture", 1), cls.net_class.architecture
        if version != current:
            note = f"; {cls.net_class.architecture_note}" if cls.net_class.architecture_note else ""
            if isinstance(version, int) and version < current:
                raise MemorybenchError(
                    f"checkpoint {path} was trained with an older architecture of '{cls.name}' (version {version}, "
                    f"this memorybench builds version {current}{note}); retrain it with `memorybench train {cls.name}`"
                )
            raise MemorybenchError(
                f"checkpoint {path} holds architecture version {version!r} of '{cls.name}', which "
                f"this memorybench does not know (it builds version {current}{note}); "
                "upgrade memorybench"
            )
        overrides = dict(overrides or {})
        fixed = sorted(set(overrides) - set(cls.net_class.Config.inference_fields))
        if fixed:
            raise MemorybenchError(
                f"{', '.join(fixed)} cannot be changed on a trained checkpoint ({path}); "
                f"allowed: {', '.join(cls.net_class.Config.inference_fields) or 'none'}"
            )
        config = make_config(cls.net_class.Config, {**meta["config"], **overrides}, f"checkpoint {path}")
        net = cls.net_class(config)
        try:
            net.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            raise MemorybenchError(f"checkpoint {path} does not fit its config: {e}") from None
        return net

    # -- WorldModel hooks ---------------------------------------------------------------------------
    def to(self, device: str) -> NeuralWorldModel:
        self.net.to(device)
        self.device = device
        return self

    def num_parameters(self) -> int:
        return num_parameters(self.net)

    def checkpoint_path(self) -> Path | None:
        return self._checkpoint

    def state_nbytes(self) -> int:
        """Bytes held between frames: the trunk state (recurrent states, the used part of KV caches)
        and the last frame's tokens."""
        return _nbytes(getattr(self, "state", None)) + _nbytes(getattr(self, "prev", None))

    # -- the contract -------------------------------------------------------------------------------
    def _dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def reset(self, spec, batch_size: int) -> None:
        self.net.check_task(spec.resolution, spec.action_space.nvec)
        p = self.net.config.patch
        self._grid = (spec.resolution[0] // p, spec.resolution[1] // p)
        self.state: list | None = None
        self.prev: torch.Tensor | None = None  # tokens of the last observed frame [B, 1, h, w, D]
        self.pending: _Pending | None = None

    def _prev_tokens(self, batch: int, h: int, w: int) -> torch.Tensor:
        return self.prev if self.prev is not None else self.net.bos_tokens(batch, h, w)

    @torch.no_grad()
    def observe(self, frames: torch.Tensor, actions: torch.Tensor) -> None:
        frames = frames.to(self.device, self._dtype())
        actions = actions.to(self.device)
        tokens = self.net.encoder(frames)
        B, T, h, w, _ = tokens.shape
        prev = torch.cat([self._prev_tokens(B, h, w), tokens[:, :-1]], 1)
        start = 0
        if self.pending is not None and torch.equal(self.pending.action, actions[:, :1]):
            self.state, start = self.pending.state, 1  # predict() already ran this step
        if start < T:
            _, self.state = self.net.trunk(self.net.inputs(prev[:, start:], actions[:, start:]), self.state)
        self.pending = None
        self.prev = tokens[:, -1:]

    @torch.no_grad()
    def predict(self, actions: torch.Tensor) -> torch.Tensor:
        out_device = actions.device
        actions = actions.to(self.device)
        B, N = actions.shape[:2]
        prev, state, frames = self._prev_tokens(B, *self._grid), self.state, []
        for i in range(N):  # beyond the first frame, the model's own predictions are the inputs
            y, state = self.net.trunk(self.net.inputs(prev, actions[:, i : i + 1]), state)
            if i == 0:
                self.pending = _Pending(actions[:, :1].clone(), state)
            frame = self.net.decode(y)
            frames.append(frame)
            if i + 1 < N:
                prev = self.net.encoder(frame)
        return torch.cat(frames, 1).float().to(out_device)
