"""The adapter contract: the one interface every world model implements to be scored.

A model sees a batch of ``B`` episodes of one task at a time, frame by frame::

    model.to(device)                                # once, before the first reset: sets self.device
    model.reset(spec, batch_size=B)                 # new episodes: forget everything
    for s in range(0, C, 128):                      # the context, in chunks of at most 128 frames
        model.observe(frames[:, s:s+128], actions[:, s:s+128])   # true frames and their actions
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
outputs what they are: results and resume are keyed on its hash. The identity holds the class,
the constructor arguments, the parameter count and the model's **weights**, found automatically
where they can be:

* every constructor argument (``--model-args``) whose value names an existing file or directory:
  its SHA-256 (a directory: ``hashing.tree_sha256``, over its files' relative paths and
  contents), unless the class lists the argument in ``not_weights``;
* the files ``weight_files()`` returns (default: ``checkpoint_path()``), for weights the model
  loads from a place no argument names;
* every ``torch.nn.Module`` held in the adapter's attributes (directly, or in a list, tuple or
  dict): the SHA-256 of their state (every tensor's name, dtype, shape and bytes) and their
  parameter count (the default ``num_parameters``).

A model with none of these is ``"weights": "undeclared"`` (leaderboards mark it), unless it says
it has no learned weights (``learned = False``: ``"weights": "none"``). The guide for writing an
adapter is ``docs/adapters.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ._io import jsonable
from .errors import MemorybenchError
from .hashing import cached_sha256, file_sha256, tree_files, tree_sha256  # noqa: F401 - file_sha256 re-exported

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
    #: False declares a model without learned weights (rules, the calibration baselines): its runs
    #: record ``"weights": "none"`` instead of ``"undeclared"`` when nothing else identifies it
    learned: ClassVar[bool | None] = None
    #: constructor arguments that name files or directories which do not determine the outputs
    #: (a cache, a log directory): not hashed into the identity
    not_weights: ClassVar[tuple[str, ...]] = ()

    # set by the registry when built from the command line
    _init_args: dict[str, Any] = {}

    # -- the contract -----------------------------------------------------------------------
    @abstractmethod
    def reset(self, spec: TaskSpec, batch_size: int) -> None:
        """Start ``batch_size`` new episodes of ``spec``; drop all history."""

    @abstractmethod
    def observe(self, frames: torch.Tensor, actions: torch.Tensor) -> None:
        """Append frames ``[B, T, 3, H, W]`` (float32 in [0, 1]) and their actions ``[B, T, A]``."""

    @abstractmethod
    def predict(self, actions: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, N, 3, H, W]`` for the next ``N`` actions ``[B, N, A]``; history unchanged."""

    # -- optional hooks -----------------------------------------------------------------------
    def to(self, device: str) -> WorldModel:
        """Move the model to ``device`` ("cpu", "cuda", "cuda:1"...). Neural adapters override."""
        self.device = device
        return self

    def bind(self, episodes: Sequence[Episode]) -> None:
        """Privileged models only: the true episodes of the current batch (called after ``reset``)."""
        raise NotImplementedError(f"{type(self).__name__} is not a privileged model")

    def num_parameters(self) -> int:
        """Number of learned parameters: by default those of every ``torch.nn.Module`` held in the
        adapter's attributes (each parameter counted once); 0 when it holds none."""
        seen = {}
        for m in _modules(self).values():
            for prm in m.parameters():
                seen[id(prm)] = prm.numel()
        return int(sum(seen.values()))

    def state_nbytes(self) -> int | None:
        """Bytes of what the model keeps between frames (recurrent state, KV cache, history), for
        the efficiency track (``memorybench profile``). ``None``: not reported."""
        return None

    def checkpoint_path(self) -> Path | None:
        """The weights file the model loaded, if any (its SHA-256 becomes part of the identity)."""
        return None

    def weight_files(self) -> Sequence[str | Path]:
        """Files or directories of weights the model loaded that no constructor argument names
        (e.g. a fixed download location): each is hashed into the identity. Default: the
        ``checkpoint_path()``, if any."""
        ckpt = self.checkpoint_path()
        return [ckpt] if ckpt else []

    def weights(self) -> list[dict] | str:
        """What identifies the weights: a list of entries (``source``, ``type`` file, directory or
        modules, ``sha256``, and ``path``, ``bytes``, ``files`` or ``parameters``), or ``"none"``
        (``learned = False`` and nothing found), or ``"undeclared"``."""
        entries: list[dict] = []
        seen: set[str] = set()

        def add(path: Path, source: str) -> None:
            path = path.expanduser().resolve()
            if str(path) not in seen:
                seen.add(str(path))
                entries.append(_path_entry(path, source))

        for arg, value in _path_arguments(self._init_args, set(self.not_weights)):
            add(Path(value), f"argument {arg}")
        for f in self.weight_files() or ():
            if not Path(f).exists():
                raise MemorybenchError(f"model '{self.name}' declares weights at {f}, which does not exist")
            add(Path(f), "declared")
        modules = _modules(self)
        if modules:
            entries.append(
                {
                    "source": "modules",
                    "type": "modules",
                    "modules": sorted(modules),
                    "parameters": self.num_parameters(),
                    "sha256": _state_sha256(modules),
                }
            )
        if entries:
            return entries
        return "none" if self.learned is False else "undeclared"

    def identity(self) -> dict:
        """What determines this model's outputs: results and resume are keyed on its hash."""
        ckpt = self.checkpoint_path()
        return {
            "name": self.name or type(self).__name__,
            "class": f"{type(self).__module__}:{type(self).__qualname__}",
            "args": jsonable(self._init_args, sort_keys=True),
            "checkpoint": str(ckpt) if ckpt else None,
            "checkpoint_sha256": cached_sha256(ckpt) if ckpt else None,
            "weights": self.weights(),
            "parameters": int(self.num_parameters()),
        }

    def identity_hash(self) -> str:
        return hash_identity(self.identity())

    def describe(self) -> dict:
        ident = self.identity()
        return {
            **ident,
            "identity_hash": hash_identity(ident),
            "citation": self.citation,
            "privileged": self.privileged,
            "reference_kind": self.reference_kind,
        }


