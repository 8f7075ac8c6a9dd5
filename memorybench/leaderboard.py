"""Leaderboards from run directories: Markdown, LaTeX, CSV, HTML and JSON.

Rows are models; columns are tasks x metrics (whole frame and memory-only pixels), each cell the
mean over episodes with its 95% bootstrap CI; the best contender per column is marked (calibration
references such as ``ground-truth`` and ``perfect-memory`` are shown in italics and never ranked).
A second table gives the memory-only metrics by memory-gap bin.

Guarantees:

* **No mixing.** Runs whose task spec, episodes, data (spec hash, episodes, dataset hash,
  generator or task-format version) or metric definitions differ are never put in one column:
  ``build`` refuses (``IncomparableRunsError``, exit code 4), saying what differs and how to
  match, unless ``split=True``, which gives each variant its own column, labelled with what
  distinguishes it (``[2 episodes]``, ``[spec ab7d2f61]``), and a legend. Protocols always get
  separate tables.
* **No silent gaps.** A run that misses episodes or tasks is shown with a dagger and a footnote
  ("k of n episodes"), never as if complete; a missing value is "—", never 0.
* **No duplicates.** Two runs of the same model (identity hash) on the same task and protocol are
  refused: merge shards first (``memorybench merge``); of a run and its re-scored copy
  (``memorybench score``), pass one.
* **Known weights.** A model whose run cannot say which weights produced it (``"weights":
  "undeclared"`` in its ``run.json``) is marked ``‡`` with a footnote.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import __version__
from . import metric_registry as registry
from .errors import MemorybenchError
from .results import expand_run_dirs, load_run_json, load_summary

HEADLINE = ("recall", "memory_horizon", "psnr", "lpips", "psnr_memory", "lpips_memory", "retention")
DEFAULT_COLUMNS = ("recall", "memory_horizon", "psnr", "lpips", "psnr_memory", "lpips_memory", "retention")
GAP_METRICS = ("recall", "psnr_memory")


class _Labels(dict):
    """Metric labels from the registry (a mapping, for the renderers)."""

    def get(self, key, default=None):
        return registry.label(key)


LABELS = _Labels()


class IncomparableRunsError(MemorybenchError):
    """Runs that measure different things were asked to share a column."""

    exit_code = 4


def check_metric_names(metrics: Sequence[str], runs: Sequence[dict] = ()) -> list[str]:
    """``metrics`` if every name is in the metric registry (``memorybench.metric_registry``) or held
    by the runs' summaries; an error with a "did you mean" otherwise."""
    extra = set()
    for r in runs:
        for g in r["summary"].get("groups", {}).values():
            extra |= set(g.get("metrics", {})) | set(g.get("retention", {}))
    return registry.check_names(list(metrics), extra=extra)


def load_runs(paths: Sequence[str | Path]) -> list[dict]:
    """``[{"path", "meta", "summary"}]`` for every run directory in ``paths`` (or one level below)."""
    return [{"path": p, "meta": load_run_json(p), "summary": load_summary(p)} for p in expand_run_dirs(paths)]


def _task_variant(meta_task: dict, meta: dict | None = None) -> tuple:
    """What must be equal for two runs' results on a task to share a column: the task spec, the
    dataset, the generator and task-format versions, the episodes evaluated and the metric version."""
    import hashlib

    spec = meta_task["spec"]
    episodes = hashlib.sha256(json.dumps(sorted(meta_task.get("episodes_selected") or [])).encode()).hexdigest()
    metrics = ((meta or {}).get("metrics") or {}).get("version")
    return (
        meta_task["spec_hash"],
        meta_task["dataset_sha256"],
        spec.get("generator_version"),
        spec.get("task_format_version"),
        episodes,
        metrics,
    )


UNDECLARED_MARK = "‡"
UNDECLARED_NOTE = (
    "weights undeclared: its run records no checkpoint, weight file or torch module, so it cannot "
    "say which weights produced these numbers (declare them: docs/adapters.md)"
)


def _variant_facts(t: dict, v: tuple) -> dict:
    from .comparability import episodes_text

    return {
        "episodes": episodes_text(t.get("episodes_selected")),
        "spec": f"spec {v[0][:8]}",
        "data": f"data {v[1][:8]}",
        "generator": f"generator v{v[2]}",
        "format": f"task format v{v[3]}",
        "metrics": f"metrics v{v[5]}",
    }


def _split_labels(key: str, variants: dict[tuple, dict]) -> dict[tuple, tuple[str, str]]:
    """``(column label, legend text)`` per variant of one task key: the label names only what
    tells the variants apart (``occlusion-recall@standard [2 episodes]``)."""
    facts = {v: _variant_facts(t, v) for v, t in variants.items()}
    # the data hash follows from the spec and the episodes: name it only when nothing else differs
    fields = [
        f for f in ("episodes", "spec", "generator", "format", "metrics") if len({facts[v][f] for v in variants}) > 1
    ] or ["data"]
    out = {}
    for v, f in facts.items():
        label = f"{key} [{', '.join(f[x] for x in fields)}]"
        legend = {**f, "spec": f"spec {v[0][:16]}", "data": f"dataset {v[1][:16]}"}
        out[v] = (label, "; ".join(legend.values()))
    # labels must be unique: fall back to the spec and data hashes when the readable facts collide
    if len({lab for lab, _ in out.values()}) < len(out):
        out = {
            v: (f"{key} [{f['spec']}, {f['data']}, {f['episodes']}]", leg)
            for (v, (_, leg)), f in zip(out.items(), facts.values())
        }
    return out


