"""Terminal output shared by the commands: the consoles and the one progress display.

``progress_bar()`` is what every long command (``run``, ``tasks generate``, ``train``, ``score``,
``profile``) reports progress with. On a terminal it is rich's live bar. When stderr is not a
terminal (CI logs, SLURM output files, ``2> log``) a live bar prints nothing until the end, so it
is a ``PlainProgress`` instead: plain lines such as ::

    [progress] copy-last · occlusion-recall@smoke · rollout · episodes 1-8 of 36: 128/1152 frames (11%), 52.3 frames/s, elapsed 0:00:02, ETA 0:00:19

every ``MEMORYBENCH_PROGRESS_INTERVAL`` seconds (default 30) and when a task finishes.
``MEMORYBENCH_PROGRESS=plain|bar|off`` forces one or the other.
"""

from __future__ import annotations

import os
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Rich wraps at 80 columns when output is not a terminal; logs and CI read better wider.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

PROGRESS_ENV, INTERVAL_ENV = "MEMORYBENCH_PROGRESS", "MEMORYBENCH_PROGRESS_INTERVAL"


def progress_bar(fields: tuple[str, ...] = ()) -> Progress | PlainProgress:
    """The progress display of every long command: description, bar, count, elapsed time, ETA.

    ``fields`` names extra per-task values to show (passed to ``add_task``/``update`` as keyword
    arguments, e.g. ``loss="0.0123"``). Returns a rich ``Progress`` on a terminal, else a
    ``PlainProgress`` (the same methods: ``add_task``, ``advance``, ``update``, ``start``,
    ``stop``, context manager).
    """
    mode = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if mode not in ("bar", "plain", "off"):
        mode = "bar" if err_console.is_terminal else "plain"
    if mode != "bar":
        return PlainProgress(fields=fields, enabled=mode == "plain")
    extra = [TextColumn(f"{f} {{task.fields[{f}]}}") for f in fields]
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def _hms(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class PlainProgress:
    """Progress as plain lines on stderr (see the module docstring); the subset of rich's
    ``Progress`` API the commands use."""

    def __init__(self, fields: tuple[str, ...] = (), interval: float | None = None, enabled: bool = True, stream=None):
        if interval is None:
            try:
                interval = float(os.environ.get(INTERVAL_ENV, "30"))
            except ValueError:
                interval = 30.0
        self.interval, self.fields, self.enabled = interval, fields, enabled
        self._stream = stream
        self._tasks: dict[int, dict] = {}
        self._last_line = 0.0

    # -- rich's Progress API ------------------------------------------------------------------------
    def start(self) -> None:
        self._last_line = time.monotonic()

    def stop(self) -> None:
        pass

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def add_task(
        self, description: str, total: float | None = None, completed: float = 0, unit: str = "", **fields
    ) -> int:
        tid = len(self._tasks)
        self._tasks[tid] = {
            "description": description,
            "total": total,
            "completed": completed,
            "start": completed,
            "t0": time.monotonic(),
            "unit": unit,
            "fields": dict(fields),
            "done": False,
        }
        return tid

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(
        self,
        task_id: int,
        *,
        total: float | None = None,
        completed: float | None = None,
        advance: float | None = None,
        description: str | None = None,
        **fields,
    ) -> None:
        t = self._tasks[task_id]
        if description is not None and description != t["description"]:
            t["description"] = description
        if total is not None:
            t["total"] = total
        if completed is not None:
            t["completed"] = completed
        if advance:
            t["completed"] += advance
        t["fields"].update(fields)
        finished = t["total"] is not None and t["completed"] >= t["total"] and not t["done"]
        now = time.monotonic()
        if finished or now - self._last_line >= self.interval:
            t["done"] |= finished
            self._print(t, now)

    # -- the line -----------------------------------------------------------------------------------
    def line(self, task_id: int) -> str:
        return self._format(self._tasks[task_id], time.monotonic())

    def _format(self, t: dict, now: float) -> str:
        elapsed = now - t["t0"]
        done, total = t["completed"], t["total"]
        count = f"{done:g}/{total:g}" if total is not None else f"{done:g}"
        unit = f" {t['unit']}" if t["unit"] else ""
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        rate = (done - t["start"]) / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if total is not None and rate > 0 else None
        extra = "".join(f", {f} {t['fields'][f]}" for f in self.fields if f in t["fields"])
        return (
            f"[progress] {t['description']}: {count}{unit}{pct}, {rate:.3g}{unit or ' items'}/s{extra}, "
            f"elapsed {_hms(elapsed)}, ETA {_hms(eta if done < (total or 0) else 0)}"
        )

    def _print(self, t: dict, now: float) -> None:
        self._last_line = now
        if self.enabled:
            stream = self._stream or sys.stderr
            print(self._format(t, now), file=stream, flush=True)
