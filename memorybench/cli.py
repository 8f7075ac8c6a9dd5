"""The ``memorybench`` command line (Typer + rich).

Each command parses its options and calls the library; the work itself lives in the modules
(``tasks``, ``storage``, ``preview``, ...). User errors (``MemorybenchError``) are printed without a
traceback and exit with code 2.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .errors import MemorybenchError

# Rich wraps at 80 columns when output is not a terminal; logs and CI read better wider.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

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
TierOpt = typer.Option("standard", "--tier", "-t", help="Tier of the task: smoke (seconds, for tests) or standard.")


def progress_bar() -> Progress:
    """The progress bar used by every long command: description, bar, count, elapsed, ETA."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console,
                    transient=False)


def _registry(tasks_dir: Optional[List[Path]]):
    from .tasks import TaskRegistry

    return TaskRegistry(extra_dirs=tasks_dir or ())


def _version_callback(value: bool):
    if value:
        console.print(f"memorybench {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                       help="Print the version and exit.")):
    pass


# ------------------------------------------------------------------------------------------------
# tasks


@tasks_app.command("list")
def tasks_list(tasks_dir: Optional[List[Path]] = TasksDirOpt,
               as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """Every registered task and tier: family, frames, resolution, episodes and memory gaps."""
    from .generators import get_generator

    reg = _registry(tasks_dir)
    rows = []
    for spec in reg.all_specs():
        rows.append({"task": spec.name, "tier": spec.tier, "family": spec.family, "frames": spec.frames,
                     "context_frames": spec.context_frames, "predict_frames": spec.predict_frames,
                     "resolution": f"{spec.resolution[0]}x{spec.resolution[1]}", "episodes": spec.episodes,
                     "gaps": get_generator(spec.family).describe_gaps(spec), "protocols": list(spec.protocols),
                     "source": spec.source})
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="memorybench tasks", header_style="bold")
    for col in ("Task", "Tier", "Family", "Frames (context+predict)", "Resolution", "Episodes", "Gaps", "Protocols"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["task"], r["tier"], r["family"], f"{r['frames']} ({r['context_frames']}+{r['predict_frames']})",
                      r["resolution"], str(r["episodes"]), r["gaps"], ", ".join(r["protocols"]))
    console.print(table)


def _prepare_with_progress(spec, out: Optional[Path], workers: int, force: bool):
    from . import storage

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", storage.CacheWarning)
        with progress_bar() as bar:
            job = bar.add_task(f"{spec.key}", total=spec.episodes)
            res = storage.prepare(spec, out=out, workers=workers, force=force,
                                  on_episode=lambda: bar.advance(job))
            bar.update(job, completed=spec.episodes)
    for w in caught:
        err_console.print(f"[yellow]warning:[/] {w.message}")
    return res


@tasks_app.command("show")
def tasks_show(name: str = typer.Argument(..., help="Task name."), tier: str = TierOpt,
               tasks_dir: Optional[List[Path]] = TasksDirOpt,
               workers: int = typer.Option(1, "--workers", "-j", help="Processes for generating, if needed."),
               as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")):
    """The full spec and the task's statistics (generates and caches the episodes if needed)."""
    import yaml

    from .spec import describe_params
    from .tasks import statistics

    spec = _registry(tasks_dir).get(name, tier)
    res = _prepare_with_progress(spec, None, workers, False)
    stats = statistics(spec, res.store)
    info = {"spec": spec.to_dict(), "spec_hash": spec.hash(), "dataset": str(res.store.path),
            "dataset_sha256": res.store.dataset_hash, "statistics": stats}
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
        rng = p["choices"] and "|".join(p["choices"]) or f"{p['min'] if p['min'] is not None else ''}..{p['max'] if p['max'] is not None else ''}"
        params.add_row(*(escape(str(x)) for x in (p["name"], values[p["name"]], p["default"], rng, p["doc"] or "")))
    console.print(params)
    t = Table(title="statistics (predicted frames)", header_style="bold")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("episodes", str(stats["episodes"]))
    t.add_row("frames per episode (context + predict)", f"{spec.frames} ({spec.context_frames} + {spec.predict_frames})")
    t.add_row("predicted frames with memory-only pixels", f"{stats['predicted_frames_with_memory']} / {stats['predicted_frames_total']}")
    t.add_row("memory-only pixel fraction (predicted / all frames)",
              f"{stats['memory_pixel_fraction_predicted']:.4f} / {stats['memory_pixel_fraction_all']:.4f}")
    t.add_row("novel pixel fraction (predicted / all frames)",
              f"{stats['novel_pixel_fraction_predicted']:.4f} / {stats['novel_pixel_fraction_all']:.4f}")
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
def tasks_generate(name: str = typer.Argument(..., help="Task name, or a selector: smoke, standard, NAME@TIER, comma-separated."),
                   tier: str = TierOpt, out: Optional[Path] = typer.Option(
                       None, "--out", "-o", help="Directory for the dataset (default: the cache, $MEMORYBENCH_CACHE)."),
                   workers: int = typer.Option(1, "--workers", "-j", help="Worker processes (results are identical)."),
                   force: bool = typer.Option(False, "--force", help="Regenerate even if a valid cache exists."),
                   tasks_dir: Optional[List[Path]] = TasksDirOpt):
    """Materialise the episodes of a task (or a tier's tasks) as a verified dataset on disk."""
    specs = _registry(tasks_dir).select(name, default_tier=tier)
    if out is not None and len(specs) > 1:
        out_for = lambda s: out / f"{s.name}-{s.tier}"  # noqa: E731
    else:
        out_for = lambda s: out  # noqa: E731
    for spec in specs:
        t0 = time.time()
        res = _prepare_with_progress(spec, out_for(spec), workers, force)
        dt = time.time() - t0
        size = sum(f.stat().st_size for f in Path(res.store.path).iterdir() if f.is_file())
        what = "verified cache" if res.reused else f"generated {spec.episodes * spec.frames / max(dt, 1e-9):,.0f} frames/s"
        console.print(f"[green]✓[/] {spec.key}: {len(res.store)} episodes x {spec.frames} frames at "
                      f"{spec.resolution[0]}x{spec.resolution[1]} -> {res.store.path} ({size / 2**20:.1f} MiB; "
                      f"{what}; {dt:.1f}s)")


@tasks_app.command("preview")
def tasks_preview(name: str = typer.Argument(..., help="Task name."), tier: str = TierOpt,
                  episode: int = typer.Option(0, "--episode", "-e", help="Episode index."),
                  out: Path = typer.Option(..., "--out", "-o", help="Output file: .png/.pdf (contact sheet) or .gif (animation)."),
                  frames: Optional[str] = typer.Option(None, "--frames", help="Frame range START:STOP (default: for a GIF "
                                                       "the end of the context and the predicted frames; for a sheet a selection)."),
                  tasks_dir: Optional[List[Path]] = TasksDirOpt):
    """A contact sheet or animation of one episode with the memory-only mask overlaid."""
    from . import preview
    from .generators import get_generator

    spec = _registry(tasks_dir).get(name, tier)
    if not 0 <= episode < spec.episodes:
        raise MemorybenchError(f"--episode must be in 0..{spec.episodes - 1} for {spec.key}")
    ep = get_generator(spec.family)(spec).generate(episode)
    start, stop = None, None
    if frames:
        try:
            a, b = frames.split(":")
            start, stop = int(a or 0), int(b) if b else spec.frames
        except ValueError:
            raise MemorybenchError(f"--frames must be START:STOP, got {frames!r}") from None
    suffix = out.suffix.lower()
    if suffix == ".gif":
        if start is None:
            start, stop = max(0, spec.context_frames - 16), spec.frames
        path = preview.animation(ep, spec.context_frames, out, start, stop)
    elif suffix in (".png", ".pdf"):
        sel = list(range(start, stop)) if start is not None else None
        path = preview.contact_sheet(ep, spec.context_frames, out, frames=sel,
                                     title=f"{spec.key} episode {episode}: memory-only pixels magenta, novel cyan")
    else:
        raise MemorybenchError(f"--out must end in .png, .pdf or .gif, got '{out.name}'")
    console.print(f"[green]✓[/] wrote {path}")


def main(argv: Optional[list[str]] = None) -> int:
    """Console-script entry point: run the app, turning user errors into exit code 2."""
    try:
        app(args=argv, prog_name="memorybench")
    except MemorybenchError as e:
        err_console.print(f"[bold red]error:[/] {e}")
        return e.exit_code
    except SystemExit as e:  # click exits by itself (0 after --help, 2 on a usage error)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0
