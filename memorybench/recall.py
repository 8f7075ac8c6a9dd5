"""Identification accuracy: the headline memory metric, ``recall``.

Per-pixel error on memory pixels (MSE, PSNR) rewards blur: a mean frame is closer on average to
content it has never seen than a memory that recalls it one pixel off. ``recall`` asks instead
whether the model *identifies* the remembered content (definitions pinned; written into every run):

* Each episode carries **memory items** (``memorybench.episode.MemoryItems``): in predicted frame
  ``t``, on pixels ``R`` (one object, one tile...), the task could have shown any of ``N``
  *candidates* (``Generator.item_candidates``: e.g. every object of the object space in that slot,
  every colour of the palette for that tile); the truth is one of them.
* **Hit**: the prediction's mean squared error on ``R`` (over pixels and channels, predictions
  quantised to 8 bits as for every metric) to the true candidate is strictly smaller than to every
  other offered candidate: ``hit = 1``; if ``k`` other candidates tie with the truth,
  ``hit = 1 / (k + 1)``; else ``0``. Candidates a model without memory could rule out from the
  recent true frames are not offered (``MemoryItems.exclude``), nor candidates that show the very
  same pixels as the truth on ``R`` (no prediction could tell them apart; an item left with no
  foil is no test).
* **Chance** of an item: ``c = 1 / (number of offered candidates)``. A prediction made without
  memory of the content is equally likely to be closest to any candidate: its expected hit is
  ``c``, whatever it predicts (means, blur, inpainting, copies).
* **False recall** (families with ``Generator.premature_check``, where the frame before an item
  shows a distinct visible state, e.g. a closed curtain): content painted *before* it is visible.
  If frame ``t - 1`` was predicted too and the truth on ``R`` differs between ``t - 1`` and ``t``,
  the item is **premature** when the prediction of ``t - 1`` on ``R`` is closer to the truth of
  ``t`` than to the truth of ``t - 1`` (an object painted while its curtain is still closed). A
  premature item gets no credit: its hit counts as chance. (The rule can only lower a score.)
* **Score** of an item: ``(hit - c) / (1 - c)``: 0 at chance, 1 for a perfect identification,
  negative below chance. ``recall`` is its mean over the items (pooled over episodes, with a
  cluster-bootstrap CI that resamples episodes with all their items); ``recall_acc`` the mean raw hit, ``recall_chance`` the mean
  ``c``, ``false_recall`` the fraction of premature items.
* **Recent content is not memory**: an item is a test only when its content is not visible in the
  last ``K = recent_window`` frames the model *observed*: the frames ``t - K .. t - 1`` under
  ``teacher-forced`` (the memory mask's definition), the last ``K`` context frames under
  ``rollout`` (the model observes nothing after them: an item whose content the context's tail
  shows is skipped there, since a buffer of the last observed frames, e.g. a motion-compensated
  copy of the last context frame, would predict it).
* The **gap** of an item is counted from what the model observed: under ``rollout`` the frames
  since its content was last visible in a *context* frame, under ``teacher-forced`` in the true
  history (``memorybench.episode``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .adapter import WorldModel
    from .aggregate import AggregationConfig
    from .episode import Episode
    from .generators.base import Generator
    from .spec import TaskSpec

RECALL_DEFINITION = {
    "items": "memory items of the task data (MemoryItems): a predicted frame, the pixels of one piece of remembered "
    "content, and the candidates the task could have shown there (the family's item_candidates)",
    "hit": "1 if the prediction's MSE over the item's pixels and channels (predictions quantised to uint8) to the true "
    "candidate is strictly below its MSE to every other offered candidate; 1/(k+1) when k others tie; else 0",
    "chance": "1 / number of offered candidates (candidates a no-memory model can rule out from the recent true frames "
    "are not offered, nor candidates identical to the truth on the item's pixels)",
    "false_recall": "premature: frame t-1 was predicted, the truth on the item's pixels differs between t-1 and t, and "
    "the prediction of t-1 is closer to the truth of t than to the truth of t-1; a premature item's "
    "hit counts as chance",
    "score": "(hit - chance) / (1 - chance); recall = mean score over the items (pooled over episodes; CI: "
    "cluster bootstrap resampling episodes); "
    "recall_acc = mean hit; recall_chance = mean chance; false_recall = fraction premature",
    "recent": "an item counts only if its content is not visible in the last recent_window observed frames (rollout: "
    "the last recent_window context frames; teacher-forced: the memory mask's age > recent_window)",
    "gap": "rollout: frames since the content was last visible in a context frame; teacher-forced: since it was last "
    "visible in the true history",
}

#: item distances equal within this (relative) tolerance count as ties
TIE_RTOL = 1e-9


def _mse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared error over the last two axes (pixels, channels), float64; broadcasts ``a`` [.., P, 3]."""
    d = a.astype(np.float64) - b.astype(np.float64)
    return (d * d).mean(axis=(-2, -1))


def _hit(dist: np.ndarray, truth: int, offered: np.ndarray) -> tuple[float, float]:
    """``(hit, chance)`` from the distances ``[N]`` to every candidate and the offered mask ``[N]``."""
    dt = dist[truth]
    others = dist[offered]
    tol = TIE_RTOL * max(abs(dt), 1e-12)
    closer = int((others < dt - tol).sum())
    ties = int((np.abs(others - dt) <= tol).sum()) - 1  # the truth is among the offered
    hit = 0.0 if closer else 1.0 / (1 + ties)
    return hit, 1.0 / int(offered.sum())


