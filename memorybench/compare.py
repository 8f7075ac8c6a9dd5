"""The regression gate: compare a current run with a baseline run, metric by metric.

A metric **regresses** when it is worse than the baseline by more than its tolerance *and* the
baseline's mean lies outside the current run's 95% confidence interval (so noise alone does not
fail a build). Exit codes of ``memorybench compare``:

* ``0``: comparable, nothing regressed;
* ``1``: at least one regression;
* ``4``: not comparable (different task specs or datasets, protocols or metric definitions, or
  an incomplete run): nothing can be concluded, which a CI job must not mistake for a pass.

A baseline is a run directory (``run.json`` + ``summary.json``; the per-frame records are not
needed, so a committed baseline is two small files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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


def check_comparable(base_meta: dict, base_sum: dict, cur_meta: dict, cur_sum: dict) -> None:
    problems = []
    bt = {t["key"]: t for t in base_meta["tasks"]}
    ct = {t["key"]: t for t in cur_meta["tasks"]}
    for key, t in bt.items():
        if key not in ct:
            problems.append(f"task {key} is in the baseline but not in the current run")
        elif (t["spec_hash"], t["dataset_sha256"]) != (ct[key]["spec_hash"], ct[key]["dataset_sha256"]):
            problems.append(f"task {key}: spec/dataset {t['spec_hash'][:12]}/{t['dataset_sha256'][:12]} in the "
                            f"baseline, {ct[key]['spec_hash'][:12]}/{ct[key]['dataset_sha256'][:12]} now")
        elif sorted(t.get("episodes_selected") or []) != sorted(ct[key].get("episodes_selected") or []):
            problems.append(f"task {key}: the runs evaluate different episodes")
    if not set(base_meta["protocols"]) <= set(cur_meta["protocols"]):
        problems.append(f"protocols {base_meta['protocols']} in the baseline, {cur_meta['protocols']} now")
    if base_meta["metrics"].get("version") != cur_meta["metrics"].get("version"):
        problems.append(f"metric definitions v{base_meta['metrics'].get('version')} vs v{cur_meta['metrics'].get('version')}")
    for name, s in (("baseline", base_sum), ("current run", cur_sum)):
        if not s.get("complete"):
            missing = [k for k, g in s["groups"].items() if not g.get("complete")]
            problems.append(f"the {name} is incomplete ({', '.join(missing)})")
    if problems:
        raise IncomparableRunsError("not comparable:\n  " + "\n  ".join(problems))


def compare(baseline: str | Path, current: str | Path, metrics: Sequence[str] = DEFAULT_METRICS,
            tolerances: dict[str, float] | None = None) -> tuple[list[Row], int]:
    """Rows of the comparison and the exit code (raises ``IncomparableRunsError``: exit 4)."""
    tolerances = tolerances or {}
    bm, bs = load_run_json(baseline), load_summary(baseline)
    cm, cs = load_run_json(current), load_summary(current)
    check_comparable(bm, bs, cm, cs)
    rows: list[Row] = []
    for key, bg in bs["groups"].items():
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
        ci = (f" [{r.current['ci_low']:.4g}, {r.current['ci_high']:.4g}]"
              if r.current.get("ci_low") is not None else "")
        cur = "—" if r.current.get("mean") is None else f"{r.current['mean']:.4g}{ci}"
        t.add_row(r.task, r.protocol, r.metric, f"{r.baseline['mean']:.4g}", cur,
                  "—" if r.worse_by is None else f"{r.worse_by:+.4g}", f"{r.tolerance:g}",
                  f"[{colour[r.status]}]{r.status}[/]")
    console.print(t)