def _incomparable_message(
    key: str, variants: dict[tuple, dict], paths: dict[tuple, list[str]], metas: dict[tuple, dict]
) -> str:
    from .comparability import metrics_difference, task_differences

    vs = list(variants)
    first = vs[0]
    lines = [f"runs disagree on what task {key} is, so they cannot share a column:"]
    for v in vs:
        lines.append(f"  [{chr(ord('A') + vs.index(v))}] {', '.join(paths[v])}")
    for v in vs[1:]:
        a, b = f"[{chr(ord('A'))}]", f"[{chr(ord('A') + vs.index(v))}]"
        diffs = task_differences(variants[first], variants[v], (a, b))
        m = metrics_difference(metas[first], metas[v], (a, b))
        diffs += [f"{key}: {m}"] if m else []
        diffs = diffs or [f"{key}: generator or task-format version differs"]
        lines += [f"  {d}" for d in diffs]
    lines.append("re-run them on the same task spec and episodes, or pass --split to give each variant its own column")
    return "\n".join(lines)


def model_labels(runs: list[dict]) -> dict[str, str]:
    """Display name per model identity hash: the name, plus its arguments where names collide, and
    ``‡`` for a model whose weights are undeclared."""
    by_name: dict[str, set] = {}
    for r in runs:
        m = r["meta"]["model"]
        by_name.setdefault(m["name"], set()).add(m["identity_hash"])
    labels = {}
    for r in runs:
        m = r["meta"]["model"]
        label = m["name"]
        if len(by_name[m["name"]]) > 1:
            args = ",".join(f"{k}={v}" for k, v in sorted((m.get("args") or {}).items()))
            label += f" ({args or m['identity_hash'][:8]})"
        if m.get("weights") == "undeclared":
            label += f" {UNDECLARED_MARK}"
        labels[m["identity_hash"]] = label
    return labels


@dataclass
class Board:
    """The cells of a leaderboard, in long form, plus what the renderers need to know."""

    cells: (
        pd.DataFrame
    )  # model, reference, kind, column (task label), task, protocol, metric, gap_bin, mean, ci_low, ci_high, n
    notes: dict = field(default_factory=dict)  # (model, column, protocol) -> footnote text for incomplete cells
    runs: list = field(default_factory=list)
    metrics: tuple = DEFAULT_COLUMNS
    profiles: list = field(default_factory=list)  # from `memorybench profile`, for the efficiency table
    legend: dict = field(default_factory=dict)  # --split: column label -> what the variant is
    model_notes: dict = field(default_factory=dict)  # model label -> footnote (e.g. undeclared weights)

    def footnotes(self) -> list[str]:
        """Notes that apply to the whole board: models with undeclared weights, the --split legend."""
        out = [f"{UNDECLARED_MARK} {m}: {n}" for m, n in self.model_notes.items()]
        out += [f"{c}: {d}" for c, d in self.legend.items()]
        return out

    def protocols(self) -> list[str]:
        return list(dict.fromkeys(self.cells["protocol"]))

    def columns(self, protocol: str) -> list[str]:
        sub = self.cells[(self.cells.protocol == protocol) & self.cells.gap_bin.isna()]
        return list(dict.fromkeys(sub["column"]))

    def models(self, protocol: str) -> list[tuple[str, bool]]:
        sub = self.cells[self.cells.protocol == protocol]
        order = sub.drop_duplicates("model")[["model", "reference", "kind"]]
        # contenders first (alphabetical), then the references: no-memory, lossy memory, oracles
        rank = {"contender": 0, "no-memory": 1, "lossy-memory": 2, "oracle": 3}
        rows = sorted(order.itertuples(index=False), key=lambda r: (rank.get(r.kind, 1), r.model))
        return [(r.model, bool(r.reference)) for r in rows]

    def kind(self, model: str) -> str:
        sub = self.cells[self.cells.model == model]
        return str(sub["kind"].iloc[0]) if len(sub) else "contender"

    def value(self, model: str, column: str, protocol: str, metric: str, gap_bin: str | None = None) -> dict | None:
        c = self.cells
        sel = (c.model == model) & (c.column == column) & (c.protocol == protocol) & (c.metric == metric)
        sel &= c.gap_bin.isna() if gap_bin is None else (c.gap_bin == gap_bin)
        sub = c[sel]
        return None if sub.empty else sub.iloc[0].to_dict()

    def best(self, column: str, protocol: str, metric: str, gap_bin: str | None = None) -> str | None:
        """The contender (non-reference, complete) with the best mean in a column: a partial run's
        mean is over other episodes, so it is shown (marked) but never ranked."""
        c = self.cells
        sel = (c.column == column) & (c.protocol == protocol) & (c.metric == metric) & ~c.reference & c.complete
        sel &= c.gap_bin.isna() if gap_bin is None else (c.gap_bin == gap_bin)
        sub = c[sel].dropna(subset=["mean"])
        if len(sub) < 2:
            return None
        higher = registry.higher_is_better(metric)
        row = sub.loc[sub["mean"].idxmax() if higher else sub["mean"].idxmin()]
        return row["model"]

    def gap_bins(self, column: str, protocol: str) -> list[str]:
        c = self.cells
        sub = c[(c.column == column) & (c.protocol == protocol) & c.gap_bin.notna()]
        return list(dict.fromkeys(sub.sort_values("gap_lo")["gap_bin"]))


