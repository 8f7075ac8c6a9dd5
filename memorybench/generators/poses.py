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

Memory items (the identification tests of ``memorybench.recall``; ``C = context_frames``, ``K =
recent_window``). Poses are compared by ``rho(a, b) = max(|pos_a - pos_b| / near_distance,
|heading_a - heading_b| / near_angle)``, the pose distance in units of the near thresholds (near:
``rho <= 1``), and ``FOIL_SEPARATION`` = 2. There is one item per memory frame ``t >= C`` whose
pose is more than ``FOIL_SEPARATION`` from the poses of the last ``K`` context frames ``C-K ..
C-1`` (what a model under rollout observed last: a view near them is in its recent window, not in
its memory). The item's region is the whole frame. Its candidates are **frames of the same
episode**: the true frame ``t`` and up to ``foils`` (default ``FOILS`` = 15) *foils*, chosen so that
no candidate is set apart from the others by how it was chosen:

* every two candidates, the truth included, are more than ``FOIL_SEPARATION`` apart, and every
  candidate is more than ``FOIL_SEPARATION`` from the poses of ``C-K .. C-1`` (as the truth is).
  The factor 2 makes a memory that retrieves *any* view near the truth (``rho <= 1``, what the
  perfect-memory reference does) retrieve a view nearer the truth than every foil in both pose
  components (triangle inequality); the *same* separation between foils gives every candidate
  the same empty neighbourhood in pose space as the truth. (Measured on pilot episodes, 15 foils:
  with foils only ``rho > 1`` apart but ``> 2`` from the truth, the truth had a wider empty
  neighbourhood, hence a larger share of the space of possible predictions, and every no-memory
  reference scored +0.02 to +0.05 above chance.)
* a frame whose picture is identical to a chosen candidate's (e.g. the same bare wall seen from
  two places) is not a foil: it is not another view.
* the foils are the frames nearest the truth's *position* (then heading, then frame index) that
  satisfy the separations, taken greedily: usually the other headings of the same spot (a
  look-around shows them all), then the views of the nearest places. Not random frames across the
  maze: a retrace's first returning views are in the rooms of the last context frames, and a
  prediction copied from those frames resembles any view of those rooms more than a view of
  another room; local foils share the truth's place, so a prediction made without memory of the
  views *at* that place is no closer to the truth than to them.
* the views near the true frames ``t-K .. t-1`` are *not* excluded: these tasks offer the rollout
  protocol only (see above), where a model never sees those frames. (Excluding them would leave a
  hole in pose space next to the truth, on the side it came from, which measurably favoured the
  truth: +0.01 to +0.02 for every no-memory reference on pilot episodes.)

Chance is then ``1 / (1 + foils offered)``. Candidates are stored as frame indices
(``MemoryItems.extra["candidate_frames"]``, ``[I, 1 + foils]``, the truth first); an item with
fewer available foils repeats the truth in the unused columns and excludes them
(``MemoryItems.exclude``); a memory frame with no available foil has no item. ``gap`` and
``gap_rollout`` are the frame's ``memory_gap`` and ``memory_gap_rollout``; ``key`` is the last
context frame near ``t``. The perfect-memory reference (the observed frame of the closest pose) is
approximate: a view up to ``near_angle`` degrees off is shifted sideways (Memory Maze at 64x64:
about 0.8 pixel per degree, so up to about 10 pixels at 12 degrees), so it scores below 1 (its
margin is measured by ``memorybench validity``).

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

from typing import TYPE_CHECKING

import numpy as np

from ..episode import NEVER_SEEN, MemoryItems, MemoryMetadata, frame_gaps

if TYPE_CHECKING:
    from ..episode import Episode
    from ..spec import TaskSpec

#: defaults for Memory Maze (cells, degrees); see the module docstring
NEAR_DISTANCE = 0.2
NEAR_ANGLE = 12.0
#: foils of a memory item differ from the truth by more than this many near thresholds (``rho``)
FOIL_SEPARATION = 2.0
#: foils per memory item (candidates: the true frame and these)
FOILS = 15
#: tolerance of the near tests (thresholds hit exactly by hand-built poses count as near)
_EPS = 1e-9


def check_rollout_only(spec: TaskSpec) -> None:
    """Tasks with per-frame pose masks offer the rollout protocol only (see the module docstring)."""
    if "teacher-forced" in spec.protocols:
        raise ValueError(
            "the memory masks of this family are per frame, from poses: under teacher forcing a "
            "memory frame is largely predictable from the true previous frame, so the task must list "
            "protocols: [rollout]"
        )


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
    return (d <= near_distance + _EPS) & (dh <= np.deg2rad(near_angle) + _EPS)


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


