"""Adapters used by the tests (importable as ``mb_test_models:Name`` with tests/ on sys.path)."""

from __future__ import annotations

import os
import time

import torch

from memorybench.models.calibration import CopyLast


class Faulty(CopyLast):
    """copy-last, except that it breaks in a chosen way at a chosen (episode, frame).

    The failure is switched on by the environment variable MB_FAULT=<kind> so that the same
    model identity can first fail and then be resumed cleanly. ``episode`` counts batches of
    size 1 (the tests run with --batch-size 1).
    """

    name = "faulty"

    def __init__(self, at_episode: int = 1, at_step: int = 2):
        self.at_episode, self.at_step = at_episode, at_step
        self.episode = -1

    def reset(self, spec, batch_size):
        super().reset(spec, batch_size)
        self.episode += 1
        self.step = 0

    def predict(self, actions):
        out = super().predict(actions)
        kind = os.environ.get("MB_FAULT", "")
        hit = self.episode == self.at_episode and self.step == self.at_step
        self.step += 1
        if not (kind and hit):
            return out
        if kind == "shape":
            return out[:, :, :, :-1]
        if kind == "frames":
            return torch.cat([out, out], dim=1)
        if kind == "dtype":
            return out.double()
        if kind == "range":
            return out * 2 + 0.5
        if kind == "nan":
            out = out.clone()
            out[0, 0, 0, 0, 0] = float("nan")
            return out
        if kind == "inf":
            out = out.clone()
            out[0, 0, 1, 2, 3] = float("inf")
            return out
        if kind == "numpy":
            return out.numpy()
        if kind == "raise":
            raise RuntimeError("simulated adapter crash")
        raise ValueError(kind)


class Slow(CopyLast):
    """copy-last that sleeps in predict (so that a test can kill the run mid-episode)."""

    name = "slow"

    def __init__(self, delay: float = 0.02):
        self.delay = delay

    def predict(self, actions):
        time.sleep(self.delay)
        return super().predict(actions)


class Noisy(CopyLast):
    """copy-last plus a fixed per-episode perturbation (results depend on its seed argument)."""

    name = "noisy"

    def __init__(self, seed: int = 0, amount: float = 0.05):
        self.seed, self.amount = seed, amount

    def predict(self, actions):
        out = super().predict(actions)
        g = torch.Generator().manual_seed(self.seed)
        noise = torch.rand(out.shape[1:], generator=g) * self.amount
        return (out + noise.to(out.device)).clamp(0, 1)


class Recorder(CopyLast):
    """copy-last that records every call the runner makes (class-level log, for the guide's tests)."""

    name = "recorder"
    log: list = []

    def to(self, device):
        Recorder.log.append(("to", device))
        return super().to(device)

    def reset(self, spec, batch_size):
        Recorder.log.append(("reset", spec.key, batch_size, getattr(self, "device", None)))
        self.pred = None
        super().reset(spec, batch_size)

    def observe(self, frames, actions):
        Recorder.log.append(
            (
                "observe",
                frames.shape[1],
                frames.dtype,
                str(frames.device),
                frames is self.pred,
                frames.clone(),
                actions.clone(),
            )
        )
        super().observe(frames, actions)

    def predict(self, actions):
        self.pred = super().predict(actions)
        Recorder.log.append(("predict", actions.shape[1], actions.dtype, actions.clone()))
        return self.pred


# -- genuine memories built from observed frames only (no privileged information) -----------------
# They read only what any adapter may: the observed frames, the actions and the TaskSpec. They
# remember what they observed for ``horizon`` frames (None: forever) and then forget it. Used to
# check that ``recall`` and the memory horizon see real memory, and at the right gaps.

import numpy as np  # noqa: E402

from memorybench.adapter import WorldModel  # noqa: E402