def build(
    runs: list[dict],
    metrics: Sequence[str] = DEFAULT_COLUMNS,
    gap_metrics: Sequence[str] = GAP_METRICS,
    split: bool = False,
    protocols: Sequence[str] | None = None,
    profiles: Sequence[dict] = (),
) -> Board:
    """Check that the runs can share columns, and collect their cells.

    Columns come in the order of the runs' tasks, the runs that evaluate the most tasks first
    (a model's extra runs on a few tasks never reorder the suite's columns)."""
    if not runs:
        raise MemorybenchError("no runs given")
    runs = sorted(runs, key=lambda r: -len(r["meta"]["tasks"]))
    # comparability: one variant per task key, unless split
    variants: dict[str, dict[tuple, list[str]]] = {}
    examples: dict[str, dict[tuple, dict]] = {}
    metas: dict[str, dict[tuple, dict]] = {}
    for r in runs:
        for t in r["meta"]["tasks"]:
            v = _task_variant(t, r["meta"])
            variants.setdefault(t["key"], {}).setdefault(v, []).append(str(r["path"]))
            examples.setdefault(t["key"], {}).setdefault(v, t)
            metas.setdefault(t["key"], {}).setdefault(v, r["meta"])
    column_of, legend = {}, {}
    for key, vs in variants.items():
        if len(vs) > 1 and not split:
            raise IncomparableRunsError(_incomparable_message(key, examples[key], vs, metas[key]))
        labels = _split_labels(key, examples[key]) if len(vs) > 1 else {}
        for v in vs:
            if v in labels:
                column_of[(key, v)] = labels[v][0]
                legend[labels[v][0]] = f"{labels[v][1]}; runs: {', '.join(vs[v])}"
            else:
                column_of[(key, v)] = key

    labels = model_labels(runs)
    seen: dict[tuple, dict] = {}
    rows, notes, model_notes = [], {}, {}
    for r in runs:
        meta, summary = r["meta"], r["summary"]
        model = labels[meta["model"]["identity_hash"]]
        if meta["model"].get("weights") == "undeclared":
            model_notes[model] = UNDECLARED_NOTE
        kind = model_kind(meta["model"])
        priv = kind != "contender"
        tasks = {t["key"]: t for t in meta["tasks"]}
        for g in summary["groups"].values():
            if protocols and g["protocol"] not in protocols:
                continue
            col = column_of[(g["task"], _task_variant(tasks[g["task"]], meta))]
            dup = (meta["model"]["identity_hash"], col, g["protocol"])
            if dup in seen:
                raise MemorybenchError(_duplicate_message(model, col, g["protocol"], seen[dup], r))
            seen[dup] = r
            if not g.get("complete", False):
                done = g.get("episodes", 0)
                notes[(model, col, g["protocol"])] = f"incomplete: {done} of {g.get('episodes_selected', '?')} episodes"
            base = {
                "model": model,
                "reference": priv,
                "kind": kind,
                "column": col,
                "task": g["task"],
                "protocol": g["protocol"],
                "complete": bool(g.get("complete", False)),
                "run": str(r["path"]),
            }
            values = group_values(g)
            for m in metrics:
                v = values.get(m) or {}
                rows.append({**base, "metric": m, "gap_bin": None, "gap_lo": None, **_num(v)})
            for b in g.get("by_gap", []):
                bv = {**b.get("metrics", {}), **b.get("retention", {})}
                for m in gap_metrics:
                    rows.append(
                        {
                            **base,
                            "metric": m,
                            "gap_bin": b["label"],
                            "gap_lo": b["bin"][0],
                            **_num(bv.get(m) or {}),
                            "frames": b["frames"],
                        }
                    )
    cells = pd.DataFrame(rows)
    if cells.empty:
        raise MemorybenchError("the runs hold no results for the requested protocols")
    return Board(
        cells=cells,
        notes=notes,
        runs=runs,
        metrics=tuple(metrics),
        profiles=list(profiles),
        legend=legend,
        model_notes=model_notes,
    )


