"""Training-data throughput: episodes per second of ``memorybench.data.EpisodeStream`` per worker.

    python benchmarks/data_throughput.py [--tier standard] [--episodes 8] [--workers 2] [--crop 48]
                                         [--model s4] [--json out.json]

For each procedural task of the tier (not the Memory Maze simulator or recorded tasks), it times:

* **in-process** (``num_workers=0``): samples (generation + crop + tensors) yielded by one
  process, after one warm-up sample: episodes/s of one worker;
* **DataLoader** with ``--workers`` processes: samples delivered to the training process, timed
  from the first one (so worker start-up is excluded): episodes/s in total and per worker.

With ``--model NAME`` it also times training steps of that zoo model (``memorybench.train``'s
loss, backward and AdamW step on batches of ``--batch-size`` episodes from ``task_loader``,
one thread, after one warm-up step) on the same tier and crop, so the two numbers come from one
run on one machine: a worker keeps up when it makes more episodes per second than the step
consumes (batch size / step time).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np


def time_stream(spec, n: int, workers: int, crop: int | None) -> float:
    """Seconds per sample delivered by a DataLoader over ``EpisodeStream`` (first sample excluded)."""
    import torch

    from memorybench.data import EpisodeStream

    loader = torch.utils.data.DataLoader(EpisodeStream(spec, crop=crop), batch_size=None, num_workers=workers)
    it = iter(loader)
    next(it)  # warm-up (and, with workers, their start-up)
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    dt = time.perf_counter() - t0
    del it
    return dt / n


def time_train_step(model: str, specs, batch_size: int, crop: int | None, steps: int) -> float:
    """Median seconds of one training step of a zoo model (one thread), after one warm-up step."""
    import torch

    from memorybench.data import task_loader
    from memorybench.models import resolve

    torch.set_num_threads(1)
    cls = resolve(model)
    net = cls.build_net(None, seed=0).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    batches = iter(task_loader(specs, batch_size, crop=crop, stop=steps + 1))
    times = []
    for i, b in enumerate(batches):
        t0 = time.perf_counter()
        frames = b["frames"].float().div_(255.0)
        weight = 1 + 4 * b["memory_mask"].float()
        loss = net.loss(frames, b["actions"], weight, torch.Generator().manual_seed(i))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tier", default="standard")
    ap.add_argument("--episodes", type=int, default=8, help="timed samples per measurement")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--crop", type=int, default=None, help="crop length (default: whole episodes)")
    ap.add_argument("--model", default=None, help="also time training steps of this zoo model")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2, help="timed training steps (after one warm-up)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()

    from memorybench.tasks import TaskRegistry

    specs = [s for s in TaskRegistry().select(args.tier) if s.family not in ("memory_maze", "recorded")]
    rows = []
    for spec in specs:
        one = time_stream(spec, args.episodes, 0, args.crop)
        many = time_stream(spec, args.episodes, args.workers, args.crop)
        row = {
            "task": spec.key,
            "frames": spec.frames,
            "crop": args.crop,
            "episodes_per_s_one_worker_in_process": 1 / one,
            f"episodes_per_s_dataloader_{args.workers}_workers": 1 / many,
            "episodes_per_s_per_worker_dataloader": 1 / many / args.workers,
        }
        rows.append(row)
        print(
            f"{spec.key:28s} in-process {1 / one:6.2f} episodes/s ({one * 1000:5.0f} ms each)   "
            f"DataLoader x{args.workers}: {1 / many:6.2f} episodes/s ({1 / many / args.workers:.2f} per worker)"
        )
    out = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "tier": args.tier,
        "results": rows,
    }
    if args.model:
        step = time_train_step(args.model, specs, args.batch_size, args.crop, args.steps)
        need = args.batch_size / step
        slowest = min(r["episodes_per_s_one_worker_in_process"] for r in rows)
        out["train_step"] = {
            "model": args.model,
            "batch_size": args.batch_size,
            "crop": args.crop,
            "seconds_per_step": step,
            "episodes_per_s_needed": need,
            "workers_needed": int(np.ceil(need / slowest)),
        }
        print(
            f"{args.model} training step (batch {args.batch_size}, crop {args.crop}, 1 thread): {step:.2f} s "
            f"-> needs {need:.3f} episodes/s; one worker makes >= {slowest:.2f} "
            f"({slowest / need:.0f}x what the step consumes)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
