"""The efficiency track: per-generated-frame cost against context length.

For each model and context length ``L`` (a fresh model instance each time): observe ``L`` frames of
a synthetic 64x64 episode, then generate ``warmup + repeats`` frames one at a time
(``predict`` + ``observe`` of the prediction, the rollout step). Reported per ``L``:

* ``latency_ms``: the median wall time of one generated frame over the ``repeats`` timed steps
  (after ``warmup`` untimed ones; ``torch.cuda.synchronize`` around each step on a GPU);
* ``peak_memory_mb``: on CUDA, the allocator's peak (``torch.cuda.max_memory_allocated``) during the
  generated frames; on the CPU, the process's peak resident memory during the generated frames
  (Linux: ``VmHWM`` after returning freed heap pages to the OS with glibc's ``malloc_trim`` and
  resetting the mark through ``/proc/self/clear_refs``; each measurement runs in a fresh
  subprocess, so the peak is this model at this context and nothing else; without the trim, the
  context pass's freed scratch memory stays resident and reads as a peak that grows with context);
* ``state_mb``: the size of what the model keeps between frames (``WorldModel.state_nbytes``:
  recurrent states, KV caches), measured after the timed steps.

Across contexts it fits ``log(cost) = a + slope * log(L)`` (least squares over the contexts
``>= fit_from``): slope ~0 means constant per-frame cost (what the LSSVWM paper claims for
state-space models), slope ~1 linear growth (attention with a KV cache). It also gives the ratio of
the cost at the longest context to the cost at the shortest.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .spec import TaskSpec

FIELDS = ("latency_ms", "peak_memory_mb", "state_mb")


@dataclass
class ProfileConfig:
    contexts: Sequence[int] = (64, 128, 256, 512, 1024, 2048, 4096)
    device: str = "cpu"
    repeats: int = 20
    warmup: int = 5
    batch_size: int = 1
    resolution: tuple[int, int] = (64, 64)
    fit_from: int = 256
    subprocess: bool = True
    model_args: str | None = None

    def __post_init__(self):
        from .errors import MemorybenchError

        if self.repeats < 1 or self.warmup < 0 or self.batch_size < 1 or not self.contexts or min(self.contexts) < 1:
            raise MemorybenchError(
                f"profile: need repeats >= 1, warmup >= 0, batch_size >= 1 and positive contexts "
                f"(got repeats={self.repeats}, warmup={self.warmup}, batch_size={self.batch_size}, "
                f"contexts={list(self.contexts)})"
            )


def synthetic_spec(frames: int, resolution: tuple[int, int]) -> TaskSpec:
    """A scene-consistency spec of the standard tier reshaped to ``frames`` frames."""
    import dataclasses

    from .tasks import get_task

    base = get_task("scene-retrieval", "standard")
    return dataclasses.replace(base, frames=frames, context_frames=max(1, frames - 1), resolution=tuple(resolution))


def _clear_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _proc_status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in MiB; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _current_rss_mb() -> float:
    rss = _proc_status_mb("VmRSS")
    return 0.0 if rss is None else rss


def _release_free_heap() -> bool:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so the resident set counts
    live memory only. Without it, the scratch buffers of the context pass (e.g. a chunked scan's
    [B, chunk, D, N] tensors) stay resident in malloc's free lists, and a peak measured from
    there reports the allocator's cache as the generation's memory."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # returns whether anything was released: either way it ran
        return True
    except (OSError, AttributeError):  # not glibc: the peak may include freed-but-cached memory
        return False


def _peak_rss_mb() -> float:
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_point(model_name: str, context: int, cfg: ProfileConfig) -> dict:
    """One (model, context) measurement in this process."""
    import torch

    from .models import load_model

    torch.manual_seed(0)
    device = cfg.device
    baseline = _current_rss_mb() if not device.startswith("cuda") else 0.0  # the interpreter + torch, before the model
    model = load_model(model_name, cfg.model_args)
    model.to(device)
    steps = cfg.warmup + cfg.repeats
    spec = synthetic_spec(context + steps + 1, cfg.resolution)
    H, W = cfg.resolution
    B = cfg.batch_size
    g = torch.Generator().manual_seed(context)
    nvec = spec.action_space.nvec
    actions = torch.stack([torch.randint(0, n, (B, context + steps), generator=g) for n in nvec], -1).to(device)
    cuda = device.startswith("cuda")
    with torch.inference_mode():
        model.reset(spec, B)
        chunk = 128
        for s in range(0, context, chunk):  # random frames: cost does not depend on content
            e = min(context, s + chunk)
            model.observe(torch.rand(B, e - s, 3, H, W, generator=g).to(device), actions[:, s:e])
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        trimmed = _release_free_heap() if not cuda else False
        rss_reset = _clear_peak_rss() if not cuda else False
        live = _current_rss_mb() if not cuda else 0.0
        times = []
        for i in range(steps):
            a = actions[:, context + i : context + i + 1] if context + i < actions.shape[1] else actions[:, -1:]
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            pred = model.predict(a)
            model.observe(pred, a)
            if cuda:
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else _peak_rss_mb()
        nbytes = model.state_nbytes()
    return {
        "context": context,
        "latency_ms": 1000 * statistics.median(times[cfg.warmup :]),
        "latency_ms_p90": 1000 * float(np.quantile(times[cfg.warmup :], 0.9)),
        "peak_memory_mb": peak,
        "peak_memory_kind": "cuda_max_allocated"
        if cuda
        else (("vmhwm_after_trim_reset" if trimmed else "vmhwm_after_reset") if rss_reset else "ru_maxrss_process"),
        "process_baseline_mb": baseline,
        "rss_before_generation_mb": live,
        "state_mb": None if nbytes is None else nbytes / 2**20,
        "batch_size": B,
    }


def _measure_in_subprocess(model_name: str, context: int, cfg: ProfileConfig) -> dict:
    payload = json.dumps(
        {
            "model": model_name,
            "context": context,
            "cfg": {
                "device": cfg.device,
                "repeats": cfg.repeats,
                "warmup": cfg.warmup,
                "batch_size": cfg.batch_size,
                "resolution": list(cfg.resolution),
                "model_args": cfg.model_args,
            },
        }
    )
    proc = subprocess.run([sys.executable, "-m", "memorybench.profile", payload], capture_output=True, text=True)
    if proc.returncode != 0:
        from .errors import MemorybenchError

        # one line: the subprocess's own error message (a MemorybenchError), else the last line of
        # its traceback (the exception); the whole stderr with MEMORYBENCH_DEBUG=1
        lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
        why = next(
            (x[len(_ERROR_PREFIX) :] for x in reversed(lines) if x.startswith(_ERROR_PREFIX)),
            lines[-1].strip() if lines else f"exit code {proc.returncode}",
        )
        debug = os.environ.get("MEMORYBENCH_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
        raise MemorybenchError(
            f"profiling {model_name} at context {context} failed: {why}" + (f"\n{proc.stderr}" if debug else "")
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


_ERROR_PREFIX = "memorybench-profile-error: "


def fit_slope(xs: Sequence[float], ys: Sequence[float]) -> dict:
    """Least-squares slope of log(y) on log(x) and the ratio y(max x) / y(min x)."""
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None and y > 0]
    if len(pts) < 2:
        return {"slope": None, "ratio": None, "points": len(pts)}
    lx = np.log([p[0] for p in pts])
    ly = np.log([p[1] for p in pts])
    slope = float(np.polyfit(lx, ly, 1)[0])
    lo, hi = min(pts), max(pts)
    return {"slope": slope, "ratio": hi[1] / lo[1], "points": len(pts), "from": lo[0], "to": hi[0]}


def profile_model(model_name: str, cfg: ProfileConfig, progress: Any = None) -> dict:
    from .errors import MemorybenchError
    from .models import resolve

    if resolve(model_name).privileged:
        raise MemorybenchError(
            f"{model_name} is a privileged calibration reference (it reads the true episode); "
            "it has no cost of its own to profile"
        )
    points = []
    for L in cfg.contexts:
        point = _measure_in_subprocess(model_name, L, cfg) if cfg.subprocess else measure_point(model_name, L, cfg)
        points.append(point)
        if progress:
            progress(model_name, L, point)
    fits = {}
    for f in FIELDS:
        sel = [p for p in points if p["context"] >= cfg.fit_from] or points
        fits[f] = fit_slope([p["context"] for p in sel], [p[f] for p in sel])
    import torch

    from .models import load_model

    m = load_model(model_name, cfg.model_args)
    return {
        "model": model_name,
        "identity": m.describe(),
        "device": cfg.device,
        "device_name": torch.cuda.get_device_name(torch.device(cfg.device))
        if cfg.device.startswith("cuda")
        else (os.uname().machine if hasattr(os, "uname") else ""),
        "torch_threads": torch.get_num_threads(),
        "resolution": list(cfg.resolution),
        "batch_size": cfg.batch_size,
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "fit_from": cfg.fit_from,
        "points": points,
        "fits": fits,
    }


def write_profiles(profiles: list[dict], out: str | Path) -> Path:
    from . import __version__
    from .portable import portable
    from .results import atomic_write_json, environment

    out = Path(out)
    # portable (no host name, no local paths): profiles are meant to be committed next to results
    atomic_write_json(
        out,
        portable(
            {
                "format": "memorybench-profile/1",
                "memorybench_version": __version__,
                "environment": environment(profiles[0]["device"] if profiles else "cpu"),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "profiles": profiles,
            }
        ),
    )
    return out


def load_profiles(path: str | Path) -> list[dict]:
    from .errors import DataError

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the profile: {e}") from None
    if data.get("format") != "memorybench-profile/1":
        raise DataError(f"{path} is not a memorybench profile (format {data.get('format')!r})")
    return data["profiles"]


def summary_rows(profiles: list[dict]) -> list[dict]:
    """Per model: cost at the shortest and the longest context, their ratio, the fitted slope."""
    rows = []
    for p in profiles:
        pts = sorted(p["points"], key=lambda q: q["context"])
        lo, hi = pts[0], pts[-1]
        row = {"model": p["model"], "device": p["device"], "context_min": lo["context"], "context_max": hi["context"]}
        for f in FIELDS:
            a, b = lo[f], hi[f]
            row[f"{f}_min_ctx"] = a
            row[f"{f}_max_ctx"] = b
            row[f"{f}_ratio"] = (b / a) if a and b else None
            row[f"{f}_slope"] = p["fits"][f]["slope"]
        rows.append(row)
    return rows


if __name__ == "__main__":  # the subprocess entry point of _measure_in_subprocess
    args = json.loads(sys.argv[1])
    c = args["cfg"]
    cfg = ProfileConfig(
        device=c["device"],
        repeats=c["repeats"],
        warmup=c["warmup"],
        batch_size=c["batch_size"],
        resolution=tuple(c["resolution"]),
        model_args=c["model_args"],
        subprocess=False,
    )
    from .errors import MemorybenchError

    try:
        point = measure_point(args["model"], args["context"], cfg)
    except MemorybenchError as e:  # a user-facing error: its message, without a traceback
        print(_ERROR_PREFIX + " ".join(str(e).split()), file=sys.stderr)
        sys.exit(2)
    print(json.dumps(point))
