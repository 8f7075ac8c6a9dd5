"""The ``Episode`` record and the memory metadata every frame carries.

Definitions (pinned; they are part of the task format, ``TASK_FORMAT_VERSION``):

* Every pixel of a generated frame shows one piece of world *content* (a texel of the ground, a
  pixel of an object, of an occluder...). Generators know it exactly: ``content_ids[t, y, x]``.
* ``age[t, p]`` = ``t - s`` where ``s < t`` is the last frame in which the content now at pixel
  ``p`` was visible anywhere in the view; ``NEVER_SEEN`` if it was never visible before ``t``.
* ``novel_mask[t]``: pixels whose content was never seen before frame ``t``; and, in the frames a
  model must predict (``t >= C``, ``C = context_frames``), also pixels whose content no *context*
  frame shows. A model under the rollout protocol observes only the context, so nothing it saw
  predicts them; they are excluded from memory scores under both protocols, so that one mask
  serves both.
* ``memory_mask[t]``: pixels that are not novel and whose content is not visible in the last
  ``K = recent_window`` frames (``age > K``). Only a model that remembers more than ``K`` frames
  can predict them.
* ``memory_gap[t]`` (one number per frame): the median ``age`` over the frame's memory-only
  pixels when there are at least ``min_memory_pixels`` of them; otherwise the median ``age`` over
  the frame's non-novel pixels (usually 1: everything was visible a frame ago); ``NEVER_SEEN``
  when every pixel is novel.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

NEVER_SEEN = -1
#: a frame's gap is measured over its memory-only pixels when it has at least this many
MIN_MEMORY_PIXELS = 16

# the arrays of an episode, their dtypes, and their shapes in terms of T, H, W, A (action dims),
# P (pose fields); this order is the order they are hashed in
ARRAY_LAYOUT: dict[str, tuple[str, tuple[str, ...]]] = {
    "frames": ("uint8", ("T", "H", "W", "3")),
    "actions": ("int64", ("T", "A")),
    "poses": ("float32", ("T", "P")),
    "memory_gap": ("int32", ("T",)),
    "memory_mask": ("bool", ("T", "H", "W")),
    "novel_mask": ("bool", ("T", "H", "W")),
}


@dataclass
class Episode:
    """One generated episode. ``actions[t]`` is the action that produced frame ``t`` from frame
    ``t-1`` (``actions[0]`` is the no-op that starts the episode)."""

    task: str
    index: int
    frames: np.ndarray  # uint8 [T, H, W, 3]
    actions: np.ndarray  # int64 [T, A]
    poses: np.ndarray  # float32 [T, P]
    memory_gap: np.ndarray  # int32 [T]
    memory_mask: np.ndarray  # bool [T, H, W]
    novel_mask: np.ndarray  # bool [T, H, W]
    #: JSON-serialisable facts about the episode (e.g. each occlusion trial's gap, reveal frame and
    #: object); stored and hashed with the arrays
    info: dict = field(default_factory=dict)
    #: int64 [T, H, W] identity of the content at each pixel; only present straight from a
    #: generator (not stored: the perfect-memory reference regenerates it)
    content_ids: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ARRAY_LAYOUT}

    def check(self, frames: int, resolution: tuple[int, int], action_dims: int, pose_dims: int) -> None:
        """Raise ``ValueError`` naming the array if any shape or dtype is not what the spec says."""
        dims = {"T": frames, "H": resolution[0], "W": resolution[1], "A": action_dims, "P": pose_dims, "3": 3}
        for name, (dtype, shape) in ARRAY_LAYOUT.items():
            a = getattr(self, name)
            want = tuple(dims[s] for s in shape)
            if not isinstance(a, np.ndarray):
                raise ValueError(f"episode {self.index}: '{name}' is not an array")
            if a.dtype != np.dtype(dtype) or a.shape != want:
                raise ValueError(
                    f"episode {self.index}: '{name}' has dtype {a.dtype} and shape {a.shape}, "
                    f"expected {dtype} {want}")

    def info_json(self) -> str:
        return json.dumps(self.info, sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        """Hash of every stored array (shape, dtype and bytes, in ``ARRAY_LAYOUT`` order) and ``info``."""
        h = hashlib.sha256()
        for name in ARRAY_LAYOUT:
            a = np.ascontiguousarray(getattr(self, name))
            h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
            h.update(a.tobytes())
        h.update(b"info:" + self.info_json().encode())
        return h.hexdigest()


@dataclass
class MemoryMetadata:
    age: np.ndarray  # int32 [T, H, W], NEVER_SEEN where novel
    memory_gap: np.ndarray  # int32 [T]
    memory_mask: np.ndarray  # bool [T, H, W]
    novel_mask: np.ndarray  # bool [T, H, W]


def memory_metadata(content_ids: np.ndarray, recent_window: int, context_frames: int | None = None,
                    num_ids: int | None = None, min_memory_pixels: int = MIN_MEMORY_PIXELS) -> MemoryMetadata:
    """Ages, masks and per-frame gaps from a ``[T, H, W]`` map of content identities.

    One pass over time with a ``last_seen`` table indexed by content id: O(T * H * W). Pass
    ``num_ids`` (all ids are below it) to index the table directly; otherwise ids are compacted.
    """
    ids = np.asarray(content_ids)
    if ids.ndim != 3:
        raise ValueError(f"content_ids must be [T, H, W], got shape {ids.shape}")
    if ids.size and ids.min() < 0:
        raise ValueError("content ids must be non-negative")
    T, H, W = ids.shape
    flat = ids.reshape(T, H * W)
    if num_ids is not None and (ids.size == 0 or ids.max() < num_ids):
        inv, table = flat, num_ids
    else:  # compact the id space so the table stays small whatever ids the generator uses
        uniq, inv = np.unique(flat, return_inverse=True)
        inv, table = inv.reshape(T, H * W), uniq.size
    last = np.full(table, -1, dtype=np.int64)
    age = np.empty((T, H * W), dtype=np.int32)
    novel = np.empty((T, H * W), dtype=bool)
    C = T if context_frames is None else context_frames
    in_context = None
    for t in range(T):  # the scan over time is inherently sequential
        if t == C:
            in_context = last >= 0  # content some context frame shows
        row = inv[t]
        prev = last[row]
        age[t] = np.where(prev >= 0, t - prev, NEVER_SEEN)
        novel[t] = prev < 0 if in_context is None else ~in_context[row]
        last[row] = t
    memory = ~novel & (age > recent_window)
    gap = frame_gaps(age, memory, novel, min_memory_pixels)
    return MemoryMetadata(age.reshape(T, H, W), gap, memory.reshape(T, H, W), novel.reshape(T, H, W))


def _masked_lower_median(age: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``age`` [T, N] (values in 0..T), the lower median over ``mask``; and the counts.

    A counting sort: one ``bincount`` over (row, age) pairs, then a cumulative sum per row.
    """
    T = age.shape[0]
    top = int(age.max(initial=0)) + 1
    rows = np.broadcast_to(np.arange(T)[:, None], age.shape)
    hist = np.bincount((rows[mask] * top + age[mask]).astype(np.int64), minlength=T * top).reshape(T, top)
    counts = hist.sum(1)
    cdf = np.cumsum(hist, axis=1)
    target = (counts - 1) // 2  # index of the lower median in sorted order
    med = (cdf <= target[:, None]).sum(1)
    return med.astype(np.int32), counts


def frame_gaps(age: np.ndarray, memory: np.ndarray, novel: np.ndarray,
               min_memory_pixels: int = MIN_MEMORY_PIXELS) -> np.ndarray:
    """Per-frame ``memory_gap`` from per-pixel ages and masks (see the module docstring).

    "Median" is the lower median: the middle value, or the lower of the two middle values.
    """
    T = age.shape[0]
    age2, mem2, nov2 = age.reshape(T, -1), memory.reshape(T, -1), novel.reshape(T, -1)
    mem_med, mem_n = _masked_lower_median(age2, mem2)
    seen_med, seen_n = _masked_lower_median(age2, ~nov2)
    gap = np.where(mem_n >= min_memory_pixels, mem_med, np.where(seen_n > 0, seen_med, NEVER_SEEN))
    return gap.astype(np.int32)
