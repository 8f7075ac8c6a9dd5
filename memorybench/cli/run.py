"""``memorybench run`` (evaluate models), ``merge`` (combine shards), ``score`` (re-score saved
predictions) and ``summarize`` (rewrite a run's summary)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from ..console import console, err_console
from ..errors import DataError, MemorybenchError
from ..models import MODEL_GROUPS
from .common import (
    BareTierOpt,
    ModelArgsOpt,
    RetentionOpt,
    ScoreDeviceOpt,
    TasksDirOpt,
    TasksOpt,
    _model_names,
    _protocols,
    _registry,
    app,
)


def _parse_shard(shard: Optional[str]):
    if shard is None:
        return None
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise MemorybenchError(f"--shard must be I/N (e.g. 0/4), got {shard!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise MemorybenchError(f"--shard {shard}: need 0 <= I < N")
    return i, n


# the options of `memorybench run`
RunModelOpt = typer.Option(
    ",".join(MODEL_GROUPS["calibration"]),
    "--model",
    "-m",
    help="Model name(s), comma-separated: a built-in name, a plugin name, or package.module:Class; "
    f"or a group: calibration (the default: {', '.join(MODEL_GROUPS['calibration'])}), "
    "no-memory (every no-memory reference), zoo (the reference models: "
    f"{', '.join(MODEL_GROUPS['zoo'])}). See `memorybench models list`.",
)
RunProtocolOpt = typer.Option(
    "rollout",
    "--protocol",
    "-p",
    help="rollout (generate after the context), teacher-forced (true history at every frame), or all.",
)
RunDeviceOpt = typer.Option("auto", "--device", help="cpu, cuda, cuda:N, or auto (cuda when available).")
RunBatchSizeOpt = typer.Option(
    8, "--batch-size", "-b", help="Episodes evaluated together (results do not depend on it)."
)
RunOutOpt = typer.Option(
    None,
    "--out",
    "-o",
    help="Directory for the results: one run directory per model inside it. Default: runs/<date-time>.",
)
RunResumeOpt = typer.Option(
    False, "--resume", help="Continue an interrupted run in --out (finished episodes are kept; needs --out)."
)
SavePredictionsOpt = typer.Option(
    False, "--save-predictions", help="Keep the generated frames (for `memorybench score` and `memorybench show`)."
)
RunLimitOpt = typer.Option(None, "--limit", help="Evaluate only the first N episodes of each task (recorded).")
ShardOpt = typer.Option(
    None,
    "--shard",
    help="I/N: evaluate every N-th episode from I (cluster array jobs; combine with `memorybench merge`).",
)
RunWorkersOpt = typer.Option(1, "--workers", "-j", help="Processes for generating task datasets, if needed.")
BootstrapOpt = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the confidence intervals (>= 1).")
BootstrapSeedOpt = typer.Option(0, "--seed", help="Seed of the bootstrap.")
RunRetentionOpt = typer.Option(
    True,
    "--retention/--no-retention",
    help="Compute the memory retention index (needs the copy-last and perfect-memory references).",
)
DebugOpt = typer.Option(
    False,
    "--debug",
    help="When a model raises an exception, print its full traceback "
    "(it is always saved in the run directory's errors/).",
)


@app.command("run")
def run_cmd(
    model: str = RunModelOpt,
    model_args: Optional[str] = ModelArgsOpt,
    tasks: str = TasksOpt,
    tier: str = BareTierOpt,
    protocol: str = RunProtocolOpt,
    device: str = RunDeviceOpt,
    batch_size: int = RunBatchSizeOpt,
    out: Optional[Path] = RunOutOpt,
    resume: bool = RunResumeOpt,
    save_predictions: bool = SavePredictionsOpt,
    limit: Optional[int] = RunLimitOpt,
    shard: Optional[str] = ShardOpt,
    workers: int = RunWorkersOpt,
    bootstrap: int = BootstrapOpt,
    seed: int = BootstrapSeedOpt,
    retention: bool = RunRetentionOpt,
    tasks_dir: Optional[List[Path]] = TasksDirOpt,
    debug: bool = DebugOpt,
) -> None:
    """Evaluate models on tasks and print a results table.

    With no arguments: the smoke tier, the four calibration baselines, the rollout protocol.
    Every option is checked before the first model runs.
    """
    from ..models import parse_model_args

    # cheap checks first (no torch yet): a typo is reported at once, never after a first model ran
    models = _model_names(model)
    parse_model_args(model_args)
    protocols = _protocols(protocol)
    parsed_shard = _check_run_options(device, batch_size, bootstrap, limit, workers, shard, resume, out)
    skipped: list = []
    specs = _registry(tasks_dir).select(tasks, default_tier=tier, skipped=skipped)

    # then what needs the models' modules and torch, still before any evaluation
    from ..aggregate import AggregationConfig
    from ..leaderboard import load_runs, print_overview

    _check_models_and_device(models, model_args, device, skipped)
    agg = AggregationConfig(resamples=bootstrap, seed=seed)
    common = dict(
        tasks=specs,
        model_args=model_args,
        protocols=protocols,
        batch_size=batch_size,
        resume=resume,
        save_predictions=save_predictions,
        limit=limit,
        aggregation=agg,
        retention=retention,
        workers=workers,
        command=sys.argv,
    )
    t0 = time.time()
    root, done = _evaluate_models(models, out, device, parsed_shard, debug, common)
    if root is None:  # not rank 0
        return
    print_overview(load_runs(done))
    console.print(f"results in {root}  ({time.time() - t0:.1f}s)")


def _check_run_options(
    device: str,
    batch_size: int,
    bootstrap: int,
    limit: Optional[int],
    workers: int,
    shard: Optional[str],
    resume: bool,
    out: Optional[Path],
):
    """The checks of ``run``'s options that need no model module and no torch; returns the parsed ``--shard``."""
    from ..validation import check_at_least, check_device_name, check_out_dir

    check_device_name(device)
    check_at_least(batch_size, 1, "--batch-size")
    check_at_least(bootstrap, 1, "--bootstrap")
    check_at_least(limit, 1, "--limit")
    check_at_least(workers, 0, "--workers")
    parsed_shard = _parse_shard(shard)
    if resume and out is None:
        raise MemorybenchError(
            "--resume needs --out: the directory of the run to continue (a run without --out "
            "goes to a new runs/<date-time> directory)"
        )
    check_out_dir(out)
    return parsed_shard


