"""occlusion-recall: objects are studied, hidden behind a curtain for G frames, then revealed.

The camera is fixed on a grid of ``rows x cols`` slots over a textured background. Each slot holds
one object of the *object space* (``render.NUM_OBJECTS`` = 6 shapes x 6 textures x 24 hues x 2
polarities = 1,728 objects; an episode's objects are distinct, drawn uniformly) behind a curtain.
A slot's timeline, with ``m = curtain_frames`` and its trial gap ``G``::

    closed ........ | opening (m) | study (>= study_frames) | closing (m) | closed (G) | revealed ...
    frame 0           a                                                   h            r = h + G

The curtain is fully closed for exactly ``G`` frames (``h .. r-1``) and opens **at once** at frame
``r`` (the ``reveal`` action): every pixel of the object reappears in the same frame, with an age
of ``G + 1`` frames. The object then stays in view. Reveals are scheduled *after* the context:
the slots are revealed one after another from ``context_frames + reveal_offset``, every
``reveal_spacing`` frames, in increasing order of gap, and every object is fully hidden before the
context ends (``h <= context_frames``): the model observed each object in the context, under both
protocols, and its gap is ``G + 1`` whatever it observed after the context.

Small square *distractors* bounce across the background (under the objects) at constant velocity,
so the frames change and copying the last frame is not a perfect predictor of the background.

**Memory mask** (generator version 2): only the revealed object's silhouette, in its reveal frame.
The background around it was hidden as long (a curtain covers the whole slot) but it is smooth
fractal noise that inpainting from the slot's margins predicts, and the distractors are not
memory either: neither is scored as memory.

**Memory items** (``memorybench.recall``): one per slot, in its reveal frame ``r``, on the pixels
``U`` that any object of the object space could cover in that slot (the union of the six shapes'
silhouettes: the same pixels for every candidate, so no candidate is favoured by the region). The
candidates are *every object of the object space* shown in that slot over the true background
and distractors of frame ``r``; the truth is the episode's object. Objects of the episode visible
in the true frames ``r-K .. r-1`` (revealed just before, in other slots) are excluded: a model
without memory could rule them out. Chance is therefore ``1 / (1,728 - excluded)``: a prediction
that does not know the object picks the true one with that probability, whatever it is.

Actions (one component per slot): 0 hold, 1 open (the curtain moves up one step), 2 close (down
one step), 3 reveal (the curtain opens at once). Poses: per slot, the number of rows the curtain
covers; per distractor, its top-left (y, x). Gaps are spread evenly over the episodes: trial ``k``
of episode ``i`` gets ``gaps[(i * slots + k) % len(gaps)]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..episode import Episode, MemoryItems, memory_metadata
from ..spec import ActionSpace, param
from . import render
from .base import Generator

HOLD, OPEN, CLOSE, REVEAL = 0, 1, 2, 3


@dataclass(frozen=True)
class OcclusionParams:
    slots: tuple[int, ...] = param([4, 4], min=1, max=8, doc="slot grid [rows, cols]")
    gaps: tuple[int, ...] = param(
        [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 320, 384, 448, 512, 640],
        min=1,
        doc="frames each curtain stays closed",
    )
    study_frames: int = param(12, min=1, max=10_000, doc="frames an object is fully visible before it is hidden")
    curtain_frames: int = param(3, min=1, max=64, doc="frames a curtain takes to open (for study) or close")
    reveal_spacing: int = param(1, min=1, max=1000, doc="frames between successive reveals")
    reveal_offset: int = param(1, min=0, max=1000, doc="first reveal at context_frames + reveal_offset")
    object_fill: float = param(0.75, min=0.3, max=1.0, doc="object size as a fraction of the slot cell")
    texture_period: int = param(4, min=2, max=16, doc="period of object textures, in pixels")
    distractors: int = param(2, min=0, max=16, doc="bouncing squares moving under the objects")
    distractor_size: int = param(6, min=2, max=64, doc="side of a distractor, in pixels")
    background_cell: int = param(16, min=2, max=256, doc="feature size of the background noise, in pixels")

    def __post_init__(self):
        if len(self.slots) != 2:
            raise ValueError(f"slots must be [rows, cols], got {list(self.slots)}")


@dataclass(frozen=True)
class _Layout:
    rows: int
    cols: int
    cs: int  # side of a curtain region (square)
    obj: int  # side of an object sprite
    origins: tuple[tuple[int, int], ...]  # top-left (y, x) of each curtain region

    @property
    def offset(self) -> int:
        """Where an object sits inside its curtain region (centred)."""
        return (self.cs - self.obj) // 2


def _layout(params: OcclusionParams, h: int, w: int) -> _Layout:
    rows, cols = params.slots
    ch, cw = h // rows, w // cols
    cs = min(ch, cw) - 2  # a 1-pixel margin around each curtain keeps the slots apart
    obj = max(3, int(round(params.object_fill * cs)))
    obj -= (cs - obj) % 2  # centre the object exactly
    oy, ox = (h - rows * ch) // 2, (w - cols * cw) // 2
    origins = tuple(
        (oy + r * ch + (ch - cs) // 2, ox + c * cw + (cw - cs) // 2) for r in range(rows) for c in range(cols)
    )
    return _Layout(rows, cols, cs, obj, origins)


def texture_grid(d: int) -> np.ndarray:
    """A distractor's look: a light square with a dark 2x2 checker core."""
    yy, xx = np.mgrid[0:d, 0:d]
    border = (yy == 0) | (xx == 0) | (yy == d - 1) | (xx == d - 1)
    return border | (((yy // 2) + (xx // 2)) % 2 == 0)


def distractor_tone(d: int) -> np.ndarray:
    """uint8 ``[d, d]`` grey level of a distractor's pixels (the same for R, G and B)."""
    return render.quantise(np.where(texture_grid(d), 0.95, 0.15).astype(np.float32))


class OcclusionRecall(Generator):
    family = "occlusion_recall"
    version = 2
    Params = OcclusionParams
    premature_check = True  # the frame before a reveal shows the closed curtain

    @classmethod
    def action_space(cls, params: OcclusionParams) -> ActionSpace:
        n = params.slots[0] * params.slots[1]
        return ActionSpace(
            nvec=(4,) * n,
            names=tuple(f"curtain_{k}" for k in range(n)),
            labels=(("hold", "open", "close", "reveal"),) * n,
        )

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
        if n > render.NUM_OBJECTS:
            raise ValueError(f"{n} slots need more distinct objects than the {render.NUM_OBJECTS} of the object space")
        if min(h // rows, w // cols) < 8:
            raise ValueError(f"slots {rows}x{cols} leave cells under 8 pixels at {h}x{w}")
        if p.distractor_size >= min(h, w):
            raise ValueError(f"distractor_size {p.distractor_size} does not fit a {h}x{w} frame")
        m = p.curtain_frames
        first_reveal = spec.context_frames + p.reveal_offset
        last_reveal = first_reveal + (n - 1) * p.reveal_spacing
        if last_reveal >= spec.frames:
            raise ValueError(
                f"the last of {n} reveals is at frame {last_reveal}, after the episode's "
                f"{spec.frames} frames; add frames or reduce reveal_spacing"
            )
        if min(p.gaps) <= spec.recent_window:
            raise ValueError(
                f"every gap must exceed recent_window={spec.recent_window} (got {min(p.gaps)}): "
                "a shorter gap has no memory-only pixels"
            )
        # every object must be studied from frame 0 on and hidden by the end of the context: the
        # j-th reveal (gaps in increasing order) at first_reveal + j * spacing needs
        # reveal_offset + j * spacing <= gap (hidden by the context's end) and
        # first_reveal + j * spacing - gap >= study_frames + 2m - 2 (appears at frame >= 0)
        for start in range(len(p.gaps)):
            trial = sorted(p.gaps[(start + k) % len(p.gaps)] for k in range(n))
            for j, g in enumerate(trial):
                r = first_reveal + j * p.reveal_spacing
                if g < p.reveal_offset + j * p.reveal_spacing:
                    raise ValueError(
                        f"with gaps {list(p.gaps)} over {n} slots, an episode reveals a gap-{g} object "
                        f"{j * p.reveal_spacing + p.reveal_offset} frames after the context: it would be hidden "
                        "after the context ended; use larger gaps, fewer slots or a smaller reveal_spacing"
                    )
                if r - g - p.study_frames - 2 * m + 2 < 0:
                    raise ValueError(
                        f"context_frames + reveal_offset = {first_reveal} is too short for the gap-{g} trial: its "
                        f"study and hiding need {g + p.study_frames + 2 * m - 2} frames before its reveal"
                    )

    @classmethod
    def describe_gaps(cls, spec) -> str:
        return ", ".join(str(g) for g in spec.params.gaps)

    # ----------------------------------------------------------------------------------------
    def trial_gaps(self, index: int) -> list[int]:
        p = self.params
        n = p.slots[0] * p.slots[1]
        return [p.gaps[(index * n + k) % len(p.gaps)] for k in range(n)]

    def layout(self) -> _Layout:
        return _layout(self.params, *self.spec.resolution)

    def generate(self, index: int) -> Episode:
        spec, p = self.spec, self.params
        T, (H, W) = spec.frames, spec.resolution
        rng = self.rng(index)
        lay = self.layout()
        n, cs, m = lay.rows * lay.cols, lay.cs, p.curtain_frames

        # --- which object and which gap in each slot, and when each is revealed
        gaps = np.array(self.trial_gaps(index))
        gaps = gaps[rng.permutation(n)]  # which slot gets which gap
        order = np.empty(n, np.int64)  # reveal order: increasing gap, ties in random order
        order[np.lexsort((rng.random(n), gaps))] = np.arange(n)
        reveal = spec.context_frames + p.reveal_offset + order * p.reveal_spacing
        hidden = reveal - gaps
        appear = hidden - p.study_frames - 2 * m + 2
        objects = rng.choice(render.NUM_OBJECTS, size=n, replace=False)

        # --- curtain cover (rows covered from the top) for every slot and frame: [T, n]
        t = np.arange(T)[:, None]
        step_open = lambda i: np.rint(cs * (m - 1 - i) / m)  # noqa: E731  i = 0..m-1 frames into opening
        step_close = lambda i: np.rint(cs * (i + 1) / m)  # noqa: E731
        cover = np.full((T, n), cs, dtype=np.int64)
        i_open, i_close = t - appear, t - (hidden - m + 1)
        cover = np.where(i_open >= 0, np.where(i_open < m, step_open(i_open), 0), cover)
        cover = np.where(i_close >= 0, np.where(i_close < m, step_close(i_close), cs), cover)
        cover = np.where(t >= reveal, 0, cover).astype(np.int64)  # revealed at once

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
        off = lay.offset
        ry = np.arange(cs)
        local = ry[:, None] * cs + ry[None, :]
        bank_rgb, bank_sil = render.object_bank(lay.obj, p.texture_period)
        for k, (y0, x0) in enumerate(lay.origins):
            objmask = np.zeros((cs, cs), bool)
            objmask[off : off + lay.obj, off : off + lay.obj] = bank_sil[objects[k]]
            region = ids[:, y0 : y0 + cs, x0 : x0 + cs]
            region = np.where(objmask[None], obj_base + k * cs * cs + local[None], region)
            covered = ry[None, :] < cover[:, k : k + 1]  # [T, cs] rows under the curtain
            panel_row = ry[None, :] - cover[:, k : k + 1] + cs  # the curtain slides down from above
            cur_ids = cur_base + np.clip(panel_row, 0, cs - 1)[:, :, None] * cs + ry[None, None, :]
            ids[:, y0 : y0 + cs, x0 : x0 + cs] = np.where(covered[:, :, None], cur_ids, region)

        # --- colours of every content id (uint8, as the frames show them), then the frames
        table = np.zeros((num_ids, 3), dtype=np.uint8)
        c1 = render.palette_colour(rng.integers(render.HUES), light=True)
        c2 = render.palette_colour(rng.integers(render.HUES), light=True)
        noise = render.fractal_noise(rng, H, W, p.background_cell)[..., None]
        grain = rng.random((H, W, 1), dtype=np.float32)
        background = render.quantise((c1 * noise + c2 * (1 - noise)) * (0.8 + 0.2 * grain) * 0.85)  # [H, W, 3]
        table[:bg_n] = background.reshape(-1, 3)
        tone = np.repeat(distractor_tone(d).reshape(-1, 1), 3, 1)
        for j in range(p.distractors):
            table[dis_base + j * d * d : dis_base + (j + 1) * d * d] = tone
        for k in range(n):
            block = np.zeros((cs, cs, 3), np.uint8)  # only the silhouette's entries are ever used
            block[off : off + lay.obj, off : off + lay.obj] = bank_rgb[objects[k]]
            table[obj_base + k * cs * cs : obj_base + (k + 1) * cs * cs] = block.reshape(-1, 3)
        slats = np.where((ry // 2) % 2 == 0, 0.55, 0.45).astype(np.float32)
        panel = np.repeat(slats[:, None], cs, 1)
        panel[-1, :] = 0.25  # a dark bottom edge shows where the curtain ends
        table[cur_base:] = np.repeat(render.quantise(panel).reshape(-1, 1), 3, 1)
        frames = table[ids]

        # --- actions and poses
        delta = np.diff(cover, axis=0, prepend=cover[:1])
        actions = np.where(t == reveal, REVEAL, np.where(delta < 0, OPEN, np.where(delta > 0, CLOSE, HOLD)))
        actions = actions.astype(np.int64)
        poses = np.concatenate([cover.astype(np.float32), dpos.reshape(T, -1).astype(np.float32)], axis=1)

        eligible = np.zeros(num_ids, bool)
        eligible[obj_base:cur_base] = True  # only objects are tested for memory
        meta = memory_metadata(ids, spec.recent_window, spec.context_frames, num_ids=num_ids, memory_eligible=eligible)
        items = self._items(ids, reveal, gaps, objects, background, obj_base, cs)
        info = {
            "trials": [
                {
                    "slot": k,
                    "gap": int(gaps[k]),
                    "appear": int(appear[k]),
                    "hidden": int(hidden[k]),
                    "reveal": int(reveal[k]),
                    "object": int(objects[k]),
                    "shape": render.SHAPES[render.object_parts(objects[k])[0]],
                    "texture": render.TEXTURES[render.object_parts(objects[k])[1]],
                    "hue": int(render.object_parts(objects[k])[2]),
                    "polarity": int(render.object_parts(objects[k])[3]),
                }
                for k in range(n)
            ]
        }
        return Episode(
            task=spec.name,
            index=index,
            frames=frames,
            actions=actions,
            poses=poses,
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

    def candidate_region(self, slot: int) -> np.ndarray:
        """Flat pixel indices of the union of every shape's silhouette in ``slot`` (sorted)."""
        lay = self.layout()
        _, sil = render.object_bank(lay.obj, self.params.texture_period)
        union = sil.any(axis=0)
        yy, xx = np.nonzero(union)
        y0, x0 = lay.origins[slot]
        W = self.spec.resolution[1]
        return np.sort((y0 + lay.offset + yy) * W + (x0 + lay.offset + xx)).astype(np.int32)

    def _items(self, ids, reveal, gaps, objects, background, obj_base, cs) -> MemoryItems:
        K = self.spec.recent_window
        rows = []
        for k in range(len(objects)):
            r = int(reveal[k])
            recent = ids[max(0, r - K) : r]
            visible = {
                int(o)
                for j, o in enumerate(objects)
                if j != k and np.any((recent >= obj_base + j * cs * cs) & (recent < obj_base + (j + 1) * cs * cs))
            }
            rows.append(
                {
                    "frame": r,
                    "gap": int(gaps[k]) + 1,
                    "gap_rollout": int(gaps[k]) + 1,
                    "truth": int(objects[k]),
                    "key": k,
                    "pixels": self.candidate_region(k),
                    "exclude": np.array(sorted(visible), np.int32),
                }
            )
        return MemoryItems.build(rows, extra={"background": background})

    @classmethod
    def num_candidates(cls, spec) -> int:
        return render.NUM_OBJECTS

    def item_candidates(self, episode: Episode, i: int) -> np.ndarray:
        """uint8 ``[NUM_OBJECTS, P, 3]``: item ``i``'s pixels as frame ``r`` would show them with each
        object of the object space in the slot (over the true background and distractors)."""
        items, p = episode.items, self.params
        lay = self.layout()
        H, W = self.spec.resolution
        k, r = int(items.key[i]), int(items.frame[i])
        pix = items.pixels_of(i)
        under = items.extra["background"].reshape(-1, 3)[pix].copy()  # [P, 3]
        d, n = p.distractor_size, lay.rows * lay.cols
        py, px = pix // W, pix % W
        tone = distractor_tone(d)
        for j in range(p.distractors):  # distractors pass under the objects
            y0, x0 = (int(v) for v in episode.poses[r, n + 2 * j : n + 2 * j + 2])
            inside = (py >= y0) & (py < y0 + d) & (px >= x0) & (px < x0 + d)
            under[inside] = tone[py[inside] - y0, px[inside] - x0][:, None]
        bank_rgb, bank_sil = render.object_bank(lay.obj, p.texture_period)
        y0, x0 = lay.origins[k]
        ly, lx = py - y0 - lay.offset, px - x0 - lay.offset  # inside the sprite: the region is the shapes' union
        obj_rgb = bank_rgb[:, ly, lx]  # [N, P, 3]
        obj_sil = bank_sil[:, ly, lx]  # [N, P]
        return np.where(obj_sil[..., None], obj_rgb, under[None])
