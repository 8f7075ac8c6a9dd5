"""Episode generation throughput (frames per second on one core) for each task of a tier.

    python benchmarks/generation_throughput.py [--tier standard] [--episodes 4] [--json out.json]

Times ``Generator.generate`` (rendering + memory metadata) in this process, pinned to one CPU
core where the OS allows it, after one warm-up episode. Writing to disk is not included; see
``memorybench tasks generate`` for end-to-end figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tier", default="standard")
    ap.add_argument("--episodes", type=int, default=4, help="timed episodes per task (after one warm-up)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from memorybench.generators import get_generator
    from memorybench.tasks import TaskRegistry

    rows = []
    for spec in TaskRegistry().select(args.tier):
        gen = get_generator(spec.family)(spec)
        gen.generate(0)  # warm-up
        times = []
        for i in range(1, args.episodes + 1):
            t0 = time.perf_counter()
            gen.generate(i % spec.episodes)
            times.append(time.perf_counter() - t0)
        fps = spec.frames / np.array(times)
        rows.append(
            {
                "task": spec.key,
                "frames_per_episode": spec.frames,
                "resolution": f"{spec.resolution[0]}x{spec.resolution[1]}",
                "median_fps": float(np.median(fps)),
                "min_fps": float(fps.min()),
                "episodes_timed": len(times),
            }
        )
        print(
            f"{spec.key:32s} {spec.resolution[0]}x{spec.resolution[1]} {spec.frames:5d} frames/episode  "
            f"median {np.median(fps):8.0f} frames/s  (min {fps.min():.0f})"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": platform.processor() or platform.machine(),
                    "python": platform.python_version(),
                    "one_core": hasattr(os, "sched_setaffinity"),
                    "results": rows,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
