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
  when every pixel is novel. This is the gap under the ``teacher-forced`` protocol, where the
  model observes the true history.
* ``memory_gap_rollout[t]``: the same, with ages counted from **what a model under the rollout
  protocol saw**: it observes the context (frames ``< C``) and then only its own predictions, so
  for ``t >= C`` a pixel's age is ``t - s`` with ``s`` the last *context* frame that showed its
  content (predicted frames of the true trajectory do not count: the model never saw them).
  For ``t < C`` it equals ``memory_gap``. The memory *mask* is the same under both protocols (it
  says which content left the view and came back, a property of the trajectory); only the gap,
  the time over which a model must carry the content, depends on what it observed.

**Memory items** (``MemoryItems``, one record per episode) are the identification tests behind
the headline ``recall`` metric (``memorybench.recall``): each names a predicted frame, the pixels
of one piece of remembered content there (an object, a tile), the true candidate among a set of
alternatives the task could have shown there (defined by the family), and the item's gaps under
both protocols. Items are derived from the same memory masks; see each family's docstring.
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
    "memory_gap_rollout": ("int32", ("T",)),
    "memory_mask": ("bool", ("T", "H", "W")),
    "novel_mask": ("bool", ("T", "H", "W")),
}


ITEM_ARRAYS: dict[str, str] = {
    "frame": "int32",  # [I] the predicted frame the item is tested in
    "gap": "int32",  # [I] frames since its content was last visible (true history: teacher-forced)
    "gap_rollout": "int32",  # [I] frames since it was last visible in a context frame (rollout)
    "truth": "int32",  # [I] index of the true candidate in the family's candidate list
    "key": "int32",  # [I] family-defined (occlusion: the slot; scene: the tile)
    "pixel_offsets": "int64",  # [I + 1] item i's pixels are pixels[pixel_offsets[i]:pixel_offsets[i + 1]]
    "pixels": "int32",  # [P] flat pixel indices y * W + x, in increasing order per item
    "exclude_offsets": "int64",  # [I + 1] candidates item i excludes (see ``MemoryItems``)
    "exclude": "int32",  # [X]
}


