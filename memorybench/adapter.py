"""The adapter contract: the one interface every world model implements to be scored.

A model sees a batch of ``B`` episodes of one task at a time, frame by frame::

    model.reset(spec, batch_size=B)                 # new episodes: forget everything
    model.observe(frames[:, :C], actions[:, :C])    # the context: true frames and their actions
    for t in range(C, T):
        pred = model.predict(actions[:, t:t+1])     # the next frame, given the action that makes it
        model.observe(pred or truth, actions[:, t:t+1])

* ``frames`` are ``float32`` tensors ``[B, T, 3, H, W]`` in ``[0, 1]``; ``actions`` are ``int64``
  tensors ``[B, T, A]`` (``spec.action_space``); ``actions[:, t]`` is the action that produced frame
  ``t`` from frame ``t - 1``.
* ``predict(actions)`` returns the next ``N = actions.shape[1]`` frames, ``[B, N, 3, H, W]`` in
  ``[0, 1]``, and must **not** change the model's history: the runner decides what is appended,
  through ``observe``. Under the ``rollout`` protocol it appends the model's own prediction (the
  model never sees the truth of a frame it generates); under ``teacher-forced`` it appends the true
  frame, which isolates memory from the accumulation of errors. The runner calls ``predict`` with
  ``N = 1``; a model may support more.
* Everything runs under ``torch.no_grad()``. The runner checks every output (shape, dtype, range,
  NaN/inf) and stops with an error that names the model, task, episode and frame.

A minimal adapter (``memorybench run --model mypkg.mymodel:Blur``)::

    import torch
    from memorybench.adapter import WorldModel

    class Blur(WorldModel):
        name = "blur"

        def __init__(self, kernel: int = 3):
            self.kernel = kernel

        def reset(self, spec, batch_size):
            self.last = None

        def observe(self, frames, actions):
            self.last = frames[:, -1]

        def predict(self, actions):
            k = self.kernel
            out = torch.nn.functional.avg_pool2d(self.last, k, stride=1, padding=k // 2, count_include_pad=False)
            return out.unsqueeze(1).expand(-1, actions.shape[1], -1, -1, -1)

Models declare who they are (``name``, ``citation``, ``num_parameters``), what they need
(``max_batch_size``, ``devices``) and, through ``identity()``, everything that makes their
outputs what they are (constructor arguments, checkpoint hash): results and resume are keyed on it.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from .hashing import file_sha256

if TYPE_CHECKING:  # torch is imported lazily so that `memorybench tasks ...` starts fast
    import torch

    from .episode import Episode
    from .spec import TaskSpec


class WorldModel(ABC):
    """Base class of every adapter. Subclasses implement ``reset``, ``observe`` and ``predict``."""

    #: short registry name, e.g. "lssvwm"
    name: ClassVar[str] = ""
    #: BibTeX entry (or entries) to cite for this model
    citation: ClassVar[str] = ""
    #: largest batch of episodes the model accepts at once (None: any)
    max_batch_size: ClassVar[int | None] = None
    #: devices the model can run on
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    #: True only for calibration references that read the ground truth (``bind``); they are
    #: marked as references in every table and never rank as contenders
    privileged: ClassVar[bool] = False
    #: calibration references say what they are: ``"no-memory"`` (copy-last, blur, means,
    #: inpainting, shifted copies: ``recall`` must be at chance), ``"lossy-memory"`` (mean-frame),
    #: ``"oracle"`` (privileged: ground-truth, perfect-memory). ``None``: a contender.
    reference_kind: ClassVar[str | None] = None

    # set by the registry when built from the command line
    _init_args: dict[str, Any] = {}

    # -- the contract -----------------------------------------------------------------------
    @abstractmethod
    def reset(self, spec: "TaskSpec", batch_size: int) -> None:
        """Start ``batch_size`` new episodes of ``spec``; drop all history."""

    @abstractmethod
    def observe(self, frames: "torch.Tensor", actions: "torch.Tensor") -> None:
        """Append frames ``[B, T, 3, H, W]`` (float32 in [0, 1]) and their actions ``[B, T, A]``."""

    @abstractmethod
    def predict(self, actions: "torch.Tensor") -> "torch.Tensor":
        """Frames ``[B, N, 3, H, W]`` for the next ``N`` actions ``[B, N, A]``; history unchanged."""

    # -- optional hooks -----------------------------------------------------------------------
    def to(self, device: str) -> "WorldModel":
        """Move the model to ``device`` ("cpu", "cuda", "cuda:1"...). Neural adapters override."""
        self.device = device
        return self

    def bind(self, episodes: Sequence["Episode"]) -> None:
        """Privileged models only: the true episodes of the current batch (called after ``reset``)."""
        raise NotImplementedError(f"{type(self).__name__} is not a privileged model")

    def num_parameters(self) -> int:
        """Number of learned parameters (0 for a non-learned model)."""
        return 0

    def state_nbytes(self) -> int | None:
        """Bytes of what the model keeps between frames (recurrent state, KV cache, history), for
        the efficiency track (``memorybench profile``). ``None``: not reported."""
        return None

    def checkpoint_path(self) -> Path | None:
        """The weights file the model loaded, if any (its SHA-256 becomes part of the identity)."""
        return None

    def identity(self) -> dict:
        """What determines this model's outputs: results and resume are keyed on its hash."""
        ckpt = self.checkpoint_path()
        return {
            "name": self.name or type(self).__name__,
            "class": f"{type(self).__module__}:{type(self).__qualname__}",
            "args": _jsonable(self._init_args),
            "checkpoint": str(ckpt) if ckpt else None,
            "checkpoint_sha256": file_sha256(ckpt) if ckpt else None,
        }

    def identity_hash(self) -> str:
        ident = dict(self.identity())
        ident.pop("checkpoint", None)  # where the file lives does not matter, what it holds does
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict:
        return {**self.identity(), "identity_hash": self.identity_hash(), "parameters": self.num_parameters(),
                "citation": self.citation, "privileged": self.privileged, "reference_kind": self.reference_kind}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in sorted(x.items())}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)