def _check_models_and_device(models: list[str], model_args: Optional[str], device: str, skipped: list) -> None:
    """The checks that import the models' modules and torch (``--model-args`` against each model, the
    device), then the tasks skipped by the selection, named."""
    from ..models import check_model_args
    from ..runner import resolve_device

    for m in models:
        check_model_args(m, model_args)
    resolve_device(device)
    for key, reason in skipped:
        err_console.print(f"[yellow]skipping {key}:[/] {escape(reason)}")


def _evaluate_models(models: list[str], out: Optional[Path], device: str, parsed_shard, debug: bool, common: dict):
    """Evaluate every model into its run directory; under torchrun every rank its shard, merged on rank 0.
    Returns (root, run dirs), or (None, None) on the other ranks."""
    from ..distributed import dist_env
    from ..runner import AdapterError, RunRequest, default_out_dir, evaluate, run_dir_names

    if dist_env() is not None:
        if parsed_shard is not None:
            raise MemorybenchError("--shard cannot be combined with torchrun: each rank already takes its shard")
        return _run_distributed(models, out, device, common)
    root = out if out is not None else default_out_dir()
    done = []
    for m, name in zip(models, run_dir_names(models)):
        run_dir = root / name
        try:
            done.append(evaluate(RunRequest(model=m, out=run_dir, device=device, shard=parsed_shard, **common)))
        except AdapterError as e:
            if debug and e.traceback_text:
                err_console.print(e.traceback_text, markup=False, highlight=False)
            raise
        err_console.print(f"[green]✓[/] {escape(m)}: {run_dir}")
    return root, done


