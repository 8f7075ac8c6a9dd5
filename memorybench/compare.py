"""The regression gate: compare a current run with a baseline run, metric by metric.

A metric **regresses** when it is worse than the baseline by more than its tolerance *and* the
baseline's mean lies outside the current run's 95% confidence interval (so noise alone does not
fail a build). Exit codes of ``memorybench compare``:

* ``0``: comparable, nothing regressed;
* ``1``: at least one regression;
* ``4``: not comparable (different task specs or datasets, protocols or metric definitions, or
  an incomplete run): nothing can be concluded, which a CI job must not mistake for a pass.

A baseline is a run directory (``run.json`` + ``summary.json``; the per-frame records are not
needed, so a committed baseline is two small files). ``tasks`` restricts the gate to some of the
baseline's tasks (``memorybench compare --tasks``); ``model_warnings`` says when the two runs are
of different models (a gate normally compares one model before and after a change).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import metric_registry as registry
from .leaderboard import IncomparableRunsError
from .results import load_run_json, load_summary

DEFAULT_METRICS = ("recall", "psnr", "ssim", "lpips", "psnr_memory", "ssim_memory", "lpips_memory")
EXIT_OK, EXIT_REGRESSION, EXIT_NOT_COMPARABLE = 0, 1, 4


def tolerance_for(metric: str, overrides: dict[str, float]) -> float:
    """``overrides[metric]``, else ``overrides[base name]`` (``psnr`` for ``psnr_memory``), else the
    registry's default tolerance of the metric."""
    if metric in overrides:
        return overrides[metric]
    base = metric.split("_")[0]
    if base in overrides:
        return overrides[base]
    m = registry.all_metrics().get(metric)
    return m.tolerance if m is not None else 0.0


