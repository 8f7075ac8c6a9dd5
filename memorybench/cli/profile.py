"""``memorybench profile``: per-generated-frame cost of models against context length."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..console import console, progress_bar
from ..errors import MemorybenchError
from .common import ModelArgsOpt, _model_names, app


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
    model_args: Optional[str] = ModelArgsOpt,
    out: Path = typer.Option(Path("profile.json"), "--out", "-o", help="JSON output file."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Also write <out>-latency/memory.png|pdf."),
) -> None:
    """Per-generated-frame latency, peak memory and state size against context length, with log-log slopes."""
    models, contexts = _check_profile_options(model, context, device, repeats, warmup, batch_size, model_args, out)
    from .. import plots
    from ..profile import ProfileConfig, write_profiles
    from ..runner import resolve_device

    cfg = ProfileConfig(
        contexts=contexts,
        device=resolve_device(device),
        repeats=repeats,
        warmup=warmup,
        batch_size=batch_size,
        model_args=model_args,
    )
    profiles = _profile_with_progress(models, cfg)
    path = write_profiles(profiles, out)
    console.print(_profile_table(profiles, cfg, batch_size))
    if plot:
        for f in plots.figure_set(profiles=profiles):
            plots.save(f.draw(), path.with_name(f"{path.stem}-{f.metric}"))
    console.print(f"[green]✓[/] wrote {path}")


def _check_profile_options(
    model: str,
    context: str,
    device: str,
    repeats: int,
    warmup: int,
    batch_size: int,
    model_args: Optional[str],
    out: Path,
) -> tuple[list[str], list[int]]:
    """Every option of ``profile`` checked before the first model is built; returns the models and
    the sorted context lengths."""
    from ..models import check_model_args, parse_model_args
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
    for m in models:
        if check_model_args(m, model_args)[0].privileged:
            raise MemorybenchError(
                f"{m} is a privileged calibration reference (it reads the true episode); it has no "
                "cost of its own to profile"
            )
    return models, contexts


def _profile_with_progress(models: list[str], cfg) -> list[dict]:
    """The profile of every model at every context length, with a progress bar."""
    from ..profile import profile_model

    profiles = []
    with progress_bar() as bar:
        job = bar.add_task("profiling", total=len(models) * len(cfg.contexts), unit="points")
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
    return profiles


def _profile_table(profiles: list[dict], cfg, batch_size: int) -> Table:
    """Per model: latency, peak memory and state size at the shortest and longest context, with ratios and slopes."""
    from ..profile import summary_rows

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
    return table