class OcclusionMemory(WorldModel):
    """occlusion_recall: remembers each slot's image from the last frame it saw the slot fully open.

    When a slot is opened (the ``open`` or ``reveal`` action), it paints the remembered image if it
    is at most ``horizon`` frames old; with ``everywhere=True`` it paints every remembered object
    into its slot at every frame, closed curtain or not (a model that recalls at the wrong time).
    """

    name = "occlusion-memory"

    def __init__(self, horizon: int | None = None, everywhere: bool = False):
        self.horizon, self.everywhere = horizon, everywhere

    def reset(self, spec, batch_size):
        from memorybench.generators.occlusion import _layout

        self.lay = _layout(spec.params, *spec.resolution)
        self.t = 0
        self.last = None
        self.slot_image = [[None] * len(self.lay.origins) for _ in range(batch_size)]
        self.slot_time = np.full((batch_size, len(self.lay.origins)), -(10**9))

    def _open(self, frame, k) -> bool:
        """The slot is fully open when its top row is not a curtain row (a curtain row is grey and flat)."""
        y0, x0 = self.lay.origins[k]
        row = frame[:, y0, x0 : x0 + self.lay.cs]  # [3, cs]
        flat_grey = bool((row == row[:, :1]).all() and (row[0] == row[1]).all() and (row[1] == row[2]).all())
        return not flat_grey

    def observe(self, frames, actions):
        cs = self.lay.cs
        for i in range(frames.shape[1]):
            for b in range(frames.shape[0]):
                f = frames[b, i]
                for k, (y0, x0) in enumerate(self.lay.origins):
                    if self._open(f, k):
                        self.slot_image[b][k] = f[:, y0 : y0 + cs, x0 : x0 + cs].clone()
                        self.slot_time[b, k] = self.t
            self.t += 1
        self.last = frames[:, -1]

    def predict(self, actions):
        from memorybench.generators.occlusion import OPEN, REVEAL

        cs = self.lay.cs
        out = self.last.clone()
        for b in range(out.shape[0]):
            for k, (y0, x0) in enumerate(self.lay.origins):
                a = int(actions[b, 0, k])
                image = self.slot_image[b][k]
                fresh = image is not None and (self.horizon is None or self.t - self.slot_time[b, k] <= self.horizon)
                wanted = self.everywhere or a in (OPEN, REVEAL)
                if wanted and fresh:
                    out[b, :, y0 : y0 + cs, x0 : x0 + cs] = image
        return out.unsqueeze(1)


class SceneMemory(WorldModel):
    """scene_consistency: a map of the tiles it observed, built by dead reckoning from the actions.

    It tracks its pose relative to where it started (the task's step and turns; its heading
    relative to the unknown starting heading), writes every observed pixel's colour into the map
    texel it shows, and predicts the next view from the map: a texel last observed at most
    ``horizon`` frames ago is painted from memory; anything else is copied from the last observed
    frame at the same pixel (no memory). Its own predictions, handed back under rollout (the very
    tensor it returned), move its pose but do not refresh what it remembers: it forgets ``horizon``
    frames after it last *observed* a texel, as the rollout gap counts.
    """

    name = "scene-memory"

    def __init__(self, horizon: int | None = None):
        self.horizon = horizon

    def reset(self, spec, batch_size):
        self.spec = spec
        self.step = spec.params.step
        self.t = 0
        self.pose = np.zeros((batch_size, 3), np.int64)  # y, x, heading relative to the start
        # a dense map of texels around the start, large enough for any walk on the task's map
        self.off = max(spec.params.map_size) + 2
        g = 2 * self.off + 1
        self.colour = torch.zeros(batch_size, g, g, 3)
        self.seen = np.full((batch_size, g, g), -(10**9), np.int64)
        self.last = None
        self.pending = None

    def _move(self, pose, a):
        from memorybench.generators.scene import BACKWARD, FORWARD, FWD, LEFT, RIGHT

        y, x, h = pose
        if a == FORWARD:
            return np.array([y + self.step * FWD[h][0], x + self.step * FWD[h][1], h])
        if a == BACKWARD:
            return np.array([y - self.step * FWD[h][0], x - self.step * FWD[h][1], h])
        if a == LEFT:
            return np.array([y, x, (h - 1) % 4])
        if a == RIGHT:
            return np.array([y, x, (h + 1) % 4])
        return pose.copy()

    def _tiles(self, pose):
        """([H, W], [H, W]) map-grid indices of the texels under each view pixel (the generator's geometry)."""
        from memorybench.generators.scene import FWD, RGT

        H, W = self.spec.resolution
        di = np.arange(H)[:, None] - H // 2
        dj = np.arange(W)[None, :] - W // 2
        f, r = FWD[pose[2]], RGT[pose[2]]
        wy = pose[0] - di * f[0] + dj * r[0]
        wx = pose[1] - di * f[1] + dj * r[1]
        return wy + self.off, wx + self.off

    def observe(self, frames, actions):
        own = frames is self.pending  # rollout: its own prediction comes back
        self.pending = None
        for i in range(frames.shape[1]):
            for b in range(frames.shape[0]):
                self.pose[b] = self._move(self.pose[b], int(actions[b, i, 0]))
                if not own:
                    ty, tx = self._tiles(self.pose[b])
                    self.colour[b, ty, tx] = frames[b, i].permute(1, 2, 0).cpu()
                    self.seen[b, ty, tx] = self.t
            self.t += 1
        self.last = frames[:, -1]

    def predict(self, actions):
        out = self.last.clone()
        for b in range(out.shape[0]):
            pose = self._move(self.pose[b], int(actions[b, 0, 0]))
            ty, tx = self._tiles(pose)
            fresh = self.seen[b, ty, tx] > -(10**9)
            if self.horizon is not None:
                fresh &= self.t - self.seen[b, ty, tx] <= self.horizon
            mem = self.colour[b, ty, tx].permute(2, 0, 1).to(out.device)
            out[b] = torch.where(torch.from_numpy(fresh).to(out.device), mem, out[b])
        self.pending = out.unsqueeze(1)
        return self.pending
