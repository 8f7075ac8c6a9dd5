"""Memory metadata from poses, for families that do not know what each pixel shows.

A simulator (Memory Maze) or a recorded episode gives the agent's pose at every frame but no
per-pixel content identity, so the metadata of ``memorybench.episode`` is defined per *frame*,
with "the same content" replaced by "nearly the same view":

* frames ``s`` and ``t`` are **near** when the agent's positions are at most ``near_distance``
  apart (in the pose's position units: maze cells for Memory Maze) **and** its headings differ by
  at most ``near_angle`` degrees. Both conditions, inclusive.
* ``age[t]`` = ``t - s`` for the last frame ``s < t`` near ``t`` (any earlier frame, context or
  predicted, as for pixels); ``NEVER_SEEN`` if there is none.
* ``novel_mask[t]`` (all pixels or none): no earlier frame is near ``t``; and for ``t >=
  context_frames`` (``C``) no *context* frame is near ``t``: a model under the rollout protocol
  observes only the context, exactly as in ``memorybench.episode``.
* ``memory_mask[t]`` (all pixels or none): ``t`` is not novel and ``age[t] > recent_window``:
  the view was seen, but not in the last ``K`` frames.

These masks are per frame: a frame one turn step away from the previous one (18 degrees in
Memory Maze) is "not near" it, although most of its picture is in that previous frame. Under the
rollout protocol this does not matter (the model has generated those recent frames itself; what
it must bring back comes from the context), but under teacher forcing a memory frame would be
largely predictable from the true previous frame. Tasks built on these masks therefore offer the
rollout protocol only.
* ``memory_gap[t]`` = ``age[t]`` when ``t`` is not novel, else ``NEVER_SEEN`` (what
  ``memorybench.episode.frame_gaps`` gives for whole-frame masks).
* ``memory_gap_rollout[t]`` (``t >= C``): ``t - s`` for the last *context* frame ``s`` near ``t``:
  under the rollout protocol the model observed only the context (``memorybench.episode``).

Choosing the thresholds: they must be *smaller than the motion of one step* of a moving agent,
or every frame is near the frame before it (``age`` 1) and only the first frame of a return
counts as memory. In Memory Maze one forward step moves 0.25 cells and one turn step turns
about 18.4 degrees, so the defaults are 0.2 cells and 12 degrees: a walking or turning agent
sees a new view at every step, a standing one (noop) sees the same view (``age`` 1), and coming
back to a place and heading seen long ago -- within 0.2 cells and 12 degrees, which two passes
along the same corridor, or two 360-degree look-arounds at the same spot, achieve -- gives that
frame a memory gap equal to the time since. Views seen from farther or more turned count as
novel: they are excluded from the memory scores (conservative), not scored as memory.
"""

from __future__ import annotations

import numpy as np

from ..episode import NEVER_SEEN, MemoryMetadata, frame_gaps

#: defaults for Memory Maze (cells, degrees); see the module docstring
NEAR_DISTANCE = 0.2
NEAR_ANGLE = 12.0


def check_rollout_only(spec) -> None:
    """Tasks with per-frame pose masks offer the rollout protocol only (see the module docstring)."""
    if "teacher-forced" in spec.protocols:
        raise ValueError("the memory masks of this family are per frame, from poses: under teacher forcing a "
                         "memory frame is largely predictable from the true previous frame, so the task must list "
                         "protocols: [rollout]")


def headings_from_dirs(dirs: np.ndarray) -> np.ndarray:
    """Heading angles in radians from ``[T, 2]`` direction vectors (``atan2(dy, dx)``)."""
    dirs = np.asarray(dirs, dtype=np.float64)
    return np.arctan2(dirs[:, 1], dirs[:, 0])


def near_matrix(positions: np.ndarray, headings: np.ndarray, near_distance: float, near_angle: float) -> np.ndarray:
    """``near[t, s]``: frames ``t`` and ``s`` are within ``near_distance`` and ``near_angle`` degrees.

    ``positions`` is ``[T, D]`` (any number of coordinates), ``headings`` ``[T]`` in radians.
    """
    p = np.asarray(positions, dtype=np.float64)
    h = np.asarray(headings, dtype=np.float64)
    if p.ndim != 2 or h.shape != (p.shape[0],):
        raise ValueError(f"positions must be [T, D] and headings [T], got {p.shape} and {h.shape}")
    if not (np.isfinite(p).all() and np.isfinite(h).all()):
        raise ValueError("poses contain NaN or infinite values")
    d = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1))
    dh = np.abs((h[:, None] - h[None, :] + np.pi) % (2 * np.pi) - np.pi)
    # a small tolerance so that thresholds hit exactly (hand-built poses) count as near
    return (d <= near_distance + 1e-9) & (dh <= np.deg2rad(near_angle) + 1e-9)


