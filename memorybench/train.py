"""Train a reference-zoo model (``memorybench.zoo``) on procedurally generated episodes.

The one entry point::

    train(model, tasks, steps, out_dir, *, seed=0, batch_size=2, lr=1e-3, weight_decay=0.01,
          warmup=None, window=None, memory_fraction=0.5, grad_clip=1.0, model_config=None,
          device="cpu", grad_checkpointing=False, checkpoint_every=200, log_every=10,
          max_seconds=None, resume=False, workers=0, progress=True) -> Path

``model`` is a registry name (``lssvwm``, ``full-attention``, ``frame-local-attention``, ``s4``,
``mamba``, ``diffusion``, or any ``NeuralWorldModel`` subclass); ``tasks`` are ``TaskSpec`` s of one
resolution (e.g. the ``tasks`` of the recipes below); ``model_config`` overrides config fields
(e.g. ``{"width": 64}``). It writes into ``out_dir``:

* ``model.safetensors``: the weights, with the model name and config in the metadata (what
  ``--model-args checkpoint=PATH`` loads, and what ``baselines/<name>/`` ships);
* ``card.json``: the model card (config, parameter count, training tasks and their spec hashes,
  the split (``train``), each task's training seed and the episode index range used,
  training-data hash, steps, batch, learning rate, loss curve, wall time, device, versions);
* ``train_state.pt``: the resumable training state (weights, AdamW and schedule state, step, RNG
  states, loss history), written atomically every ``checkpoint_every`` steps and at the end;
  ``torch.load(path, weights_only=True)`` reads it. ``resume=True`` continues from it and ends
  with the same weights as an uninterrupted run (exactly, on the CPU).

It returns the path of ``model.safetensors``.

**Data.** Episodes come from the tasks' *train split* (``memorybench.data``, the public API for
any training loop): the generators with the training seed ``spec.seed + TRAIN_SEED_OFFSET``, never
the evaluation episodes. Batch ``i`` holds episodes ``(i // n_tasks) * batch_size + j`` of task
``i mod n_tasks`` (``data.task_loader``: round-robin, one task per batch, so a batch has one
episode length and one action layout), so the data stream is a function of the step index alone
(resume reproduces it; ``workers > 0`` generates it in background processes without changing it),
and each task's episodes used are ``0 .. n - 1`` (the card records ``episode_range`` per task).
``train_episodes`` (one entry per task, None = endless) limits a task to its first ``N`` training
episodes, generated once into the cache and reused in every pass (``data.task_loader``: sample
``i`` of the task is episode ``i mod N``; the card records ``episodes``, ``samples`` and
``cached``): for the Memory Maze tasks, whose simulator renders about 35 frames/s per core,
generate them first with ``memorybench tasks generate maze-retrieval@paper --split train
--episodes 64 -j 8`` (then ``memorybench train --train-episodes maze-retrieval@paper=64``). With
``window = W`` each sample is a ``W``-frame crop that keeps memory events whole (the crop start
drawn from ``numpy.random.default_rng([seed, episode])`` among the starts whose crop holds both
ends of at least one memory event; memory-only pixels whose content was last seen before the crop
lose their memory weight), and the crop's first frame is predicted from the BOS token like an
episode's first frame; ``window=None`` trains on whole episodes. A **curriculum** of windows,
``curriculum=[(steps, window), ...]`` (``window`` None: whole episodes), trains on each window for
its number of steps in turn (e.g. short crops first, which are cheap and teach the short gaps,
then whole episodes for the long ones); ``steps`` is then their sum.

**Loss.** Mean squared error of the predicted frames (the diffusion model: of its clean-frame
estimate at random per-frame noise levels), memory-weighted: ``(1 - f) * MSE(all pixels) + f *
MSE(memory-only pixels)`` with ``f = memory_fraction`` (default 0.5) when the batch has
memory-only pixels (``Episode.memory_mask``: content that left the view and came back, seen
before the crop: the pixels only memory can predict), plain MSE otherwise. They are a tiny
fraction of the pixels (a revealed object's silhouette in one frame, a returning tile row): with
a per-pixel weight they would not count; with a fixed share of the loss, every recall event does.
Implemented as per-pixel weights ``(1 - f) / N + f * memory / N_memory``.

**Windows and gaps.** A model cannot learn a memory longer than the sequences it is trained on.
At the start, ``train`` measures the longest memory gap of each task (over the first training
episodes) and warns, naming task and gap, when ``window`` is shorter: those gaps cannot be
learned from such crops (``window=None``: whole episodes, every gap).

The diffusion model's long-context training (LSSVWM's: with probability 0.5 per sequence a clean
prefix of more than half of it, no loss there) is its config field ``clean_prefix_prob``
(``model_config={"clean_prefix_prob": 0.5}``, ``memorybench train diffusion --config
clean_prefix_prob=0.5``; see ``zoo.diffusion``).

**Optimisation.** AdamW (betas 0.9, 0.95; weight decay on matrices only, not on the state-space
models' ``A`` parameters, marked ``_no_weight_decay``), gradient clipping at
``grad_clip``, learning rate warmed up linearly over ``warmup`` steps (default ``steps // 20``,
at most 200) then cosine-decayed to 10 % of ``lr``. ``max_seconds`` stops cleanly after the
step that exceeds it (the state is saved, the card records the steps done; ``resume=True``
continues the same run later).

**Determinism.** Initial weights depend only on ``seed``; data on the step index; the diffusion
model's noise on ``(seed, step)``. On the CPU a run is bitwise reproducible (for a fixed number
of threads). On CUDA it is reproducible up to the order of floating-point additions in atomics
(embedding and attention backward passes), so two GPU runs agree closely, not bitwise; float32
matrix products use TF32 there (``torch.set_float32_matmul_precision("high")``).

**Recipes.** The three procedural tasks (the ``maze-*`` tasks need the Memory Maze simulator and
can be added where it is installed)::

    from memorybench.tasks import TaskRegistry
    from memorybench.train import train
    tasks = TaskRegistry().select("occlusion-recall@smoke,scene-retrieval@smoke,scene-reasoning@smoke")

CPU, end to end (smoke tier: 32x32, 80-96-frame episodes; 5-45 minutes per model, see below)::

    train("lssvwm", tasks, steps=400, out_dir="baselines/lssvwm", batch_size=2, lr=1e-3)

GPU (standard tier: 64x64, whole 640-768-frame episodes; swap ``@smoke`` for ``@standard``;
0.5-10 hours per model on one H200, see below; fits an 80 GB card)::

    train("lssvwm", tasks, steps=10_000, out_dir="baselines/lssvwm", batch_size=4, lr=1e-3, device="cuda",
          grad_checkpointing=True, workers=8, checkpoint_every=500)

(``workers``: a standard-tier episode takes about 0.2 s of CPU to generate, so a batch of 4 needs
about 0.8 CPU-seconds per step, more than the fastest models' GPU step.)

**Throughput** (seconds per training step, default configs; measured, except where marked ~):

======================  ================  =================  ====================  ======================
model                   CPU smoke, B=2    CPU standard, B=1  H200 standard, B=2    H200 peak memory, B=2
                        (80 / 96 frames)  (768 frames)       (768 frames)          (grad checkpointing)
======================  ================  =================  ====================  ======================
lssvwm                  4.5 / 6.0         151 (ckpt)         0.48 (ckpt)           13 GiB
full-attention          1.7 / 2.3         ~420 (33 at 192)   1.62 (1.76 ckpt)      24 GiB (3.6)
frame-local-attention   0.85 / 1.0        36                 0.08                  24 GiB
s4                      0.9 / 1.1         33                 0.07 (0.08 ckpt)      14 GiB (3.5)
mamba                   5.0 / 6.6         180 (ckpt)         0.43 (ckpt)           13 GiB
diffusion               1.6 / 2.3         ~420 (32 at 192)   1.62                  12 GiB
======================  ================  =================  ====================  ======================

CPU: this repository's 2-core development machine, one thread (it was shared with other jobs;
two threads were slower there). H200: torch 2.11, float32 with TF32 matrix products; the
attention models train with FlexAttention there (``zoo.attention``). The selective scans (lssvwm,
mamba) materialise their ``[L, E, S]`` states (no fused kernel), hence gradient checkpointing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__, data
from ._io import atomic_write_bytes, atomic_write_text
from .data import TRAIN_SEED_OFFSET, training_spec  # noqa: F401 (part of this module's interface)
from .errors import MemorybenchError
from .spec import TaskSpec

STATE_FILE, MODEL_FILE, CARD_FILE = "train_state.pt", "model.safetensors", "card.json"
STATE_FORMAT = "memorybench-train/1"
BETAS = (0.9, 0.95)
#: the licence of weights trained by memorybench (memorybench's own; written into every model card)
WEIGHTS_LICENSE = "Apache-2.0"
MIN_LR_RATIO = 0.1
DATA_STREAM = (
    "batch i: task i mod n_tasks, its training episodes (i // n_tasks) * batch_size + j, j < batch_size "
    "(memorybench.data.task_loader)"
)


def training_data_hash(specs: Sequence[TaskSpec], episodes: Sequence[int | None] | None = None) -> str:
    """SHA-256 over the training specs' hashes (they include the training seeds; a task trained on a
    finite cached split of ``N`` episodes: the spec of those ``N``), in order."""
    episodes = [None] * len(specs) if episodes is None else list(episodes)
    return hashlib.sha256(
        json.dumps([training_spec(s, n).hash() for s, n in zip(specs, episodes)]).encode()
    ).hexdigest()


def curriculum_phases(
    steps: int, window: int | None, curriculum: Sequence[tuple[int, int | None]] | None
) -> list[tuple[int, int, int | None]]:
    """``[(first step, end step, window)]`` of a run: one phase of ``steps`` at ``window``, or the
    curriculum's phases in turn (then ``window`` must not be given)."""
    if not curriculum:
        return [(0, steps, window)]
    if window is not None:
        raise MemorybenchError("train: give a window or a curriculum of windows, not both")
    out, at = [], 0
    for n, w in curriculum:
        if int(n) < 1:
            raise MemorybenchError(f"train: every curriculum phase needs >= 1 step, got {n}")
        out.append((at, at + int(n), None if w is None else int(w)))
        at += int(n)
    return out