def score_items(generator: Generator, episode: Episode, pred_u8: np.ndarray, start: int, protocol: str) -> list[dict]:
    """One record per memory item of ``episode`` whose frame is among the predictions.

    ``pred_u8`` is uint8 ``[N, H, W, 3]``: the predictions of frames ``start .. start + N - 1``.
    Records: ``episode, item, frame, gap, hit, chance, premature (True/False/None), score``.
    """
    items = episode.items
    if items is None or len(items) == 0:
        return []
    n, H, W = pred_u8.shape[0], pred_u8.shape[1], pred_u8.shape[2]
    ncand = generator.num_candidates(generator.spec)
    gaps = items.gap_rollout if protocol == "rollout" else items.gap
    recent = int(generator.spec.recent_window)
    pred = pred_u8.reshape(n, H * W, 3)
    truth_frames = episode.frames.reshape(episode.frames.shape[0], H * W, 3)
    out = []
    for i in range(len(items)):
        t = int(items.frame[i])
        if not start <= t < start + n:
            continue
        if protocol == "rollout" and int(gaps[i]) <= (t - start) + recent:
            continue  # its content is in the last K observed (context) frames: no memory test under rollout
        pix = items.pixels_of(i)
        p = pred[t - start, pix]  # [P, 3]
        cands = generator.item_candidates(episode, i)  # [N, P, 3]
        if cands.shape != (ncand, len(pix), 3):
            raise ValueError(
                f"{generator.family}: item_candidates returned {cands.shape}, expected {(ncand, len(pix), 3)}"
            )
        truth = int(items.truth[i])
        offered = np.ones(ncand, bool)
        offered[items.excluded(i)] = False
        offered &= ~(cands == cands[truth]).all(axis=(1, 2))  # the same picture as the truth here: not a foil
        offered[truth] = True
        if offered.sum() < 2:
            continue  # nothing to tell the truth from on these pixels: no test
        hit, chance = _hit(_mse(cands, p[None]), truth, offered)
        premature = None
        if generator.premature_check and t - 1 >= start:
            now, before = truth_frames[t, pix], truth_frames[t - 1, pix]
            if not np.array_equal(now, before):
                q = pred[t - 1 - start, pix][None]
                premature = bool(_mse(q, now[None])[0] < _mse(q, before[None])[0])
        credit = chance if premature else hit
        out.append(
            {
                "episode": int(episode.index),
                "item": i,
                "frame": t,
                "gap": int(gaps[i]),
                "hit": hit,
                "chance": chance,
                "premature": premature,
                "score": (credit - chance) / (1.0 - chance),
            }
        )
    return out


def evaluate_recall(
    model: WorldModel | str,
    spec: TaskSpec,
    protocol: str,
    episodes: Sequence[int] | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    aggregation: AggregationConfig | None = None,
) -> dict:
    """``recall`` (with its companions, by gap bin and the memory horizon) of ``model`` on ``spec``
    under ``protocol``, without the per-pixel metrics: a fast path for the suite's validity tests
    and studies. ``model`` is a ``WorldModel`` or a registry name; ``episodes`` indices (default all).

    Returns the ``metrics``, ``by_gap``, ``memory_horizon`` and ``items`` of a summary group.
    """
    from . import storage
    from .aggregate import HORIZON_MIN, AggregationConfig, _item_stats, gap_bin_labels, items_frame, memory_horizon
    from .generators import get_generator
    from .models import load_model
    from .runner import predict_episodes

    if isinstance(model, str):
        model = load_model(model)
    model.to(device)
    cfg = aggregation or AggregationConfig()
    store = storage.prepare(spec).store
    gen = get_generator(spec.family)(spec)
    idx = list(range(spec.episodes)) if episodes is None else list(episodes)
    rows = []
    for k in range(0, len(idx), batch_size):
        batch = [store[i] for i in idx[k : k + batch_size]]
        preds = predict_episodes(model, spec, protocol, batch, device)
        for b, ep in enumerate(batch):
            rows += score_items(gen, ep, preds[b], spec.context_frames, protocol)
    df = items_frame(rows)
    key = f"{spec.key}/{protocol}"
    by_gap = []
    for label, lo, hi in zip(gap_bin_labels(spec.gap_bins), spec.gap_bins[:-1], spec.gap_bins[1:]):
        sub = df[(df["gap"] >= lo) & (df["gap"] < hi)]
        by_gap.append(
            {
                "bin": [int(lo), int(hi)],
                "label": label,
                "items": int(len(sub)),
                "episodes": int(sub["episode"].nunique()),
                **({"metrics": _item_stats(sub, cfg, f"{key}/{label}")} if len(sub) else {}),
            }
        )
    horizon, horizon_bin = memory_horizon(by_gap)
    return {
        "metrics": _item_stats(df, cfg, key),
        "by_gap": by_gap,
        "memory_horizon": horizon,
        "memory_horizon_bin": horizon_bin,
        "items": int(len(df)),
        "horizon_min": HORIZON_MIN,
    }
