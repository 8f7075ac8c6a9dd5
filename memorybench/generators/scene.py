"""scene-consistency: explore a large procedural world, come back, and the view must match.

The world is a 2-D map (``map_size`` texels) of textured regions (a Voronoi partition, each cell
with its own colour and pattern) with distinct landmarks (objects of a colour, a shape and a
texture) scattered over it. The agent sees an egocentric top-down view of ``resolution`` pixels
centred on itself, rotated so that its heading points up; headings are the four compass
directions, so every view pixel is exactly one map texel (the content identity of that pixel).

Actions (one discrete component): 0 noop, 1 forward, 2 backward (``step`` texels), 3 turn left,
4 turn right (90 degrees). Poses: ``(y, x, heading)`` with heading 0 north, 1 east, 2 south, 3 west.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..episode import Episode, memory_metadata
from ..spec import ActionSpace, param
from . import render
from .base import Generator

NOOP, FORWARD, BACKWARD, LEFT, RIGHT = range(5)
INVERSE = np.array([NOOP, BACKWARD, FORWARD, RIGHT, LEFT])
# forward and right unit vectors in map (y, x) coordinates for headings N, E, S, W
FWD = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])
RGT = np.array([(0, 1), (1, 0), (0, -1), (-1, 0)])


@dataclass(frozen=True)
class SceneParams:
    mode: str = param("retrace", choices=("retrace", "revisit"), doc="how the agent comes back")
    map_size: tuple[int, ...] = param([384, 384], min=64, max=4096, doc="world size [height, width] in texels")
    step: int = param(4, min=1, max=64, doc="texels per forward or backward move")
    turn_prob: float = param(0.1, min=0.0, max=1.0, doc="chance of turning at each exploration step")
    noop_prob: float = param(0.02, min=0.0, max=1.0, doc="chance of standing still at each exploration step")
    regions: int = param(28, min=1, max=4096, doc="Voronoi regions of ground texture")
    landmarks: int = param(60, min=0, max=10_000, doc="distinct objects scattered over the map")
    landmark_size: tuple[int, ...] = param([8, 14], min=3, max=128, doc="landmark side range [min, max]")
    texture_cell: int = param(24, min=2, max=512, doc="feature size of the ground noise, in texels")
    min_revisit_age: int = param(128, min=1, max=1_000_000, doc="revisit: targets were last seen at least this long ago")

    def __post_init__(self):
        if len(self.map_size) != 2:
            raise ValueError(f"map_size must be [height, width], got {list(self.map_size)}")
        if len(self.landmark_size) != 2 or self.landmark_size[0] > self.landmark_size[1]:
            raise ValueError(f"landmark_size must be [min, max], got {list(self.landmark_size)}")
        if self.turn_prob + self.noop_prob > 0.9:
            raise ValueError("turn_prob + noop_prob must leave room for forward moves (<= 0.9)")


class SceneConsistency(Generator):
    family = "scene_consistency"
    version = 1
    Params = SceneParams

    @classmethod
    def action_space(cls, params) -> ActionSpace:
        return ActionSpace(nvec=(5,), names=("move",), labels=(("noop", "forward", "backward", "turn_left", "turn_right"),))

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
            raise ValueError(f"retrace needs predict frames ({spec.predict_frames}) <= context_frames - 1 "
                             f"({spec.context_frames - 1}): the return undoes the exploration")
        if p.landmark_size[1] >= min(p.map_size) // 4:
            raise ValueError("landmark_size must be under a quarter of the map")

    @staticmethod
    def margin(spec) -> int:
        h, w = spec.resolution
        return int(np.ceil(np.hypot(h, w) / 2)) + 2

    # ------------------------------------------------------------------------------------------
    def make_map(self, rng: np.random.Generator) -> np.ndarray:
        """The world's texels as uint8 RGB ``[Hm, Wm, 3]``."""
        p = self.params
        Hm, Wm = p.map_size
        # Voronoi regions, each with a colour and a pattern
        seeds = rng.random((p.regions, 2)) * [Hm, Wm]
        yy = np.arange(Hm, dtype=np.float32)[:, None]
        xx = np.arange(Wm, dtype=np.float32)[None, :]
        best = np.full((Hm, Wm), np.inf, np.float32)
        region = np.zeros((Hm, Wm), np.int64)
        for r, (sy, sx) in enumerate(seeds):
            d2 = (yy - sy) ** 2 + (xx - sx) ** 2
            closer = d2 < best
            best = np.where(closer, d2, best)
            region = np.where(closer, r, region)
        hue = rng.integers(0, render.HUES, p.regions)
        shade = rng.uniform(0.45, 0.9, p.regions).astype(np.float32)
        period = rng.integers(3, 9, p.regions)
        kind = rng.integers(0, 4, p.regions)  # 0 plain, 1 stripes, 2 checks, 3 speckle
        base = np.stack([render.palette_colour(h, light=bool(h % 2)) for h in range(render.HUES)])[hue] * shade[:, None]
        yi, xi = np.mgrid[0:Hm, 0:Wm]
        per = period[region]
        patt = np.select(
            [kind[region] == 1, kind[region] == 2, kind[region] == 3],
            [((yi + xi) // per) % 2, ((yi // per) + (xi // per)) % 2, (rng.random((Hm, Wm)) < 0.15)],
            default=0).astype(np.float32)
        noise = render.fractal_noise(rng, Hm, Wm, p.texture_cell)
        rgb = base[region] * (0.75 + 0.35 * noise[..., None]) * (1 - 0.25 * patt[..., None])
        # landmarks: distinct (shape, texture, colour) sprites with a dark outline
        lo, hi = p.landmark_size
        margin = self.margin(self.spec)
        for _ in range(p.landmarks):
            s = int(rng.integers(lo, hi + 1))
            y0 = int(rng.integers(margin // 2, Hm - s - margin // 2))
            x0 = int(rng.integers(margin // 2, Wm - s - margin // 2))
            spr, sil = render.object_sprite(render.SHAPES[rng.integers(len(render.SHAPES))],
                                            render.TEXTURES[rng.integers(len(render.TEXTURES))],
                                            int(rng.integers(render.HUES)), s, max(2, s // 4))
            outline = np.zeros_like(sil)
            outline[1:, :] |= sil[:-1, :]
            outline[:-1, :] |= sil[1:, :]
            outline[:, 1:] |= sil[:, :-1]
            outline[:, :-1] |= sil[:, 1:]
            outline &= ~sil
            box = rgb[y0:y0 + s, x0:x0 + s]
            box[outline] = 0.08
            box[sil] = spr[sil]
        return render.quantise(np.clip(rgb, 0, 1))

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

    def revisit(self, rng: np.random.Generator, actions: np.ndarray, poses: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
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
        world = self.make_map(rng)
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
        ids = self.view_ids(poses)
        frames = world.reshape(-1, 3)[ids]
        meta = memory_metadata(ids, spec.recent_window, spec.context_frames, num_ids=world.shape[0] * world.shape[1])
        info = {"mode": p.mode, "map_size": list(p.map_size), "start": [int(v) for v in poses[0]]}
        return Episode(task=spec.name, index=index, frames=frames, actions=actions.astype(np.int64)[:, None],
                       poses=poses.astype(np.float32), memory_gap=meta.memory_gap, memory_mask=meta.memory_mask,
                       novel_mask=meta.novel_mask, info=info, content_ids=ids)
