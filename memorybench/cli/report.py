"""The reports: ``memorybench leaderboard``, ``plot``, ``compare``, ``cite`` and ``report`` (every
format and figure at once)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from ..console import console, err_console
from ..errors import MemorybenchError
from .common import app

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
) -> None:
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
        figs = {
            f"Memory curves ({f.protocol}): PSNR on memory-only pixels vs memory gap": plots.png_bytes(f.draw())
            for f in plots.figure_set(loaded, board.protocols(), memory_metrics=("psnr_memory",), step_metrics=())
        }
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


@app.command("plot")
def plot_cmd(
    runs: List[Path] = typer.Argument(None, help="Run directories (or directories of runs)."),
    profile: Optional[List[Path]] = typer.Option(None, "--profile", help="profile.json files: cost vs context."),
    out: Path = typer.Option(Path("plots"), "--out", "-o", help="Directory for the figures."),
    protocol: str = typer.Option("rollout", "--protocol", help="Protocol of the curves: rollout or teacher-forced."),
    formats: str = typer.Option("png,pdf", "--formats", help="Comma-separated: png, pdf, svg."),
) -> None:
    """Memory curves (metric vs memory gap, log-x, CI bands) and quality over the generated frames."""
    from .. import leaderboard as lb
    from .. import plots
    from ..profile import load_profiles
    from ..validation import check_figure_formats, check_out_dir

    if not runs and not profile:
        raise MemorybenchError("give run directories and/or --profile files")
    fmts = check_figure_formats(formats)
    check_out_dir(out)
    written = []
    if runs:
        loaded = lb.load_runs(runs)
        _check_protocol_present(loaded, protocol)
        written += [p for f in plots.figure_set(loaded, [protocol]) for p in plots.save(f.draw(), out / f.stem, fmts)]
    profiles = [p for f in (profile or []) for p in load_profiles(f)]
    written += [p for f in plots.figure_set(profiles=profiles) for p in plots.save(f.draw(), out / f.stem, fmts)]
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
) -> None:
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
) -> None:
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
) -> None:
    """Write the leaderboard in every format (md, csv, tex, html, json) and the figures into --out.

    This is the one command that regenerates the committed results/ directory: with --runs-to,
    the run directories it reports on are copied in a form that names no machine and no local
    path ($MEMORYBENCH_CACHE/..., paths relative to the repository).
    """
    from ..validation import check_out_dir

    check_out_dir(out)
    check_out_dir(runs_to, "--runs-to")
    from .. import leaderboard as lb
    from ..profile import load_profiles

    if runs_to is not None:
        from ..portable import export_runs
        from ..results import expand_run_dirs

        runs = export_runs(expand_run_dirs(runs), runs_to)
        console.print(f"[green]✓[/] copied {len(runs)} run(s) to {runs_to} (portable)")
    loaded = lb.load_runs(runs)
    profiles = [p for f in (profile or []) for p in load_profiles(f)]
    portable = runs_to is not None
    if portable and profile:  # the profiles the tables use sit beside them, without host names
        _export_profiles(profile, out / "profiles")
    board = lb.build(loaded, profiles=profiles)
    out.mkdir(parents=True, exist_ok=True)
    figs = _report_figures(loaded, board.protocols(), profiles, out / "figures")
    _write_formats(board, figs, title, out, portable)
    console.print(f"[green]✓[/] wrote {out}/leaderboard.{{md,tex,csv,json,html}} and {out}/figures/")


def _export_profiles(profile: List[Path], dest: Path) -> None:
    """``report --runs-to``: the --profile files copied into ``dest`` without host names."""
    from ..portable import export_profile

    if len({f.name for f in profile}) < len(profile):
        raise MemorybenchError("--profile files must have different names (they are copied into OUT/profiles)")
    for f in profile:
        export_profile(f, dest / f.name)


def _report_figures(loaded: list, protocols: list, profiles: list, dest: Path) -> dict:
    """The report's figures written into ``dest`` (png and pdf); returns the PNG bytes of those its HTML
    page shows (the efficiency and memory curves; the step curves are files only) by caption."""
    from .. import plots

    figs = {}
    for f in plots.figure_set(
        loaded, protocols, profiles, memory_metrics=("psnr_memory", "retention"), step_metrics=("psnr",)
    ):
        if f.kind != "steps":
            figs[f.caption] = plots.png_bytes(f.draw())
        plots.save(f.draw(), dest / f.stem)
    return figs


def _write_formats(board, figs: dict, title: str, out: Path, portable: bool) -> None:
    """``out``/leaderboard.{md,tex,csv,json,html}; with ``portable`` the JSON names no local path."""
    from .. import leaderboard as lb

    for fmt, render in lb.RENDERERS.items():
        text = render(board, figs, title) if fmt == "html" else render(board)
        if fmt == "json" and portable:  # the only format that names run directories and checkpoint files (the
            # copies hold none already: this catches what the rewrite of the runs leaves)
            from ..portable import portable as _portable

            text = json.dumps(_portable(json.loads(text)), indent=1) + "\n"
        (out / f"leaderboard.{lb.SUFFIX[fmt]}").write_text(text, encoding="utf-8")
