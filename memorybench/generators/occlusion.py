"""occlusion-recall: objects are studied, hidden behind a curtain for G frames, then revealed.

The camera is fixed on a grid of ``rows x cols`` slots over a textured background. Each slot holds
one distinct object (a colour, a shape and a texture) behind a sliding curtain. A slot's timeline,
with ``m = curtain_frames`` and its trial gap ``G``::

    closed ......... | opening (m) | study (>= study_frames) | closing (m) | closed (G) | opening (m) | open ...
    frame 0            a                                                   h            r = h + G

The curtain is fully closed for exactly ``G`` frames (``h .. r-1``); its pixels reappear from frame
``r``, so every object pixel then has an age of at least ``G + 1`` frames. Reveals are scheduled
*after* the context: the slots are revealed one after another from ``context_frames +
reveal_offset``, every ``reveal_spacing`` frames, in increasing order of gap, and every object is
fully hidden before the context ends (``h <= context_frames``): the model has observed each object
in the context, whatever the protocol, and must carry it across the context-prediction boundary.
``reveal_spacing >= curtain_frames`` so that at most one slot is being revealed in any frame: a
frame's memory-only pixels then all belong to one trial and one gap.

Small square *distractors* bounce across the background (under the slots) at constant velocity,
so the frames change and copying the last frame is not a perfect predictor of the background.

Actions (one component per slot): 0 hold, 1 open (the curtain moves up one step), 2 close.
Poses: per slot, the number of rows the curtain covers; per distractor, its top-left (y, x).
Gaps are spread evenly over the episodes: trial ``k`` of episode ``i`` gets
``gaps[(i * slots + k) % len(gaps)]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..episode import Episode, memory_metadata
from ..spec import ActionSpace, param
from . import render
from .base import Generator

HOLD, OPEN, CLOSE = 0, 1, 2


@dataclass(frozen=True)
class OcclusionParams:
    slots: tuple[int, ...] = param([3, 3], min=1, max=8, doc="slot grid [rows, cols]")
    gaps: tuple[int, ...] = param([8, 16, 32, 64, 128, 256, 512], min=1, doc="frames each curtain stays closed")
    study_frames: int = param(12, min=1, max=10_000, doc="frames an object is fully visible before it is hidden")
    curtain_frames: int = param(3, min=1, max=64, doc="frames a curtain takes to open or close")
    reveal_spacing: int = param(3, min=1, max=1000, doc="frames between the starts of successive reveals")
    reveal_offset: int = param(1, min=0, max=1000, doc="first reveal at context_frames + reveal_offset")
    object_fill: float = param(0.75, min=0.3, max=1.0, doc="object size as a fraction of the slot cell")
    texture_period: int = param(4, min=2, max=16, doc="period of object textures, in pixels")
    distractors: int = param(2, min=0, max=16, doc="bouncing squares moving under the slots")
    distractor_size: int = param(6, min=2, max=64, doc="side of a distractor, in pixels")
    background_cell: int = param(16, min=2, max=256, doc="feature size of the background noise, in pixels")

    def __post_init__(self):
        if len(self.slots) != 2:
            raise ValueError(f"slots must be [rows, cols], got {list(self.slots)}")
        if self.reveal_spacing < self.curtain_frames:
            raise ValueError(f"reveal_spacing ({self.reveal_spacing}) must be >= curtain_frames "
                             f"({self.curtain_frames}) so that reveals never overlap")


@dataclass(frozen=True)
class _Layout:
    rows: int
    cols: int
    cs: int  # side of a curtain region (square)
    obj: int  # side of an object sprite
    origins: tuple[tuple[int, int], ...]  # top-left (y, x) of each curtain region


def _layout(params: OcclusionParams, h: int, w: int) -> _Layout:
    rows, cols = params.slots
    ch, cw = h // rows, w // cols
    cs = min(ch, cw) - 2  # a 1-pixel margin around each curtain keeps the slots apart
    obj = max(3, int(round(params.object_fill * cs)))
    obj -= (cs - obj) % 2  # centre the object exactly
    oy, ox = (h - rows * ch) // 2, (w - cols * cw) // 2
    origins = tuple((oy + r * ch + (ch - cs) // 2, ox + c * cw + (cw - cs) // 2) for r in range(rows) for c in range(cols))
    return _Layout(rows, cols, cs, obj, origins)


class OcclusionRecall(Generator):
    family = "occlusion_recall"
    version = 1
    Params = OcclusionParams

    @classmethod
    def action_space(cls, params: OcclusionParams) -> ActionSpace:
        n = params.slots[0] * params.slots[1]
        return ActionSpace(nvec=(3,) * n, names=tuple(f"curtain_{k}" for k in range(n)),
                           labels=(("hold", "open", "close"),) * n)

    @classmethod
    def pose_fields(cls, params: OcclusionParams) -> tuple[str, ...]:
        n = params.slots[0] * params.slots[1]
        fields = [f"cover_{k}" for k in range(n)]
        for j in range(params.distractors):
            fields += [f"distractor_{j}_y", f"distractor_{j}_x"]
        return tuple(fields)

    @classmethod
    def check(cls, spec) -> None:
        p: OcclusionParams = spec.params
        h, w = spec.resolution
        rows, cols = p.slots
        n = rows * cols
        if min(h // rows, w // cols) < 8:
            raise ValueError(f"slots {rows}x{cols} leave cells under 8 pixels at {h}x{w}")
        if p.distractor_size >= min(h, w):
            raise ValueError(f"distractor_size {p.distractor_size} does not fit a {h}x{w} frame")
        m = p.curtain_frames
        first_reveal = spec.context_frames + p.reveal_offset
        need = max(p.gaps) + p.study_frames + 2 * m - 1
        if first_reveal < need:
            raise ValueError(
                f"context_frames + reveal_offset = {first_reveal} is too short for the largest gap "
                f"{max(p.gaps)}: the study and hiding of that object need {need} frames before its reveal")
        last_end = first_reveal + (n - 1) * p.reveal_spacing + m
        if last_end > spec.frames:
            raise ValueError(f"the last of {n} reveals ends at frame {last_end}, after the episode's "
                             f"{spec.frames} frames; add frames or reduce reveal_spacing")
        if min(p.gaps) <= spec.recent_window:
            raise ValueError(f"every gap must exceed recent_window={spec.recent_window} (got {min(p.gaps)}): "
                             "a shorter gap has no memory-only pixels")
        # every object must be hidden by the end of the context: the j-th reveal (gaps in
        # increasing order) needs a gap of at least reveal_offset + j * reveal_spacing
        for start in range(len(p.gaps)):
            trial = sorted(p.gaps[(start + k) % len(p.gaps)] for k in range(n))
            for j, g in enumerate(trial):
                if g < p.reveal_offset + j * p.reveal_spacing:
                    raise ValueError(
                        f"with gaps {list(p.gaps)} over {n} slots, an episode reveals a gap-{g} object "
                        f"{j * p.reveal_spacing + p.reveal_offset} frames after the context: it would be studied "
                        "after the context ended; use larger gaps, fewer slots or a smaller reveal_spacing")

    @classmethod
    def describe_gaps(cls, spec) -> str:
        return ", ".join(str(g) for g in spec.params.gaps)

    # ----------------------------------------------------------------------------------------
    def trial_gaps(self, index: int) -> list[int]:
        p = self.params
        n = p.slots[0] * p.slots[1]
        return [p.gaps[(index * n + k) % len(p.gaps)] for k in range(n)]

    def generate(self, index: int) -> Episode:
        spec, p = self.spec, self.params
        T, (H, W) = spec.frames, spec.resolution
        rng = self.rng(index)
        lay = _layout(p, H, W)
        n, cs, m = lay.rows * lay.cols, lay.cs, p.curtain_frames

        # --- which object and which gap in each slot, and when each is revealed
        gaps = np.array(self.trial_gaps(index))
        gaps = gaps[rng.permutation(n)]  # which slot gets which gap
        order = np.empty(n, np.int64)  # reveal order: increasing gap, ties in random order
        order[np.lexsort((rng.random(n), gaps))] = np.arange(n)
        reveal = spec.context_frames + p.reveal_offset + order * p.reveal_spacing
        hidden = reveal - gaps
        appear = hidden - p.study_frames - 2 * m + 2
        hues = rng.permutation(render.HUES)[:n] if n <= render.HUES else rng.integers(0, render.HUES, n)
        shapes = rng.integers(0, len(render.SHAPES), n)
        textures = rng.integers(0, len(render.TEXTURES), n)

        # --- curtain cover (rows covered from the top) for every slot and frame: [T, n]
        t = np.arange(T)[:, None]
        step_open = lambda i: np.rint(cs * (m - 1 - i) / m)  # noqa: E731  i = 0..m-1 frames into opening
        step_close = lambda i: np.rint(cs * (i + 1) / m)  # noqa: E731
        cover = np.full((T, n), cs, dtype=np.int64)
        i_open1, i_close, i_open2 = t - appear, t - (hidden - m + 1), t - reveal
        cover = np.where((i_open1 >= 0), np.where(i_open1 < m, step_open(i_open1), 0), cover)
        cover = np.where((i_close >= 0), np.where(i_close < m, step_close(i_close), cs), cover)
        cover = np.where((i_open2 >= 0), np.where(i_open2 < m, step_open(i_open2), 0), cover).astype(np.int64)

        # --- distractors: constant velocity, reflected at the borders
        d = p.distractor_size
        dpos = np.zeros((T, p.distractors, 2), dtype=np.int64)
        for j in range(p.distractors):
            for a, extent in enumerate((H, W)):
                span = extent - d
                p0 = rng.uniform(0, span)
                v = rng.uniform(0.4, 1.2) * rng.choice([-1, 1])
                u = np.mod(p0 + v * np.arange(T), 2 * span)
                dpos[:, j, a] = np.rint(span - np.abs(u - span)).astype(np.int64)

        # --- content ids, layer by layer: background < distractors < objects < curtains. All
        # curtains look alike and share one set of ids: a curtain's look is never a memory question.
        bg_n = H * W
        dis_base = bg_n
        obj_base = dis_base + p.distractors * d * d
        cur_base = obj_base + n * cs * cs
        num_ids = cur_base + cs * cs
        ids = np.empty((T, H, W), dtype=np.int64)
        ids[:] = np.arange(bg_n, dtype=np.int64).reshape(H, W)
        ar = np.arange(d)
        tt = np.arange(T)[:, None, None]
        for j in range(p.distractors):  # paint each d x d box by fancy indexing: T*d*d writes
            rows = dpos[:, j, 0, None, None] + ar[None, :, None]
            cols = dpos[:, j, 1, None, None] + ar[None, None, :]
            ids[tt, rows, cols] = dis_base + j * d * d + ar[:, None] * d + ar[None, :]
        off = (cs - lay.obj) // 2
        ry = np.arange(cs)
        local = ry[:, None] * cs + ry[None, :]
        sprites = []
        for k, (y0, x0) in enumerate(lay.origins):
            rgb, sil = render.object_sprite(render.SHAPES[shapes[k]], render.TEXTURES[textures[k]], int(hues[k]),
                                            lay.obj, p.texture_period)
            sprites.append(rgb)
            objmask = np.zeros((cs, cs), bool)
            objmask[off:off + lay.obj, off:off + lay.obj] = sil
            region = ids[:, y0:y0 + cs, x0:x0 + cs]
            region = np.where(objmask[None], obj_base + k * cs * cs + local[None], region)
            covered = ry[None, :] < cover[:, k:k + 1]  # [T, cs] rows under the curtain
            panel_row = ry[None, :] - cover[:, k:k + 1] + cs  # the curtain slides down from above
            cur_ids = cur_base + np.clip(panel_row, 0, cs - 1)[:, :, None] * cs + ry[None, None, :]
            ids[:, y0:y0 + cs, x0:x0 + cs] = np.where(covered[:, :, None], cur_ids, region)

        # --- colours of every content id, then the frames by table lookup
        colours = np.zeros((num_ids, 3), dtype=np.float32)
        c1, c2 = render.palette_colour(rng.integers(render.HUES), light=True), render.palette_colour(rng.integers(render.HUES), light=True)
        noise = render.fractal_noise(rng, H, W, p.background_cell)[..., None]
        grain = rng.random((H, W, 1), dtype=np.float32)
        colours[:bg_n] = ((c1 * noise + c2 * (1 - noise)) * (0.8 + 0.2 * grain) * 0.85).reshape(-1, 3)
        for j in range(p.distractors):
            tone = np.where(texture_grid(d), 0.95, 0.15).astype(np.float32)
            colours[dis_base + j * d * d: dis_base + (j + 1) * d * d] = np.repeat(tone.reshape(-1, 1), 3, 1)
        for k in range(n):
            block = np.zeros((cs, cs, 3), np.float32)  # only the silhouette's entries are ever used
            block[off:off + lay.obj, off:off + lay.obj] = sprites[k]
            colours[obj_base + k * cs * cs: obj_base + (k + 1) * cs * cs] = block.reshape(-1, 3)
        slats = np.where((ry // 2) % 2 == 0, 0.55, 0.45).astype(np.float32)
        panel = np.repeat(slats[:, None], cs, 1)
        panel[-1, :] = 0.25  # a dark bottom edge shows where the curtain ends
        colours[cur_base:] = np.repeat(panel.reshape(-1, 1), 3, 1)
        table = render.quantise(colours)
        frames = table[ids]

        # --- actions and poses
        delta = np.diff(cover, axis=0, prepend=cover[:1])
        actions = np.where(delta < 0, OPEN, np.where(delta > 0, CLOSE, HOLD)).astype(np.int64)
        poses = np.concatenate([cover.astype(np.float32), dpos.reshape(T, -1).astype(np.float32)], axis=1)

        meta = memory_metadata(ids, spec.recent_window, spec.context_frames, num_ids=num_ids)
        info = {"trials": [
            {"slot": k, "gap": int(gaps[k]), "appear": int(appear[k]), "hidden": int(hidden[k]), "reveal": int(reveal[k]),
             "shape": render.SHAPES[shapes[k]], "texture": render.TEXTURES[textures[k]], "hue": int(hues[k])}
            for k in range(n)]}
        return Episode(task=spec.name, index=index, frames=frames, actions=actions, poses=poses,
                       memory_gap=meta.memory_gap, memory_mask=meta.memory_mask, novel_mask=meta.novel_mask,
                       info=info, content_ids=ids)


def texture_grid(d: int) -> np.ndarray:
    """A distractor's look: a light square with a dark 2x2 checker core."""
    yy, xx = np.mgrid[0:d, 0:d]
    border = (yy == 0) | (xx == 0) | (yy == d - 1) | (xx == d - 1)
    return border | (((yy // 2) + (xx // 2)) % 2 == 0)
