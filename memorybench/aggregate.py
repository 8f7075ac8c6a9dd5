"""From per-frame and per-item records to the numbers in a table: means, confidence intervals,
memory horizon, retention.

Definitions (pinned; written into every run's ``run.json`` under ``aggregation``; what each metric
is comes from ``memorybench.metric_registry``):

* The unit of sampling is the **episode**. A task's score for a per-frame metric is the mean over
  episodes of the per-episode mean over its predicted frames (every episode weighs the same).
* **PSNR** is computed from the mean squared error: the mean over episodes of per-episode mean
  MSE, converted by ``10 log10(1 / MSE)`` (100 dB when the mean MSE is at most 1e-10); its CI is the
  bootstrap CI of the mean MSE, converted (the bounds swap: a lower MSE is a higher PSNR).
* Memory metrics (``*_memory``) use only the frames with at least ``MIN_MEMORY_PIXELS``
  memory-only pixels; an episode without such frames has no memory score and is left out of the
  memory means (the number of episodes used is reported, never silently zero).
* **recall** (``memorybench.recall``): per episode the mean item score over its memory items, then
  the mean over episodes; ``recall_acc``, ``recall_chance`` and ``false_recall`` likewise.
* **By memory gap**: frames are put in the task's ``gap_bins`` (``[b_i, b_i+1)``) by their
  ``memory_gap`` and items by their ``gap``, both counted from what the model observed under the
  run's protocol (``memorybench.episode``); only frames with memory-only pixels count. Per-episode
  mean within the bin, then the mean over the episodes that have frames (items) in it.
* **Memory horizon**: the lower edge (frames) of the largest gap bin whose ``recall`` 95% CI lower
  bound is above ``HORIZON_MIN`` = 0.05 (the model identifies content that old better than the band
  that the suite's validity test allows strategies without memory: chance + 0.05); 0 if none is;
  ``memory_horizon_bin`` gives the bin. (With a threshold of 0, a model at chance would show a
  horizon in about one gap bin in forty by the CI's own error rate.)
* **95% confidence intervals**: percentile bootstrap over episodes, ``resamples`` draws from a
  generator seeded by ``(seed, crc32 of the group name)`` (reproducible, order-independent).
* **Memory retention index** (secondary; on memory-only pixels): where a model sits between the
  no-memory baseline ``copy-last`` (0) and the ``perfect-memory`` reference (1), on an error ``E``:
  ``R = (E_copy_last - E_model) / (E_copy_last - E_perfect_memory)``, with the three means taken
  over the same episodes (paired bootstrap for the CI). ``retention`` uses the memory-pixel MSE,
  ``retention_lpips`` LPIPS and ``retention_ssim`` ``1 - SSIM``. It rewards blur (a mean frame is
  above 0 on it), which is why ``recall`` is the headline. ``R`` can leave [0, 1].
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import metric_registry as registry
from .episode import MIN_MEMORY_PIXELS

NO_MEMORY_REFERENCE, PERFECT_REFERENCE = "copy-last", "perfect-memory"
#: the per-item record columns averaged into the item metrics
ITEM_COLUMNS = {"recall": "score", "recall_acc": "hit", "recall_chance": "chance", "false_recall": "premature"}
PSNR_CAP_DB, PSNR_MIN_MSE = 100.0, 1e-10
#: a gap bin counts towards the memory horizon when its recall CI lower bound exceeds this
HORIZON_MIN = 0.05


def frame_metrics() -> dict[str, registry.Metric]:
    return {n: m for n, m in registry.all_metrics().items() if m.kind in ("frame", "psnr")}


@dataclass(frozen=True)
class AggregationConfig:
    resamples: int = 1000
    seed: int = 0
    ci: float = 0.95
    min_memory_pixels: int = MIN_MEMORY_PIXELS

    def __post_init__(self):
        from .errors import MemorybenchError

        if self.resamples < 2:
            raise MemorybenchError(f"the bootstrap needs at least 2 resamples, got {self.resamples}")
        if not 0 < self.ci < 1:
            raise MemorybenchError(f"the confidence level must be in (0, 1), got {self.ci}")

    def to_dict(self) -> dict:
        return {
            "unit": "episode",
            "statistic": "mean of per-episode means",
            "ci_method": "percentile bootstrap",
            "resamples": self.resamples,
            "seed": self.seed,
            "ci": self.ci,
            "min_memory_pixels": self.min_memory_pixels,
            "psnr": "10*log10(1/mean MSE), CI from the bootstrap of the mean MSE",
            "by_gap": "frames by memory_gap and items by gap, counted from what the model observed under the "
            "protocol (rollout: the context; teacher-forced: the true history)",
            "memory_horizon": f"lower edge of the largest gap bin whose recall CI lower bound is above {HORIZON_MIN}",
            "retention": "secondary. R = (E_copy_last - E_model) / (E_copy_last - E_perfect_memory); E = "
            "memory-pixel MSE (retention), LPIPS (retention_lpips), 1-SSIM (retention_ssim); "
            "paired bootstrap",
        }


def _rng(cfg: AggregationConfig, key: str) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, zlib.crc32(key.encode())])


def bootstrap_mean(values: np.ndarray, cfg: AggregationConfig, key: str) -> dict:
    """Mean and percentile-bootstrap CI of ``values`` (NaNs dropped); ``n`` = values used."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    if len(v) == 1:
        return {"mean": float(v[0]), "ci_low": None, "ci_high": None, "n": 1}
    idx = _rng(cfg, key).integers(0, len(v), size=(cfg.resamples, len(v)))
    boots = v[idx].mean(axis=1)
    a = (1 - cfg.ci) / 2
    return {
        "mean": float(v.mean()),
        "ci_low": float(np.quantile(boots, a)),
        "ci_high": float(np.quantile(boots, 1 - a)),
        "n": int(len(v)),
    }