def parse_tolerances(text: str | None) -> dict[str, float]:
    """``"psnr=0.3,lpips_memory=0.02"`` -> dict; a bare number applies to every metric."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        try:
            if not sep:
                return {m: float(k) for m in registry.all_metrics()}
            out[k.strip()] = float(v)
        except ValueError:
            from .errors import MemorybenchError

            raise MemorybenchError(f"--tolerance expects metric=value pairs or one number, got {text!r}") from None
    return out


@dataclass
class Row:
    task: str
    protocol: str
    metric: str
    baseline: dict
    current: dict
    tolerance: float
    worse_by: float | None  # > 0: current is worse than baseline by this much
    status: str  # "ok", "improved", "regression", "missing"


def _values(group: dict) -> dict:
    from .leaderboard import group_values

    return group_values(group)


def select_tasks(meta: dict, tasks: Sequence[str] | None) -> list[str]:
    """The task keys of ``meta`` that ``tasks`` names (``NAME@TIER`` or a bare name: every tier of
    it in the run); every task of the run when ``tasks`` is None."""
    keys = [t["key"] for t in meta["tasks"]]
    if not tasks:
        return keys
    out = []
    for want in tasks:
        hit = [k for k in keys if k == want or k.split("@")[0] == want]
        if not hit:
            from .errors import UnknownNameError

            raise UnknownNameError("task of the baseline", want, keys)
        out += [k for k in hit if k not in out]
    return out


def check_comparable(
    base_meta: dict, base_sum: dict, cur_meta: dict, cur_sum: dict, tasks: Sequence[str] | None = None
) -> None:
    """Raise ``IncomparableRunsError`` saying in words why the runs cannot be compared on ``tasks``
    (task keys; default: every task of the baseline), and how to match them."""
    from .comparability import metrics_difference, task_differences
    from .results import task_protocols

    names = ("the baseline", "the current run")
    keys = list(tasks) if tasks is not None else [t["key"] for t in base_meta["tasks"]]
    problems = []
    bt = {t["key"]: t for t in base_meta["tasks"]}
    ct = {t["key"]: t for t in cur_meta["tasks"]}
    for key in keys:
        t = bt[key]
        if key not in ct:
            problems.append(
                f"task {key} is in the baseline but not in the current run: evaluate it too, or gate on "
                f"the tasks both have with --tasks {','.join(k for k in keys if k in ct) or '...'}"
            )
            continue
        problems += task_differences(t, ct[key], names)
        missing = sorted(set(task_protocols(t, base_meta)) - set(task_protocols(ct[key], cur_meta)))
        if missing:
            problems.append(
                f"{key}: the current run lacks protocol(s) {', '.join(missing)} of the baseline: run it "
                f"with --protocol {','.join(task_protocols(t, base_meta))}"
            )
    m = metrics_difference(base_meta, cur_meta, names)
    if m:
        problems.append(m)
    for name, s in (("baseline", base_sum), ("current run", cur_sum)):
        missing = [k for k, g in s["groups"].items() if not g.get("complete") and g.get("task") in keys]
        if missing:
            problems.append(
                f"the {name} is incomplete ({', '.join(missing)}): finish it with `memorybench run ... "
                "--resume`; a partial run cannot pass a gate"
            )
    if problems:
        raise IncomparableRunsError("not comparable:\n  " + "\n  ".join(problems))


def model_warnings(base_meta: dict, cur_meta: dict) -> list[str]:
    """Warnings when the baseline and the current run are of different models."""
    a, b = base_meta["model"], cur_meta["model"]
    if a.get("name") != b.get("name") or a.get("class") != b.get("class"):
        return [
            f"the runs are of different models: baseline '{a.get('name')}' ({a.get('class')}), current "
            f"'{b.get('name')}' ({b.get('class')}); the gate compares their numbers all the same"
        ]
    return []


def compare(
    baseline: str | Path,
    current: str | Path,
    metrics: Sequence[str] = DEFAULT_METRICS,
    tolerances: dict[str, float] | None = None,
    tasks: Sequence[str] | None = None,
) -> tuple[list[Row], int]:
    """Rows of the comparison and the exit code (raises ``IncomparableRunsError``: exit 4).
    ``tasks``: gate only on these tasks of the baseline (names or ``NAME@TIER``)."""
    tolerances = tolerances or {}
    bm, bs = load_run_json(baseline), load_summary(baseline)
    cm, cs = load_run_json(current), load_summary(current)
    keys = select_tasks(bm, tasks)
    check_comparable(bm, bs, cm, cs, keys)
    rows: list[Row] = []
    for key, bg in bs["groups"].items():
        if bg.get("task") not in keys:
            continue
        cg = cs["groups"].get(key)
        bv, cv = _values(bg), _values(cg or {})
        for m in metrics:
            b, c = bv.get(m), cv.get(m)
            tol = tolerance_for(m, tolerances)
            if not b or b.get("mean") is None:
                continue
            if not c or c.get("mean") is None:
                rows.append(Row(bg["task"], bg["protocol"], m, b, c or {}, tol, None, "missing"))
                continue
            higher = registry.higher_is_better(m)
            worse_by = (b["mean"] - c["mean"]) if higher else (c["mean"] - b["mean"])
            outside_ci = True
            if c.get("ci_low") is not None:
                outside_ci = b["mean"] > c["ci_high"] if higher else b["mean"] < c["ci_low"]
            if worse_by > tol and outside_ci:
                status = "regression"
            elif -worse_by > tol:
                status = "improved"
            else:
                status = "ok"
            rows.append(Row(bg["task"], bg["protocol"], m, b, c, tol, worse_by, status))
    bad = any(r.status in ("regression", "missing") for r in rows)
    return rows, EXIT_REGRESSION if bad else EXIT_OK


def print_rows(rows: list[Row]) -> None:
    from rich.table import Table

    from .console import console

    t = Table(title="memorybench compare (baseline → current)", header_style="bold")
    for col in ("task", "protocol", "metric", "baseline", "current [95% CI]", "worse by", "tolerance", "status"):
        t.add_column(col, justify="right" if col in ("baseline", "worse by", "tolerance") else "left")
    colour = {"ok": "green", "improved": "cyan", "regression": "bold red", "missing": "bold red"}
    for r in rows:
        ci = f" [{r.current['ci_low']:.4g}, {r.current['ci_high']:.4g}]" if r.current.get("ci_low") is not None else ""
        cur = "—" if r.current.get("mean") is None else f"{r.current['mean']:.4g}{ci}"
        t.add_row(
            r.task,
            r.protocol,
            r.metric,
            f"{r.baseline['mean']:.4g}",
            cur,
            "—" if r.worse_by is None else f"{r.worse_by:+.4g}",
            f"{r.tolerance:g}",
            f"[{colour[r.status]}]{r.status}[/]",
        )
    console.print(t)