def frame_ages(near: np.ndarray, context_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame ``(age, novel)`` from a ``[T, T]`` ``near`` matrix (see the module docstring)."""
    T = near.shape[0]
    C = T if context_frames is None else context_frames
    idx = np.arange(T)
    earlier = near & (idx[None, :] < idx[:, None])  # s < t
    last = np.where(earlier, idx[None, :], -1).max(1, initial=-1)
    age = np.where(last >= 0, idx - last, NEVER_SEEN).astype(np.int32)
    novel = last < 0
    if C < T:
        in_context = earlier[:, :C].any(1)
        novel[C:] = ~in_context[C:]
    return age, novel


def _ages_chunked(positions: np.ndarray, headings: np.ndarray, near_distance: float, near_angle: float,
                  context_frames: int | None, chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``frame_ages(near_matrix(...))`` computed ``chunk`` rows at a time (memory O(chunk * T)), and
    the rollout ages (from the last near context frame; equal to ``age`` before the context ends)."""
    T = len(headings)
    age = np.empty(T, np.int32)
    age_r = np.empty(T, np.int32)
    novel = np.empty(T, bool)
    C = T if context_frames is None else context_frames
    for a in range(0, T, chunk):
        b = min(T, a + chunk)
        near = near_matrix(np.concatenate([positions[a:b], positions[:b]]),
                           np.concatenate([headings[a:b], headings[:b]]), near_distance, near_angle)[: b - a, b - a:]
        rows = np.arange(a, b)
        earlier = near & (np.arange(b)[None, :] < rows[:, None])
        last = np.where(earlier, np.arange(b)[None, :], -1).max(1, initial=-1)
        age[a:b] = np.where(last >= 0, rows - last, NEVER_SEEN)
        age_r[a:b] = age[a:b]
        nov = last < 0
        after = rows >= C
        if after.any():
            ctx = earlier[after, :C]
            nov[after] = ~ctx.any(1)
            last_ctx = np.where(ctx, np.arange(C)[None, :], -1).max(1, initial=-1)
            age_r[a:b][after] = np.where(last_ctx >= 0, rows[after] - last_ctx, NEVER_SEEN)
        novel[a:b] = nov
    return age, novel, age_r


def pose_memory_metadata(positions: np.ndarray, headings: np.ndarray, resolution: tuple[int, int],
                         recent_window: int, context_frames: int | None = None,
                         near_distance: float = NEAR_DISTANCE, near_angle: float = NEAR_ANGLE) -> MemoryMetadata:
    """Whole-frame memory metadata (``MemoryMetadata`` with ``[T, H, W]`` masks) from poses.

    ``positions`` ``[T, D]``, ``headings`` ``[T]`` in radians; thresholds as in the module docstring.
    """
    H, W = resolution
    positions = np.asarray(positions, dtype=np.float64)
    headings = np.asarray(headings, dtype=np.float64)
    if positions.ndim != 2 or headings.shape != (positions.shape[0],):
        raise ValueError(f"positions must be [T, D] and headings [T], got {positions.shape} and {headings.shape}")
    age, novel, age_r = _ages_chunked(positions, headings, near_distance, near_angle, context_frames)
    T = len(age)
    memory = ~novel & (age > recent_window)
    age3 = np.ascontiguousarray(np.broadcast_to(age[:, None, None], (T, H, W)))
    mem3 = np.ascontiguousarray(np.broadcast_to(memory[:, None, None], (T, H, W)))
    nov3 = np.ascontiguousarray(np.broadcast_to(novel[:, None, None], (T, H, W)))
    # the per-frame gap is age where seen; computed through frame_gaps on a single "pixel" per
    # frame so that the definition stays the one of memorybench.episode
    gap = frame_gaps(age[:, None], memory[:, None], novel[:, None], min_memory_pixels=1)
    gap_r = frame_gaps(age_r[:, None], memory[:, None], novel[:, None], min_memory_pixels=1)
    age_r3 = np.ascontiguousarray(np.broadcast_to(age_r[:, None, None], (T, H, W)))
    return MemoryMetadata(age3, gap, mem3, nov3, age_r3, gap_r)


def unscored_metadata(frames: int, resolution: tuple[int, int]) -> MemoryMetadata:
    """Metadata for an episode without poses: every frame novel, nothing scored as memory.

    Only whole-frame metrics are meaningful for such episodes; memory scores are empty.
    """
    H, W = resolution
    never = np.full(frames, NEVER_SEEN, np.int32)
    return MemoryMetadata(np.full((frames, H, W), NEVER_SEEN, np.int32), never, np.zeros((frames, H, W), bool),
                          np.ones((frames, H, W), bool), np.full((frames, H, W), NEVER_SEEN, np.int32), never.copy())