@dataclass
class MemoryItems:
    """The identification tests of one episode (see ``memorybench.recall``).

    Item ``i`` asks: in predicted frame ``frame[i]``, on the pixels ``pixels_of(i)``, is the
    prediction closer (mean squared error) to the true content than to every other *candidate*
    the task could have shown there? The candidates are defined by the generator family
    (``Generator.item_candidates``): e.g. every object of the object space in that slot, or every
    colour of the palette for that tile. ``exclude`` lists candidates that are not offered for an
    item because a model without memory could rule them out from the recent true frames (e.g. an
    object visible in another slot right now); ``truth`` is never excluded. ``extra`` holds the
    family's data for rendering candidates (e.g. the background behind the objects).
    """

    frame: np.ndarray
    gap: np.ndarray
    gap_rollout: np.ndarray
    truth: np.ndarray
    key: np.ndarray
    pixel_offsets: np.ndarray
    pixels: np.ndarray
    exclude_offsets: np.ndarray
    exclude: np.ndarray
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    def pixels_of(self, i: int) -> np.ndarray:
        return self.pixels[self.pixel_offsets[i] : self.pixel_offsets[i + 1]]

    def excluded(self, i: int) -> np.ndarray:
        return self.exclude[self.exclude_offsets[i] : self.exclude_offsets[i + 1]]

    @classmethod
    def build(cls, rows: list[dict], extra: dict | None = None) -> MemoryItems:
        """From one dict per item: ``frame, gap, gap_rollout, truth, key, pixels`` (1-D int array)
        and optionally ``exclude`` (1-D int array)."""
        rows = sorted(rows, key=lambda r: (r["frame"], r["key"]))
        pix = [np.asarray(r["pixels"], np.int32) for r in rows]
        exc = [np.asarray(r.get("exclude", ()), np.int32) for r in rows]

        def offsets(parts):
            return np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)

        col = lambda k: np.array([r[k] for r in rows], dtype=np.int32)  # noqa: E731
        return cls(
            frame=col("frame"),
            gap=col("gap"),
            gap_rollout=col("gap_rollout"),
            truth=col("truth"),
            key=col("key"),
            pixel_offsets=offsets(pix),
            pixels=np.concatenate(pix) if pix else np.zeros(0, np.int32),
            exclude_offsets=offsets(exc),
            exclude=np.concatenate(exc) if exc else np.zeros(0, np.int32),
            extra={k: np.ascontiguousarray(v) for k, v in (extra or {}).items()},
        )

    @classmethod
    def empty(cls) -> MemoryItems:
        return cls.build([])

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: np.ascontiguousarray(getattr(self, k), dtype=d) for k, d in ITEM_ARRAYS.items()}
        out.update({f"extra.{k}": v for k, v in sorted(self.extra.items())})
        return out

    def to_bytes(self) -> bytes:
        """An ``.npz`` archive (uncompressed, no pickles)."""
        import io

        buf = io.BytesIO()
        np.savez(buf, **self.arrays())
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> MemoryItems:
        import io

        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        missing = sorted(set(ITEM_ARRAYS) - set(arrays))
        if missing:
            raise ValueError(f"memory items lack arrays {missing}")
        extra = {k[len("extra.") :]: v for k, v in arrays.items() if k.startswith("extra.")}
        return cls(**{k: arrays[k].astype(d, copy=False) for k, d in ITEM_ARRAYS.items()}, extra=extra)

    def check(self, frames: int, height: int, width: int) -> None:
        """Raise ``ValueError`` if the arrays are inconsistent with an episode of that size."""
        n = len(self)
        for k in ("gap", "gap_rollout", "truth", "key"):
            if getattr(self, k).shape != (n,):
                raise ValueError(f"memory items: '{k}' has shape {getattr(self, k).shape}, expected ({n},)")
        for off, data, name in (
            (self.pixel_offsets, self.pixels, "pixels"),
            (self.exclude_offsets, self.exclude, "exclude"),
        ):
            if off.shape != (n + 1,) or off[0] != 0 or off[-1] != len(data) or np.any(np.diff(off) < 0):
                raise ValueError(f"memory items: '{name}' offsets are inconsistent")
        if n and (self.frame.min() < 0 or self.frame.max() >= frames):
            raise ValueError("memory items: a frame index is outside the episode")
        if len(self.pixels) and (self.pixels.min() < 0 or self.pixels.max() >= height * width):
            raise ValueError("memory items: a pixel index is outside the frame")
        if n and np.any(np.diff(self.pixel_offsets) == 0):
            raise ValueError("memory items: an item has no pixels")

    def sha256_update(self, h) -> None:
        for name, a in self.arrays().items():
            h.update(f"items.{name}:{a.dtype.str}:{a.shape};".encode())
            h.update(a.tobytes())


