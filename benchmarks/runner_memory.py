"""Peak memory of the runner itself: a copy-last run on 512- and 2048-frame episodes, and on 4 vs
16 episodes, each in a fresh process. Two figures: the peak resident set (``ru_maxrss``, which
also counts pages of the memory-mapped dataset that were read) and the peak *anonymous* resident
memory (``RssAnon``, sampled every 20 ms: what the process itself holds).

    python benchmarks/runner_memory.py [--json out.json]

The runner keeps one batch of episodes and its predictions at a time, so the peak should grow with
the episode length (the batch's frames and masks) but not with the number of episodes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

TASK = textwrap.dedent("""\
    name: runner-memory
    family: scene_consistency
    generator_version: 1
    description: scene-retrieval reshaped for the runner memory benchmark
    common: {{seed: 1, recent_window: 4, params: {{mode: retrace, map_size: [384, 384]}}}}
    tiers:
      f512e4:   {{frames: 512, context_frames: 448, resolution: [64, 64], episodes: 4}}
      f512e16:  {{frames: 512, context_frames: 448, resolution: [64, 64], episodes: 16}}
      f2048e4:  {{frames: 2048, context_frames: 1984, resolution: [64, 64], episodes: 4}}
    """)

CHILD = textwrap.dedent("""\
    import resource, sys, threading, time
    peak = [0]
    def anon_kb():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("RssAnon:"))
    def sample():
        while True:
            peak[0] = max(peak[0], anon_kb())
            time.sleep(0.02)
    threading.Thread(target=sample, daemon=True).start()
    from memorybench.cli import main
    rc = main(sys.argv[1:])
    peak[0] = max(peak[0], anon_kb())
    print("PEAK_RSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "PEAK_ANON_MB", peak[0] / 1024.0)
    sys.exit(rc)
    """)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks = Path(tmp) / "tasks"
        tasks.mkdir()
        (tasks / "runner-memory.yaml").write_text(TASK.format())
        # generate the datasets first, so that generation is not part of the measured runs
        subprocess.run(
            [
                sys.executable,
                "-m",
                "memorybench",
                "tasks",
                "generate",
                "runner-memory@f512e4,runner-memory@f512e16,runner-memory@f2048e4",
                "--tasks-dir",
                str(tasks),
            ],
            check=True,
            capture_output=True,
        )
        for tier in ("f512e4", "f512e16", "f2048e4"):
            cmd = [
                sys.executable,
                "-c",
                CHILD,
                "run",
                "--model",
                "copy-last",
                "--tasks",
                f"runner-memory@{tier}",
                "--tasks-dir",
                str(tasks),
                "--out",
                str(Path(tmp) / tier),
                "--no-retention",
                "--device",
                "cpu",
                "--batch-size",
                str(args.batch_size),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(proc.stderr[-2000:])
            fields = proc.stdout.split("PEAK_RSS_MB")[-1].split()
            peak, anon = float(fields[0]), float(fields[2])
            frames, episodes = (512, 4) if tier == "f512e4" else (512, 16) if tier == "f512e16" else (2048, 4)
            rows.append(
                {
                    "frames": frames,
                    "episodes": episodes,
                    "batch_size": args.batch_size,
                    "peak_rss_mb": peak,
                    "peak_anonymous_mb": anon,
                }
            )
            print(
                f"{frames:5d} frames x {episodes:2d} episodes (batch {args.batch_size}): peak RSS {peak:7.1f} MiB "
                f"(anonymous, i.e. not the memory-mapped dataset: {anon:7.1f} MiB)"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