def _run_distributed(models, out, device, common):
    """torchrun: every rank evaluates its shard; rank 0 merges. Returns (root, run dirs) on rank 0."""
    import os

    import torch

    from .. import storage
    from ..distributed import broadcast, dist_env, init_process_group, merge, shard_dirs, wait_for
    from ..runner import RunRequest, default_out_dir, evaluate, resolve_device, run_dir_names, select_episodes

    rank, world, local = dist_env()
    dev = resolve_device(device)
    if dev.startswith("cuda"):
        dev = f"cuda:{local}"
        torch.cuda.set_device(local)
    else:  # share the CPU cores between the ranks of this node
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
    dist = init_process_group(dev)
    root = Path(broadcast(str(out if out is not None else default_out_dir()), dist))
    if rank == 0:  # one process fills the shared dataset cache; the others then verify and read it
        for spec in common["tasks"]:
            storage.prepare(spec, workers=common["workers"], episodes=select_episodes(spec, common["limit"], None))
    dist.barrier()
    done = []
    for m, name in zip(models, run_dir_names(models)):
        final = root / name
        shards = shard_dirs(final, world)
        req = RunRequest(model=m, out=shards[rank], device=dev, shard=(rank, world), **{**common, "retention": False})
        req.progress = rank == 0
        evaluate(req)
        dist.barrier()
        if rank == 0:
            wait_for([s / "summary.json" for s in shards])
            if (final / "summary.json").exists() and common["resume"]:
                import shutil

                shutil.rmtree(final)  # re-merge the resumed shards
            merge(shards, final, retention=common["retention"], device=dev)
            err_console.print(f"[green]✓[/] {m}: {final} (merged {world} shards)")
            done.append(final)
        dist.barrier()
    dist.destroy_process_group()
    return (root, done) if rank == 0 else (None, None)


@app.command("merge")
def merge_cmd(
    shards: List[Path] = typer.Argument(..., help="Shard run directories (from --shard I/N), all N of them."),
    out: Path = typer.Option(..., "--out", "-o", help="The merged run directory (must not exist)."),
    device: str = ScoreDeviceOpt,
    retention: bool = RetentionOpt,
) -> None:
    """Combine the shard runs of one evaluation into one run directory (refuses mismatched or missing shards)."""
    from ..validation import check_device_name, check_out_dir

    check_out_dir(out)
    check_device_name(device)
    from ..distributed import merge
    from ..leaderboard import load_runs, print_overview
    from ..runner import resolve_device

    path = merge(shards, out, retention=retention, device=resolve_device(device))
    print_overview(load_runs([path]))
    console.print(f"merged {len(shards)} shards into {path}")


def default_rescore_dir(pred_dir: Path) -> Path:
    """Where `memorybench score RUN` writes without --out: ``rescored/<date-time>/<RUN's name>`` in
    the current directory (as `run` writes ``runs/<date-time>/<model>``), never beside the run, so
    that a leaderboard of a directory of runs does not find a run and its re-scored copy together."""
    return Path("rescored") / time.strftime("%Y%m%d-%H%M%S") / Path(pred_dir).resolve().name


@app.command("score")
def score_cmd(
    pred_dir: Path = typer.Argument(..., help="A run directory made with --save-predictions."),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="The new run directory (must not exist or be "
        "empty). Default: rescored/<date-time>/<name of PRED_DIR> in the "
        "current directory.",
    ),
    device: str = ScoreDeviceOpt,
    retention: bool = RetentionOpt,
) -> None:
    """Re-score saved predictions (after a metric change or fix) without running the model again."""
    from ..validation import check_device_name, check_out_dir

    check_out_dir(out)
    check_device_name(device)
    from ..leaderboard import load_runs, print_overview
    from ..runner import rescore

    dest = out or default_rescore_dir(pred_dir)
    path = rescore(pred_dir, dest, device=device, retention=retention)
    print_overview(load_runs([path]))
    console.print(f"re-scored results in {path}")


@app.command("summarize")
def summarize_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory (finished, or stopped part way)."),
    device: str = ScoreDeviceOpt,
    retention: bool = RetentionOpt,
) -> None:
    """(Re)write a run's summary.json from its records.

    For a run that was stopped part way (killed, out of time), this scores the episodes that
    finished and marks every task with missing episodes incomplete; leaderboards show those cells as
    incomplete, never as complete. `memorybench run --resume` can still finish the run later.
    """
    from ..validation import check_device_name

    check_device_name(device)
    from ..leaderboard import load_runs, print_overview
    from ..results import RUN_JSON
    from ..runner import resolve_device
    from ..summarize import summarize_run

    if not (run_dir / RUN_JSON).exists():
        raise DataError(f"{run_dir} is not a run directory (no {RUN_JSON})")
    summary = summarize_run(run_dir, retention=retention, device=resolve_device(device))
    print_overview(load_runs([run_dir]))
    state = (
        "complete"
        if summary["complete"]
        else "INCOMPLETE: "
        + ", ".join(
            f"{k} {len(g['missing_episodes'])} of {g['episodes_selected']} episodes missing"
            for k, g in summary["groups"].items()
            if not g["complete"]
        )
    )
    console.print(f"summary written to {run_dir / 'summary.json'} ({state})")
