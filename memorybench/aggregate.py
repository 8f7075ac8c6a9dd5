"""From per-frame records to the numbers in a table: means, confidence intervals, retention.

Definitions (pinned; written into every run's ``run.json`` under ``aggregation``):

* The unit of sampling is the **episode**. A task's score for a metric is the mean over episodes
  of the per-episode mean over its predicted frames (every episode weighs the same).
* Memory metrics (``*_memory``) use only the frames with at least ``MIN_MEMORY_PIXELS``
  memory-only pixels; an episode without such frames has no memory score and is left out of the
  memory means (the number of episodes used is reported, never silently zero).
* **By memory gap**: frames are put in the task's ``gap_bins`` (``[b_i, b_i+1)``) by their
  ``memory_gap``; only frames with memory-only pixels count. Per-episode mean within the bin,
  then the mean over the episodes that have frames in it.
* **95% confidence intervals**: percentile bootstrap over episodes, ``resamples`` draws from a
  generator seeded by ``(seed, crc32 of the group name)`` (reproducible, order-independent).
* **Memory retention index** (on memory-only pixels): where a model sits between the no-memory
  baseline ``copy-last`` (0) and the ``perfect-memory`` reference (1), on an error ``E``:
  ``R = (E_copy_last - E_model) / (E_copy_last - E_perfect_memory)``, with the three means taken
  over the same episodes (paired bootstrap for the CI). The headline index uses the mean squared
  error on memory-only pixels (``E = 10^(-PSNR/10)``, linear in error, unlike PSNR whose 100 dB
  cap would dominate); ``retention_lpips`` uses LPIPS and ``retention_ssim`` uses ``1 - SSIM``.
  ``R`` can leave [0, 1]: below 0 is worse than copying the last frame.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .episode import MIN_MEMORY_PIXELS

BASE_METRICS = ("psnr", "ssim", "lpips")
VARIANTS = ("", "_known", "_memory")
METRICS = tuple(m + v for v in VARIANTS for m in BASE_METRICS)
HIGHER_IS_BETTER = {m + v: m != "lpips" for v in VARIANTS for m in BASE_METRICS}
HIGHER_IS_BETTER.update({"retention": True, "retention_lpips": True, "retention_ssim": True})
NO_MEMORY_REFERENCE, PERFECT_REFERENCE = "copy-last", "perfect-memory"


@dataclass(frozen=True)
class AggregationConfig:
    resamples: int = 1000
    seed: int = 0
    ci: float = 0.95
    min_memory_pixels: int = MIN_MEMORY_PIXELS

    def __post_init__(self):  # checked when built, so a run never ends without its summary
        from .errors import MemorybenchError

        if self.resamples < 1 or not 0 < self.ci < 1:
            raise MemorybenchError(f"aggregation: need resamples >= 1 and 0 < ci < 1, got resamples={self.resamples}, "
                                   f"ci={self.ci}")

    def to_dict(self) -> dict:
        return {"unit": "episode", "statistic": "mean of per-episode means", "ci_method": "percentile bootstrap",
                "resamples": self.resamples, "seed": self.seed, "ci": self.ci,
                "min_memory_pixels": self.min_memory_pixels,
                "retention": "R = (E_copy_last - E_model) / (E_copy_last - E_perfect_memory); E = memory-pixel MSE "
                             "(retention), LPIPS (retention_lpips), 1-SSIM (retention_ssim); paired bootstrap"}


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
    return {"mean": float(v.mean()), "ci_low": float(np.quantile(boots, a)), "ci_high": float(np.quantile(boots, 1 - a)),
            "n": int(len(v))}


def bootstrap_ratio(e_model: np.ndarray, e_none: np.ndarray, e_perfect: np.ndarray, cfg: AggregationConfig,
                    key: str) -> dict:
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
    """Blank memory metrics of frames with too few memory-only pixels; add the error columns."""
    df = df.copy()
    few = df["memory_pixels"] < cfg.min_memory_pixels
    for m in BASE_METRICS:
        if f"{m}_memory" in df:
            df.loc[few, f"{m}_memory"] = np.nan
    if "psnr_memory" in df:
        df["mse_memory"] = np.power(10.0, -df["psnr_memory"] / 10.0)
    if "ssim_memory" in df:
        df["dssim_memory"] = 1.0 - df["ssim_memory"]
    return df


def episode_means(df: pd.DataFrame, columns) -> pd.DataFrame:
    """Per-episode NaN-aware means of ``columns`` (index: episode)."""
    cols = [c for c in columns if c in df]
    return df.groupby("episode")[cols].mean()


def gap_bin_labels(gap_bins) -> list[str]:
    return [f"[{a}, {b})" for a, b in zip(gap_bins[:-1], gap_bins[1:])]


def summarize_group(df: pd.DataFrame, gap_bins, cfg: AggregationConfig, key: str,
                    references: dict[str, pd.DataFrame] | None = None) -> dict:
    """Aggregate one (task, protocol) group of per-frame records of one model.

    ``references`` maps ``"copy-last"`` and ``"perfect-memory"`` to their prepared per-frame
    records on the same task and protocol (for the retention index); missing means no index.
    """
    df = prepare_frames(df, cfg)
    ep = episode_means(df, METRICS + ("mse_memory", "dssim_memory"))
    out: dict = {"episodes": int(df["episode"].nunique()), "frames": int(len(df)),
                 "memory_frames": int(df["psnr_memory"].notna().sum()) if "psnr_memory" in df else 0,
                 "metrics": {m: bootstrap_mean(ep[m].to_numpy(), cfg, f"{key}/{m}") for m in METRICS if m in ep}}

    refs = None
    if references and NO_MEMORY_REFERENCE in references and PERFECT_REFERENCE in references:
        refs = {k: prepare_frames(v, cfg) for k, v in references.items()}
        out["retention"] = _retention(df, refs, cfg, key)

    gaps = df["memory_gap"].to_numpy()
    has_mem = df["psnr_memory"].notna().to_numpy() if "psnr_memory" in df else np.zeros(len(df), bool)
    by_gap = []
    for label, lo, hi in zip(gap_bin_labels(gap_bins), gap_bins[:-1], gap_bins[1:]):
        sel = has_mem & (gaps >= lo) & (gaps < hi)
        sub = df[sel]
        entry = {"bin": [int(lo), int(hi)], "label": label, "frames": int(sel.sum()),
                 "episodes": int(sub["episode"].nunique())}
        if len(sub):
            e = episode_means(sub, METRICS + ("mse_memory", "dssim_memory"))
            entry["metrics"] = {m: bootstrap_mean(e[m].to_numpy(), cfg, f"{key}/{label}/{m}")
                                for m in METRICS if m.endswith("_memory") and m in e}
            if refs is not None:
                rsub = {k: v[(v["memory_gap"] >= lo) & (v["memory_gap"] < hi) & v["psnr_memory"].notna()]
                        for k, v in refs.items()}
                entry["retention"] = _retention(sub, rsub, cfg, f"{key}/{label}")
        by_gap.append(entry)
    out["by_gap"] = by_gap
    out["by_step"] = by_step(df, cfg, key)
    return out


STEP_METRICS = ("psnr", "ssim", "lpips")


def by_step(df: pd.DataFrame, cfg: AggregationConfig, key: str) -> dict:
    """Whole-frame metrics at each step of the generated segment: mean over episodes and a
    percentile-bootstrap CI (episodes resampled jointly for all steps)."""
    out: dict = {"step": sorted(int(s) for s in df["step"].unique())}
    for m in STEP_METRICS:
        if m not in df:
            continue
        table = df.pivot_table(index="episode", columns="step", values=m, aggfunc="mean")
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
    for name, col in (("retention", "mse_memory"), ("retention_lpips", "lpips_memory"), ("retention_ssim", "dssim_memory")):
        if col in mine and col in none and col in perf:
            out[name] = bootstrap_ratio(mine[col].to_numpy(), none[col].to_numpy(), perf[col].to_numpy(), cfg,
                                        f"{key}/{name}")
    return out


def records_frame(rows) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    if df.empty:
        return df
    for m in METRICS:
        if m in df:
            df[m] = pd.to_numeric(df[m], errors="coerce").astype(float)
    return df
