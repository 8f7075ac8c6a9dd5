"""Scale-out: shards of episodes, ``torchrun`` process groups, and merging shard runs.

Sharding is by episode and deterministic: shard ``i`` of ``n`` evaluates the selected episodes
``i, i+n, i+2n, ...`` of every task, whatever the machine. Each shard is an ordinary run directory
(its ``run.json`` records ``shard: [i, n]``); because every episode's records are computed
independently of the others, the union of the shards' records is exactly what one process would
have written, and the merged summary is identical to a single-process run's.

* ``torchrun --nproc-per-node N -m memorybench run ...``: rank ``r`` evaluates shard ``r/N`` into
  ``OUT/<model>.shards/rank-<r>``; rank 0 then merges them into ``OUT/<model>``. The process group
  (gloo on CPU, NCCL with ``--device cuda``, each rank on ``cuda:LOCAL_RANK``) is only used to agree
  on the output directory and to wait for every rank.
* ``memorybench run --shard I/N`` for array jobs with no process group, then
  ``memorybench merge SHARD_DIR... --out DIR``.

``merge`` refuses shards of different runs (model identity, task specs and datasets, protocols,
metric definitions), a missing shard, and an unfinished shard, naming what is wrong: a partial
suite is never reported as complete. A rank that dies leaves its shard resumable (``--resume``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import MemorybenchError
from .results import (
    RUN_JSON,
    SUMMARY,
    DifferentRunError,
    RunDir,
    append_event,
    atomic_write_json,
    comparable_keys,
    load_run_json,
    task_protocols,
)


def dist_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when launched by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def init_process_group(device: str) -> ModuleType:
    """Join the torchrun process group (gloo for CPU, NCCL for CUDA); returns ``torch.distributed``."""
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=6))
    return dist


def broadcast(value: Any, dist: ModuleType) -> Any:
    """Rank 0's ``value`` on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard_dirs(root: Path, world: int) -> list[Path]:
    return [root.with_name(root.name + ".shards") / f"rank-{r}" for r in range(world)]


def _check_shards(metas: list[tuple[Path, dict]]) -> int:
    """Validate a set of shard runs; returns the shard count ``n``."""
    if not metas:
        raise MemorybenchError("merge needs at least one shard run directory")
    shards = []
    for path, meta in metas:
        s = meta["run"].get("shard")
        if not s:
            raise MemorybenchError(f"{path} is not a shard (its run.json has no 'shard'); nothing to merge")
        shards.append((tuple(s), path))
    ns = {n for (_, n), _ in shards}
    if len(ns) != 1:
        raise DifferentRunError(f"shards of different splits: {sorted(ns)} shards in total")
    n = ns.pop()
    first_path, first = metas[0]
    ref = {k: v for k, v in comparable_keys(first).items() if k != "shard"}
    for path, meta in metas[1:]:
        mine = {k: v for k, v in comparable_keys(meta).items() if k != "shard"}
        # the tasks' episode lists (and so the hashes of their data) differ between shards by
        # construction: compare the specs here, the episodes' data when merging
        strip = lambda d: {**d, "tasks": {k: v[:1] for k, v in d["tasks"].items()}}  # noqa: E731
        if strip(mine) != strip(ref):
            diffs = [k for k in ref if strip(mine)[k] != strip(ref)[k]]
            raise DifferentRunError(
                f"{path} is not a shard of the same run as {first_path} "
                f"(differs in: {', '.join(diffs)}); refusing to merge"
            )
    seen: dict[int, Path] = {}
    for (i, _), path in shards:
        if i in seen:
            raise DifferentRunError(f"shard {i}/{n} given twice: {seen[i]} and {path}")
        seen[i] = path
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise MemorybenchError(
            f"cannot merge: shard(s) {', '.join(f'{i}/{n}' for i in missing)} missing "
            f"(have {', '.join(f'{i}/{n}' for i in sorted(seen))}); run them, then merge again"
        )
    return n


