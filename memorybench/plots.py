"""Figures from run summaries (matplotlib; PNG and PDF; sized for a paper column).

* ``memory_curves``: a memory metric against the memory gap (log-x), one line per model with its
  95% CI band, one panel per task. For ``recall`` (the headline) the chance line (0) and the no-memory
  band are drawn and each model's memory horizon is marked on its line; where a line falls into
  the band is where that model's memory fails. Values capped by the PSNR cap (100 dB: the oracles)
  are left off the axis and named in a note instead of stretching it.
* ``step_curves``: a whole-frame metric over the generated segment (step 0 is the first frame
  after the context), one line per model with its CI band, one panel per task.
* ``efficiency_curves``: per-frame cost against context length (from ``memorybench profile``).
* ``figure_set``: which of these a set of runs and profiles gets (``memorybench plot``, ``report``,
  ``leaderboard --format html`` and ``profile`` all draw theirs from it).

Calibration references are drawn dashed and grey-ish so that contenders stand out. Every model
keeps one colour in every panel and every figure (``model_colour``: the reference zoo has fixed
colours, other models a colour derived from their name).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import metric_registry as registry
from .leaderboard import LABELS, model_labels

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLUMN_WIDTH_IN = 3.4  # one column of a two-column paper
REFERENCE_STYLE = {
    "copy-last": ("#7f7f7f", (0, (4, 2))),
    "perfect-memory": ("#2f2f2f", (0, (1, 1))),
    "ground-truth": ("#bbbbbb", (0, (1, 2))),
    "mean-frame": ("#a0a0a0", (0, (6, 2, 1, 2))),
    "context-mean-colour": ("#b0b0b0", (0, (3, 1))),
    "recent-mean": ("#999999", (0, (2, 2))),
    "recent-median": ("#8a8a8a", (0, (5, 1))),
    "blur-last": ("#c4c4c4", (0, (1, 1, 3, 1))),
    "shift-last": ("#6f6f6f", (0, (2, 1, 2, 3))),
    "inpaint-last": ("#5f5f5f", (0, (4, 1, 1, 1))),
}
#: fixed colours of the reference zoo (colour-blind-safe Okabe-Ito palette)
ZOO_COLOURS = {
    "lssvwm": "#D55E00",
    "full-attention": "#0072B2",
    "frame-local-attention": "#56B4E9",
    "s4": "#009E73",
    "mamba": "#CC79A7",
    "diffusion": "#E69F00",
}
_OTHER_COLOURS = ("#F0E442", "#882255", "#44AA99", "#117733", "#332288", "#AA4499", "#999933", "#661100")
PSNR_CAP = 100.0


def model_colour(label: str) -> str:
    """The colour of a model in every figure: fixed for the zoo and the references, else from its name."""
    import zlib

    base = label.split(" (")[0]
    if base in REFERENCE_STYLE:
        return REFERENCE_STYLE[base][0]
    if base in ZOO_COLOURS:
        return ZOO_COLOURS[base]
    return _OTHER_COLOURS[zlib.crc32(label.encode()) % len(_OTHER_COLOURS)]


def _setup():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 7,
            "axes.titlesize": 7,
            "axes.labelsize": 7,
            "legend.fontsize": 6,
            "xtick.labelsize": 6,
            "ytick.labelsize": 6,
            "lines.linewidth": 1.2,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "svg.hashsalt": "memorybench",
            "pdf.fonttype": 42,
        }
    )
    return plt


def _panels(n: int, plt, height_per_row: float = 1.5):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    width = COLUMN_WIDTH_IN if cols == 1 else 2.2 * cols
    fig, axes = plt.subplots(rows, cols, figsize=(width, height_per_row * rows + 0.6), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _series(runs: list[dict], protocol: str):
    """(label, privileged, group) for every run's group of ``protocol``, grouped by task."""
    labels = model_labels(runs)
    by_task: dict[str, list] = {}
    for r in runs:
        m = r["meta"]["model"]
        for g in r["summary"]["groups"].values():
            if g["protocol"] == protocol:
                by_task.setdefault(g["task"], []).append((labels[m["identity_hash"]], bool(m.get("privileged")), g))
    return dict(sorted(by_task.items()))


def _style(label: str, privileged: bool, i: int = 0):
    base = label.split(" (")[0]
    if base in REFERENCE_STYLE:
        colour, dash = REFERENCE_STYLE[base]
        return {"color": colour, "linestyle": dash, "linewidth": 1.0}
    return {"color": model_colour(label), "linestyle": "-"}


