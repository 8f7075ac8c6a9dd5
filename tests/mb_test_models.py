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
        Recorder.log.append(("observe", frames.shape[1], frames.dtype, str(frames.device), frames is self.pred,
                             frames.clone(), actions.clone()))
        super().observe(frames, actions)

    def predict(self, actions):
        self.pred = super().predict(actions)
        Recorder.log.append(("predict", actions.shape[1], actions.dtype, actions.clone()))
        return self.pred
