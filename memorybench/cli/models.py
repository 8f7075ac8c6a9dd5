"""``memorybench models``: the models memorybench can run."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..console import console
from .common import app

models_app = typer.Typer(
    help="The models memorybench can run: built-in, reference zoo and plugins.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Every model with its kind, parameter count, checkpoint and citation key (nothing is built).

    Kinds: calibration (non-learned scales), reference (privileged: reads the true episode),
    no-memory (strategies without memory, held at chance by `memorybench validity`), zoo (trained
    reference models, checkpoints in baselines/), plugin (registered by another package).
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
