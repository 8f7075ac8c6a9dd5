"""``memorybench train``: train a reference model of the zoo and write its weights and model card."""

from __future__ import annotations

import shlex
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from ..console import console, err_console
from ..errors import MemorybenchError
from ..models import MODEL_GROUPS
from .common import _ARGV, TasksDirOpt, _registry, app


def _train_episodes(text: str, specs) -> list:
    """``--train-episodes``: ``N`` for every task, or ``TASK=N,...`` (a task's name or ``name@tier``)."""

    def count(v: str, what: str) -> int:
        try:
            n = int(v)
        except ValueError:
            n = 0
        if n < 1:
            raise MemorybenchError(f"--train-episodes: {what} needs a positive number of episodes, got {v!r}")
        return n

    text = text.strip()
    if "=" not in text:
        return [count(text, "every task")] * len(specs)
    out: list = [None] * len(specs)
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, v = part.partition("=")
        name = name.strip()
        hits = [i for i, s in enumerate(specs) if name in (s.key, s.name)]
        if not hits:
            raise MemorybenchError(
                f"--train-episodes: '{name}' is not one of the training tasks ({', '.join(s.key for s in specs)})"
            )
        for i in hits:
            out[i] = count(v.strip(), name)
    return out


# the options of `memorybench train`
TrainModelArg = typer.Argument(..., help=f"Zoo model: {', '.join(MODEL_GROUPS['zoo'])}.")
TrainTasksOpt = typer.Option(
    "occlusion-recall,scene-retrieval,scene-reasoning",
    "--tasks",
    help="Tasks to train on (their training seeds, never the evaluation episodes).",
)
TrainTierOpt = typer.Option("smoke", "--tier", help="Tier of bare task names.")
StepsOpt = typer.Option(400, "--steps", help="Optimisation steps (one batch each).")
TrainSeedOpt = typer.Option(0, "--seed", help="Seed of the initial weights, the crops and the noise.")
TrainOutOpt = typer.Option(
    ..., "--out", "-o", help="Directory for model.safetensors, card.json and the resumable training state."
)
TrainBatchSizeOpt = typer.Option(2, "--batch-size", "-b", help="Episodes per step.")
LrOpt = typer.Option(1e-3, "--lr", help="Peak learning rate (AdamW; warm-up, then cosine decay).")
WindowOpt = typer.Option(
    None,
    "--window",
    help="Train on crops of this many frames around the end of the context (default: whole episodes).",
)
TrainDeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto.")
MaxSecondsOpt = typer.Option(None, "--max-seconds", help="Stop cleanly after this wall time.")
TrainResumeOpt = typer.Option(
    False, "--resume", help="Continue the training state in --out (starts from step 0 if there is none)."
)
TrainWorkersOpt = typer.Option(0, "--workers", "-j", help="Processes generating training episodes.")
GradCheckpointingOpt = typer.Option(
    False,
    "--grad-checkpointing/--no-grad-checkpointing",
    help="Recompute activations in the backward pass (less memory, slower).",
)
MemoryFractionOpt = typer.Option(
    0.5, "--memory-fraction", help="Share of the loss given to the memory-only pixels (0: plain MSE)."
)
CurriculumOpt = typer.Option(
    None,
    "--curriculum",
    help="Windows in turn, STEPS:WINDOW,... "
    "(WINDOW in frames or 'full'), e.g. 300:96,200:256,100:full: "
    "replaces --steps and --window.",
)
ConfigOpt = typer.Option(None, "--config", help="Model config overrides: key=value,...")
TrainEpisodesOpt = typer.Option(
    None,
    "--train-episodes",
    help="N (every task) or TASK=N,... (TASK: name or name@tier): train on "
    "the first N training episodes of those tasks, generated once into the cache (as `memorybench "
    "tasks generate TASK --split train --episodes N` writes them; checksummed) and reused in every "
    "pass; the other tasks stream new episodes. For the Memory Maze tasks.",
)


