"""Memory Maze generation throughput on the CPU: frames per second, in one process and with N
worker processes through the storage layer (what ``memorybench tasks generate -j N`` does).

    python benchmarks/maze_throughput.py [--task maze-retrieval] [--tier standard] [--episodes 4]
                                         [--workers 1,2] [--json out.json]

Needs the ``mazes`` extra and a headless GL renderer (see the README). Reports:

* ``startup_s``: building the simulator for one episode (maze generation, MuJoCo model compile,
  GL context) -- paid once per episode, since each episode has its own seeded maze;
* ``in_process``: ``Generator.generate`` timed in this process (rendering, the scripted policy and
  the memory metadata), after one warm-up episode that also pays the imports;
* ``storage``: ``storage.write`` end to end with each worker count (process start-up, generation,
  encoding and writing the dataset), on a fresh directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the worker processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="maze-retrieval")
    ap.add_argument("--tier", default="standard")
    ap.add_argument("--episodes", type=int, default=4, help="episodes per measurement")
    ap.add_argument(
        "--workers",
        default=None,
        help="comma-separated worker counts for the storage runs (default: 1 and the number of CPUs)",
    )
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()

    from memorybench import storage
    from memorybench.generators import get_generator
    from memorybench.generators.maze import load_memory_maze, make_env
    from memorybench.tasks import TaskRegistry

    spec = TaskRegistry().get(args.task, args.tier)
    spec = spec.with_overrides(episodes=max(args.episodes, 1))
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = [int(w) for w in args.workers.split(",")] if args.workers else sorted({1, ncpu})
    load_memory_maze()
    out = {
        "task": spec.key,
        "frames_per_episode": spec.frames,
        "resolution": list(spec.resolution),
        "episodes": spec.episodes,
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "cpus": ncpu,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }

    t0 = time.perf_counter()
    env = make_env(spec.params.maze_size, spec.resolution[0], 0)
    env.reset()
    env.close()
    out["startup_s"] = round(time.perf_counter() - t0, 2)

    gen = get_generator(spec.family)(spec)
    gen.generate(0)  # warm-up
    times = []
    for i in range(spec.episodes):
        t0 = time.perf_counter()
        gen.generate(i)
        times.append(time.perf_counter() - t0)
    out["in_process"] = {
        "seconds_per_episode": round(sum(times) / len(times), 2),
        "frames_per_s": round(spec.frames * len(times) / sum(times), 1),
    }
    print(
        f"{spec.key}: {spec.frames} frames/episode at {spec.resolution[0]}x{spec.resolution[1]}, "
        f"MUJOCO_GL={out['mujoco_gl']}, {ncpu} CPUs"
    )
    print(f"  simulator start-up per episode: {out['startup_s']:.2f} s")
    print(
        f"  in-process generate: {out['in_process']['seconds_per_episode']:.2f} s/episode = "
        f"{out['in_process']['frames_per_s']:.1f} frames/s"
    )

    out["storage"] = []
    for w in workers:
        with tempfile.TemporaryDirectory() as tmp:
            c0, t0 = _cpu(), time.perf_counter()
            storage.write(spec, Path(tmp) / "ds", workers=w)
            dt, cpu = time.perf_counter() - t0, _cpu() - c0
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        row = {
            "workers": w,
            "seconds": round(dt, 2),
            "frames_per_s": round(spec.episodes * spec.frames / dt, 1),
            "cpu_seconds": round(cpu, 1),
            "frames_per_cpu_s": round(spec.episodes * spec.frames / cpu, 1),
            "load_avg_1min_after": round(load, 2),
        }
        out["storage"].append(row)
        print(
            f"  storage.write, {w} worker process(es): {spec.episodes} episodes in {dt:.1f} s = "
            f"{row['frames_per_s']:.1f} frames/s ({cpu:.0f} CPU s, {row['frames_per_cpu_s']:.1f} frames per CPU s; "
            f"load average {load:.2f}: other processes on the machine lower the wall-clock figure)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