def parse_curriculum(text: str) -> list[tuple[int, int | None]]:
    """``"200:96,100:288,50:full"`` -> ``[(200, 96), (100, 288), (50, None)]``."""
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        n, sep, w = part.partition(":")
        try:
            out.append((int(n), None if w.strip() in ("full", "none", "") else int(w)))
        except ValueError:
            raise MemorybenchError(
                f"--curriculum expects STEPS:WINDOW pairs (WINDOW a number of frames or 'full'), got {part!r}"
            ) from None
        if not sep:
            raise MemorybenchError(f"--curriculum expects STEPS:WINDOW pairs, got {part!r}")
    if not out:
        raise MemorybenchError("--curriculum is empty")
    return out


def _phase_batches(tasks, batch_size: int, phases, *, seed: int, start: int, **loader_args):
    """The batches of steps ``start ..`` through the phases, each phase's from its own loader."""
    for a, b, w in phases:
        if b <= start:
            continue
        yield from data.task_loader(tasks, batch_size, crop=w, seed=seed, start=max(a, start), stop=b, **loader_args)


def memory_weights(memory: torch.Tensor, fraction: float) -> torch.Tensor | None:
    """Per-pixel loss weights ``[B, T, H, W]`` that give the memory-only pixels ``fraction`` of the
    loss and the frame the rest (see **Loss**); None (plain MSE) without memory pixels or fraction."""
    n_mem = int(memory.sum())
    if fraction == 0 or n_mem == 0:
        return None
    m = memory.float()
    return (1 - fraction) / m.numel() + fraction * m / n_mem


