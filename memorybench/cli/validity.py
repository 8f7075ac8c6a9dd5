"""``memorybench validity``: every no-memory strategy at chance, the oracles near 1."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..console import console, err_console, progress_bar
from ..errors import MemorybenchError
from .common import TasksDirOpt, _protocols, _registry, app


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
) -> None:
    """Check that the memory score is valid: every no-memory strategy at chance, the oracles near 1.

    Runs the no-memory references (copy-last, means, blur, inpainting, shifted copies) and the
    oracles on the tasks and scores recall only (fast). Exit code 1 if a check fails.
    """
    from ..validation import check_at_least

    check_at_least(limit, 1, "--limit")
    specs = _registry(tasks_dir).select(tasks, default_tier=tier)
    earlier = _earlier_check(out) if append else None
    result = _check_with_progress(specs, protocol, models, device, limit)
    if earlier is not None:
        result = earlier.merge(result)
    _write_or_print(result, out)
    problems = result.problems()
    if problems:
        err_console.print(f"[bold red]not valid:[/] {len(problems)} problem(s)")
        raise typer.Exit(1)
    console.print("[green]valid[/]: every no-memory strategy at chance, every oracle near 1")


def _earlier_check(out: Optional[Path]):
    """``--append``: the check already in --out (its .json)."""
    from ..validity import ValidityResult

    if out is None:
        raise MemorybenchError("--append needs --out (the check to add to)")
    numbers = out.with_suffix(".json")
    if not numbers.exists():
        raise MemorybenchError(f"--append: {numbers} does not exist (run without --append first)")
    return ValidityResult.from_json(numbers.read_text(encoding="utf-8"), str(numbers))


def _check_with_progress(specs: list, protocol: str, models: Optional[str], device: str, limit: Optional[int]):
    """The validity check of ``specs`` with a progress bar (the options parsed as the check starts)."""
    from ..models import expand_model_names
    from ..runner import resolve_device
    from ..validity import check

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
    return result


def _write_or_print(result, out: Optional[Path]) -> None:
    """The table into ``out`` (.md) with the numbers beside it (.json), or printed without --out."""
    text = result.to_markdown()
    if out is not None:
        from .._io import atomic_write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text)
        atomic_write_text(out.with_suffix(".json"), result.to_json())
        console.print(f"[green]✓[/] wrote {out} and {out.with_suffix('.json')}")
    else:
        console.print(text, markup=False, highlight=False)