@dataclass
class Episode:
    """One generated episode. ``actions[t]`` is the action that produced frame ``t`` from frame
    ``t-1`` (``actions[0]`` is the no-op that starts the episode)."""

    task: str
    index: int
    frames: np.ndarray  # uint8 [T, H, W, 3]
    actions: np.ndarray  # int64 [T, A]
    poses: np.ndarray  # float32 [T, P]
    memory_gap: np.ndarray  # int32 [T] (teacher-forced: from the true history)
    memory_gap_rollout: np.ndarray  # int32 [T] (rollout: from what the context showed)
    memory_mask: np.ndarray  # bool [T, H, W]
    novel_mask: np.ndarray  # bool [T, H, W]
    #: the identification tests of the headline ``recall`` metric (None: the family has none)
    items: MemoryItems | None = None
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

    def gaps(self, protocol: str) -> np.ndarray:
        """Per-frame memory gaps counted from what a model under ``protocol`` observed."""
        return self.memory_gap_rollout if protocol == "rollout" else self.memory_gap

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
                    f"episode {self.index}: '{name}' has dtype {a.dtype} and shape {a.shape}, expected {dtype} {want}"
                )
        if self.items is not None:
            self.items.check(frames, resolution[0], resolution[1])

    def info_json(self) -> str:
        return json.dumps(self.info, sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        """Hash of every stored array (shape, dtype and bytes, in ``ARRAY_LAYOUT`` order), the memory
        items and ``info``."""
        h = hashlib.sha256()
        for name in ARRAY_LAYOUT:
            a = np.ascontiguousarray(getattr(self, name))
            h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
            h.update(a.tobytes())
        if self.items is not None:
            self.items.sha256_update(h)
        h.update(b"info:" + self.info_json().encode())
        return h.hexdigest()


@dataclass
class MemoryMetadata:
    age: np.ndarray  # int32 [T, H, W], NEVER_SEEN where novel (true history)
    memory_gap: np.ndarray  # int32 [T]
    memory_mask: np.ndarray  # bool [T, H, W]
    novel_mask: np.ndarray  # bool [T, H, W]
    #: int32 [T, H, W]: ages counted from the context for t >= C (see the module docstring)
    age_rollout: np.ndarray | None = None
    memory_gap_rollout: np.ndarray | None = None


def memory_metadata(
    content_ids: np.ndarray,
    recent_window: int,
    context_frames: int | None = None,
    num_ids: int | None = None,
    min_memory_pixels: int = MIN_MEMORY_PIXELS,
    memory_eligible: np.ndarray | None = None,
) -> MemoryMetadata:
    """Ages, masks and per-frame gaps from a ``[T, H, W]`` map of content identities.

    One pass over time with a ``last_seen`` table indexed by content id: O(T * H * W). Pass
    ``num_ids`` (all ids are below it) to index the table directly; otherwise ids are compacted.
    ``memory_eligible`` (bool, indexed by content id; needs ``num_ids``) restricts the memory mask
    to the content a family tests memory on (e.g. objects, not the background around them).
    """
    ids = np.asarray(content_ids)
    if ids.ndim != 3:
        raise ValueError(f"content_ids must be [T, H, W], got shape {ids.shape}")
    if ids.size and ids.min() < 0:
        raise ValueError("content ids must be non-negative")
    if memory_eligible is not None and num_ids is None:
        raise ValueError("memory_eligible needs num_ids")
    T, H, W = ids.shape
    flat = ids.reshape(T, H * W)
    if num_ids is not None and (ids.size == 0 or ids.max() < num_ids):
        inv, table = flat, num_ids
    else:  # compact the id space so the table stays small whatever ids the generator uses
        uniq, inv = np.unique(flat, return_inverse=True)
        inv, table = inv.reshape(T, H * W), uniq.size
    last = np.full(table, -1, dtype=np.int64)
    age = np.empty((T, H * W), dtype=np.int32)
    age_r = np.empty((T, H * W), dtype=np.int32)
    novel = np.empty((T, H * W), dtype=bool)
    C = T if context_frames is None else context_frames
    in_context = None
    last_ctx = None
    for t in range(T):  # the scan over time is inherently sequential
        if t == C:
            in_context = last >= 0  # content some context frame shows
            last_ctx = last.copy()  # ... and the last context frame that showed it
        row = inv[t]
        prev = last[row]
        age[t] = np.where(prev >= 0, t - prev, NEVER_SEEN)
        if last_ctx is None:
            age_r[t] = age[t]
            novel[t] = prev < 0
        else:
            pc = last_ctx[row]
            age_r[t] = np.where(pc >= 0, t - pc, NEVER_SEEN)
            novel[t] = ~in_context[row]
        last[row] = t
    memory = ~novel & (age > recent_window)
    if memory_eligible is not None:
        memory &= np.asarray(memory_eligible, bool)[flat]
    gap = frame_gaps(age, memory, novel, min_memory_pixels)
    gap_r = frame_gaps(age_r, memory, novel, min_memory_pixels)
    return MemoryMetadata(
        age.reshape(T, H, W), gap, memory.reshape(T, H, W), novel.reshape(T, H, W), age_r.reshape(T, H, W), gap_r
    )


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


def frame_gaps(
    age: np.ndarray, memory: np.ndarray, novel: np.ndarray, min_memory_pixels: int = MIN_MEMORY_PIXELS
) -> np.ndarray:
    """Per-frame ``memory_gap`` from per-pixel ages and masks (see the module docstring).

    "Median" is the lower median: the middle value, or the lower of the two middle values.
    """
    T = age.shape[0]
    age2, mem2, nov2 = age.reshape(T, -1), memory.reshape(T, -1), novel.reshape(T, -1)
    mem_med, mem_n = _masked_lower_median(age2, mem2)
    seen_med, seen_n = _masked_lower_median(age2, ~nov2)
    gap = np.where(mem_n >= min_memory_pixels, mem_med, np.where(seen_n > 0, seen_med, NEVER_SEEN))
    return gap.astype(np.int32)