def merge(
    shard_paths: Sequence[str | Path],
    out: str | Path,
    retention: bool = True,
    device: str = "cpu",
    progress: Any = None,
) -> Path:
    """Combine complete shard runs into one run directory at ``out`` and summarise it."""
    from .runner import select_episodes
    from .summarize import summarize_run
    from .taskfile import spec_from_dict

    metas = [(Path(p), load_run_json(p)) for p in shard_paths]
    n = _check_shards(metas)
    # every shard must hold all of its episodes
    for path, meta in metas:
        run = RunDir(path)
        i = meta["run"]["shard"][0]
        for t in meta["tasks"]:
            for p in task_protocols(t, meta):
                missing = sorted(set(t["episodes_selected"]) - run.done_episodes(t["key"], p))
                if missing:
                    raise MemorybenchError(
                        f"cannot merge: shard {i}/{n} ({path}) is unfinished on {t['key']} ({p}): episodes "
                        f"{missing[:10]}{'...' if len(missing) > 10 else ''} missing; resume it with --resume"
                    )
    out = Path(out)
    if (out / RUN_JSON).exists() or (out.exists() and any(out.iterdir())):
        raise MemorybenchError(f"{out} exists and is not empty; merge into a new directory")
    base = metas[0][1]
    merged = dict(base)
    merged["run"] = {**base["run"], "shard": None, "merged_shards": n}
    merged["merged_from"] = [
        {"path": str(p.resolve()), "shard": m["run"]["shard"], "environment": m["environment"]} for p, m in metas
    ]
    tasks = [
        _merged_task(t, metas, select_episodes(spec_from_dict(t["spec"]), base["run"].get("limit"), None))
        for t in base["tasks"]
    ]
    merged["tasks"] = tasks
    tmp = out.with_name(f".{out.name}.merging-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    atomic_write_json(tmp / RUN_JSON, merged)
    for path, _ in metas:
        for sub in ("records", "items", "predictions"):
            src = path / sub
            if src.is_dir():
                shutil.copytree(src, tmp / sub, dirs_exist_ok=True)
    # the union must be exactly the full selection: nothing missing, nothing extra
    run = RunDir(tmp)
    for t in tasks:
        for p in task_protocols(t, merged):
            if run.done_episodes(t["key"], p) != set(t["episodes_selected"]):
                shutil.rmtree(tmp, ignore_errors=True)
                raise MemorybenchError(f"merged records of {t['key']} ({p}) do not match the selected episodes")
    append_event(tmp, "merge", shards=[str(p) for p, _ in metas])
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    summary = summarize_run(out, retention=retention, device=device, progress=progress)
    summary["timings"] = {f"shard {m['run']['shard'][0]}": _timings(p) for p, m in metas}
    atomic_write_json(out / SUMMARY, summary)
    append_event(out, "finish", complete=summary["complete"])
    return out


def _merged_task(t: dict, metas: list[tuple[Path, dict]], selected: list[int]) -> dict:
    """The merged run's entry of task ``t``: the full selection, with each episode's SHA-256 from the
    shard that evaluated it and the hash of the whole selection."""
    from .storage import _combined_hash

    hashes: dict[int, str] = {}
    legacy = set()
    for _, meta in metas:
        mt = next(x for x in meta["tasks"] if x["key"] == t["key"])
        if "episodes_sha256" not in mt:  # written before per-episode hashes: the whole dataset's hash
            legacy.add(mt["dataset_sha256"])
            continue
        for i, h in zip(mt["episodes_selected"], mt["episodes_sha256"]):
            if hashes.setdefault(i, h) != h:
                raise DifferentRunError(f"shards disagree on the data of episode {i} of {t['key']}; refusing to merge")
    if legacy:
        if len(legacy) > 1 or hashes:
            raise DifferentRunError(f"the shards of {t['key']} were evaluated on different datasets; refusing to merge")
        return {**t, "episodes_selected": selected}
    return {
        **t,
        "episodes_selected": selected,
        "episodes_sha256": [hashes[i] for i in selected if i in hashes],
        "dataset_sha256": _combined_hash([hashes[i] for i in selected if i in hashes]),
    }


def _timings(path: Path) -> dict:
    try:
        import json

        return json.loads((path / SUMMARY).read_text()).get("timings", {})
    except (OSError, ValueError):
        return {}


def wait_for(paths: Sequence[Path], timeout: float = 30.0) -> None:
    """Wait until every path exists (shared file systems can lag behind the barrier)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not all(p.exists() for p in paths):
        time.sleep(0.2)
