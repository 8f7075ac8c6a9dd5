"""Summarising a run: its per-frame and per-item records -> ``summary.json``.

Aggregation only: ``summarize_run`` reads the records a run wrote and aggregates them
(``memorybench.aggregate``); it evaluates nothing, except the cached calibration references of
the retention index when ``retention=True`` (``memorybench.references``, imported only then).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ._io import atomic_write_json
from .aggregate import (
    NO_MEMORY_REFERENCE,
    PERFECT_REFERENCE,
    AggregationConfig,
    items_frame,
    records_frame,
    summarize_group,
)
from .results import RUN_JSON, SUMMARY, RunDir, load_run_json, task_protocols
from .taskfile import spec_from_dict


def _timings(run_dir: Path) -> dict[str, dict]:
    """Per task and protocol, the sums over every finished batch of every session of a run (the
    ``batch_done`` events): episodes evaluated, model, scoring and wall seconds, sessions."""
    from .results import read_events

    out: dict[str, dict] = {}
    legacy: dict[str, dict] = {}
    session = 0
    for e in read_events(run_dir):
        if e.get("event") in ("start", "resume"):
            session += 1
            continue
        if e.get("event") == "batch_done":
            t = out.setdefault(
                e["group"],
                {"episodes": 0, "model_seconds": 0.0, "score_seconds": 0.0, "wall_seconds": 0.0, "sessions": set()},
            )
            t["episodes"] += len(e.get("episodes", []))
        elif e.get("event") == "group_done":  # runs written before batch events existed
            t = legacy.setdefault(
                e["group"],
                {"episodes": 0, "model_seconds": 0.0, "score_seconds": 0.0, "wall_seconds": 0.0, "sessions": set()},
            )
            t["episodes"] += int(e.get("episodes", 0))
        else:
            continue
        for k in ("model_seconds", "score_seconds", "wall_seconds"):
            t[k] += float(e.get(k, 0.0))
        t["sessions"].add(session)
    for group, t in legacy.items():
        out.setdefault(group, t)
    return {g: {**t, "sessions": len(t["sessions"])} for g, t in out.items()}


def summarize_run(
    run_dir: str | Path, retention: bool = True, device: str = "cpu", timings: dict | None = None, progress: Any = None
) -> dict:
    """Aggregate a run directory's records into ``summary.json`` (and return it).

    ``timings`` (per group) default to the sums of the run's ``batch_done`` events."""
    run = RunDir(Path(run_dir))
    meta = load_run_json(run.path)
    cfg = AggregationConfig(**{k: meta["aggregation"][k] for k in ("resamples", "seed", "ci", "min_memory_pixels")})
    groups, complete = {}, True
    for t in meta["tasks"]:
        spec = spec_from_dict(t["spec"], source=f"{run.path}/{RUN_JSON}")
        hashes = dict(zip(t["episodes_selected"], t["episodes_sha256"])) if t.get("episodes_sha256") else None
        for p in task_protocols(t, meta):
            done = run.done_episodes(t["key"], p)
            missing = sorted(set(t["episodes_selected"]) - done)
            df = records_frame(run.iter_records(t["key"], p))
            items = items_frame(run.iter_items(t["key"], p))
            key = f"{t['key']}/{p}"
            refs = None
            if retention and not df.empty:
                from .references import reference_records

                refs = {
                    m: reference_records(
                        m, spec, p, device=device, progress=progress, episodes=sorted(done), episodes_sha256=hashes
                    )
                    for m in (NO_MEMORY_REFERENCE, PERFECT_REFERENCE)
                }
            g = (
                summarize_group(df, spec.gap_bins, cfg, key, refs, items if len(items) else None)
                if not df.empty
                else {"episodes": 0, "frames": 0}
            )
            g.update(
                {
                    "task": t["key"],
                    "protocol": p,
                    "complete": not missing,
                    "missing_episodes": missing,
                    "episodes_selected": len(t["episodes_selected"]),
                    "spec_hash": t["spec_hash"],
                    "dataset_sha256": t["dataset_sha256"],
                    **{k: t[k] for k in ("split", "seed") if k in t},
                }
            )  # never a training episode
            complete &= not missing
            groups[key] = g
    summary = {
        "model": meta["model"],
        "memorybench_version": meta["memorybench_version"],
        "complete": complete,
        "groups": groups,
        "timings": {**_timings(run.path), **(timings or {})},
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(run.path / SUMMARY, summary)
    return summary