def _duplicate_message(model: str, col: str, protocol: str, a: dict, b: dict) -> str:
    """Two runs of one model on one column: say what they are (shards, a re-scored copy) and what to do."""
    head = f"two runs of {model} on {col} ({protocol}): {a['path']} and {b['path']}"
    resc = [r for r in (a, b) if r["meta"].get("rescored_from")]
    if resc:
        r = resc[0]
        src = r["meta"]["rescored_from"]
        other = b if r is a else a
        same = str(Path(src).resolve()) == str(Path(other["path"]).resolve())
        return (
            f"{head}. {r['path']} is a re-scored copy (`memorybench score`) of "
            f"{'the other' if same else src}: pass one of them (the re-scored one carries the current metric "
            "definitions), e.g. keep re-scored runs in their own directory (`memorybench score --out`)"
        )
    shards = [r for r in (a, b) if r["meta"]["run"].get("shard")]
    if shards:
        return (
            f"{head}: {', '.join(str(r['path']) for r in shards)} "
            f"{'is a shard' if len(shards) == 1 else 'are shards'} (--shard); merge the shards into one run with "
            "`memorybench merge SHARD_DIR... --out DIR` and pass the merged run"
        )
    return f"{head}: the same model evaluated twice; pass only one of them"


def efficiency_rows(board: Board) -> list[list[str]]:
    """Header and rows of the efficiency table (per generated frame, from `memorybench profile`)."""
    from .profile import summary_rows

    if not board.profiles:
        return []
    f = lambda v, d: "—" if v is None else f"{v:.{d}f}"  # noqa: E731
    rows = [["Model", "Device", "Context", "Latency ms", "× (slope)", "Peak memory MiB", "×", "State MiB"]]
    for r in summary_rows(board.profiles):
        rows.append(
            [
                r["model"],
                r["device"],
                f"{r['context_min']} → {r['context_max']}",
                f"{f(r['latency_ms_min_ctx'], 2)} → {f(r['latency_ms_max_ctx'], 2)}",
                f"{f(r['latency_ms_ratio'], 2)} ({f(r['latency_ms_slope'], 2)})",
                f"{f(r['peak_memory_mb_min_ctx'], 0)} → {f(r['peak_memory_mb_max_ctx'], 0)}",
                f(r["peak_memory_mb_ratio"], 2),
                f"{f(r['state_mb_min_ctx'], 2)} → {f(r['state_mb_max_ctx'], 2)}",
            ]
        )
    return rows


def model_kind(model_meta: dict) -> str:
    """``contender``, or the kind of calibration reference (``no-memory``, ``lossy-memory``, ``oracle``)."""
    kind = model_meta.get("reference_kind")
    if kind:
        return str(kind)
    return "oracle" if model_meta.get("privileged") else "contender"


def group_values(g: dict) -> dict:
    """Every metric of a summary group by name (metrics, retention indices, the memory horizon)."""
    values = {**g.get("metrics", {}), **g.get("retention", {})}
    if g.get("memory_horizon") is not None:
        values["memory_horizon"] = {
            "mean": g["memory_horizon"],
            "ci_low": None,
            "ci_high": None,
            "n": g.get("episodes", 0),
        }
    return values


def _num(v: dict) -> dict:
    f = lambda x: float("nan") if x is None else float(x)  # noqa: E731
    return {"mean": f(v.get("mean")), "ci_low": f(v.get("ci_low")), "ci_high": f(v.get("ci_high")), "n": v.get("n", 0)}


# ------------------------------------------------------------------------------------------
# number formatting


def _digits(metric: str) -> int:
    return registry.decimals(metric)


def fmt_value(v: dict | None, metric: str) -> tuple[str, str]:
    """(mean, "[lo, hi]") as text; ("—", "") when missing."""
    if not v or v.get("mean") is None or math.isnan(v["mean"]):
        return "—", ""
    d = _digits(metric)
    mean = f"{v['mean']:.{d}f}"
    if v.get("ci_low") is None or math.isnan(v["ci_low"]):
        return mean, ""
    return mean, f"[{v['ci_low']:.{d}f}, {v['ci_high']:.{d}f}]"


def fmt_ci(v: dict | None, decimals: int = 3) -> str:
    """``mean ±h`` with ``decimals`` decimals and ``h`` the larger distance from the mean to a 95% CI
    bound (terminal use)."""
    if not v or v.get("mean") is None or pd.isna(v["mean"]):
        return "—"
    m = v["mean"]
    text = f"{m:.{decimals}f}"
    if v.get("ci_low") is None or pd.isna(v["ci_low"]):
        return text
    h = max(m - v["ci_low"], v["ci_high"] - m)
    return f"{text} ±{h:.{decimals}f}"


def _arrow(metric: str) -> str:
    return "↑" if registry.higher_is_better(metric) else "↓"


# ------------------------------------------------------------------------------------------
# the headline: one compact row per model

#: the context length at which the headline reports the cost per generated frame
HEADLINE_CONTEXT = 512
KIND_LABEL = {"contender": "", "no-memory": "no memory", "lossy-memory": "lossy memory", "oracle": "oracle"}