def _ages_chunked(
    positions: np.ndarray,
    headings: np.ndarray,
    near_distance: float,
    near_angle: float,
    context_frames: int | None,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``frame_ages(near_matrix(...))`` computed ``chunk`` rows at a time (memory O(chunk * T)), and
    the rollout ages (from the last near context frame; equal to ``age`` before the context ends)."""
    T = len(headings)
    age = np.empty(T, np.int32)
    age_r = np.empty(T, np.int32)
    novel = np.empty(T, bool)
    C = T if context_frames is None else context_frames
    for a in range(0, T, chunk):
        b = min(T, a + chunk)
        near = near_matrix(
            np.concatenate([positions[a:b], positions[:b]]),
            np.concatenate([headings[a:b], headings[:b]]),
            near_distance,
            near_angle,
        )[: b - a, b - a :]
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


def pose_memory_metadata(
    positions: np.ndarray,
    headings: np.ndarray,
    resolution: tuple[int, int],
    recent_window: int,
    context_frames: int | None = None,
    near_distance: float = NEAR_DISTANCE,
    near_angle: float = NEAR_ANGLE,
) -> MemoryMetadata:
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
    return MemoryMetadata(
        np.full((frames, H, W), NEVER_SEEN, np.int32),
        never,
        np.zeros((frames, H, W), bool),
        np.ones((frames, H, W), bool),
        np.full((frames, H, W), NEVER_SEEN, np.int32),
        never.copy(),
    )


# ------------------------------------------------------------------------------------------------
# memory items


def pose_rho(
    positions: np.ndarray, headings: np.ndarray, t: int, near_distance: float, near_angle: float
) -> np.ndarray:
    """``rho[s]``: the pose distance of frame ``s`` to frame ``t`` in units of the near thresholds,
    ``max(|pos_s - pos_t| / near_distance, |heading_s - heading_t| / near_angle)`` (near: ``rho <=
    1``, up to the near tests' tolerance). A zero threshold makes any difference infinitely far."""
    d = np.sqrt(((positions - positions[t]) ** 2).sum(-1))
    dh = np.abs((headings - headings[t] + np.pi) % (2 * np.pi) - np.pi)

    def units(x, thr):
        if thr > 0:
            return np.maximum(x - _EPS, 0.0) / thr
        return np.where(x <= _EPS, 0.0, np.inf)

    return np.maximum(units(d, near_distance), units(dh, np.deg2rad(near_angle)))


def pose_memory_items(
    frames: np.ndarray,
    positions: np.ndarray,
    headings: np.ndarray,
    meta: MemoryMetadata,
    context_frames: int,
    recent_window: int,
    near_distance: float = NEAR_DISTANCE,
    near_angle: float = NEAR_ANGLE,
    foils: int = FOILS,
) -> MemoryItems:
    """The memory items of a pose-based episode (see the module docstring), from its frames (uint8
    ``[T, H, W, 3]``), its poses and the metadata ``pose_memory_metadata`` made of them."""
    positions = np.asarray(positions, dtype=np.float64)
    headings = np.asarray(headings, dtype=np.float64)
    T, H, W = meta.memory_mask.shape
    C, K = context_frames, recent_window
    memory = meta.memory_mask[:, 0, 0]
    ctx = np.arange(C)
    pixels = np.arange(H * W, dtype=np.int32)
    frames = np.ascontiguousarray(frames).reshape(T, -1)
    rho_cache: dict[int, np.ndarray] = {}

    def rho(t: int) -> np.ndarray:
        if t not in rho_cache:
            rho_cache[t] = pose_rho(positions, headings, t, near_distance, near_angle)
        return rho_cache[t]

    # the views a model under rollout observed last (and the truth never is: see the docstring)
    recent = np.zeros(T, bool)
    for s in range(max(0, C - K), C):
        recent |= rho(s) <= FOIL_SEPARATION
    rows, cands = [], []
    for t in range(C, T):
        if not memory[t] or recent[t]:
            continue
        r = rho(t)
        idx = np.flatnonzero((r > FOIL_SEPARATION) & ~recent)
        d = np.sqrt(((positions[idx] - positions[t]) ** 2).sum(-1))
        dh = np.abs((headings[idx] - headings[t] + np.pi) % (2 * np.pi) - np.pi)
        chosen: list[int] = []
        taken = np.zeros(T, bool)  # within FOIL_SEPARATION of an already chosen foil
        for f in idx[np.lexsort((idx, dh, d))]:  # nearest position first, then heading, then frame
            if taken[f] or any(np.array_equal(frames[f], frames[c]) for c in [t, *chosen]):
                continue  # too near a chosen candidate, or the very same picture
            chosen.append(int(f))
            if len(chosen) == foils:
                break
            taken |= rho(int(f)) <= FOIL_SEPARATION
        n = len(chosen)
        if not n:
            continue
        rows.append(
            {
                "frame": t,
                "gap": int(meta.memory_gap[t]),
                "gap_rollout": int(meta.memory_gap_rollout[t]),
                "truth": 0,
                "key": int(ctx[r[:C] <= 1].max()),
                "pixels": pixels,
                "exclude": np.arange(n + 1, foils + 1),
            }
        )
        cands.append([t] + chosen + [t] * (foils - n))
        if len(rho_cache) > 2 * T:  # bounded memory on long episodes
            rho_cache.clear()
    extra = {"candidate_frames": np.array(cands, dtype=np.int32).reshape(len(cands), foils + 1)}
    return MemoryItems.build(rows, extra=extra)


def pose_item_candidates(episode: Episode, i: int) -> np.ndarray:
    """uint8 ``[1 + foils, P, 3]``: the pixels of item ``i`` in each of its candidate frames (the truth
    first; ``MemoryItems.extra["candidate_frames"]``)."""
    items = episode.items
    frames = items.extra["candidate_frames"][i]
    T = episode.frames.shape[0]
    return episode.frames.reshape(T, -1, 3)[frames][:, items.pixels_of(i)]
