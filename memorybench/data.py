"""Training data for PyTorch training loops: the train split of any task, as datasets and loaders.

The train split of a task is the task with its *training seed* (``memorybench.splits``: the
evaluation seed + ``TRAIN_SEED_OFFSET``); its episodes never coincide with the evaluation
episodes, and episode ``i`` depends only on ``(task, tier, i)``. Three ways to read it::

    from memorybench.data import EpisodeDataset, EpisodeStream, collate, task_loader
    from memorybench.tasks import get_task

    spec = get_task("scene-retrieval", "standard")
    EpisodeDataset(spec, 10_000)                 # map-style: episodes 0..9999, generated on access
    EpisodeDataset(spec, 10_000, cache=True)     # ... generated once into the cache, then read from disk
    EpisodeDataset.from_disk("train/scene")      # ... written by `memorybench tasks generate --split train`
    EpisodeStream(spec, crop=64)                 # iterable, endless, made in the DataLoader's workers
    task_loader([spec, ...], batch_size=4)       # a DataLoader: batch i from task i mod n (what `train` uses)
    task_loader([spec, ...], 4, episodes=[None, 64])  # ... the second task's first 64 episodes, cached, cycled

**Samples.** Every dataset yields dicts of tensors:

======================  =================================================================
``frames``              uint8 ``[T, 3, H, W]`` (float32 in [0, 1] with ``float_frames=True``)
``actions``             int64 ``[T, A]`` (``spec.action_space``; ``actions[t]`` makes frame ``t``)
``memory_mask``         bool ``[T, H, W]``: pixels only memory predicts (``memorybench.episode``)
``novel_mask``          bool ``[T, H, W]``: pixels nothing in the sample predicts
``memory_gap``          int32 ``[T]``: the frame's memory gap (``Episode.memory_gap``)
``episode``             int: the episode's index in the train split
``start``               int: the sample's first frame in the episode (0 without crops)
``task``                str: the task key, ``name@tier``
======================  =================================================================

``collate`` stacks samples of one task (equal length and action width) into a batch: the same
keys with a leading batch dimension (``episode`` and ``start`` become int64 tensors).

**Crops.** ``crop=L`` cuts each sample to ``L`` consecutive frames that keep memory events whole.
A *memory event* is a frame ``t`` with memory-only pixels and the frame ``s`` where that content
was last seen (``memory_intervals``). A crop ``[a, a + L)`` keeps the memory-only pixels of frame
``t`` only if it also holds ``s`` (``s >= a``); the memory-only pixels of the other frames, whose
content was last seen before the crop, are moved to ``novel_mask`` (nothing in the crop predicts
them). The start ``a`` is drawn uniformly from the starts whose crop holds at least one whole
event (any start if there is none), with ``numpy.random.default_rng([seed, i])`` for episode ``i``:
the same ``(seed, i)`` gives the same crop. ``L >= T`` means whole episodes. (Derived for now from
the per-frame ``memory_gap``: ``s = t - memory_gap[t]``, the median over the frame's memory-only
pixels, so a kept frame's older half of pixels may have been last seen a little before ``s``; a
frame with fewer than ``MIN_MEMORY_PIXELS`` memory-only pixels has no measured gap, and its pixels
are kept only by crops that start at frame 0.)

**Workers and ranks.** ``EpisodeStream`` splits an endless sequence of units (episodes, or batches
of ``batch_size`` episodes: unit ``u`` holds episodes ``u * batch_size + j``) between the ranks of
``torch.distributed`` (``rank``, ``world_size``; detected when a process group is initialised) and
the DataLoader's workers: rank ``r`` takes units ``start + r + world * m`` (m = 0, 1, ...), and its
worker ``w`` of ``W`` those with ``m = w + W * k``. No two workers of any rank yield the same
episode, and since a DataLoader takes from its workers in turn, a rank's sequence is the same for
any number of workers (with ``batch_size`` set, its batches too). ``task_loader`` is deterministic
per batch index in the same way (batch ``i`` on rank ``r``: task ``i mod n``, its episodes
``((i // n) * world + r) * batch_size + j``), whatever ``workers``; ``start`` resumes it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .episode import MIN_MEMORY_PIXELS, Episode
from .errors import MemorybenchError
from .spec import TaskSpec
from .splits import (  # noqa: F401 (re-exported)
    SPLITS,
    TRAIN_SEED_OFFSET,
    TrainingDataError,
    check_evaluation_data,
    check_model_training,
    export_npz,
    split_record,
    split_spec,
    train_dir,
    training_spec,
)

TENSOR_KEYS = ("frames", "actions", "memory_mask", "novel_mask", "memory_gap")


# ---------------------------------------------------------------------------------------------
# memory events and crops


def memory_intervals(episode: Episode) -> np.ndarray:
    """The memory events of an episode: int64 ``[N, 2]`` rows ``(source, frame)``, frames ascending.

    Where the episode has memory items (``Episode.items``), one row per item: its content was last
    seen at ``source = frame - gap`` exactly (the true history's gap: training observes it). Every
    other frame ``t`` with memory-only pixels gives a row with ``source = t - memory_gap[t]`` (the
    median age of the frame's memory-only pixels); a frame with fewer than ``MIN_MEMORY_PIXELS`` of
    them has no measured gap (``memorybench.episode``): its source is reported as 0, the earliest.
    """
    mem = np.asarray(episode.memory_mask)
    counts = mem.reshape(mem.shape[0], -1).sum(1)
    t = np.flatnonzero(counts)
    rows = []
    items = episode.items
    if items is not None and len(items):
        rows.append(np.stack([np.maximum(items.frame - items.gap, 0), items.frame], 1).astype(np.int64))
        t = t[~np.isin(t, items.frame)]
    gap = np.asarray(episode.memory_gap)[t].astype(np.int64)
    measured = (counts[t] >= MIN_MEMORY_PIXELS) & (gap > 0)
    source = np.where(measured, np.maximum(t - gap, 0), 0)
    rows.append(np.stack([source, t], 1).astype(np.int64).reshape(-1, 2))
    out = np.concatenate(rows)
    return out[np.lexsort((out[:, 0], out[:, 1]))]


def crop_starts(intervals: np.ndarray, frames: int, length: int) -> np.ndarray:
    """bool ``[frames - length + 1]``: the crop starts ``a`` whose crop ``[a, a + length)`` holds at
    least one whole event (``a <= source`` and ``frame < a + length``)."""
    n = frames - length + 1
    cover = np.zeros(n + 1, np.int64)
    if len(intervals):
        src, t = intervals[:, 0], intervals[:, 1]
        lo, hi = np.maximum(t - length + 1, 0), np.minimum(src, n - 1)
        ok = lo <= hi
        np.add.at(cover, lo[ok], 1)
        np.add.at(cover, hi[ok] + 1, -1)
    return np.cumsum(cover[:-1]) > 0


def draw_crop(episode: Episode, length: int | None, rng: np.random.Generator) -> int:
    """The first frame of a crop of ``length`` frames (see the module docstring); 0 for whole episodes."""
    T = episode.num_frames
    if length is None or length >= T:
        return 0
    candidates = np.flatnonzero(crop_starts(memory_intervals(episode), T, length))
    if candidates.size:
        return int(rng.choice(candidates))
    return int(rng.integers(0, T - length + 1))


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, copy=True, order="C"))


def make_sample(
    episode: Episode, task: str, start: int = 0, length: int | None = None, float_frames: bool = False
) -> dict:
    """The sample of frames ``[start, start + length)`` of ``episode`` (see the module docstring)."""
    T = episode.num_frames
    L = T - start if length is None else min(length, T - start)
    sl = slice(start, start + L)
    memory, novel = np.array(episode.memory_mask[sl]), np.array(episode.novel_mask[sl])
    if start > 0:  # events whose content was last seen before the crop: nothing in the crop predicts them
        ev = memory_intervals(episode)
        lost = ev[(ev[:, 1] >= start) & (ev[:, 1] < start + L) & (ev[:, 0] < start), 1] - start
        novel[lost] |= memory[lost]
        memory[lost] = False
    frames = torch.from_numpy(np.ascontiguousarray(np.asarray(episode.frames[sl]).transpose(0, 3, 1, 2)))
    if float_frames:
        frames = frames.float().div_(255.0)
    return {
        "frames": frames,
        "actions": _tensor(episode.actions[sl]),
        "memory_mask": torch.from_numpy(memory),
        "novel_mask": torch.from_numpy(novel),
        "memory_gap": _tensor(episode.memory_gap[sl]),
        "episode": int(episode.index),
        "start": int(start),
        "task": task,
    }


def collate(samples: Sequence[dict]) -> dict:
    """Stack samples of one task (same length and action width) into a batch."""
    if not samples:
        raise MemorybenchError("collate: no samples")
    tasks = sorted({s["task"] for s in samples})
    if len(tasks) > 1:
        raise MemorybenchError(
            f"collate: a batch mixes tasks {', '.join(tasks)}; batch one task at a time (task_loader does)"
        )
    shapes = sorted({tuple(s["frames"].shape) for s in samples})
    if len(shapes) > 1:
        raise MemorybenchError(f"collate: samples of {tasks[0]} have different shapes {shapes}; use one crop length")
    out = {k: torch.stack([s[k] for s in samples]) for k in TENSOR_KEYS}
    out["episode"] = torch.tensor([s["episode"] for s in samples], dtype=torch.int64)
    out["start"] = torch.tensor([s["start"] for s in samples], dtype=torch.int64)
    out["task"] = tasks[0]
    return out


def _check_crop(crop: int | None) -> None:
    if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int) or crop < 1):
        raise MemorybenchError(f"crop must be a number of frames >= 1 or None, got {crop!r}")


# ---------------------------------------------------------------------------------------------
# datasets


class EpisodeDataset(torch.utils.data.Dataset):
    """Map-style: ``dataset[i]`` is the sample of episode ``i`` of a task's train split.

    ``spec`` is the task (its evaluation spec, from the registry); ``episodes`` the size of the
    split (``len(dataset)``), or None for an unbounded split (any ``i >= 0``; no ``len``).
    Episodes are generated on access (in the DataLoader's worker processes), or with
    ``cache=True`` generated once into ``cache_dir`` (default: ``$MEMORYBENCH_CACHE/train/``,
    ``workers`` processes), verified and read from there on every later use.
    """

    def __init__(
        self,
        spec: TaskSpec,
        episodes: int | None = None,
        *,
        crop: int | None = None,
        seed: int = 0,
        float_frames: bool = False,
        cache: bool = False,
        cache_dir: str | Path | None = None,
        workers: int = 1,
    ):
        _check_crop(crop)
        if cache and episodes is None:
            raise MemorybenchError("EpisodeDataset: cache=True needs a finite number of episodes")
        self.spec = training_spec(spec, episodes)
        self.episodes, self.crop, self.seed, self.float_frames = episodes, crop, seed, float_frames
        self.path: Path | None = None
        self._gen = self._store = None
        if cache:
            from . import storage

            path = Path(cache_dir) / train_dir(self.spec).name if cache_dir is not None else train_dir(self.spec)
            self.path = storage.prepare(self.spec, out=path, workers=workers, split="train").store.path

    @classmethod
    def from_disk(
        cls, path: str | Path, *, crop: int | None = None, seed: int = 0, float_frames: bool = False
    ) -> EpisodeDataset:
        """The train split written by ``memorybench tasks generate NAME --split train --out PATH``."""
        from . import storage

        _check_crop(crop)
        store = storage.open_store(path)
        split = store.manifest.get("split", "eval")
        if split != "train":
            raise TrainingDataError(
                f"{Path(path) / storage.MANIFEST} says split '{split}': these are evaluation "
                "episodes; training on them would leak them into the model (use --split train)"
            )
        self = cls.__new__(cls)
        self.spec, self.episodes, self.crop, self.seed, self.float_frames = (
            store.spec,
            len(store),
            crop,
            seed,
            float_frames,
        )
        self.path, self._gen, self._store = Path(path), None, None
        return self

    def __len__(self) -> int:
        if self.episodes is None:
            raise TypeError("an unbounded EpisodeDataset (episodes=None) has no length")
        return self.episodes

    def __getstate__(self):  # worker processes open their own generator or store
        return {**self.__dict__, "_gen": None, "_store": None}

    def episode(self, index: int) -> Episode:
        """Episode ``index`` of the split, whole (with ``content_ids`` when generated)."""
        if index < 0 or (self.episodes is not None and index >= self.episodes):
            raise IndexError(
                f"episode {index} outside the split 0..{'' if self.episodes is None else self.episodes - 1}"
            )
        if self.path is not None:
            if self._store is None:
                from . import storage

                self._store = storage.open_store(self.path, self.spec)
            return self._store[index]
        if self._gen is None:
            from .generators import get_generator

            self._gen = get_generator(self.spec.family)(self.spec)
        return self._gen.generate(index)

    def __getitem__(self, index: int) -> dict:
        return self.sample(int(index))

    def sample(self, index: int, draw: int | None = None) -> dict:
        """The sample of episode ``index``, its crop drawn with ``default_rng([seed, draw])`` (``draw``
        defaults to ``index``; ``task_loader`` passes the position in its stream when it cycles
        through a finite split, so each pass over the episodes gets other crops)."""
        ep = self.episode(index)
        start = draw_crop(ep, self.crop, np.random.default_rng([self.seed, index if draw is None else draw]))
        return make_sample(ep, self.spec.key, start, self.crop, self.float_frames)


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        rank, world_size = rank or 0, world_size or 1
    if not 0 <= rank < world_size:
        raise MemorybenchError(f"rank must be in 0..world_size-1, got rank {rank} of {world_size}")
    return rank, world_size


class EpisodeStream(torch.utils.data.IterableDataset):
    """Iterable and endless: the samples (or, with ``batch_size``, the collated batches) of a task's
    train split, generated on the fly in the DataLoader's workers and sharded between workers and
    ranks (see the module docstring). ``start`` is the first unit of the stream (to resume)."""

    def __init__(
        self,
        spec: TaskSpec,
        *,
        crop: int | None = None,
        seed: int = 0,
        float_frames: bool = False,
        batch_size: int | None = None,
        start: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        if batch_size is not None and batch_size < 1:
            raise MemorybenchError(f"batch_size must be >= 1 or None, got {batch_size}")
        if start < 0:
            raise MemorybenchError(f"start must be >= 0, got {start}")
        self.data = EpisodeDataset(spec, None, crop=crop, seed=seed, float_frames=float_frames)
        self.spec = self.data.spec
        self.batch_size, self.start, self.rank, self.world_size = batch_size, start, rank, world_size

    def units(self) -> Iterator[int]:
        """The units this process yields, in order: ``start + r + world * (w + W * k)``, k = 0, 1, ..."""
        rank, world = _rank_world(self.rank, self.world_size)
        info = torch.utils.data.get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        return itertools.count(self.start + rank + world * w, world * n)

    def __iter__(self):
        B = self.batch_size
        for u in self.units():
            if B is None:
                yield self.data[u]
            else:
                yield collate([self.data[u * B + j] for j in range(B)])


# ---------------------------------------------------------------------------------------------
# several tasks


class RoundRobinBatches(torch.utils.data.Sampler):
    """Batch ``i`` (``start <= i < stop``, or endless): task ``i mod n``, its training episodes
    ``((i // n) * world + rank) * batch_size + j``, ``j < batch_size`` (keys ``(task, episode)``)."""

    def __init__(
        self, n_tasks: int, batch_size: int, start: int = 0, stop: int | None = None, rank: int = 0, world_size: int = 1
    ):
        if n_tasks < 1 or batch_size < 1:
            raise MemorybenchError(f"need at least one task and batch_size >= 1 (got {n_tasks} tasks, {batch_size})")
        self.n, self.batch_size, self.start, self.stop = n_tasks, batch_size, start, stop
        self.rank, self.world = rank, world_size

    def batch(self, i: int) -> list[tuple[int, int]]:
        first = ((i // self.n) * self.world + self.rank) * self.batch_size
        return [(i % self.n, first + j) for j in range(self.batch_size)]

    def __iter__(self):
        steps = itertools.count(self.start) if self.stop is None else range(self.start, self.stop)
        for i in steps:
            yield self.batch(i)

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless RoundRobinBatches has no length")
        return max(0, self.stop - self.start)


def round_robin_episodes(n_tasks: int, batch_size: int, steps: int, world_size: int = 1) -> list[int]:
    """How many training episodes of each task batches ``0 .. steps-1`` use (over every rank): task
    ``k`` uses its episodes ``0 .. count_k - 1``."""
    return [max(0, -(-(steps - k) // n_tasks)) * world_size * batch_size for k in range(n_tasks)]


class _TaskMix(torch.utils.data.Dataset):
    """Key ``(task, i)``: the ``i``-th sample of the task's stream; a finite (cached) split of ``N``
    episodes is cycled through (episode ``i mod N``, its crop drawn with ``i``)."""

    def __init__(self, datasets: Sequence[EpisodeDataset]):
        self.datasets = list(datasets)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        k, i = key
        ds = self.datasets[k]
        if ds.episodes is None:
            return ds.sample(i)
        return ds.sample(i % ds.episodes, draw=i)


def task_loader(
    tasks: Sequence[TaskSpec],
    batch_size: int,
    *,
    crop: int | None = None,
    seed: int = 0,
    start: int = 0,
    stop: int | None = None,
    workers: int = 0,
    float_frames: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    episodes: Sequence[int | None] | None = None,
    cache_workers: int = 1,
    **loader_args,
) -> torch.utils.data.DataLoader:
    """A DataLoader over the train splits of ``tasks``: batch ``i`` (from ``start``; until ``stop``,
    or endless) holds ``batch_size`` episodes of task ``i mod n`` (``RoundRobinBatches``), made by
    ``workers`` processes; the batches do not depend on ``workers``. Other keyword arguments go to
    the ``DataLoader`` (e.g. ``pin_memory``).

    ``episodes`` (one entry per task, None = endless): a task with ``N`` uses only its first ``N``
    training episodes, generated once into the cache (``EpisodeDataset(..., cache=True)``, with
    ``cache_workers`` processes; the directory ``memorybench tasks generate NAME --split train
    --episodes N`` writes, checksummed and reused) and cycled through: its ``i``-th sample is episode
    ``i mod N``, cropped with ``default_rng([seed, i])``. For tasks too slow to generate on the fly
    (the Memory Maze simulator renders about 35 frames/s per core)."""
    tasks = list(tasks)
    if not tasks:
        raise MemorybenchError("task_loader: no tasks")
    episodes = [None] * len(tasks) if episodes is None else list(episodes)
    if len(episodes) != len(tasks):
        raise MemorybenchError(f"task_loader: {len(episodes)} episode counts for {len(tasks)} tasks")
    for s, n in zip(tasks, episodes):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise MemorybenchError(
                f"task_loader: the episode count of {s.key} must be a positive integer or None, got {n!r}"
            )
    rank, world = _rank_world(rank, world_size)
    mix = _TaskMix(
        [
            EpisodeDataset(
                s, n, crop=crop, seed=seed, float_frames=float_frames, cache=n is not None, workers=cache_workers
            )
            for s, n in zip(tasks, episodes)
        ]
    )
    sampler = RoundRobinBatches(len(tasks), batch_size, start, stop, rank, world)
    return torch.utils.data.DataLoader(
        mix, batch_sampler=sampler, collate_fn=collate, num_workers=workers, **loader_args
    )