def _latency(profiles: Sequence[dict], model: str) -> str:
    """ms per generated frame of ``model`` at ``HEADLINE_CONTEXT`` (or the nearest profiled context)."""
    for p in profiles:
        if p["model"] == model.split(" (")[0] and p.get("points"):
            pt = min(p["points"], key=lambda q: abs(q["context"] - HEADLINE_CONTEXT))
            return f"{pt['latency_ms']:.1f}" + ("" if pt["context"] == HEADLINE_CONTEXT else f" @{pt['context']}")
    return "—"


def headline_table(board: Board, protocol: str = "rollout") -> list[list[str]]:
    """Header and rows: a row per model with ``recall`` per task [95% CI], their mean, the memory
    horizon per task (frames) and the cost per generated frame (ms, from profiles)."""
    cols = [
        c
        for c in board.columns(protocol)
        if board.cells[
            (board.cells.column == c) & (board.cells.metric == "recall") & board.cells["mean"].notna()
        ].shape[0]
    ]
    header = (
        ["Model", "kind"]
        + [f"{c} recall ↑" for c in cols]
        + ["mean recall ↑", "horizon (frames) ↑", f"ms / frame @{HEADLINE_CONTEXT}"]
    )
    rows = []
    for model, ref in board.models(protocol):
        kind = board.kind(model)
        cells = [f"*{model}*" if ref else model, KIND_LABEL.get(kind, kind)]
        means, horizons = [], []
        for c in cols:
            v = board.value(model, c, protocol, "recall")
            mean, ci = fmt_value(v, "recall")
            note = board.notes.get((model, c, protocol))
            best = mean != "—" and not ref and board.best(c, protocol, "recall") == model
            cells.append(
                (f"**{mean}**" if best else mean) + (f" {ci}" if ci else "") + (" †" if note and mean != "—" else "")
            )
            means.append(None if mean == "—" else v["mean"])
            h = board.value(model, c, protocol, "memory_horizon")
            horizons.append("—" if not h or h.get("mean") is None or math.isnan(h["mean"]) else str(int(h["mean"])))
        cells.append(f"{sum(means) / len(means):.3f}" if means and None not in means else "—")
        cells.append(" / ".join(horizons))
        cells.append(_latency(board.profiles, model))
        rows.append(cells)
    return [header] + rows


def headline_markdown(board: Board, protocol: str = "rollout") -> str:
    table = headline_table(board, protocol)
    out = ["| " + " | ".join(table[0]) + " |", "|---|---|" + "---:|" * (len(table[0]) - 2)]
    out += ["| " + " | ".join(r) + " |" for r in table[1:]]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------
# Markdown


def to_markdown(board: Board) -> str:
    out = ["<!-- generated by memorybench; do not edit by hand -->", ""]
    footnotes: list[str] = []
    for p in board.protocols():
        if "recall" in board.metrics and (board.cells.metric == "recall").any():
            out += [
                f"### Headline ({p}): recall (0 = chance, 1 = perfect identification) and memory horizon",
                "",
                headline_markdown(board, p).rstrip(),
                "",
                "Horizon: the largest memory gap (frames, lower edge of its bin) at which recall's 95% CI stays "
                "above the no-memory band (0.05), per task in column order. References in italics are never "
                "ranked.",
                "",
            ]
    for p in board.protocols():
        out.append(f"### Protocol: {p}")
        out.append("")
        cols = board.columns(p)
        header = ["Model"] + [f"{c} · {LABELS.get(m, m)} {_arrow(m)}" for c in cols for m in board.metrics]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" + "---:|" * (len(header) - 1))
        for model, priv in board.models(p):
            cells = [f"*{model}* (reference)" if priv else model]
            for c in cols:
                note = board.notes.get((model, c, p))
                for m in board.metrics:
                    mean, ci = fmt_value(board.value(model, c, p, m), m)
                    text = f"{mean} {ci}".strip()
                    if mean != "—" and board.best(c, p, m) == model:
                        text = f"**{mean}** {ci}".strip()
                    if note and mean != "—":
                        text += " †"
                    cells.append(text)
                if note and note not in footnotes:
                    footnotes.append(f"† {model} on {c} ({p}): {note}")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        for c in cols:
            bins = board.gap_bins(c, p)
            if not bins:
                continue
            gap_metrics = list(dict.fromkeys(board.cells[board.cells.gap_bin.notna()].metric))
            for m in gap_metrics:
                out.append(f"**{c} · {LABELS.get(m, m)} {_arrow(m)} by memory gap (frames)**")
                out.append("")
                out.append("| Model | " + " | ".join(bins) + " |")
                out.append("|---|" + "---:|" * len(bins))
                for model, priv in board.models(p):
                    row = [f"*{model}*" if priv else model]
                    partial = " †" if board.notes.get((model, c, p)) else ""
                    for b in bins:
                        mean, ci = fmt_value(board.value(model, c, p, m, b), m)
                        best = mean != "—" and board.best(c, p, m, b) == model
                        row.append(
                            (f"**{mean}**" if best else mean)
                            + (f" {ci}" if ci else "")
                            + (partial if mean != "—" else "")
                        )
                    out.append("| " + " | ".join(row) + " |")
                out.append("")
    eff = efficiency_rows(board)
    if eff:
        out += [
            "### Efficiency (per generated frame, against context length)",
            "",
            "| " + " | ".join(eff[0]) + " |",
            "|---|---|" + "---:|" * (len(eff[0]) - 2),
        ]
        out += ["| " + " | ".join(r) + " |" for r in eff[1:]]
        out += [
            "",
            "Latency: median over repeats after warm-up; ×: cost at the longest context over the shortest, "
            "slope: fitted on log-log axes (0 = constant per-frame cost). Peak memory: CUDA allocator on GPU, "
            "process peak RSS on CPU (freed heap returned to the OS first; includes the ~0.5 GB of Python and "
            "torch). State: what the model keeps between frames (recurrent states, KV caches).",
            "",
        ]
    out.append(
        "Cells: mean over episodes [95% bootstrap CI]. Bold: best non-reference model. "
        "Retention: 0 = copy-last (no memory), 1 = perfect-memory."
    )
    footnotes += board.footnotes()
    out += [""] + footnotes if footnotes else []
    return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------------------------------