def hash_identity(ident: dict) -> str:
    """SHA-256 of an ``identity()``; where files live does not matter, what they hold does."""
    ident = dict(ident)
    ident.pop("checkpoint", None)
    if isinstance(ident.get("weights"), list):
        ident["weights"] = [{k: v for k, v in w.items() if k != "path"} for w in ident["weights"]]
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


#: a constructor argument naming a directory with more files than this is refused (list it in
#: ``not_weights`` if it does not hold weights)
MAX_WEIGHT_FILES = 20000


def _path_arguments(args: dict, skip: set[str]):
    """``(argument, path)`` for every argument value (or list item) naming an existing file or directory."""
    for key, value in sorted((args or {}).items()):
        if key in skip:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for k, v in enumerate(values):
            if isinstance(v, (str, os.PathLike)) and str(v).strip() and os.path.exists(os.path.expanduser(str(v))):
                yield (key if len(values) == 1 and not isinstance(value, (list, tuple)) else f"{key}[{k}]"), v


def _path_entry(path: Path, source: str) -> dict:
    if path.is_dir():
        n = len(tree_files(path))
        if n > MAX_WEIGHT_FILES:
            raise MemorybenchError(
                f"{source} names {path}, a directory of {n} files: too many to hash as weights. If it "
                "holds no weights, list the argument in the model class's `not_weights`"
            )
        digest, files, size = tree_sha256(path)
        return {
            "source": source,
            "type": "directory",
            "path": str(path),
            "sha256": digest,
            "files": files,
            "bytes": size,
        }
    return {
        "source": source,
        "type": "file",
        "path": str(path),
        "sha256": cached_sha256(path),
        "bytes": path.stat().st_size,
    }


def _modules(obj) -> dict[str, Any]:
    """Every ``torch.nn.Module`` in ``obj``'s attributes (directly or in a list, tuple or dict), by
    attribute name. torch is not imported for this: a model holding modules has imported it."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    Module = torch.nn.Module
    found = {}
    for key, value in sorted(vars(obj).items()):
        if isinstance(value, Module):
            found[key] = value
        elif isinstance(value, (list, tuple)):
            found.update({f"{key}[{i}]": v for i, v in enumerate(value) if isinstance(v, Module)})
        elif isinstance(value, dict):
            found.update({f"{key}[{k!r}]": v for k, v in value.items() if isinstance(v, Module)})
    return found


def _state_sha256(modules: dict) -> str:
    """SHA-256 over every tensor of the modules' state dicts: name, dtype, shape and bytes."""
    import torch

    h = hashlib.sha256()
    for name, m in sorted(modules.items()):
        for key, t in m.state_dict().items():
            if not isinstance(t, torch.Tensor):
                continue
            t = t.detach()
            h.update(f"{name}.{key}:{t.dtype}:{tuple(t.shape)};".encode())
            flat = t.to("cpu").contiguous().reshape(-1)
            try:
                h.update(flat.view(torch.uint8).numpy())
            except (RuntimeError, TypeError):  # dtypes without a byte view: hash their values as float64
                h.update(flat.to(torch.float64).numpy())
    return h.hexdigest()