def longest_gaps(tasks: Sequence[TaskSpec], episodes: int = 2) -> dict[str, int]:
    """Per task key, the longest memory gap (true history) over its first training episodes."""
    from .generators import get_generator

    out = {}
    for spec in tasks:
        tspec = training_spec(spec)
        gen = get_generator(tspec.family)(tspec)
        longest = 0
        for i in range(min(episodes, tspec.episodes)):
            ep = gen.generate(i)
            gaps = ep.items.gap if ep.items is not None and len(ep.items) else ep.memory_gap[ep.memory_mask.any((1, 2))]
            longest = max(longest, int(gaps.max()) if len(gaps) else 0)
        out[spec.key] = longest
    return out


def warn_short_window(tasks: Sequence[TaskSpec], window: int | None, stacklevel: int = 2) -> dict[str, int]:
    """Warn (``ShortWindowWarning``) for each task whose longest memory gap exceeds ``window``."""
    import warnings

    if window is None:
        return {}
    short = {k: g for k, g in longest_gaps(tasks).items() if g >= window}
    for key, gap in short.items():
        warnings.warn(
            f"train: window {window} is shorter than the longest memory gap of {key} ({gap} frames): "
            f"memory over gaps of {window} frames or more cannot be learned from these crops; train on whole "
            "episodes (no --window) or a longer window",
            ShortWindowWarning,
            stacklevel=stacklevel + 1,
        )
    return short