# LaTeX (booktabs)

_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "†": r"$^\dagger$",
    "—": "--",
    "·": r"$\cdot$",
    "→": r"$\to$",
    "×": r"$\times$",
}


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def to_latex(board: Board) -> str:
    """booktabs tables ready to ``\\input`` (needs ``\\usepackage{booktabs}``)."""
    out = ["% generated by memorybench; do not edit by hand. Needs \\usepackage{booktabs}."]
    for p in board.protocols():
        cols = board.columns(p)
        k = len(board.metrics)
        out += [
            r"\begin{table*}[t]",
            r"\centering",
            r"\small",
            r"\setlength{\tabcolsep}{3pt}",
            r"\begin{tabular}{l" + ("|" + "r" * k) * len(cols) + "}",
            r"\toprule",
        ]
        out.append(" & ".join(["Model"] + [rf"\multicolumn{{{k}}}{{c}}{{{tex_escape(c)}}}" for c in cols]) + r" \\")
        out.append(" ".join(rf"\cmidrule(lr){{{2 + i * k}-{1 + (i + 1) * k}}}" for i in range(len(cols))))
        out.append(
            " & ".join([""] + [tex_escape(f"{LABELS.get(m, m)} {_arrow(m)}") for _ in cols for m in board.metrics])
            + r" \\"
        )
        out.append(r"\midrule")
        for model, priv in board.models(p):
            cells = [rf"\textit{{{tex_escape(model)}}}" if priv else tex_escape(model)]
            for c in cols:
                note = board.notes.get((model, c, p))
                for m in board.metrics:
                    mean, ci = fmt_value(board.value(model, c, p, m), m)
                    if mean == "—":
                        cells.append("--")
                        continue
                    text = rf"\textbf{{{mean}}}" if board.best(c, p, m) == model else mean
                    if ci:
                        text += rf"\,{{\scriptsize {tex_escape(ci)}}}"
                    if note:
                        text += r"$^\dagger$"
                    cells.append(text)
            out.append(" & ".join(cells) + r" \\")
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        notes = [f"{m} on {c}: {n}" for (m, c, pp), n in board.notes.items() if pp == p]
        caption = (
            f"memorybench {__version__}, protocol {p}: mean over episodes with 95\\% bootstrap CI; bold: best "
            "non-reference model; italics: calibration references. Retention: 0 = copy-last, 1 = perfect-memory."
        )
        if notes:
            caption += " $^\\dagger$" + tex_escape("; ".join(notes)) + "."
        if board.footnotes():
            caption += " " + tex_escape(" ".join(n.rstrip(".") + "." for n in board.footnotes()))
        out += [
            rf"\caption{{{caption}}}",
            rf"\label{{tab:memorybench-{tex_escape(p).replace(chr(92), '')}}}",
            r"\end{table*}",
            "",
        ]
    eff = efficiency_rows(board)
    if eff:
        out += [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            r"\begin{tabular}{ll" + "r" * (len(eff[0]) - 2) + "}",
            r"\toprule",
            " & ".join(tex_escape(c) for c in eff[0]) + r" \\",
            r"\midrule",
        ]
        out += [" & ".join(tex_escape(c) for c in r) + r" \\" for r in eff[1:]]
        out += [
            r"\bottomrule",
            r"\end{tabular}",
            r"\caption{Per generated frame against context length: median latency, peak memory, state size; "
            r"ratio longest/shortest context and log-log slope.}",
            r"\label{tab:memorybench-efficiency}",
            r"\end{table}",
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------------------------------
# CSV / JSON (tidy, one row per cell)


def to_frame(board: Board) -> pd.DataFrame:
    df = board.cells.copy()
    df["gap_bin"] = df["gap_bin"].fillna("")
    df["note"] = [board.notes.get((m, c, p), "") for m, c, p in zip(df.model, df.column, df.protocol)]
    cols = [
        "model",
        "kind",
        "task",
        "column",
        "protocol",
        "metric",
        "gap_bin",
        "mean",
        "ci_low",
        "ci_high",
        "n",
        "complete",
        "note",
    ]
    return df[cols].reset_index(drop=True)


def to_csv(board: Board) -> str:
    return to_frame(board).to_csv(index=False, float_format="%.6g", lineterminator="\n")


def to_json(board: Board) -> str:
    df = to_frame(board)
    rows = json.loads(df.to_json(orient="records", double_precision=10))
    runs = [
        {
            "path": str(r["path"]),
            "model": r["meta"]["model"],
            "tasks": [{k: t[k] for k in ("key", "spec_hash", "dataset_sha256")} for t in r["meta"]["tasks"]],
            "protocols": r["meta"]["protocols"],
            "memorybench_version": r["meta"]["memorybench_version"],
        }
        for r in board.runs
    ]
    from .profile import summary_rows

    return (
        json.dumps(
            {
                "memorybench_version": __version__,
                "runs": runs,
                "cells": rows,
                "efficiency": summary_rows(board.profiles) if board.profiles else [],
            },
            indent=1,
        )
        + "\n"
    )


# ------------------------------------------------------------------------------------------
# HTML (one self-contained file: inline CSS, a sortable table script, embedded plots)

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5rem auto;max-width:1400px;color:#222;
     padding:0 1rem;line-height:1.4}
