"""No-memory references: strategies that remember nothing of what left the view.

A credible memory score puts every one of them at chance (``recall`` 0 within its CI): they are
the blur, mean, inpainting and shifted-copy strategies that per-pixel errors (MSE, PSNR) reward on
memory pixels. Each uses only what a model may use (observed frames, actions, the ``TaskSpec``)
and at most the last ``K = spec.recent_window`` observed frames (the window within which content
is not memory, ``memorybench.episode``), never the content of older frames:

* ``context-mean-colour``  a constant frame of the mean colour of every observed frame (three
                           numbers: nothing about where anything was);
* ``recent-mean``          the per-pixel mean of the last ``K`` observed frames;
* ``recent-median``        the per-pixel median of the last ``K`` observed frames;
* ``blur-last``            the last observed frame blurred (Gaussian, sigma 1.5, reflected borders);
* ``shift-last``           the last observed frame moved as the action moves the view
                           (``scene_consistency``: a step forward/backward shifts it, a turn rotates
                           it; content entering the view repeats the edge), else shifted by one
                           pixel: motion-compensated copying;
* ``inpaint-last``         the last observed frame with what the next frame will uncover filled by
                           harmonic inpainting from the visible surroundings: for
                           ``occlusion_recall`` the slots being opened (from the curtain actions and
                           the task's slot layout), for ``scene_consistency`` the strip entering the
                           view after a motion-compensated shift; other families: ``blur-last``.

They are non-privileged calibration models (``reference_kind = "no-memory"``): shown beside the
contenders, never ranked with them. ``mean-frame`` (every observed frame averaged) is *not* one
of them: it is a lossy long memory (``reference_kind = "lossy-memory"``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..adapter import WorldModel
from ..spec import TaskSpec


class _LastFrames(WorldModel):
    """Keeps the last ``window`` observed frames (``[B, n, 3, H, W]``): one, or ``K`` with ``recent``."""

    reference_kind = "no-memory"
    learned = False
    recent = False

    def reset(self, spec: TaskSpec, batch_size: int) -> None:
        self.spec = spec
        self.window = spec.recent_window if self.recent else 1
        self.frames: torch.Tensor | None = None

    def observe(self, frames: torch.Tensor, actions: torch.Tensor) -> None:
        f = frames if self.frames is None else torch.cat([self.frames, frames], 1)
        self.frames = f[:, -self.window :]

    def _repeat(self, frame: torch.Tensor, n: int) -> torch.Tensor:
        return frame.unsqueeze(1).expand(-1, n, -1, -1, -1).contiguous()

    def state_nbytes(self) -> int:
        return 0 if self.frames is None else self.frames.numel() * self.frames.element_size()


class ContextMeanColour(WorldModel):
    name = "context-mean-colour"
    reference_kind = "no-memory"
    learned = False

    def reset(self, spec: TaskSpec, batch_size: int) -> None:
        self.total, self.count = None, 0

    def observe(self, frames: torch.Tensor, actions: torch.Tensor) -> None:
        s = frames.double().sum(dim=(1, 3, 4))  # [B, 3]
        self.total = s if self.total is None else self.total + s
        self.count += frames.shape[1] * frames.shape[3] * frames.shape[4]
        self.shape = frames.shape[2:]

    def predict(self, actions: torch.Tensor) -> torch.Tensor:
        colour = (self.total / self.count).float()  # [B, 3]
        B, n = colour.shape[0], actions.shape[1]
        return colour[:, None, :, None, None].expand(B, n, *self.shape).contiguous()


class RecentMean(_LastFrames):
    name = "recent-mean"
    recent = True

    def predict(self, actions: torch.Tensor) -> torch.Tensor:
        return self._repeat(self.frames.mean(1), actions.shape[1])


class RecentMedian(_LastFrames):
    name = "recent-median"
    recent = True

    def predict(self, actions: torch.Tensor) -> torch.Tensor:
        return self._repeat(self.frames.median(1).values, actions.shape[1])


def gaussian_blur(x: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Separable Gaussian blur of ``[N, 3, H, W]`` (radius ``ceil(3 sigma)``, reflected borders)."""
    r = int(np.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


class BlurLast(_LastFrames):
    name = "blur-last"

    def predict(self, actions: torch.Tensor) -> torch.Tensor:
        return self._repeat(gaussian_blur(self.frames[:, -1]).clamp(0, 1), actions.shape[1])


def harmonic_fill(img: torch.Tensor, unknown: torch.Tensor, iterations: int = 200) -> torch.Tensor:
    """Fill the ``unknown`` pixels (bool ``[N, H, W]``) of ``img`` ``[N, 3, H, W]`` by Jacobi
    iterations of the Laplace equation from the known ones (harmonic inpainting)."""
    out = img.clone()
    m = unknown[:, None].expand_as(out)
    known_mean = (img * ~m).sum(dim=(2, 3), keepdim=True) / (~m).sum(dim=(2, 3), keepdim=True).clamp(min=1)
    out = torch.where(m, known_mean.expand_as(out), out)
    for _ in range(iterations):
        p = F.pad(out, (1, 1, 1, 1), mode="replicate")
        avg = (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]) / 4
        out = torch.where(m, avg, out)
    return out


