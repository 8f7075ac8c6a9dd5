"""Independent, slow recomputation of the memory metadata from an episode's recorded poses.

Nothing here uses the generators' id maps or ``memory_metadata``: the content at each pixel is
re-derived from the poses with explicit geometry (rotation matrices, point-in-box tests), and
"last seen" is found by scanning earlier frames one by one. Use on small episodes only.
"""

from __future__ import annotations

import math

import numpy as np

from memorybench.episode import NEVER_SEEN, frame_gaps


def masks_from_identities(ident, T, H, W, K, C, eligible=None):
    """ident(t, y, x) -> hashable content identity. Returns (age, memory, novel, age_rollout) by brute
    force; ``eligible(identity)`` restricts what can be memory (default: everything)."""
    seen_at: list[set] = []
    for t in range(T):
        seen_at.append({ident(t, y, x) for y in range(H) for x in range(W)})
    in_context = set().union(*seen_at[:C]) if C > 0 else set()
    age = np.full((T, H, W), NEVER_SEEN, dtype=np.int32)
    age_rollout = np.full((T, H, W), NEVER_SEEN, dtype=np.int32)
    novel = np.zeros((T, H, W), bool)
    memory = np.zeros((T, H, W), bool)
    for t in range(T):
        for y in range(H):
            for x in range(W):
                c = ident(t, y, x)
                for s in range(t - 1, -1, -1):
                    if c in seen_at[s]:
                        age[t, y, x] = t - s
                        break
                # under rollout the model saw only the context: count from the last context frame
                for s in range(min(t, C) - 1, -1, -1):
                    if c in seen_at[s]:
                        age_rollout[t, y, x] = t - s if t >= C else age[t, y, x]
                        break
                novel[t, y, x] = age[t, y, x] == NEVER_SEEN or (t >= C and c not in in_context)
                memory[t, y, x] = not novel[t, y, x] and age[t, y, x] > K and (eligible is None or eligible(c))
    return age, memory, novel, age_rollout


def scene_identity(spec, poses):
    """The map tile shown at view pixel (y, x) of frame t, from the pose (y, x, heading): the
    content identity of the scene family (version 2) is the tile, ``step`` x ``step`` texels."""
    H, W = spec.resolution
    s = spec.params.step

    def ident(t, y, x):
        py, px, hd = poses[t]
        theta = hd * math.pi / 2  # heading 0 = north; the view's "up" is the heading
        # view offsets: right = +dx, back = +dy; rotate (right, back) into map (x, y) coordinates
        dx, dy = x - W // 2, y - H // 2
        mx = px + round(dx * math.cos(theta) - dy * math.sin(theta))
        my = py + round(dx * math.sin(theta) + dy * math.cos(theta))
        return (int(my) // s, int(mx) // s)

    return ident


def occlusion_identity(spec, poses, info):
    """Content at (y, x) of frame t from the curtain covers and distractor positions in the poses
    (and each slot's object shape from the episode's ``info``)."""
    from memorybench.generators import render
    from memorybench.generators.occlusion import _layout

    p = spec.params
    H, W = spec.resolution
    lay = _layout(p, H, W)
    n, cs = lay.rows * lay.cols, lay.cs
    d = p.distractor_size

    def ident(t, y, x):
        for k, (y0, x0) in enumerate(lay.origins):
            if y0 <= y < y0 + cs and x0 <= x < x0 + cs:
                cover = int(poses[t][k])
                ly, lx = y - y0, x - x0
                if ly < cover:  # the curtain hangs from the top; its bottom edge is at row `cover`
                    return ("curtain", ly - cover + cs, lx)
                off = (cs - lay.obj) // 2
                oy, ox = ly - off, lx - off
                if 0 <= oy < lay.obj and 0 <= ox < lay.obj:
                    if silhouettes[k][oy, ox]:
                        return ("object", k, oy, ox)
                break
        for j in reversed(range(p.distractors)):
            dy, dx = int(poses[t][n + 2 * j]), int(poses[t][n + 2 * j + 1])
            if dy <= y < dy + d and dx <= x < dx + d:
                return ("distractor", j, y - dy, x - dx)
        return ("background", y, x)

    silhouettes = {tr["slot"]: render.shape_mask(tr["shape"], lay.obj) for tr in info["trials"]}
    return ident


def gaps_from(age, memory, novel):
    return frame_gaps(age, memory, novel)
