"""Calibration baselines: the scale every learned model is read against.

* ``copy-last``      repeats the last frame it has observed: no memory at all (the retention
                     index's 0).
* ``mean-frame``     predicts the mean of every frame it has observed: a lossy *long* memory (it keeps
                     a faint trace of everything seen), not a no-memory baseline. The no-memory
                     references (blur, means of recent frames, inpainting, shifted copies) are in
                     ``memorybench.models.nomemory``.
* ``ground-truth``   returns the true frame (privileged): every metric must be perfect, a check of
                     the scoring pipeline itself.
* ``perfect-memory`` a non-learned model with perfect recall (privileged: it reads where each pixel's
                     content comes from, never what it looks like): every pixel whose content it has
                     observed is put back exactly as last observed; novel pixels are filled with the
                     last observed frame. The retention index's 1. When an episode has no content
                     identities (recorded or simulator episodes), it copies the observed frame whose
                     recorded pose is closest to the pose of the frame to predict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..adapter import WorldModel
from ..episode import Episode
from ..spec import TaskSpec


class CopyLast(WorldModel):
    """Repeats the last observed frame: no memory at all (retention 0)."""

    name = "copy-last"
    reference_kind = "no-memory"
    learned = False

    def reset(self, spec: TaskSpec, batch_size: int) -> None:
        self.last = None

    def observe(self, frames: torch.Tensor, actions: torch.Tensor) -> None:
        self.last = frames[:, -1]

    def predict(self, actions: torch.Tensor) -> torch.Tensor:
        return self.last.unsqueeze(1).expand(-1, actions.shape[1], -1, -1, -1).contiguous()

    def state_nbytes(self) -> int:
        return 0 if self.last is None else self.last.numel() * self.last.element_size()


class MeanFrame(WorldModel):
    """Predicts the mean of every observed frame (a blurry average)."""

    name = "mean-frame"
    reference_kind = "lossy-memory"
    learned = False

    def reset(self, spec: TaskSpec, batch_size: int) -> None:
        self.total, self.count = None, 0

    def observe(self, frames: torch.Tensor, actions: torch.Tensor) -> None:
        s = frames.double().sum(1)
        self.total = s if self.total is None else self.total + s
        self.count += frames.shape[1]

    def predict(self, actions: torch.Tensor) -> torch.Tensor:
        mean = (self.total / self.count).float()
        return mean.unsqueeze(1).expand(-1, actions.shape[1], -1, -1, -1).contiguous()

    def state_nbytes(self) -> int:
        return 0 if self.total is None else self.total.numel() * self.total.element_size()


class _Privileged(WorldModel):
    privileged = True
    reference_kind = "oracle"
    learned = False

    def reset(self, spec: TaskSpec, batch_size: int) -> None:
        self.spec, self.t, self.episodes = spec, 0, None

    def bind(self, episodes: Sequence[Episode]) -> None:
        self.episodes = list(episodes)


class GroundTruth(_Privileged):
    """Returns the true frame (privileged): a check of the scoring pipeline."""

    name = "ground-truth"

    def observe(self, frames: torch.Tensor, actions: torch.Tensor) -> None:
        self.t += frames.shape[1]

    def predict(self, actions: torch.Tensor) -> torch.Tensor:
        n = actions.shape[1]
        out = np.stack([ep.frames[self.t : self.t + n] for ep in self.episodes])
        return torch.from_numpy(out).permute(0, 1, 4, 2, 3).float().div(255.0).to(actions.device)


class PerfectMemory(_Privileged):
    """Puts back every pixel it has observed (privileged): perfect recall (retention 1)."""

    name = "perfect-memory"

    def bind(self, episodes: Sequence[Episode]) -> None:
        from ..generators import get_generator

        self.episodes = list(episodes)
        self.ids: list[np.ndarray | None] = []
        for ep in self.episodes:
            ids = ep.content_ids
            if ids is None and get_generator(self.spec.family).has_content_ids:
                fresh = get_generator(self.spec.family)(self.spec).generate(ep.index)
                if fresh.sha256() != ep.sha256():
                    raise RuntimeError(f"perfect-memory: regenerated episode {ep.index} differs from the stored one")
                ids = fresh.content_ids
            self.ids.append(ids)
        # per episode: the colour last observed for each content id, and whether it was observed
        self.table = [None if ids is None else np.zeros((int(ids.max()) + 1, 3), np.float32) for ids in self.ids]
        self.known = [None if ids is None else np.zeros(int(ids.max()) + 1, bool) for ids in self.ids]
        self.history: list[list[np.ndarray]] = [[] for _ in self.episodes]

    def observe(self, frames: torch.Tensor, actions: torch.Tensor) -> None:
        f = frames.permute(0, 1, 3, 4, 2).cpu().numpy()  # [B, T, H, W, 3]
        for b in range(f.shape[0]):
            ids = self.ids[b]
            for i in range(f.shape[1]):
                t = self.t + i
                if ids is not None:
                    self.table[b][ids[t].ravel()] = f[b, i].reshape(-1, 3)
                    self.known[b][ids[t].ravel()] = True
                self.history[b].append(f[b, i])
            # only the last frame and (without ids) the whole history are needed
            if ids is not None:
                self.history[b] = self.history[b][-1:]
        self.last_device = frames.device
        self.t += f.shape[1]

    def _closest_pose_frame(self, b: int, t: int) -> np.ndarray:
        poses = self.episodes[b].poses
        past = poses[: len(self.history[b])]
        d = np.linalg.norm(past - poses[t], axis=1)
        return self.history[b][int(len(d) - 1 - np.argmin(d[::-1]))]  # ties: the most recent

    def predict(self, actions: torch.Tensor) -> torch.Tensor:
        n = actions.shape[1]
        outs = []
        for b in range(len(self.episodes)):
            ids = self.ids[b]
            frames = []
            for i in range(n):
                t = self.t + i
                if ids is None:
                    frames.append(self._closest_pose_frame(b, t))
                    continue
                idx = ids[t].ravel()
                last = self.history[b][-1].reshape(-1, 3)
                out = np.where(self.known[b][idx][:, None], self.table[b][idx], last)
                frames.append(out.reshape(self.history[b][-1].shape))
            outs.append(np.stack(frames))
        out = torch.from_numpy(np.stack(outs)).permute(0, 1, 4, 2, 3).contiguous()
        return out.to(actions.device)