# -- motion of the view (scene_consistency) ------------------------------------------------------


def _scene_motion_index(H: int, W: int, heading: int, action: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """For the egocentric view of ``generators.scene``: ``(src, inside)`` with ``src[i, j]`` the flat
    index of the pixel of the current view that shows the world point the next view shows at
    ``(i, j)`` after ``action`` (from ``heading``), and ``inside`` whether that point is in view."""
    from ..generators.scene import BACKWARD, FORWARD, FWD, LEFT, RGT, RIGHT

    di = np.arange(H)[:, None] - H // 2
    dj = np.arange(W)[None, :] - W // 2
    h2 = (heading + (-1 if action == LEFT else 1 if action == RIGHT else 0)) % 4
    move = step * (FWD[heading] if action == FORWARD else -FWD[heading] if action == BACKWARD else np.zeros(2, int))
    # world offset (relative to the current pose) of each pixel of the next view
    vy = move[0] - di * FWD[h2][0] + dj * RGT[h2][0]
    vx = move[1] - di * FWD[h2][1] + dj * RGT[h2][1]
    # its offsets in the current view: v = -di0 f + dj0 r, with f, r orthonormal
    f, r = FWD[heading], RGT[heading]
    di0 = -(vy * f[0] + vx * f[1])
    dj0 = vy * r[0] + vx * r[1]
    i0, j0 = di0 + H // 2, dj0 + W // 2
    inside = (i0 >= 0) & (i0 < H) & (j0 >= 0) & (j0 < W)
    return np.clip(i0, 0, H - 1) * W + np.clip(j0, 0, W - 1), inside


class ShiftLast(_LastFrames):
    """Motion-compensated copy of the last frame (see the module docstring)."""

    name = "shift-last"
    #: fill what enters the view by harmonic inpainting instead of repeating the edge
    inpaint = False

    def reset(self, spec: TaskSpec, batch_size: int) -> None:
        super().reset(spec, batch_size)
        self.heading = np.zeros(batch_size, np.int64)  # relative to the start: dead reckoning

    def observe(self, frames: torch.Tensor, actions: torch.Tensor) -> None:
        super().observe(frames, actions)
        if self.spec.family == "scene_consistency":
            from ..generators.scene import LEFT, RIGHT

            a = actions[..., 0].cpu().numpy()
            self.heading = (self.heading - (a == LEFT).sum(1) + (a == RIGHT).sum(1)) % 4

    def _next(self, last: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        B, _, H, W = last.shape
        if self.spec.family != "scene_consistency":
            moved = torch.cat([last[:, :, :1], last[:, :, :-1]], 2)
            return torch.cat([moved[:, :, :, :1], moved[:, :, :, :-1]], 3)
        out = torch.empty_like(last)
        unknown = torch.zeros(B, H, W, dtype=torch.bool, device=last.device)
        for b in range(B):
            src, inside = _scene_motion_index(H, W, int(self.heading[b]), int(action[b, 0]), self.spec.params.step)
            flat = last[b].reshape(3, H * W)
            out[b] = flat[:, torch.from_numpy(src.ravel()).to(last.device)].reshape(3, H, W)
            unknown[b] = torch.from_numpy(~inside).to(last.device)
        if self.inpaint and unknown.any():
            out = harmonic_fill(out, unknown)
        return out

    def predict(self, actions: torch.Tensor) -> torch.Tensor:
        last, heading, frames = self.frames[:, -1], self.heading.copy(), []
        for i in range(actions.shape[1]):
            last = self._next(last, actions[:, i])
            frames.append(last)
            if self.spec.family == "scene_consistency" and i + 1 < actions.shape[1]:
                from ..generators.scene import LEFT, RIGHT

                a = actions[:, i, 0].cpu().numpy()
                self.heading = (self.heading - (a == LEFT) + (a == RIGHT)) % 4
        self.heading = heading  # predict() leaves the history (and the dead reckoning) unchanged
        return torch.stack(frames, 1)


class InpaintLast(ShiftLast):
    """The last frame with what the next one uncovers inpainted (see the module docstring)."""

    name = "inpaint-last"
    inpaint = True

    def _next(self, last: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        fam = self.spec.family
        if fam == "scene_consistency":
            return super()._next(last, action)
        if fam != "occlusion_recall":
            return gaussian_blur(last).clamp(0, 1)
        from ..generators.occlusion import OPEN, REVEAL, _layout

        lay = _layout(self.spec.params, *self.spec.resolution)
        B, _, H, W = last.shape
        unknown = torch.zeros(B, H, W, dtype=torch.bool, device=last.device)
        opening = (action == OPEN) | (action == REVEAL)  # [B, slots]
        for k, (y0, x0) in enumerate(lay.origins):
            unknown[opening[:, k], y0 : y0 + lay.cs, x0 : x0 + lay.cs] = True
        return harmonic_fill(last, unknown) if unknown.any() else last.clone()