def bootstrap_pooled(sums: np.ndarray, counts: np.ndarray, cfg: AggregationConfig, key: str) -> dict:
    """Mean over items pooled across episodes, ``sum(sums) / sum(counts)``, with a cluster bootstrap
    CI: episodes (the independent units) are resampled, each with all its items. ``n`` = episodes
    with items. (A mean of per-episode means would let an episode with one item in a gap bin weigh
    as much as one with a hundred: a noisy bin's CI would reach far above chance by luck.)"""
    s = np.asarray(sums, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)
    keep = c > 0
    s, c = s[keep], c[keep]
    if len(s) == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    point = float(s.sum() / c.sum())
    if len(s) == 1:
        return {"mean": point, "ci_low": None, "ci_high": None, "n": 1}
    idx = _rng(cfg, key).integers(0, len(s), size=(cfg.resamples, len(s)))
    boots = s[idx].sum(axis=1) / c[idx].sum(axis=1)
    a = (1 - cfg.ci) / 2
    return {
        "mean": point,
        "ci_low": float(np.quantile(boots, a)),
        "ci_high": float(np.quantile(boots, 1 - a)),
        "n": int(len(s)),
    }


def psnr_of_mse(mse: float | None) -> float | None:
    if mse is None or (isinstance(mse, float) and math.isnan(mse)):
        return None
    return PSNR_CAP_DB if mse <= PSNR_MIN_MSE else float(10.0 * math.log10(1.0 / mse))


def bootstrap_psnr(mse_values: np.ndarray, cfg: AggregationConfig, key: str) -> dict:
    """PSNR of the mean MSE over episodes, with the converted bootstrap CI of that mean."""
    b = bootstrap_mean(mse_values, cfg, key)
    return {
        "mean": psnr_of_mse(b["mean"]),
        "ci_low": psnr_of_mse(b["ci_high"]),
        "ci_high": psnr_of_mse(b["ci_low"]),
        "n": b["n"],
    }


def bootstrap_ratio(
    e_model: np.ndarray, e_none: np.ndarray, e_perfect: np.ndarray, cfg: AggregationConfig, key: str
) -> dict:
    """Retention ``(mean(e_none) - mean(e_model)) / (mean(e_none) - mean(e_perfect))``, paired by episode."""
    e = np.stack([e_model, e_none, e_perfect]).astype(np.float64)
    e = e[:, ~np.isnan(e).any(axis=0)]
    n = e.shape[1]
    if n == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}

    def ratio(m):  # m: [3, ...] means
        den = m[1] - m[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.abs(den) > 1e-12, (m[1] - m[0]) / den, np.nan)

    point = float(ratio(e.mean(axis=1)))
    if n == 1 or np.isnan(point):
        return {"mean": None if np.isnan(point) else point, "ci_low": None, "ci_high": None, "n": n}
    idx = _rng(cfg, key).integers(0, n, size=(cfg.resamples, n))
    boots = ratio(e[:, idx].mean(axis=2))
    boots = boots[~np.isnan(boots)]
    a = (1 - cfg.ci) / 2
    return {"mean": point, "ci_low": float(np.quantile(boots, a)), "ci_high": float(np.quantile(boots, 1 - a)), "n": n}


