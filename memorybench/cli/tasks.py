"""``memorybench tasks``: list, show, generate and preview the memory tasks."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..console import console, err_console, progress_bar
from ..errors import MemorybenchError
from .common import TasksDirOpt, TierOpt, _registry, app

tasks_app = typer.Typer(help="List, inspect, generate and preview the memory tasks.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")


@tasks_app.command("list")
def tasks_list(
    tasks_dir: Optional[List[Path]] = TasksDirOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
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
) -> None:
    """The full spec and the task's statistics (generates and caches the episodes if needed)."""
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
    _print_task(spec, res, stats)


def _print_task(spec, res, stats: dict) -> None:
    """``tasks show`` without --json: the spec, the generator's parameters and the task's statistics."""
    import yaml

    console.rule(f"[bold]{spec.key}[/]  ({spec.source})")
    console.print(escape(spec.description))
    d = spec.to_dict()
    d.pop("description")
    console.print(yaml.safe_dump(d, sort_keys=False, default_flow_style=None).rstrip(), markup=False, highlight=False)
    console.print(f"spec hash: {spec.hash()}\ndataset:   {res.store.path}\ndataset sha256: {res.store.dataset_hash}")
    console.print(_params_table(spec, d["params"]))
    console.print(_statistics_table(spec, stats))
    console.print(_gap_histogram(stats))


def _params_table(spec, values: dict) -> Table:
    """The generator's parameters: value, default, range and meaning."""
    from ..spec import describe_params

    params = Table(title="generator parameters", header_style="bold")
    for col in ("parameter", "value", "default", "range", "meaning"):
        params.add_column(col)
    for p in describe_params(type(spec.params)):
        rng = (
            p["choices"]
            and "|".join(map(str, p["choices"]))
            or f"{p['min'] if p['min'] is not None else ''}..{p['max'] if p['max'] is not None else ''}"
        )
        params.add_row(*(escape(str(x)) for x in (p["name"], values[p["name"]], p["default"], rng, p["doc"] or "")))
    return params


def _statistics_table(spec, stats: dict) -> Table:
    """The task's statistics over the predicted frames."""
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
    return t


def _gap_histogram(stats: dict) -> Table:
    """The memory-gap histogram of the predicted frames with memory-only pixels, with bars."""
    h = Table(title="memory-gap histogram (predicted frames with memory-only pixels)", header_style="bold")
    h.add_column("gap bin")
    h.add_column("frames", justify="right")
    h.add_column("")
    top = max(stats["gap_histogram"] + [1])
    b = stats["gap_bins"]
    for i, c in enumerate(stats["gap_histogram"]):
        h.add_row(escape(f"[{b[i]}, {b[i + 1]})"), str(c), "█" * int(round(30 * c / top)))
    return h


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
) -> None:
    """Materialise the episodes of a task (or a tier's tasks) as a verified dataset on disk."""
    from ..validation import check_at_least, check_out_dir

    check_out_dir(out)
    check_at_least(workers, 0, "--workers")

    from ..splits import FORMATS, split_spec, train_dir

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
        if fmt == "npz":
            _generate_npz(spec, out_for(spec), split, workers, force)
            continue
        dest = out_for(spec) if out_for(spec) is not None or split == "eval" else train_dir(spec)
        _generate_dataset(spec, dest, split, workers, force)


def _generate_npz(spec, out: Path, split: str, workers: int, force: bool) -> None:
    """``tasks generate --format npz``: one .npz file per episode in ``out``."""
    from ..splits import export_npz

    t0 = time.time()
    with progress_bar() as bar:
        job = bar.add_task(f"{spec.key} ({split})", total=spec.episodes)
        path = export_npz(
            spec,
            out,
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


def _generate_dataset(spec, dest: Optional[Path], split: str, workers: int, force: bool) -> None:
    """``tasks generate --format hf``: the verified dataset in ``dest`` (the cache when None)."""
    t0 = time.time()
    res = _prepare_with_progress(spec, dest, workers, force, split)
    dt = time.time() - t0
    size = sum(f.stat().st_size for f in Path(res.store.path).rglob("*") if f.is_file())
    what = "verified cache" if res.reused else f"generated {spec.episodes * spec.frames / max(dt, 1e-9):,.0f} frames/s"
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
) -> None:
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