def memory_curves(
    runs: list[dict], metric: str = "recall", protocol: str = "rollout", include: Sequence[str] | None = None
) -> Figure:
    """Figure: ``metric`` (``recall``, a memory-only metric or a retention index) against the memory gap."""
    from .aggregate import HORIZON_MIN

    plt = _setup()
    tasks = _series(runs, protocol)
    if not tasks:
        raise ValueError(f"no results for protocol {protocol!r}")
    fig, axes = _panels(len(tasks), plt)
    handles, capped = {}, set()
    m = registry.all_metrics().get(metric)
    for ax, (task, series) in zip(axes, tasks.items()):
        for label, priv, g in series:
            if include and label not in include:
                continue
            xs, ys, lo, hi = [], [], [], []
            for b in g.get("by_gap", []):
                v = {**b.get("metrics", {}), **b.get("retention", {})}.get(metric)
                if not v or v.get("mean") is None:
                    continue
                if m is not None and m.kind == "psnr" and v["mean"] >= PSNR_CAP:
                    capped.add(label)
                    continue
                xs.append(math.sqrt(b["bin"][0] * b["bin"][1]))  # geometric centre of [lo, hi)
                ys.append(v["mean"])
                lo.append(v["ci_low"] if v.get("ci_low") is not None else v["mean"])
                hi.append(v["ci_high"] if v.get("ci_high") is not None else v["mean"])
            if not xs:
                continue
            style = _style(label, priv)
            (line,) = ax.plot(xs, ys, marker="o", markersize=2.5, label=label, **style)
            ax.fill_between(xs, lo, hi, color=style["color"], alpha=0.15, linewidth=0)
            handles.setdefault(label, line)
            hb = g.get("memory_horizon_bin") if metric == "recall" else None
            if hb:
                x = math.sqrt(hb[0] * hb[1])
                y = ys[xs.index(x)] if x in xs else None
                if y is not None:
                    ax.plot([x], [y], marker="|", markersize=9, markeredgewidth=1.6, color=style["color"])
        if metric == "recall":
            ax.axhline(0.0, color="black", linewidth=0.7)
            ax.axhspan(-HORIZON_MIN, HORIZON_MIN, color="grey", alpha=0.12, linewidth=0)
            ax.set_ylim(-0.1, 1.05)
        ax.set_xscale("log", base=2)
        ax.set_title(task)
        ax.set_xlabel("memory gap (frames)")
        ax.set_ylabel(f"{registry.label(metric)} {'↑' if registry.higher_is_better(metric) else '↓'}")
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=max(1, min(4, len(handles))), frameon=False)
    title = f"Memory curves ({protocol})"
    if metric == "recall":
        title += ": 0 = chance (grey: no-memory band), | = memory horizon"
    if capped:
        title += f"; off the axis at {PSNR_CAP:.0f} dB: {', '.join(sorted(capped))}"
    fig.suptitle(title, fontsize=7)
    fig.tight_layout(rect=(0, 0.1 + 0.03 * (len(handles) > 4), 1, 0.96))
    return fig


def step_curves(runs: list[dict], metric: str = "psnr", protocol: str = "rollout") -> Figure:
    """Figure: a whole-frame metric over the steps of the generated segment."""
    plt = _setup()
    tasks = _series(runs, protocol)
    if not tasks:
        raise ValueError(f"no results for protocol {protocol!r}")
    fig, axes = _panels(len(tasks), plt)
    handles = {}
    for ax, (task, series) in zip(axes, tasks.items()):
        for label, priv, g in series:
            st = g.get("by_step", {})
            if metric not in st:
                continue
            x = np.array(st["step"])
            y = np.array([np.nan if v is None else v for v in st[metric]["mean"]], float)
            lo = np.array([np.nan if v is None else v for v in st[metric]["ci_low"]], float)
            hi = np.array([np.nan if v is None else v for v in st[metric]["ci_high"]], float)
            if metric == "psnr" and np.nanmin(y, initial=np.inf) >= PSNR_CAP:
                continue  # an oracle at the cap would stretch the axis to 100 dB
            style = _style(label, priv)
            (line,) = ax.plot(x, y, label=label, **style)
            ax.fill_between(x, lo, hi, color=style["color"], alpha=0.15, linewidth=0)
            handles.setdefault(label, line)
        ax.set_title(task)
        ax.set_xlabel("frames after the context")
        ax.set_ylabel(f"{LABELS.get(metric, metric)} {'↑' if registry.higher_is_better(metric) else '↓'}")
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=max(1, min(4, len(handles))), frameon=False)
    fig.suptitle(f"Quality over the generated frames ({protocol})", fontsize=8)
    fig.tight_layout(rect=(0, 0.1 + 0.03 * (len(handles) > 4), 1, 0.96))
    return fig


