"""The runner: feed each model its context, collect its predictions, score them, write results.

For every task, protocol and batch of episodes::

    reset -> observe(context) -> [predict(a_t) -> check -> observe(prediction or truth)] for t >= C

Predictions are checked at every step (shape, dtype, range, NaN/inf: an error names the model,
task, protocol, episode, frame and problem), quantised to 8 bits (``round(255 x)``, as a saved
video would be, so that ``memorybench score`` on saved predictions reproduces the numbers exactly)
and scored per frame against the truth (``memorybench.metrics``). Each finished episode's records
are written atomically (``memorybench.results``); nothing else is kept between batches, so memory
does not grow with the number of episodes. A killed run resumes (``resume=True``) from its
finished episodes and ends with the same numbers as an uninterrupted one.

The memory retention index needs the ``copy-last`` and ``perfect-memory`` references on the same
task and protocol: they are evaluated once into ``$MEMORYBENCH_CACHE/references/`` (a run
directory keyed by model identity, task hash, protocol and metric version) and reused.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import storage
from .aggregate import NO_MEMORY_REFERENCE, PERFECT_REFERENCE, AggregationConfig, records_frame, summarize_group
from .errors import MemorybenchError
from .results import (RUN_JSON, SUMMARY, RunDir, RunExistsError, append_event, atomic_write_json, check_same_run,
                      load_run_json, new_run_meta, task_protocols)
from .spec import TaskSpec, spec_from_dict

#: bump when the scoring pipeline changes what a number means (part of run identity)
METRICS_VERSION = 1


class AdapterError(MemorybenchError):
    """A model raised an exception or produced an invalid output."""

    exit_code = 3


@dataclass
class RunRequest:
    """Everything ``evaluate`` needs. ``out`` is the run directory of this one model."""

    model: str
    tasks: Sequence[TaskSpec]
    out: Path
    model_args: dict | str | None = None
    protocols: Sequence[str] = ("rollout",)
    device: str = "cpu"
    batch_size: int = 8
    resume: bool = False
    save_predictions: bool = False
    limit: int | None = None
    shard: tuple[int, int] | None = None
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    retention: bool = True
    workers: int = 1
    context_chunk: int = 128
    progress: bool = True
    command: list[str] | None = None


# -----------------------------------------------------------------------------------------
# helpers


def metrics_meta(scorer) -> dict:
    """The metric definitions a run used, including where the LPIPS weights actually came from."""
    return {"version": METRICS_VERSION, **scorer.definitions(),
            "predictions": "quantised to uint8 as round(255 * x) before scoring",
            "scored_frames": "the predicted frames: context_frames .. frames-1"}


def select_episodes(spec: TaskSpec, limit: int | None, shard: tuple[int, int] | None) -> list[int]:
    """Episode indices to evaluate: the first ``limit``, then every n-th from i for shard (i, n)."""
    idx = list(range(spec.episodes))
    if limit is not None:
        if limit < 1:
            raise MemorybenchError(f"--limit must be >= 1, got {limit}")
        idx = idx[:limit]
    if shard is not None:
        i, n = shard
        idx = idx[i::n]
    return idx


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MemorybenchError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise MemorybenchError(f"unknown --device {device!r} (cpu, cuda, cuda:N, auto)")
    return device


def check_prediction(pred, shape: tuple, where: Callable[[int, int], str]) -> None:
    """Raise ``AdapterError`` describing the first problem with a model output."""
    import torch

    if not isinstance(pred, torch.Tensor):
        raise AdapterError(f"{where(0, 0)}: predict() returned {type(pred).__name__}, expected a torch.Tensor")
    if tuple(pred.shape) != shape:
        raise AdapterError(f"{where(0, 0)}: predict() returned shape {tuple(pred.shape)}, expected {shape} "
                           "[batch, frames, 3, height, width]")
    if pred.dtype != torch.float32:
        raise AdapterError(f"{where(0, 0)}: predict() returned dtype {pred.dtype}, expected torch.float32 in [0, 1]")
    bad = ~torch.isfinite(pred)
    if bad.any():
        b, n = (int(x) for x in bad.flatten(2).any(2).nonzero()[0])
        raise AdapterError(f"{where(b, n)}: predict() returned NaN or inf")
    lo, hi = pred.amin(dim=(2, 3, 4)), pred.amax(dim=(2, 3, 4))
    out = (lo < -1e-6) | (hi > 1 + 1e-6)
    if out.any():
        b, n = (int(x) for x in out.nonzero()[0])
        raise AdapterError(f"{where(b, n)}: predict() returned values in [{float(lo[b, n]):.4g}, {float(hi[b, n]):.4g}], "
                           "outside [0, 1]")


@contextlib.contextmanager
def _calling(model_name: str, method: str, where: str):
    try:
        yield
    except MemorybenchError:
        raise
    except Exception as e:  # noqa: BLE001 - any adapter failure becomes one clear error
        raise AdapterError(f"{where}: {method}() raised {type(e).__name__}: {e}") from e


def _to_tensor(frames_u8: np.ndarray, device: str):
    """uint8 [B, T, H, W, 3] -> float32 [B, T, 3, H, W] in [0, 1] on ``device``."""
    import torch

    a = np.ascontiguousarray(frames_u8)
    if not a.flags.writeable:  # stored episodes are read-only views of the memory-mapped dataset
        a = a.copy()
    return torch.from_numpy(a).to(device).permute(0, 1, 4, 2, 3).float().div_(255.0)


# -----------------------------------------------------------------------------------------
# evaluation


def _task_entry(spec: TaskSpec, store: storage.EpisodeStore, selected: list[int]) -> dict:
    return {"key": spec.key, "spec": spec.to_dict(), "spec_hash": spec.hash(), "dataset_sha256": store.dataset_hash,
            "dataset_path": str(store.path), "episodes_total": spec.episodes, "episodes_selected": selected}


def evaluate(req: RunRequest, progress=None) -> Path:
    """Evaluate one model; returns the run directory (with ``summary.json`` when complete)."""
    import torch

    from .metrics import FrameScorer
    from .models import load_model

    device = resolve_device(req.device)
    if req.batch_size < 1:
        raise MemorybenchError(f"--batch-size must be >= 1, got {req.batch_size}")
    model = load_model(req.model, req.model_args)
    if device.split(":")[0] not in model.devices:
        raise MemorybenchError(f"model '{model.name}' does not run on {device} (it supports {', '.join(model.devices)})")
    with _calling(model.name, "to", f"model '{model.name}'"):
        model.to(device)
    batch_size = min(req.batch_size, model.max_batch_size or req.batch_size)

    # datasets and the episodes each task contributes; a task is evaluated under the requested
    # protocols it supports (e.g. pose-based tasks offer rollout only), and each skipped
    # combination is recorded
    plan, skipped = [], []
    for spec in req.tasks:
        protocols = [p for p in req.protocols if p in spec.protocols]
        skipped += [f"{spec.key}/{p}" for p in req.protocols if p not in spec.protocols]
        if not protocols:
            continue
        store = storage.prepare(spec, workers=req.workers).store
        plan.append((spec, store, select_episodes(spec, req.limit, req.shard), protocols))
    if not plan:
        raise MemorybenchError(f"no task supports the protocol(s) {', '.join(req.protocols)}: "
                               + "; ".join(f"{s.key} offers {', '.join(s.protocols)}" for s in req.tasks))
    if skipped:
        from .console import err_console

        err_console.print(f"[yellow]not evaluated (protocol not offered by the task):[/] {', '.join(skipped)}")

    scorer = FrameScorer(device=device)  # loads (or fetches) the LPIPS weights before any work starts
    run = RunDir(Path(req.out))
    meta = new_run_meta(
        model_desc=model.describe(), tasks=[{**_task_entry(s, st, sel), "protocols": ps} for s, st, sel, ps in plan],
        protocols=list(req.protocols), metrics=metrics_meta(scorer), aggregation=req.aggregation.to_dict(),
        run={"device": device, "batch_size": batch_size, "save_predictions": req.save_predictions,
             "limit": req.limit, "shard": list(req.shard) if req.shard else None, "context_chunk": req.context_chunk},
        command=req.command, device=device)
    if (run.path / RUN_JSON).exists():
        existing = load_run_json(run.path)
        if not req.resume:
            state = "finished" if (run.path / SUMMARY).exists() else "unfinished"
            raise RunExistsError(f"{run.path} already holds a {state} run of '{existing['model']['name']}'; "
                                 "use --resume to continue it, or choose another --out (results are never overwritten)")
        check_same_run(existing, meta, run.path)
        append_event(run.path, "resume", device=device, batch_size=batch_size)
    else:
        if run.path.exists() and any(run.path.iterdir()):
            raise RunExistsError(f"{run.path} exists and is not empty; choose another --out")
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run.path / RUN_JSON, meta)
        append_event(run.path, "start", device=device, batch_size=batch_size)

    todo = []
    for spec, store, selected, protocols in plan:
        for p in protocols:
            done = run.done_episodes(spec.key, p)
            todo.append((spec, store, p, [i for i in selected if i not in done]))
    total_frames = sum(len(eps) * spec.predict_frames for spec, _, _, eps in todo)

    bar, job = _progress(req, progress, total_frames, model.name)
    timings: dict[str, dict] = {}
    try:
        for spec, store, protocol, episodes in todo:
            t0 = time.perf_counter()
            tm = {"model_seconds": 0.0, "score_seconds": 0.0, "episodes": len(episodes)}
            for k in range(0, len(episodes), batch_size):
                batch = [store[i] for i in episodes[k:k + batch_size]]
                if bar is not None:
                    bar.update(job, description=f"{model.name} · {spec.key} · {protocol} · episodes "
                                                f"{k + 1}-{k + len(batch)} of {len(episodes)}")
                _evaluate_batch(model, spec, protocol, batch, device, scorer, run, req, tm,
                                lambda n: bar.advance(job, n) if bar is not None else None)
            tm["wall_seconds"] = time.perf_counter() - t0
            timings[f"{spec.key}/{protocol}"] = tm
            append_event(run.path, "group_done", group=f"{spec.key}/{protocol}", **tm)
    except BaseException as e:
        append_event(run.path, "error", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        if bar is not None and progress is None:
            bar.stop()
    # a shard's summary is partial; the retention index is computed once, on the merged run
    summary = summarize_run(run.path, retention=req.retention and req.shard is None, device=device, timings=timings,
                            progress=progress)
    append_event(run.path, "finish", complete=summary["complete"])
    return run.path


def _progress(req: RunRequest, progress, total: int, name: str):
    if progress is not None:
        return progress, progress.add_task(name, total=total, unit="frames")
    if not req.progress:
        return None, None
    from .console import progress_bar

    bar = progress_bar()
    bar.start()
    return bar, bar.add_task(name, total=total, unit="frames")


def _evaluate_batch(model, spec: TaskSpec, protocol: str, batch, device: str, scorer, run: RunDir,
                    req: RunRequest, tm: dict, advance) -> None:
    import torch

    B, C, T = len(batch), spec.context_frames, spec.frames
    H, W = spec.resolution
    ids = [ep.index for ep in batch]
    frames_u8 = np.stack([ep.frames for ep in batch])  # [B, T, H, W, 3]
    actions = torch.from_numpy(np.stack([ep.actions for ep in batch])).to(device)
    name = model.name

    def where(b: int, n: int) -> str:
        return f"model '{name}', task {spec.key} ({protocol}), episode {ids[b]}, frame {C + n}"

    def where_t(t: int) -> str:
        eps = f"episode {ids[0]}" if len(ids) == 1 else f"episodes {ids}"
        return f"model '{name}', task {spec.key} ({protocol}), {eps}, frame {t}"

    preds = np.empty((B, T - C, H, W, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    with torch.inference_mode():
        with _calling(name, "reset", where_t(0)):
            model.reset(spec, B)
        if model.privileged:
            with _calling(name, "bind", where_t(0)):
                model.bind(batch)
        for s in range(0, C, req.context_chunk):
            e = min(C, s + req.context_chunk)
            with _calling(name, "observe", where_t(s)):
                model.observe(_to_tensor(frames_u8[:, s:e], device), actions[:, s:e])
        for t in range(C, T):
            a = actions[:, t:t + 1]
            with _calling(name, "predict", where_t(t)):
                pred = model.predict(a)
            check_prediction(pred, (B, 1, 3, H, W), lambda b, n, t=t: where(b, t - C + n))
            preds[:, t - C] = pred[:, 0].mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            seen = pred if protocol == "rollout" else _to_tensor(frames_u8[:, t:t + 1], device)
            with _calling(name, "observe", where_t(t)):
                model.observe(seen, a)
            advance(B)
    tm["model_seconds"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    for b, ep in enumerate(batch):
        rows = score_episode(scorer, ep, preds[b], C, device)
        if req.save_predictions:  # before the records: a record file marks the episode as done
            run.write_predictions(spec.key, protocol, ep.index, preds[b], C)
        run.write_episode_records(spec.key, protocol, ep.index, rows)
    tm["score_seconds"] += time.perf_counter() - t0


def score_episode(scorer, ep, pred_u8: np.ndarray, start: int, device: str) -> list[dict]:
    """Per-frame records of one episode's predictions ``pred_u8`` [N, H, W, 3] for frames start.."""
    import torch

    n = pred_u8.shape[0]
    target = _to_tensor(ep.frames[None, start:start + n], device)[0]
    pred = _to_tensor(pred_u8[None], device)[0]
    mem = torch.from_numpy(np.array(ep.memory_mask[start:start + n])).to(device)
    nov = torch.from_numpy(np.array(ep.novel_mask[start:start + n])).to(device)
    values = scorer.score(pred, target, mem, nov)
    cols = {k: v.tolist() if hasattr(v, "tolist") else list(v) for k, v in values.items()}
    rows = []
    for i in range(n):
        t = start + i
        row = {"episode": ep.index, "frame": t, "step": i, "memory_gap": int(ep.memory_gap[t])}
        row.update({k: cols[k][i] for k in cols})
        rows.append(row)
    return rows