class ShortWindowWarning(UserWarning):
    """A training window shorter than the memory gaps a task scores."""


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to ``MIN_LR_RATIO`` at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))


def _step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The random stream of one training step (used by the diffusion model's noise)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0] >> 1))
    return g


def _atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` of ``obj``, written atomically with fsync (``memorybench._io``)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _atomic_write_json(obj, path: Path) -> None:
    """The model card's layout (two-space indent), written atomically with fsync (``memorybench._io``)."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _rng_states() -> dict:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _loss_curve(losses: list[float], every: int) -> list[list[float]]:
    """``[step, mean loss of the steps up to it]`` every ``every`` steps (and at the last step)."""
    out = []
    for end in list(range(every, len(losses) + 1, every)) + ([len(losses)] if len(losses) % every else []):
        out.append([end, float(np.mean(losses[max(0, end - every) : end]))])
    return out


@dataclass(frozen=True)
class TrainConfig:
    """How to train: every setting of ``train`` besides the model, tasks, steps and output.

    The fields that determine the final weights (seed ... grad_clip, the model's config) make the
    training run's identity (``train_state.pt``'s ``run``): a resume must match them. The others
    (device, progress, where checkpoints go, when to stop) do not change the weights.
    """

    seed: int = 0
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.01
    #: linear warm-up steps (None: 5 % of the steps, between 1 and 200)
    warmup: int | None = None
    #: frames per training window (None: whole episodes); or a ``curriculum``
    window: int | None = None
    #: ``[(steps, window), ...]`` phases (``parse_curriculum``); their steps replace ``steps``
    curriculum: Sequence[tuple[int, int | None]] | None = None
    #: weight of the memory-only pixels' MSE in the loss
    memory_fraction: float = 0.5
    grad_clip: float = 1.0
    #: overrides of the model's network config (``cls.make_config``)
    model_config: dict | None = None
    device: str = "cpu"
    grad_checkpointing: bool = False
    checkpoint_every: int = 200
    log_every: int = 10
    #: stop (resumably) after this many seconds of training
    max_seconds: float | None = None
    resume: bool = False
    workers: int = 0
    progress: bool = True
    #: per task, the number of cached training episodes cycled through (None: a fresh stream)
    train_episodes: Sequence[int | None] | None = None
    #: the command line, for the model card
    command: str | None = None


@dataclass
class _Plan:
    """A checked training request: the phases, the step count and the run's identity."""

    cls: type
    tasks: list[TaskSpec]
    phases: list[tuple[int, int, int | None]]
    steps: int
    warmup: int
    cycled: list[int | None]
    run: dict = field(default_factory=dict)


def train(
    model: str,
    tasks: Sequence[TaskSpec],
    steps: int,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    **settings,
) -> Path:
    """Train ``model`` on ``tasks`` for ``steps`` steps into ``out_dir``; see the module docstring.

    ``config`` holds the settings (``TrainConfig``); keyword ``settings`` override its fields
    (``train("s4", specs, 100, "out", seed=1)`` is ``TrainConfig(seed=1)``).
    """
    from .zoo.common import save_checkpoint

    try:
        cfg = dataclasses.replace(config or TrainConfig(), **settings)
    except TypeError as e:
        raise MemorybenchError(f"train: {e}") from None
    plan = _plan(model, tasks, steps, cfg)
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        torch.set_float32_matmul_precision("high")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    net = plan.cls.build_net(cfg.model_config, seed=cfg.seed)
    for s in plan.tasks:
        net.check_task(s.resolution, s.action_space.nvec)
    net.to(dev).train()
    net.grad_checkpointing = cfg.grad_checkpointing
    opt, sched = _optimizer(net, cfg, plan)
    start, losses, wall_before = _resume(out, cfg, plan, net, opt, sched, dev)
    state = _State(out / STATE_FILE, plan.run, net, opt, sched, losses)
    done, stopped, wall = _loop(cfg, plan, net, opt, sched, state, dev, start, wall_before)
    state.save(done, wall)
    net.eval()
    data_hash = training_data_hash(plan.tasks, plan.cycled)
    model_path = save_checkpoint(
        net, plan.cls.name, out / MODEL_FILE, extra={"training_data_hash": data_hash, "steps": done}
    )
    card = _model_card(cfg, plan, net, model_path, losses, done=done, stopped=stopped, wall=wall, dev=dev)
    _atomic_write_json(card, out / CARD_FILE)
    return model_path


def _check_numbers(cfg: TrainConfig, steps: int, phases) -> None:
    for name, v in (
        ("steps", steps),
        ("batch_size", cfg.batch_size),
        ("checkpoint_every", cfg.checkpoint_every),
        ("log_every", cfg.log_every),
    ):
        if v < 1:
            raise MemorybenchError(f"train: {name} must be >= 1, got {v}")
    for _, _, w in phases:
        if w is not None and w < 2:
            raise MemorybenchError(f"train: window must be >= 2 frames or None, got {w}")
    if not 0 <= cfg.memory_fraction < 1:
        raise MemorybenchError(f"train: memory_fraction must be in [0, 1), got {cfg.memory_fraction}")


def _check_episodes(tasks: list[TaskSpec], train_episodes) -> list[int | None]:
    cycled = [None] * len(tasks) if train_episodes is None else list(train_episodes)
    if len(cycled) != len(tasks):
        raise MemorybenchError(f"train: {len(cycled)} episode counts for {len(tasks)} tasks")
    for s, n in zip(tasks, cycled):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise MemorybenchError(
                f"train: the number of training episodes of {s.key} must be a positive integer, got {n!r}"
            )
    return cycled


def _plan(model: str, tasks: Sequence[TaskSpec], steps: int, cfg: TrainConfig) -> _Plan:
    """Check the request (clear errors, a warning for windows shorter than the tasks' gaps) and
    fix what the weights depend on (``_Plan.run``)."""
    from .models import resolve
    from .zoo.common import NeuralWorldModel

    cls = resolve(model)
    if not issubclass(cls, NeuralWorldModel):
        raise MemorybenchError(f"'{model}' is not a trainable zoo model (a memorybench.zoo NeuralWorldModel)")
    tasks = list(tasks)
    if not tasks:
        raise MemorybenchError("train: no tasks given")
    if len({s.resolution for s in tasks}) > 1:
        raise MemorybenchError(
            f"train: the tasks have different resolutions "
            f"({', '.join(f'{s.key} {s.resolution[0]}x{s.resolution[1]}' for s in tasks)}); "
            "train on one tier at a time"
        )
    phases = curriculum_phases(steps, cfg.window, cfg.curriculum)
    steps = phases[-1][1]  # with a curriculum, the sum of its phases
    _check_numbers(cfg, steps, phases)
    longest = max((w for _, _, w in phases), key=lambda w: float("inf") if w is None else w)
    warn_short_window(tasks, longest, stacklevel=4)  # points at train's caller (through _plan and train)
    warmup = max(1, min(200, steps // 20)) if cfg.warmup is None else cfg.warmup
    plan = _Plan(cls, tasks, phases, steps, warmup, _check_episodes(tasks, cfg.train_episodes))
    plan.run = _run_identity(cfg, plan)
    return plan


def _curriculum(cfg: TrainConfig, plan: _Plan) -> list | None:
    return [[b - a, w] for a, b, w in plan.phases] if cfg.curriculum else None


def _run_identity(cfg: TrainConfig, plan: _Plan) -> dict:
    """Everything that determines the final weights: a resumed run must match it."""
    run = {
        "model": plan.cls.name,
        "config": plan.cls.make_config(cfg.model_config).to_dict(),
        "seed": cfg.seed,
        "steps": plan.steps,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "warmup": plan.warmup,
        "window": cfg.window,
        "curriculum": _curriculum(cfg, plan),
        "memory_fraction": cfg.memory_fraction,
        "grad_clip": cfg.grad_clip,
        "tasks": [
            {
                "key": s.key,
                "spec_hash": s.hash(),
                "training_seed": training_spec(s).seed,
                **({} if n is None else {"episodes": n}),
            }
            for s, n in zip(plan.tasks, plan.cycled)
        ],
        "data_stream": DATA_STREAM,
    }
    return json.loads(json.dumps(run))  # the form it is saved in (lists, not tuples)


def _optimizer(net, cfg: TrainConfig, plan: _Plan):
    """AdamW over the network's parameter groups (``ZooNet.param_groups``: weight decay on the
    matrices only) and the warm-up + cosine schedule of ``lr_factor``."""
    opt = torch.optim.AdamW(net.param_groups(cfg.weight_decay), lr=cfg.lr, betas=BETAS)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(i, plan.steps, plan.warmup))
    return opt, sched


def _resume(out: Path, cfg: TrainConfig, plan: _Plan, net, opt, sched, dev) -> tuple[int, list[float], float]:
    """The step, losses and wall time to continue from: 0 for a new run, the saved state's
    (checked to be the same run) with ``resume``; an existing state without ``resume`` is refused."""
    state_path = out / STATE_FILE
    if not state_path.exists():
        return 0, [], 0.0
    if not cfg.resume:
        raise MemorybenchError(
            f"{out} already holds a training run ({STATE_FILE}); pass resume=True to continue it, or choose another out_dir"
        )
    try:
        saved = torch.load(state_path, map_location=dev, weights_only=True)
    except Exception as e:
        raise MemorybenchError(f"cannot read the training state {state_path}: {e}") from None
    if saved.get("format") != STATE_FORMAT:
        raise MemorybenchError(f"{state_path} is not a memorybench training state")
    if saved["run"] != plan.run:
        diff = sorted(k for k in plan.run if plan.run[k] != saved["run"].get(k))
        raise MemorybenchError(f"cannot resume {out}: the saved run differs in {', '.join(diff)}")
    net.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    _set_rng_states(saved["rng"])
    return saved["step"], list(saved["losses"]), saved["wall_seconds"]


@dataclass
class _State:
    """What ``train_state.pt`` holds, saved atomically at checkpoints and at the end."""

    path: Path
    run: dict
    net: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: object
    losses: list[float]

    def save(self, done: int, wall: float) -> None:
        _atomic_torch_save(
            {
                "format": STATE_FORMAT,
                "run": self.run,
                "step": done,
                "model": self.net.state_dict(),
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "rng": _rng_states(),
                "losses": self.losses,
                "wall_seconds": wall,
            },
            self.path,
        )


def _step(cfg: TrainConfig, net, opt, sched, batch: dict, step: int, dev) -> float:
    """One optimiser step on ``batch``; its loss (a non-finite loss is an error)."""
    frames = batch["frames"].to(dev, non_blocking=True).float().div_(255.0)
    actions = batch["actions"].to(dev, non_blocking=True)
    weight = memory_weights(batch["memory_mask"].to(dev), cfg.memory_fraction)
    loss = net.loss(frames, actions, weight, _step_generator(cfg.seed, step, dev))
    if not torch.isfinite(loss):
        raise MemorybenchError(f"train: the loss of step {step} is {loss.item()} (try a lower lr)")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    opt.step()
    sched.step()
    return loss.item()


def _loop(cfg: TrainConfig, plan: _Plan, net, opt, sched, state: _State, dev, start: int, wall_before: float):
    """Steps ``start .. plan.steps`` (checkpoints every ``checkpoint_every``, a stop after
    ``max_seconds``); ``(steps done, stopped by the time limit, wall seconds in all)``."""
    loader = _phase_batches(
        plan.tasks,
        cfg.batch_size,
        plan.phases,
        seed=cfg.seed,
        start=start,
        workers=cfg.workers,
        rank=0,
        world_size=1,
        pin_memory=dev.type == "cuda",
        episodes=plan.cycled,
        cache_workers=max(1, cfg.workers),
    )
    losses, steps = state.losses, plan.steps
    bar = _progress_bar(plan.cls.name, steps, start) if cfg.progress else None
    t0 = time.perf_counter()
    done, stopped = start, False
    try:
        for step, batch in zip(range(start, steps), loader):
            losses.append(_step(cfg, net, opt, sched, batch, step, dev))
            done = step + 1
            if bar is not None:
                bar[0].update(bar[1], completed=done, loss=f"{np.mean(losses[-cfg.log_every :]):.5f}")
            if done % cfg.checkpoint_every == 0 and done < steps:
                state.save(done, wall_before + time.perf_counter() - t0)
            if cfg.max_seconds is not None and time.perf_counter() - t0 > cfg.max_seconds and done < steps:
                stopped = True
                break
    finally:
        if bar is not None:
            bar[0].stop()
    return done, stopped, wall_before + time.perf_counter() - t0


def _training_record(cfg: TrainConfig, plan: _Plan, net, losses, *, done: int, stopped: bool, wall: float, dev) -> dict:
    """The model card's ``training`` entry."""
    used = data.round_robin_episodes(len(plan.tasks), cfg.batch_size, done)
    tasks = [
        {
            **t,
            "episode_range": [0, n if c is None else min(n, c)],
            **({} if c is None else {"samples": n, "cached": True}),
        }
        for t, n, c in zip(plan.run["tasks"], used, plan.cycled)
    ]
    every = cfg.log_every
    return {
        "split": "train",
        "tasks": tasks,
        "seed_offset": TRAIN_SEED_OFFSET,
        "data_hash": training_data_hash(plan.tasks, plan.cycled),
        "data_stream": DATA_STREAM,
        "seed": cfg.seed,
        "steps": done,
        "steps_planned": plan.steps,
        "complete": done == plan.steps,
        "stopped_by_time_limit": stopped,
        **({} if cfg.command is None else {"command": cfg.command}),
        "batch_size": cfg.batch_size,
        "window": cfg.window,
        "curriculum": _curriculum(cfg, plan),
        "optimizer": {
            "name": "AdamW",
            "lr": cfg.lr,
            "betas": list(BETAS),
            "weight_decay": cfg.weight_decay,
            "grad_clip": cfg.grad_clip,
            "schedule": f"linear warm-up {plan.warmup} steps, cosine to {MIN_LR_RATIO:g} x lr",
        },
        "loss": f"{net.loss_description}; memory-weighted: (1 - f) MSE(all) + f MSE(memory-only pixels)",
        "memory_fraction": cfg.memory_fraction,
        "grad_checkpointing": cfg.grad_checkpointing,
        "final_loss": float(np.mean(losses[-every:])) if losses else None,
        "avg_loss": float(np.mean(losses)) if losses else None,
        "loss_curve": _loss_curve(losses, every),
        "wall_seconds": round(wall, 3),
        "device": cfg.device if dev.type == "cpu" else f"{cfg.device} ({torch.cuda.get_device_name(dev)})",
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


def _model_card(cfg: TrainConfig, plan: _Plan, net, model_path: Path, losses, **how) -> dict:
    """``card.json``: what the weights are, how they were trained, and their checksum."""
    from .hashing import file_sha256
    from .zoo.common import num_parameters

    cls = plan.cls
    return {
        "model": cls.name,
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "config": plan.run["config"],
        "parameters": num_parameters(net),
        "checkpoint": {"file": MODEL_FILE, "sha256": file_sha256(model_path)},
        "training": _training_record(cfg, plan, net, losses, **how),
        "versions": {"torch": torch.__version__, "memorybench": __version__},
        "citation": cls.citation,
        "license": WEIGHTS_LICENSE,
    }


def _progress_bar(name: str, steps: int, start: int):
    from .console import progress_bar

    bar = progress_bar(fields=("loss",))
    bar.start()
    return bar, bar.add_task(f"train {name}", total=steps, completed=start, unit="steps", loss="—")