def prepare_frames(df: pd.DataFrame, cfg: AggregationConfig) -> pd.DataFrame:
    """Blank memory metrics of frames with too few memory-only pixels; add ``dssim_memory``."""
    df = df.copy()
    few = df["memory_pixels"] < cfg.min_memory_pixels
    for c in df.columns:
        if c.endswith("_memory"):
            df.loc[few, c] = np.nan
    if "ssim_memory" in df:
        df["dssim_memory"] = 1.0 - df["ssim_memory"]
    return df


def episode_means(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Per-episode NaN-aware means of ``columns`` (index: episode)."""
    cols = [c for c in columns if c in df]
    return df.groupby("episode")[cols].mean()


def gap_bin_labels(gap_bins: Sequence[int]) -> list[str]:
    return [f"[{a}, {b})" for a, b in zip(gap_bins[:-1], gap_bins[1:])]


def _frame_stats(df: pd.DataFrame, names, cfg: AggregationConfig, key: str) -> dict:
    """Every frame/psnr metric of ``names`` over the frames ``df`` (episode means, then bootstrap)."""
    metrics = frame_metrics()
    names = [n for n in names if n in metrics and (metrics[n].source or n) in df]
    ep = episode_means(df, [metrics[n].source or n for n in names])
    out = {}
    for n in names:
        m = metrics[n]
        if m.kind == "psnr":
            out[n] = bootstrap_psnr(ep[m.source].to_numpy(), cfg, f"{key}/{n}")
        else:
            out[n] = bootstrap_mean(ep[n].to_numpy(), cfg, f"{key}/{n}")
    return out


def _item_stats(items: pd.DataFrame, cfg: AggregationConfig, key: str) -> dict:
    if items is None or items.empty:
        return {}
    it = items.copy()
    it["premature"] = it["premature"].map(
        lambda v: np.nan if v is None or (isinstance(v, float) and math.isnan(v)) else float(bool(v))
    )
    cols = list(ITEM_COLUMNS.values())
    g = it.groupby("episode")[cols]
    sums, counts = g.sum(min_count=1).fillna(0.0), g.count()
    return {
        name: bootstrap_pooled(sums[col].to_numpy(), counts[col].to_numpy(), cfg, f"{key}/{name}")
        for name, col in ITEM_COLUMNS.items()
    }


def memory_horizon(by_gap: list[dict]) -> tuple[int, list[int] | None]:
    """``(lower edge, [lo, hi])`` of the largest gap bin whose recall CI lower bound is above
    ``HORIZON_MIN``; ``(0, None)`` when none is."""
    best = None
    for b in by_gap:
        r = (b.get("metrics") or {}).get("recall") or {}
        if r.get("ci_low") is not None and r["ci_low"] > HORIZON_MIN:
            best = b["bin"]
    return (int(best[0]), list(best)) if best else (0, None)


def summarize_group(
    df: pd.DataFrame,
    gap_bins: Sequence[int],
    cfg: AggregationConfig,
    key: str,
    references: dict[str, pd.DataFrame] | None = None,
    items: pd.DataFrame | None = None,
) -> dict:
    """Aggregate one (task, protocol) group of per-frame records (and per-item records) of one model.

    ``memory_gap`` in ``df`` and ``gap`` in ``items`` must already be the protocol's gaps.
    ``references`` maps ``"copy-last"`` and ``"perfect-memory"`` to their per-frame records on the
    same task and protocol (for the retention index); missing means no index.
    """
    df = prepare_frames(df, cfg)
    names = list(frame_metrics())
    has_mem = df["mse_memory"].notna().to_numpy() if "mse_memory" in df else np.zeros(len(df), bool)
    out: dict = {
        "episodes": int(df["episode"].nunique()),
        "frames": int(len(df)),
        "memory_frames": int(has_mem.sum()),
        "items": 0 if items is None else int(len(items)),
        "metrics": {**_frame_stats(df, names, cfg, key), **_item_stats(items, cfg, key)},
    }

    refs = None
    if references and NO_MEMORY_REFERENCE in references and PERFECT_REFERENCE in references:
        refs = {k: prepare_frames(v, cfg) for k, v in references.items()}
        out["retention"] = _retention(df, refs, cfg, key)

    gaps = df["memory_gap"].to_numpy()
    gap_names = [n for n, m in registry.all_metrics().items() if m.by_gap and m.kind in ("frame", "psnr")]
    by_gap = []
    for label, lo, hi in zip(gap_bin_labels(gap_bins), gap_bins[:-1], gap_bins[1:]):
        sel = has_mem & (gaps >= lo) & (gaps < hi)
        sub = df[sel]
        isub = items[(items["gap"] >= lo) & (items["gap"] < hi)] if items is not None and not items.empty else None
        entry = {
            "bin": [int(lo), int(hi)],
            "label": label,
            "frames": int(sel.sum()),
            "episodes": int(sub["episode"].nunique()),
            "items": 0 if isub is None else int(len(isub)),
        }
        metrics = {}
        if len(sub):
            metrics.update(_frame_stats(sub, gap_names, cfg, f"{key}/{label}"))
            if refs is not None:
                rsub = {
                    k: v[(v["memory_gap"] >= lo) & (v["memory_gap"] < hi) & v["mse_memory"].notna()]
                    for k, v in refs.items()
                }
                entry["retention"] = _retention(sub, rsub, cfg, f"{key}/{label}")
        if isub is not None and len(isub):
            metrics.update(_item_stats(isub, cfg, f"{key}/{label}"))
        if metrics:
            entry["metrics"] = metrics
        by_gap.append(entry)
    out["by_gap"] = by_gap
    horizon, horizon_bin = memory_horizon(by_gap)
    if items is not None and not items.empty:
        out["memory_horizon"] = horizon
        out["memory_horizon_bin"] = horizon_bin
    out["by_step"] = by_step(df, cfg, key)
    return out


STEP_METRICS = ("psnr", "ssim", "lpips")


def by_step(df: pd.DataFrame, cfg: AggregationConfig, key: str) -> dict:
    """Whole-frame metrics at each step of the generated segment: mean over episodes and a
    percentile-bootstrap CI (episodes resampled jointly for all steps). PSNR from the mean MSE."""
    out: dict = {"step": sorted(int(s) for s in df["step"].unique())}
    for m in STEP_METRICS:
        col = "mse" if m == "psnr" else m
        if col not in df:
            continue
        table = df.pivot_table(index="episode", columns="step", values=col, aggfunc="mean")
        v = table.to_numpy(dtype=np.float64)
        mean = np.nanmean(v, axis=0)
        if v.shape[0] > 1:
            idx = _rng(cfg, f"{key}/steps/{m}").integers(0, v.shape[0], size=(cfg.resamples, v.shape[0]))
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                boots = np.nanmean(v[idx], axis=1)
            a = (1 - cfg.ci) / 2
            lo, hi = np.nanquantile(boots, a, axis=0), np.nanquantile(boots, 1 - a, axis=0)
        else:
            lo = hi = np.full_like(mean, np.nan)
        if m == "psnr":
            conv = np.vectorize(lambda x: np.nan if np.isnan(x) else psnr_of_mse(float(x)), otypes=[float])
            mean, lo, hi = conv(mean), conv(hi), conv(lo)
        out[m] = {"mean": _list(mean), "ci_low": _list(lo), "ci_high": _list(hi)}
    return out


def _list(a: np.ndarray) -> list:
    return [None if np.isnan(x) else round(float(x), 6) for x in a]


def _retention(df: pd.DataFrame, refs: dict[str, pd.DataFrame], cfg: AggregationConfig, key: str) -> dict:
    cols = ("mse_memory", "lpips_memory", "dssim_memory")
    mine = episode_means(df, cols)
    none = episode_means(refs[NO_MEMORY_REFERENCE], cols).reindex(mine.index)
    perf = episode_means(refs[PERFECT_REFERENCE], cols).reindex(mine.index)
    out = {}
    for name, col in (
        ("retention", "mse_memory"),
        ("retention_lpips", "lpips_memory"),
        ("retention_ssim", "dssim_memory"),
    ):
        if col in mine and col in none and col in perf:
            out[name] = bootstrap_ratio(
                mine[col].to_numpy(), none[col].to_numpy(), perf[col].to_numpy(), cfg, f"{key}/{name}"
            )
    return out


def records_frame(rows: Iterable[dict]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    if df.empty:
        return df
    for m in frame_metrics():
        if m in df:
            df[m] = pd.to_numeric(df[m], errors="coerce").astype(float)
    for c in ("mse", "mse_known", "mse_memory"):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def items_frame(rows: Iterable[dict]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=["episode", "item", "frame", "gap", "hit", "chance", "premature", "score"])
    return df