# -----------------------------------------------------------------------------------------
# summaries and references


def reference_dir(model: str, spec: TaskSpec, protocol: str) -> Path:
    return storage.cache_root() / "references" / f"{model}-{spec.name}-{spec.tier}-{spec.hash()[:12]}-{protocol}-m{METRICS_VERSION}"


def reference_records(model: str, spec: TaskSpec, protocol: str, device: str = "cpu", progress=None):
    """Per-frame records of a calibration reference on every episode of ``spec`` (cached)."""
    out = reference_dir(model, spec, protocol)
    run = RunDir(out)
    with storage.FileLock(out.with_name(out.name + ".lock")):
        if not (out / SUMMARY).exists():
            req = RunRequest(model=model, tasks=[spec], out=out, protocols=(protocol,), device=device,
                             resume=(out / RUN_JSON).exists(), retention=False, progress=progress is None)
            evaluate(req, progress=progress)
    return records_frame(run.iter_records(spec.key, protocol))


def summarize_run(run_dir: str | Path, retention: bool = True, device: str = "cpu", timings: dict | None = None,
                  progress=None) -> dict:
    """Aggregate a run directory's records into ``summary.json`` (and return it)."""
    run = RunDir(Path(run_dir))
    meta = load_run_json(run.path)
    cfg = AggregationConfig(**{k: meta["aggregation"][k] for k in ("resamples", "seed", "ci", "min_memory_pixels")})
    groups, complete = {}, True
    for t in meta["tasks"]:
        spec = spec_from_dict(t["spec"], source=f"{run.path}/{RUN_JSON}")
        for p in task_protocols(t, meta):
            done = run.done_episodes(t["key"], p)
            missing = sorted(set(t["episodes_selected"]) - done)
            df = records_frame(run.iter_records(t["key"], p))
            key = f"{t['key']}/{p}"
            refs = None
            if retention and not df.empty:
                refs = {m: reference_records(m, spec, p, device=device, progress=progress)
                        for m in (NO_MEMORY_REFERENCE, PERFECT_REFERENCE)}
            g = summarize_group(df, spec.gap_bins, cfg, key, refs) if not df.empty else {"episodes": 0, "frames": 0}
            g.update({"task": t["key"], "protocol": p, "complete": not missing, "missing_episodes": missing,
                      "episodes_selected": len(t["episodes_selected"]), "spec_hash": t["spec_hash"],
                      "dataset_sha256": t["dataset_sha256"]})
            complete &= not missing
            groups[key] = g
    previous = {}
    if (run.path / SUMMARY).exists():
        import json

        previous = json.loads((run.path / SUMMARY).read_text()).get("timings", {})
    summary = {"model": meta["model"], "memorybench_version": meta["memorybench_version"], "complete": complete,
               "groups": groups, "timings": {**previous, **(timings or {})},
               "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(run.path / SUMMARY, summary)
    return summary


def default_out_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def run_dir_name(model: str) -> str:
    """A file-system-safe directory name for a model name or ``module:Class`` path."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in model)


def main_command() -> list[str]:
    return list(sys.argv)


def rescore(pred_run: str | Path, out: str | Path, device: str = "cpu", retention: bool = True,
            progress: bool = True) -> Path:
    """Score the predictions saved by a ``--save-predictions`` run again, without the model.

    The new run directory copies the original's ``run.json`` (same model identity, tasks and
    episodes) with the current metric definitions and ``rescored_from``; every episode that has
    saved predictions gets fresh records.
    """
    import torch

    from .metrics import FrameScorer

    src = RunDir(Path(pred_run))
    meta = load_run_json(src.path)
    if not meta["run"].get("save_predictions"):
        raise MemorybenchError(f"{src.path} was not run with --save-predictions: there is nothing to re-score")
    dst = RunDir(Path(out))
    if dst.path.exists() and any(dst.path.iterdir()):
        raise RunExistsError(f"{dst.path} exists and is not empty; choose another --out")
    device = resolve_device(device)
    scorer = FrameScorer(device=device)
    new = dict(meta)
    new.update({"metrics": metrics_meta(scorer), "rescored_from": str(src.path.resolve()),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    new["run"] = {**meta["run"], "save_predictions": False}
    dst.path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(dst.path / RUN_JSON, new)
    append_event(dst.path, "start", rescored_from=str(src.path))
    work = []
    for t in meta["tasks"]:
        spec = spec_from_dict(t["spec"], source=f"{src.path}/{RUN_JSON}")
        store = storage.prepare(spec).store
        if store.dataset_hash != t["dataset_sha256"]:
            raise MemorybenchError(f"the dataset of {t['key']} differs from the one the predictions were made on")
        for p in task_protocols(t, meta):
            pdir = src.predictions_dir(t["key"], p)
            for i in sorted(int(f.stem[3:]) for f in pdir.glob("ep-*.npz")) if pdir.is_dir() else []:
                work.append((spec, store, p, i))
    bar = None
    if progress:
        from .console import progress_bar

        bar = progress_bar()
        bar.start()
        job = bar.add_task("re-scoring", total=len(work), unit="episodes")
    try:
        with torch.inference_mode():
            for spec, store, p, i in work:
                frames, start = src.read_predictions(spec.key, p, i)
                rows = score_episode(scorer, store[i], frames, start, device)
                dst.write_episode_records(spec.key, p, i, rows)
                if bar is not None:
                    bar.advance(job)
    finally:
        if bar is not None:
            bar.stop()
    summarize_run(dst.path, retention=retention, device=device)
    append_event(dst.path, "finish")
    return dst.path