@app.command("train")
def train_cmd(
    model: str = TrainModelArg,
    tasks: str = TrainTasksOpt,
    tier: str = TrainTierOpt,
    steps: int = StepsOpt,
    seed: int = TrainSeedOpt,
    out: Path = TrainOutOpt,
    batch_size: int = TrainBatchSizeOpt,
    lr: float = LrOpt,
    window: Optional[int] = WindowOpt,
    device: str = TrainDeviceOpt,
    max_seconds: Optional[float] = MaxSecondsOpt,
    resume: bool = TrainResumeOpt,
    workers: int = TrainWorkersOpt,
    grad_checkpointing: bool = GradCheckpointingOpt,
    memory_fraction: float = MemoryFractionOpt,
    curriculum: Optional[str] = CurriculumOpt,
    config: Optional[str] = ConfigOpt,
    train_episodes: Optional[str] = TrainEpisodesOpt,
    tasks_dir: Optional[List[Path]] = TasksDirOpt,
) -> None:
    """Train a reference model (deterministic for a seed, resumable) and write weights + a model card."""
    from ..models import parse_model_args

    _check_train_options(model, device, out, steps, batch_size, window, workers, max_seconds, memory_fraction, lr)
    model_config = parse_model_args(config) or None
    specs = _registry(tasks_dir).select(tasks, default_tier=tier)
    from ..runner import resolve_device
    from ..train import parse_curriculum, train

    phases = parse_curriculum(curriculum) if curriculum else None
    if phases and window is not None:
        raise MemorybenchError("give --window or --curriculum, not both")
    if phases:
        steps = sum(n for n, _ in phases)
    with _warnings_said_at_once():
        path = train(
            model,
            specs,
            steps,
            out,
            seed=seed,
            batch_size=batch_size,
            lr=lr,
            window=window,
            curriculum=phases,
            device=resolve_device(device),
            max_seconds=max_seconds,
            resume=resume,
            workers=workers,
            grad_checkpointing=grad_checkpointing,
            memory_fraction=memory_fraction,
            model_config=model_config,
            train_episodes=_train_episodes(train_episodes, specs) if train_episodes else None,
            command="memorybench " + shlex.join(_ARGV) if _ARGV[:1] == ["train"] else None,
        )
    console.print(f"[green]✓[/] {path} (model card: {path.with_name('card.json')})")


def _check_train_options(
    model: str,
    device: str,
    out: Path,
    steps: int,
    batch_size: int,
    window: Optional[int],
    workers: int,
    max_seconds: Optional[float],
    memory_fraction: float,
    lr: float,
) -> None:
    """The checks of ``train``'s options that need no torch: a mistake is reported before any work."""
    from ..models import target_of
    from ..validation import check_at_least, check_device_name, check_out_dir

    target_of(model)
    check_device_name(device)
    check_out_dir(out)
    for option, value in (("--steps", steps), ("--batch-size", batch_size), ("--window", window)):
        check_at_least(value, 2 if option == "--window" else 1, option)
    check_at_least(workers, 0, "--workers")
    check_at_least(max_seconds, 0, "--max-seconds")
    if not 0 <= memory_fraction < 1:
        raise MemorybenchError(f"--memory-fraction must be in [0, 1), got {memory_fraction}")
    if not lr > 0:
        raise MemorybenchError(f"--lr must be > 0, got {lr}")


@contextmanager
def _warnings_said_at_once() -> Iterator[None]:
    """Training's warnings (a window too short for the task, ...) said when training starts, not at the end."""
    from ..train import ShortWindowWarning

    def show(message, category, *args, **kwargs):  # said when training starts, not at the end
        err_console.print(f"[yellow]warning:[/] {escape(str(message))}")

    with warnings.catch_warnings():
        warnings.simplefilter("always", ShortWindowWarning)
        warnings.showwarning = show
        yield
