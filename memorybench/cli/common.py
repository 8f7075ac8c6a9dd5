"""What the commands share: the Typer ``app``, the shared options, the task registry, the checks of
``--model`` and ``--protocol``, and how an error is reported."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from .. import __version__
from ..console import console, err_console
from ..errors import MemorybenchError


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
TasksOpt = typer.Option("smoke", "--tasks", help="smoke | standard | NAME | NAME@TIER, comma-separated.")
BareTierOpt = typer.Option("standard", "--tier", help="Tier used for bare task names in --tasks.")
ModelArgsOpt = typer.Option(None, "--model-args", help="Constructor arguments: key=value,key=value.")


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
    from ..models import MODEL_GROUPS, target_of
    from ..validation import split_list

    given = split_list(value)
    if not given:
        raise MemorybenchError("--model is empty: give a model name (see `memorybench models list`)")
    models = [m for g in given for m in MODEL_GROUPS.get(g, (g,))]
    for m in models:
        target_of(m)
    if len(set(models)) < len(models):
        raise MemorybenchError(f"--model names a model twice: {value}")
    return models


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


#: the arguments of the command being run (for records such as a model card's training command); ``main``
#: fills it in place, so the commands that import it see the current ones
_ARGV: list[str] = []