h1{font-size:1.5rem} h2{font-size:1.2rem;margin-top:2rem} h3{font-size:1rem;color:#333}
.scroll{max-width:100%;overflow-x:auto;margin:0.5rem 0 1.5rem;border:1px solid #e4e4ea}
table{border-collapse:separate;border-spacing:0;font-size:0.85rem}
th,td{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
th{background:#f4f4f8;cursor:pointer;vertical-align:bottom}
th:first-child,td:first-child{text-align:left;position:sticky;left:0;z-index:1;background:#fff;
     border-right:1px solid #ddd}
th:first-child{background:#f4f4f8;z-index:2}
tr.ref td{color:#666;font-style:italic} td.best{font-weight:700;background:#eef7ee}
.ci{color:#777;font-size:0.75rem} .note{color:#a33} figure{margin:1.5rem 0} figure img{max-width:100%;border:1px solid #eee}
figcaption,p.small{color:#444;font-size:0.9rem} figcaption{margin-top:0.3rem}
"""

_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){
  th.title='click to sort'; th.addEventListener('click', function(){
    var table=th.closest('table'), body=table.tBodies[0], rows=Array.from(body.rows);
    var dir = th.dataset.dir==='asc' ? -1 : 1; th.dataset.dir = dir===1 ? 'asc' : 'desc';
    rows.sort(function(a,b){
      var x=a.cells[col].dataset.v, y=b.cells[col].dataset.v;
      var fx=parseFloat(x), fy=parseFloat(y);
      if(!isNaN(fx)&&!isNaN(fy)) return dir*(fx-fy);
      if(isNaN(fx)!==isNaN(fy)) return isNaN(fx)?1:-1;
      return dir*String(a.cells[col].textContent).localeCompare(b.cells[col].textContent);
    });
    rows.forEach(function(r){body.appendChild(r);});
  });
});
"""


def _html_cell(v: dict | None, metric: str, best: bool, note: str | None) -> str:
    mean, ci = fmt_value(v, metric)
    data = "" if mean == "—" else f' data-v="{v["mean"]:.10g}"'
    cls = ' class="best"' if best and mean != "—" else ""
    extra = f' <span class="ci">{html.escape(ci)}</span>' if ci else ""
    mark = f' <span class="note" title="{html.escape(note)}">†</span>' if note and mean != "—" else ""
    return f"<td{cls}{data}>{html.escape(mean)}{extra}{mark}</td>"


def to_html(board: Board, figures: dict[str, bytes] | None = None, title: str = "memorybench leaderboard") -> str:
    """One self-contained HTML file; ``figures`` maps captions to PNG bytes (embedded as data URIs)."""
    import base64

    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p class='small'>Generated by memorybench {__version__}. Cells: mean over episodes with the 95% bootstrap "
        "confidence interval. Bold: best non-reference model in the column. Grey italics: calibration references "
        "(they read the ground truth). Retention: 0 = copy-last (no memory), 1 = perfect-memory. Click a header "
        "to sort.</p>",
    ]
    for p in board.protocols():
        parts.append(f"<h2>Protocol: {html.escape(p)}</h2>")
        cols = board.columns(p)
        head = "".join(
            f"<th>{html.escape(c)}<br>{html.escape(LABELS.get(m, m))} {_arrow(m)}</th>"
            for c in cols
            for m in board.metrics
        )
        parts.append(f"<div class='scroll'><table class='sortable'><thead><tr><th>Model</th>{head}</tr></thead><tbody>")
        notes = []
        for model, priv in board.models(p):
            row = [f"<td>{html.escape(model)}</td>"]
            for c in cols:
                note = board.notes.get((model, c, p))
                if note:
                    notes.append(f"{model} on {c}: {note}")
                for m in board.metrics:
                    row.append(_html_cell(board.value(model, c, p, m), m, board.best(c, p, m) == model, note))
            parts.append(f"<tr{' class=ref' if priv else ''}>{''.join(row)}</tr>")
        parts.append("</tbody></table></div>")
        if notes:
            parts.append("<p class='note'>† " + "<br>† ".join(html.escape(n) for n in dict.fromkeys(notes)) + "</p>")
        if board.footnotes():
            parts.append("<p class='small'>" + "<br>".join(html.escape(n) for n in board.footnotes()) + "</p>")
        gap_metrics = list(dict.fromkeys(board.cells[board.cells.gap_bin.notna()].metric))
        for c in cols:
            bins = board.gap_bins(c, p)
            for m in gap_metrics if bins else []:
                parts.append(
                    f"<h3>{html.escape(c)} · {html.escape(LABELS.get(m, m))} {_arrow(m)} by memory gap (frames)</h3>"
                )
                head = "".join(f"<th>{html.escape(b)}</th>" for b in bins)
                parts.append(
                    f"<div class='scroll'><table class='sortable'><thead><tr><th>Model</th>{head}</tr></thead><tbody>"
                )
                for model, priv in board.models(p):
                    row = [f"<td>{html.escape(model)}</td>"]
                    note = board.notes.get((model, c, p))
                    row += [
                        _html_cell(board.value(model, c, p, m, b), m, board.best(c, p, m, b) == model, note)
                        for b in bins
                    ]
                    parts.append(f"<tr{' class=ref' if priv else ''}>{''.join(row)}</tr>")
                parts.append("</tbody></table></div>")
    eff = efficiency_rows(board)
    if eff:
        parts.append(
            "<h2>Efficiency (per generated frame, against context length)</h2><div class='scroll'>"
            "<table class='sortable'><thead><tr>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in eff[0])
            + "</tr></thead><tbody>"
        )
        for r in eff[1:]:
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
        parts.append("</tbody></table></div>")
    for caption, png in (figures or {}).items():
        b64 = base64.b64encode(png).decode()
        parts.append(
            f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption class='small'>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts) + "\n"


RENDERERS = {"md": to_markdown, "latex": to_latex, "csv": to_csv, "json": to_json, "html": to_html}
SUFFIX = {"md": "md", "latex": "tex", "csv": "csv", "json": "json", "html": "html"}


# ------------------------------------------------------------------------------------------
# terminal


def long_frame(runs: list[dict]) -> pd.DataFrame:
    """One row per (run, task, protocol, metric) of the whole-task results."""
    rows = []
    labels = model_labels(runs)
    for r in runs:
        model = r["meta"]["model"]
        for g in r["summary"]["groups"].values():
            values = group_values(g)
            for metric, v in values.items():
                rows.append(
                    {
                        "model": labels[model["identity_hash"]],
                        "reference": model_kind(model) != "contender",
                        "task": g["task"],
                        "protocol": g["protocol"],
                        "metric": metric,
                        "mean": v["mean"],
                        "ci_low": v["ci_low"],
                        "ci_high": v["ci_high"],
                        "n": v["n"],
                        "complete": g.get("complete", False),
                        "run": str(r["path"]),
                    }
                )
    return pd.DataFrame(rows)


#: the terminal overview's columns (the full tables are `memorybench leaderboard`)
OVERVIEW = ("recall", "memory_horizon", "psnr", "lpips", "psnr_memory")


def print_overview(runs: list[dict], metrics: Sequence[str] = OVERVIEW) -> None:
    """Terminal tables, one per protocol: rows (task, model), columns the headline metrics."""
    from rich.table import Table

    from .console import console

    df = long_frame(runs)
    if df.empty:
        console.print("no results")
        return
    for protocol, pdf in df.groupby("protocol", sort=False):
        table = Table(
            title=f"memorybench results · {protocol} (mean ±95% CI over episodes)",
            header_style="bold",
            caption="recall: 0 = chance, 1 = perfect identification of what comes back | horizon: frames "
            "| PSNR/LPIPS: whole frame, mem = memory-only pixels",
        )
        table.add_column("task", overflow="fold")
        table.add_column("model", overflow="fold", min_width=12)
        for m in metrics:
            table.add_column(f"{registry.label(m)} {_arrow(m)}", justify="right", overflow="fold")
        for (task, model), sub in pdf.groupby(["task", "model"], sort=True):
            by = {r.metric: r._asdict() for r in sub.itertuples()}
            complete = bool(sub["complete"].all())
            name = model + ("" if complete else " [red](incomplete)[/]")
            table.add_row(task, name, *(fmt_ci(by.get(m), registry.decimals(m)) for m in metrics))
        console.print(table)
