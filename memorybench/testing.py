"""A conformance kit for people who extend memorybench: check a task family or a model adapter
in your own tests before the benchmark runs it.

::

    from memorybench.testing import check_adapter, check_generator
    from memorybench.tasks import get_task

    def test_my_family():
        check_generator("my_family", get_task("my-task", "smoke"))

    def test_my_model():
        check_adapter(MyModel(), get_task("occlusion-recall", "smoke"))

Each check raises ``ConformanceError`` (an ``AssertionError``: pytest shows it as a failed
assertion) whose message names the subject, the check that failed and what was found.

``check_generator(cls_or_family, spec)`` holds a generator to the contract of
``memorybench.generators.base`` and the definitions of ``memorybench.episode``:

* **registration**: a ``Generator`` subclass whose ``family`` is the spec's family (and, given a
  family name, the name it is registered under);
* **determinism**: episode ``i`` is a function of ``(spec, i)`` alone: the same index from a fresh
  generator, and after generating another index first, is bit-identical (every array, the memory
  items, ``info`` and ``content_ids``); another index differs;
* **episode**: every array has the dtype and shape of ``ARRAY_LAYOUT`` for the spec (frames uint8
  ``[T, H, W, 3]``, actions int64 ``[T, A]``, ...; ``Episode.check``), the episode's ``task`` and
  ``index`` are the spec's name and the index asked for, actions lie in the action space, ``info``
  is JSON;
* **masks**: no pixel is both memory-only and novel; frame 0 is entirely novel with gap
  ``NEVER_SEEN`` (nothing was seen before it); every gap is ``NEVER_SEEN`` or in ``1..t``; the
  rollout gaps equal the teacher-forced gaps in the context; a frame whose gap is measured over its
  memory-only pixels (at least ``MIN_MEMORY_PIXELS``) has a gap above ``recent_window``;
* **memory items** (when the family declares ``num_candidates``): items exist, lie in predicted
  frames of the episode and on pixels of the frame (``MemoryItems.check``), have gaps >= 1, a truth
  among the candidates that is never excluded, and ``item_candidates`` renders the truth exactly as
  the frame shows it.

``check_adapter(model, spec, episodes=2)`` runs the model the way the runner does
(``memorybench.runner.predict_episodes``) under each of the spec's protocols and checks:

* **outputs**: shape, dtype, range and finiteness of every prediction (the runner's
  ``check_prediction``); an exception inside the model is reported with where it happened;
* **predict leaves the history unchanged**: calling ``predict`` twice with the same action gives
  the same frame, and a run that calls it twice at every step predicts what a run that calls it
  once does (this also checks that ``reset`` forgets the previous episodes);
* **batch independence**: the episodes predicted together in one batch and one at a time agree.

Frames are compared in 8-bit levels, the resolution scores are computed at: two predictions agree
when no pixel differs by more than ``tolerance`` levels (default 1, i.e. 1/255).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .episode import MIN_MEMORY_PIXELS, NEVER_SEEN, Episode

if TYPE_CHECKING:
    from .adapter import WorldModel
    from .generators.base import Generator
    from .spec import TaskSpec

__all__ = ["ConformanceError", "check_generator", "check_adapter", "GeneratorReport", "AdapterReport"]


class ConformanceError(AssertionError):
    """A generator or adapter breaks the contract. ``subject`` names what was checked (a family, a
    model), ``check`` the check that failed; the message says both and what was found."""

    def __init__(self, subject: str, check: str, detail: str):
        self.subject, self.check, self.detail = subject, check, detail
        super().__init__(f"{subject}: {check}: {detail}")


@dataclass
class GeneratorReport:
    """What ``check_generator`` checked."""

    family: str
    task: str
    indices: tuple[int, int]
    items: int  # memory items in the first episode (0: the family has none)
    sha256: tuple[str, str]  # of the two episodes


@dataclass
class AdapterReport:
    """What ``check_adapter`` checked."""

    model: str
    task: str
    protocols: tuple[str, ...]
    episodes: int
    batch_size: int  # the batch the episodes were predicted in together (1: batch independence not checked)
    max_difference: int  # largest difference in 8-bit levels between any two runs that must agree


# ---------------------------------------------------------------------------------------------
# generators


def _generator_class(cls_or_family: type[Generator] | str, spec: TaskSpec, subject: str) -> type[Generator]:
    from .generators import get_generator
    from .generators.base import Generator

    if isinstance(cls_or_family, str):
        try:
            cls = get_generator(cls_or_family)
        except Exception as e:  # noqa: BLE001 - an unknown or broken registration is the finding
            raise ConformanceError(subject, "registration", f"{type(e).__name__}: {e}") from e
        if getattr(cls, "family", None) != cls_or_family:
            raise ConformanceError(
                subject,
                "registration",
                f"registered as '{cls_or_family}' but its class "
                f"{cls.__module__}:{cls.__qualname__} declares family = "
                f"{getattr(cls, 'family', None)!r}",
            )
    else:
        cls = cls_or_family
    if not (isinstance(cls, type) and issubclass(cls, Generator)):
        raise ConformanceError(
            subject, "registration", f"{cls!r} is not a memorybench.generators.base.Generator subclass"
        )
    if getattr(cls, "family", None) != spec.family:
        raise ConformanceError(
            subject,
            "registration",
            f"the class declares family = {getattr(cls, 'family', None)!r} "
            f"but task {spec.key} names family '{spec.family}'",
        )
    return cls


def _episode_arrays(ep: Episode) -> dict[str, Any]:
    out: dict[str, Any] = dict(ep.arrays())
    if ep.items is not None:
        out.update({f"items.{k}": v for k, v in ep.items.arrays().items()})
    out["content_ids"] = ep.content_ids
    out["info"] = ep.info_json()
    return out


def _first_difference(a: Episode, b: Episode) -> str | None:
    """The name of the first array (or ``info``, ``items``) in which two episodes differ, or None."""
    if (a.items is None) != (b.items is None):
        return "items (present in one, None in the other)"
    xa, xb = _episode_arrays(a), _episode_arrays(b)
    if set(xa) != set(xb):
        return f"the item arrays ({sorted(set(xa) ^ set(xb))})"
    for k in xa:
        u, v = xa[k], xb[k]
        if isinstance(u, np.ndarray) != isinstance(v, np.ndarray):
            return k
        if isinstance(u, np.ndarray):
            if u.dtype != v.dtype or u.shape != v.shape or not np.array_equal(u, v):
                return k
        elif u != v:  # info (JSON text), or content_ids None in both
            return k
    return None


def _generate(gen: Generator, index: int, subject: str) -> Episode:
    try:
        ep = gen.generate(index)
    except Exception as e:  # noqa: BLE001 - the generator raising is the finding
        raise ConformanceError(subject, "generate", f"generate({index}) raised {type(e).__name__}: {e}") from e
    if not isinstance(ep, Episode):
        raise ConformanceError(subject, "generate", f"generate({index}) returned {type(ep).__name__}, not an Episode")
    return ep


def _check_episode(ep: Episode, index: int, spec: TaskSpec, gen: Generator, subject: str) -> None:
    where = f"{subject}, episode {index}"
    try:
        ep.check(spec.frames, spec.resolution, spec.action_space.dims, len(spec.pose_fields))
    except ValueError as e:
        raise ConformanceError(where, "episode arrays", str(e)) from None
    if ep.task != spec.name or ep.index != index:
        raise ConformanceError(
            where, "episode identity", f"task={ep.task!r}, index={ep.index}; expected task={spec.name!r}, index={index}"
        )
    nvec = np.asarray(spec.action_space.nvec)
    if ep.actions.size and ((ep.actions < 0).any() or (ep.actions >= nvec).any()):
        raise ConformanceError(
            where,
            "actions",
            f"values outside the action space (component i in 0..nvec[i]-1, nvec = {list(spec.action_space.nvec)})",
        )
    try:
        json.loads(ep.info_json())
    except (TypeError, ValueError) as e:
        raise ConformanceError(where, "info", f"not JSON-serialisable: {e}") from None
    if gen.has_content_ids and ep.content_ids is not None and ep.content_ids.shape != ep.memory_mask.shape:
        raise ConformanceError(where, "content_ids", f"shape {ep.content_ids.shape}, expected {ep.memory_mask.shape}")
    _check_masks(ep, spec, where)
    _check_items(ep, spec, gen, where)


def _check_masks(ep: Episode, spec: TaskSpec, where: str) -> None:
    T, C, K = spec.frames, spec.context_frames, spec.recent_window
    both = ep.memory_mask & ep.novel_mask
    if both.any():
        t = int(np.flatnonzero(both.reshape(T, -1).any(1))[0])
        raise ConformanceError(
            where,
            "masks",
            f"frame {t} has {int(both[t].sum())} pixels both memory-only and "
            "novel (memory_mask must imply not novel_mask)",
        )
    if not ep.novel_mask[0].all() or ep.memory_gap[0] != NEVER_SEEN:
        raise ConformanceError(
            where, "masks", "frame 0 must be entirely novel with memory_gap NEVER_SEEN (-1): nothing was seen before it"
        )
    t = np.arange(T)
    for name in ("memory_gap", "memory_gap_rollout"):
        g = getattr(ep, name)
        bad = ~((g == NEVER_SEEN) | ((g >= 1) & (g <= t)))
        if bad.any():
            f = int(np.flatnonzero(bad)[0])
            raise ConformanceError(
                where,
                "gaps",
                f"{name}[{f}] = {int(g[f])}: a gap is NEVER_SEEN (-1) or "
                f"1..t (the frames since the content was last visible)",
            )
    if not np.array_equal(ep.memory_gap_rollout[:C], ep.memory_gap[:C]):
        f = int(np.flatnonzero(ep.memory_gap_rollout[:C] != ep.memory_gap[:C])[0])
        raise ConformanceError(
            where,
            "gaps",
            f"context frame {f}: memory_gap_rollout differs from memory_gap (they "
            "are the same before the model generates)",
        )
    counts = ep.memory_mask.reshape(T, -1).sum(1)
    low = (counts >= MIN_MEMORY_PIXELS) & (ep.memory_gap <= K)
    if low.any():
        f = int(np.flatnonzero(low)[0])
        raise ConformanceError(
            where,
            "gaps",
            f"frame {f} has {int(counts[f])} memory-only pixels but memory_gap "
            f"{int(ep.memory_gap[f])} <= recent_window {K} (memory-only content was not visible in "
            "the last recent_window frames)",
        )


def _check_items(ep: Episode, spec: TaskSpec, gen: Generator, where: str, max_items: int = 8) -> None:
    n_cand = type(gen).num_candidates(spec)
    items = ep.items
    if n_cand is None:
        return
    if items is None:
        raise ConformanceError(
            where,
            "memory items",
            f"the family declares num_candidates = {n_cand} but the episode has no items (Episode.items is None)",
        )
    C = spec.context_frames
    if len(items) and items.frame.min() < C:
        raise ConformanceError(
            where,
            "memory items",
            f"an item is in frame {int(items.frame.min())}, before the predicted frames (context_frames = {C})",
        )
    for k in ("gap", "gap_rollout"):
        if len(items) and getattr(items, k).min() < 1:
            raise ConformanceError(where, "memory items", f"an item's {k} is {int(getattr(items, k).min())} (< 1)")
    if len(items) and (items.truth.min() < 0 or items.truth.max() >= n_cand):
        raise ConformanceError(where, "memory items", f"a truth index is outside 0..{n_cand - 1}")
    H, W = spec.resolution
    frames = ep.frames.reshape(spec.frames, H * W, 3)
    # at most max_items items, spread over the episode: rendering candidates can be costly
    for i in sorted(set(np.linspace(0, len(items) - 1, min(len(items), max_items)).round().astype(int).tolist())):
        excluded = items.excluded(i)
        if items.truth[i] in excluded:
            raise ConformanceError(where, "memory items", f"item {i}: the truth ({int(items.truth[i])}) is excluded")
        if len(excluded) and (excluded.min() < 0 or excluded.max() >= n_cand):
            raise ConformanceError(where, "memory items", f"item {i}: an excluded candidate is outside 0..{n_cand - 1}")
        try:
            cands = np.asarray(gen.item_candidates(ep, i))
        except Exception as e:  # noqa: BLE001
            raise ConformanceError(
                where, "memory items", f"item_candidates(episode, {i}) raised {type(e).__name__}: {e}"
            ) from e
        P = len(items.pixels_of(i))
        if cands.dtype != np.uint8 or cands.shape != (n_cand, P, 3):
            raise ConformanceError(
                where,
                "memory items",
                f"item_candidates(episode, {i}) returned {cands.dtype} {cands.shape}, expected uint8 {(n_cand, P, 3)}",
            )
        shown = frames[items.frame[i], items.pixels_of(i)]
        if not np.array_equal(cands[items.truth[i]], shown):
            raise ConformanceError(
                where,
                "memory items",
                f"item {i}: the true candidate ({int(items.truth[i])}) is "
                f"not what frame {int(items.frame[i])} shows on the item's pixels",
            )


def check_generator(
    cls_or_family: type[Generator] | str, spec: TaskSpec, indices: tuple[int, int] = (0, 1)
) -> GeneratorReport:
    """Check a task family's generator on a task of that family (see the module docstring).

    ``cls_or_family``: the ``Generator`` subclass, or the family name it is registered under.
    ``indices``: the two episode indices generated (each twice, in both orders). Returns what was
    checked; raises ``ConformanceError`` at the first problem.
    """
    subject = f"generator family '{spec.family}' (task {spec.key})"
    cls = _generator_class(cls_or_family, spec, subject)
    i, j = (int(x) for x in indices)
    if i == j:
        raise ValueError("check_generator needs two different episode indices")
    try:
        cls.check(spec)
    except ValueError as e:
        raise ConformanceError(subject, "spec", f"{cls.__name__}.check(spec) refused the task: {e}") from None
    first, second = cls(spec), cls(spec)
    a, b = _generate(first, i, subject), _generate(first, j, subject)
    b2, a2 = _generate(second, j, subject), _generate(second, i, subject)  # another instance, the other order
    for x, y, k in ((a, a2, i), (b, b2, j)):
        diff = _first_difference(x, y)
        if diff is not None:
            raise ConformanceError(
                subject,
                "determinism",
                f"episode {k} differs in '{diff}' between two generations "
                "(episode i must depend only on (spec, i): use self.rng(i), no state kept between "
                "calls)",
            )
    if a.sha256() == b.sha256():
        raise ConformanceError(
            subject, "determinism", f"episodes {i} and {j} are identical (the index must seed the episode)"
        )
    for ep, k in ((a, i), (b, j)):
        _check_episode(ep, k, spec, first, subject)
    return GeneratorReport(
        family=spec.family,
        task=spec.key,
        indices=(i, j),
        items=0 if a.items is None else len(a.items),
        sha256=(a.sha256(), b.sha256()),
    )


# ---------------------------------------------------------------------------------------------
# adapters


class _PredictTwice:
    """Wraps a model for ``predict_episodes``: every ``predict`` is made twice with the same
    actions, and the two frames must agree (``predict`` must not change the history)."""

    def __init__(self, model: WorldModel, subject: str, tolerance: int):
        self.model, self.subject, self.tolerance = model, subject, tolerance
        self.name, self.privileged = model.name, model.privileged
        self.step = 0

    def reset(self, spec, batch_size):
        self.step = 0
        return self.model.reset(spec, batch_size)

    def bind(self, episodes):
        return self.model.bind(episodes)

    def observe(self, frames, actions):
        return self.model.observe(frames, actions)

    def predict(self, actions):
        import torch

        first = self.model.predict(actions)
        if not isinstance(first, torch.Tensor):
            return first  # the runner's check names the problem
        kept = first.detach().clone()
        again = self.model.predict(actions)
        self.step += 1
        if not isinstance(again, torch.Tensor) or again.shape != kept.shape:
            raise ConformanceError(
                self.subject,
                "predict leaves the history unchanged",
                f"a second predict() with the same actions returned "
                f"{getattr(again, 'shape', type(again).__name__)}, the first {tuple(kept.shape)}",
            )
        diff = _levels(again) - _levels(kept)
        worst = int(diff.abs().max()) if diff.numel() else 0
        if worst > self.tolerance:
            raise ConformanceError(
                self.subject,
                "predict leaves the history unchanged",
                f"predicted step {self.step}: a second predict() with the same actions differs from "
                f"the first by up to {worst}/255 (predict must not append to the history: the "
                "runner appends through observe)",
            )
        return first


def _levels(frames) -> Any:
    """float frames in [0, 1] -> the 8-bit levels the runner scores, as int16."""
    import torch

    return frames.detach().float().mul(255.0).round().clamp(0, 255).to(torch.int16).cpu()


def _max_level_difference(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) if a.size else 0


def check_adapter(
    model: WorldModel, spec: TaskSpec, episodes: int | Sequence[Episode] = 2, device: str = "cpu", tolerance: int = 1
) -> AdapterReport:
    """Check a model adapter on a task (see the module docstring).

    ``episodes``: how many episodes of ``spec`` to generate (from index 0), or the episodes
    themselves. ``tolerance``: in 8-bit levels, how far two predictions that must agree may
    differ. The model is moved to ``device`` and run under every protocol of the spec, several
    times (its state after the check is that of the last run). Returns what was checked; raises
    ``ConformanceError`` at the first problem.
    """
    from .generators import get_generator
    from .runner import AdapterError, predict_episodes

    subject = f"model '{model.name or type(model).__name__}' (task {spec.key})"
    if isinstance(episodes, int):
        gen = get_generator(spec.family)(spec)
        eps = [gen.generate(i) for i in range(episodes)]
    else:
        eps = list(episodes)
    if not eps:
        raise ValueError("check_adapter needs at least one episode")
    batch = min(len(eps), model.max_batch_size or len(eps))
    model.to(device)
    worst = 0

    def run(m, group: list[Episode], protocol: str, what: str) -> np.ndarray:
        try:
            return predict_episodes(m, spec, protocol, group, device)
        except AdapterError as e:
            if isinstance(e.__cause__, ConformanceError):  # raised by _PredictTwice inside the runner's guard
                raise e.__cause__ from None
            raise ConformanceError(subject, f"outputs ({what}, {protocol})", str(e)) from e

    def agree(a: np.ndarray, b: np.ndarray, check: str, detail: str) -> None:
        nonlocal worst
        d = _max_level_difference(a, b)
        worst = max(worst, d)
        if d > tolerance:
            raise ConformanceError(subject, check, f"{detail} differ by up to {d}/255 (tolerance {tolerance}/255)")

    for protocol in spec.protocols:
        together = np.concatenate(
            [run(model, eps[s : s + batch], protocol, f"batch of {batch}") for s in range(0, len(eps), batch)]
        )
        if batch > 1:
            alone = np.concatenate([run(model, [ep], protocol, "batch of 1") for ep in eps])
            agree(
                together,
                alone,
                "results independent of batch size",
                f"under {protocol}, episodes predicted in batches of {batch} and one at a time",
            )
        twice = np.concatenate(
            [
                run(_PredictTwice(model, subject, tolerance), eps[s : s + batch], protocol, "predict called twice")
                for s in range(0, len(eps), batch)
            ]
        )
        agree(
            together,
            twice,
            "predict leaves the history unchanged",
            f"under {protocol}, the predictions of a run that calls predict() twice per step and of one that "
            "calls it once",
        )
    return AdapterReport(
        model=model.name or type(model).__name__,
        task=spec.key,
        protocols=tuple(spec.protocols),
        episodes=len(eps),
        batch_size=batch,
        max_difference=worst,
    )