def efficiency_curves(profiles: list[dict], field: str = "latency_ms") -> Figure:
    """Figure: per-frame cost against context length (log-log), one line per model."""
    plt = _setup()
    fig, axes = _panels(1, plt, height_per_row=2.0)
    ax = axes[0]
    for prof in profiles:
        pts = sorted(prof["points"], key=lambda p: p["context"])
        x = [p["context"] for p in pts]
        y = [p[field] for p in pts]
        style = _style(prof["model"], False)
        ax.plot(
            x,
            y,
            marker="o",
            markersize=2.5,
            label=f"{prof['model']} (slope {prof['fits'][field]['slope']:.2f})",
            **style,
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (frames)")
    ax.set_ylabel(
        {
            "latency_ms": "latency per frame (ms)",
            "peak_memory_mb": "peak memory (MiB)",
            "state_mb": "state / cache size (MiB)",
        }.get(field, field)
    )
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def save(fig: Figure, out: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``out.<fmt>`` for each format (no timestamps in the files)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        p = out.with_suffix(f".{fmt}")
        meta = {"Software": None} if fmt == "png" else {"Creator": None, "Producer": None, "CreationDate": None}
        fig.savefig(p, dpi=200, metadata=meta)
        paths.append(p)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


#: the memory-only metrics and whole-frame metrics drawn by default (``memorybench plot``)
MEMORY_CURVE_METRICS = ("psnr_memory", "lpips_memory", "retention")
STEP_CURVE_METRICS = ("psnr", "lpips")


@dataclass(frozen=True)
class FigureSpec:
    """One figure of a set: what it shows (``kind``: efficiency, memory-curve or steps; the metric or
    profile field; the protocol, None for efficiency) and how to draw it (a new matplotlib figure)."""

    kind: str
    metric: str
    protocol: str | None
    draw: Callable[[], Any]

    @property
    def stem(self) -> str:
        """The file name without its suffix: ``efficiency-latency_ms``, ``memory-curve-psnr_memory-rollout``."""
        return f"{self.kind}-{self.metric}" + (f"-{self.protocol}" if self.protocol else "")

    @property
    def caption(self) -> str:
        """The figure's heading in a report's HTML page."""
        if self.kind == "efficiency":
            return f"{self.metric} per generated frame vs context length"
        if self.kind == "memory-curve":
            return f"{self.metric} vs memory gap ({self.protocol})"
        return f"{self.metric} over the generated frames ({self.protocol})"


def has_metric(runs: list[dict], metric: str, protocol: str) -> bool:
    """Whether any run has values of ``metric`` by memory gap under ``protocol`` (retention needs the
    references: a run made with --no-retention has none)."""
    return any(
        metric in {**b.get("metrics", {}), **b.get("retention", {})}
        for r in runs
        for g in r["summary"]["groups"].values()
        if g["protocol"] == protocol
        for b in g.get("by_gap", [])
    )


def figure_set(
    runs: Sequence[dict] = (),
    protocols: Sequence[str] = (),
    profiles: Sequence[dict] = (),
    memory_metrics: Sequence[str] = MEMORY_CURVE_METRICS,
    step_metrics: Sequence[str] = STEP_CURVE_METRICS,
) -> list[FigureSpec]:
    """The figures of ``runs`` and ``profiles``, in this order: the efficiency curves of every profile
    field that has a fit; then for each protocol the memory curves of the ``memory_metrics`` the runs
    hold by memory gap, and the step curves of the ``step_metrics``. Nothing is drawn until ``draw``."""
    from .profile import FIELDS

    runs, profiles = list(runs), list(profiles)
    figs = [
        FigureSpec("efficiency", field, None, lambda field=field: efficiency_curves(profiles, field))
        for field in (FIELDS if profiles else ())
        if any(p["fits"][field]["slope"] is not None for p in profiles)
    ]
    for p in protocols:
        figs += [
            FigureSpec("memory-curve", m, p, lambda m=m, p=p: memory_curves(runs, m, p))
            for m in memory_metrics
            if has_metric(runs, m, p)
        ]
        figs += [FigureSpec("steps", m, p, lambda m=m, p=p: step_curves(runs, m, p)) for m in step_metrics]
    return figs
