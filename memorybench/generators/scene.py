"""scene-consistency: explore a large procedural world, come back, and the view must match.

The world is a 2-D map (``map_size`` texels) tiled with square tiles of ``step`` x ``step`` texels,
each of one colour drawn uniformly and independently from a palette of ``palette_levels^3``
colours (generator version 2). The agent sees an egocentric top-down view of ``resolution``
pixels centred on itself, rotated so that its heading points up; headings are the four compass
directions, so every view pixel is exactly one map texel.

Why independent tiles: a tile that comes back into view cannot be predicted from anything a model
without memory sees (its neighbours, the recent frames): its colour is independent of them. Smooth
textures and large objects would let inpainting from the visible edge guess returning content,
which is not memory (measured on version 1: 44-51% of its memory pixels had their colour at the
same pixel of a recent frame).

Actions (one discrete component): 0 noop, 1 forward, 2 backward (``step`` texels: one tile), 3 turn
left, 4 turn right (90 degrees). Poses: ``(y, x, heading)`` with heading 0 north, 1 east, 2 south,
3 west.

Episode structure: the agent *explores* during the context frames, along a random walk that keeps
going forward, turning with probability ``turn_prob`` or at the edge of the map. Then, in the
frames the model must predict, depending on ``mode``:

* ``retrace`` (retrieval): the agent undoes its exploration action by action (forward <-> backward,
  left <-> right), so predicted frame ``C + j`` shows exactly the view of frame ``C - 2 - j``; the
  content at its leading edge was last seen about ``2j`` frames before.
* ``revisit`` (reasoning): the agent travels to places it saw early in the exploration, by an
  axis-aligned route chosen to pass through the *least recently* seen parts of the map, arriving
  from another direction than it left; the answer is not in any recent frame and often must be
  recalled rotated.

**Content and memory**: the content identity of a pixel is its *tile*. A pixel is memory-only when
its tile was seen before but no pixel of that tile was visible in the last ``K`` frames (a tile
half in view is not memory: its colour is in view).

**Memory items** (``memorybench.recall``): one per tile returning into view in a predicted frame,
on that tile's memory-only pixels; the candidates are the ``palette_levels^3`` colours of the
palette; the truth is the tile's colour. A model that remembers the place but shifted by a tile,
or another place, picks another colour. Chance is ``1 / palette_levels^3`` for any prediction
made without memory, since tile colours are independent of everything else in view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..episode import Episode, MemoryItems, memory_metadata
from ..spec import ActionSpace, param
from .base import Generator

NOOP, FORWARD, BACKWARD, LEFT, RIGHT = range(5)
INVERSE = np.array([NOOP, BACKWARD, FORWARD, RIGHT, LEFT])
# forward and right unit vectors in map (y, x) coordinates for headings N, E, S, W
FWD = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])
RGT = np.array([(0, 1), (1, 0), (0, -1), (-1, 0)])


def palette(levels: int) -> np.ndarray:
    """uint8 ``[levels^3, 3]``: every (r, g, b) with each channel on ``levels`` even steps in [32, 224]."""
    v = np.rint(np.linspace(32, 224, levels)).astype(np.uint8)
    r, g, b = np.meshgrid(v, v, v, indexing="ij")
    return np.stack([r.ravel(), g.ravel(), b.ravel()], 1)


@dataclass(frozen=True)
class SceneParams:
    mode: str = param("retrace", choices=("retrace", "revisit"), doc="how the agent comes back")
    map_size: tuple[int, ...] = param([384, 384], min=64, max=4096, doc="world size [height, width] in texels")
    step: int = param(4, min=1, max=64, doc="texels per forward or backward move, and the side of a tile")
    turn_prob: float = param(0.1, min=0.0, max=1.0, doc="chance of turning at each exploration step")
    noop_prob: float = param(0.02, min=0.0, max=1.0, doc="chance of standing still at each exploration step")
    palette_levels: int = param(4, min=2, max=16, doc="levels per colour channel: palette_levels^3 tile colours")
    min_revisit_age: int = param(
        128, min=1, max=1_000_000, doc="revisit: targets were last seen at least this long ago"
    )

    def __post_init__(self):
        if len(self.map_size) != 2:
            raise ValueError(f"map_size must be [height, width], got {list(self.map_size)}")
        if self.map_size[0] % self.step or self.map_size[1] % self.step:
            raise ValueError(f"map_size {list(self.map_size)} must be a multiple of the tile side step={self.step}")
        if self.turn_prob + self.noop_prob > 0.9:
            raise ValueError("turn_prob + noop_prob must leave room for forward moves (<= 0.9)")


class SceneConsistency(Generator):
    family = "scene_consistency"
    version = 2
    Params = SceneParams

    @classmethod
    def action_space(cls, params) -> ActionSpace:
        return ActionSpace(
            nvec=(5,), names=("move",), labels=(("noop", "forward", "backward", "turn_left", "turn_right"),)
        )

    @classmethod
    def pose_fields(cls, params) -> tuple[str, ...]:
        return ("y", "x", "heading")

    @classmethod
    def check(cls, spec) -> None:
        p: SceneParams = spec.params
        h, w = spec.resolution
        margin = cls.margin(spec)
        if min(p.map_size) < 2 * margin + 4 * p.step:
            raise ValueError(f"map_size {list(p.map_size)} is too small for a {h}x{w} view and step {p.step}")
        if p.mode == "retrace" and spec.predict_frames > spec.context_frames - 1:
            raise ValueError(
                f"retrace needs predict frames ({spec.predict_frames}) <= context_frames - 1 "
                f"({spec.context_frames - 1}): the return undoes the exploration"
            )

    @staticmethod
    def margin(spec) -> int:
        """Distance from the map's edge the agent keeps (a rotated view stays on the map), rounded up
        to a whole number of tiles so that poses sit on tile corners."""
        h, w = spec.resolution
        m = int(np.ceil(np.hypot(h, w) / 2)) + 2
        s = spec.params.step
        return -(-m // s) * s

    # ------------------------------------------------------------------------------------------
    def make_map(self, rng: np.random.Generator) -> np.ndarray:
        """The palette index of every tile: uint8/int ``[Hm / step, Wm / step]``, uniform and independent."""
        p = self.params
        return rng.integers(0, p.palette_levels**3, size=(p.map_size[0] // p.step, p.map_size[1] // p.step))

    def tile_of(self, texels: np.ndarray) -> np.ndarray:
        """Tile index (row-major over the tile grid) of map texel indices ``y * Wm + x``."""
        s, Wm = self.params.step, self.params.map_size[1]
        return (texels // Wm // s) * (Wm // s) + (texels % Wm) // s

    def _move(self, pose: np.ndarray, action: int) -> np.ndarray:
        y, x, hd = pose
        s = self.params.step
        if action == FORWARD:
            return np.array([y + s * FWD[hd][0], x + s * FWD[hd][1], hd])
        if action == BACKWARD:
            return np.array([y - s * FWD[hd][0], x - s * FWD[hd][1], hd])
        if action == LEFT:
            return np.array([y, x, (hd - 1) % 4])
        if action == RIGHT:
            return np.array([y, x, (hd + 1) % 4])
        return pose.copy()

    def _inside(self, pose: np.ndarray) -> bool:
        Hm, Wm = self.params.map_size
        m = self.margin(self.spec)
        return m <= pose[0] < Hm - m and m <= pose[1] < Wm - m

    def explore(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """A random forward-biased walk of ``n`` frames: ``(actions [n], poses [n, 3])``."""
        p = self.params
        Hm, Wm = p.map_size
        m = self.margin(self.spec)
        s = p.step
        # start on the step lattice so every later pose is too
        y = m + s * int(rng.integers(0, (Hm - 2 * m) // s))
        x = m + s * int(rng.integers(0, (Wm - 2 * m) // s))
        pose = np.array([y, x, int(rng.integers(4))])
        actions, poses = [NOOP], [pose]
        for _ in range(n - 1):
            u = rng.random()
            if u < p.noop_prob:
                a = NOOP
            elif u < p.noop_prob + p.turn_prob:
                a = LEFT if rng.random() < 0.5 else RIGHT
            else:
                a = FORWARD
            if a == FORWARD and not self._inside(self._move(pose, FORWARD)):
                a = LEFT if rng.random() < 0.5 else RIGHT
            pose = self._move(pose, a)
            actions.append(a)
            poses.append(pose)
        return np.array(actions), np.array(poses)

    def view_ids(self, poses: np.ndarray) -> np.ndarray:
        """Map texel index of every view pixel for each pose: ``[T, H, W]`` int64."""
        H, W = self.spec.resolution
        Wm = self.params.map_size[1]
        di = np.arange(H)[:, None] - H // 2  # > 0: behind the agent
        dj = np.arange(W)[None, :] - W // 2  # > 0: to the agent's right
        hd = poses[:, 2].astype(np.int64)
        f, r = FWD[hd], RGT[hd]  # [T, 2]
        wy = poses[:, 0, None, None] - di[None] * f[:, 0, None, None] + dj[None] * r[:, 0, None, None]
        wx = poses[:, 1, None, None] - di[None] * f[:, 1, None, None] + dj[None] * r[:, 1, None, None]
        return (wy * Wm + wx).astype(np.int64)

    def _route(self, start: np.ndarray, goal_yx: np.ndarray, last_seen: np.ndarray) -> list[int]:
        """Actions from ``start`` to ``goal_yx``: an L-shaped route through the less recently seen
        side (rows first or columns first, whichever passes older texels)."""
        s = self.params.step
        Wm = self.params.map_size[1]
        (y, x, hd), (gy, gx) = start, goal_yx

        def line(a, b) -> np.ndarray:  # lattice points after a, up to and including b
            n = (abs(b[0] - a[0]) + abs(b[1] - a[1])) // s
            i = np.arange(1, n + 1)
            return np.stack([a[0] + np.sign(b[0] - a[0]) * s * i, a[1] + np.sign(b[1] - a[1]) * s * i], 1)

        options = []
        for order, corner in (("yx", (gy, x)), ("xy", (y, gx))):
            pts = np.concatenate([line((y, x), corner), line(corner, (gy, gx))])
            recency = last_seen[(pts[:, 0] * Wm + pts[:, 1]).astype(np.int64)].mean() if len(pts) else 0.0
            options.append((recency, order, corner))
        _, order, corner = min(options)
        actions: list[int] = []
        pose = np.array([y, x, hd])
        for target in (corner, (gy, gx)):
            dy, dx = target[0] - pose[0], target[1] - pose[1]
            if dy == 0 and dx == 0:
                continue
            want = (0 if dy < 0 else 2) if dy != 0 else (1 if dx > 0 else 3)
            turn = (want - pose[2]) % 4
            for a in {0: [], 1: [RIGHT], 2: [RIGHT, RIGHT], 3: [LEFT]}[turn]:
                pose = self._move(pose, a)
                actions.append(a)
            for _ in range((abs(dy) + abs(dx)) // s):
                pose = self._move(pose, FORWARD)
                actions.append(FORWARD)
        return actions

    def revisit(
        self, rng: np.random.Generator, actions: np.ndarray, poses: np.ndarray, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Extend an exploration by ``n`` frames of travel to long-unseen places of its first half."""
        p = self.params
        C = len(actions)
        Hm, Wm = p.map_size
        last_seen = np.full(Hm * Wm, -1.0)
        ids = self.view_ids(poses)
        for t in range(C):
            last_seen[ids[t].ravel()] = t
        acts, pos = list(actions), list(poses)
        pose = poses[-1]
        while len(acts) < C + n:
            now = len(acts)
            early = np.arange(0, max(1, (C + 1) // 2))
            centre = (poses[early, 0] * Wm + poses[early, 1]).astype(np.int64)
            age = now - last_seen[centre]
            dist = (np.abs(poses[early, 0] - pose[0]) + np.abs(poses[early, 1] - pose[1])) / p.step + 3
            ok = (age >= p.min_revisit_age) & (dist <= C + n - now) & (dist > 3 + 4)
            if not ok.any():
                ok = dist > 3
            cand = early[ok]
            # prefer the oldest places, then nearer ones, with a little randomness
            score = age[ok] - 0.5 * dist[ok] + rng.random(len(cand))
            goal = poses[cand[np.argmax(score)], :2]
            route = self._route(pose, goal, last_seen)
            if not route:
                route = [LEFT]
            for a in route:
                if len(acts) >= C + n:
                    break
                pose = self._move(pose, a)
                acts.append(a)
                pos.append(pose)
                last_seen[self.view_ids(pose[None])[0].ravel()] = len(acts) - 1
        return np.array(acts), np.array(pos)

    def generate(self, index: int) -> Episode:
        spec, p = self.spec, self.params
        T, C = spec.frames, spec.context_frames
        rng = self.rng(index)
        tiles = self.make_map(rng)
        actions, poses = self.explore(rng, C)
        if p.mode == "retrace":
            back = INVERSE[actions[::-1][: T - C]]
            more = [poses[-1]]
            for a in back:
                more.append(self._move(more[-1], int(a)))
            poses = np.concatenate([poses, np.array(more[1:])])
            actions = np.concatenate([actions, back])
        else:
            actions, poses = self.revisit(rng, actions, poses, T - C)
        ids = self.tile_of(self.view_ids(poses))  # [T, H, W] tile under each pixel
        colour = tiles.ravel()[ids]  # palette index of each pixel
        frames = palette(p.palette_levels)[colour]
        meta = memory_metadata(ids, spec.recent_window, spec.context_frames, num_ids=tiles.size)
        items = self._items(ids, colour, meta)
        info = {"mode": p.mode, "map_size": list(p.map_size), "start": [int(v) for v in poses[0]]}
        return Episode(
            task=spec.name,
            index=index,
            frames=frames,
            actions=actions.astype(np.int64)[:, None],
            poses=poses.astype(np.float32),
            memory_gap=meta.memory_gap,
            memory_gap_rollout=meta.memory_gap_rollout,
            memory_mask=meta.memory_mask,
            novel_mask=meta.novel_mask,
            items=items,
            info=info,
            content_ids=ids,
        )

    # ----------------------------------------------------------------------------------------
    # memory items and their candidates

    def _items(self, ids: np.ndarray, colour: np.ndarray, meta) -> MemoryItems:
        """One item per (predicted frame, tile) with memory-only pixels: that tile's pixels."""
        T, H, W = ids.shape
        rows = []
        for t in range(self.spec.context_frames, T):
            mem = meta.memory_mask[t].ravel()
            if not mem.any():
                continue
            pix = np.flatnonzero(mem)
            tile = ids[t].ravel()[pix]
            order = np.argsort(tile, kind="stable")
            pix, tile = pix[order], tile[order]
            starts = np.flatnonzero(np.r_[True, tile[1:] != tile[:-1]])
            for a, b in zip(starts, np.r_[starts[1:], len(tile)]):
                q = pix[a]
                rows.append(
                    {
                        "frame": t,
                        "gap": int(meta.age.reshape(T, -1)[t, q]),
                        "gap_rollout": int(meta.age_rollout.reshape(T, -1)[t, q]),
                        "truth": int(colour[t].ravel()[q]),
                        "key": int(tile[a]),
                        "pixels": np.sort(pix[a:b]),
                    }
                )
        return MemoryItems.build(rows)

    @classmethod
    def num_candidates(cls, spec) -> int:
        return spec.params.palette_levels**3

    def item_candidates(self, episode: Episode, i: int) -> np.ndarray:
        """uint8 ``[palette size, P, 3]``: item ``i``'s pixels painted in each colour of the palette."""
        n = len(episode.items.pixels_of(i))
        return np.repeat(palette(self.params.palette_levels)[:, None, :], n, axis=1)
