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
episodes, task and protocol: they are evaluated on demand, episode by episode, into
``$MEMORYBENCH_CACHE/references/`` (keyed by model, task hash, protocol and metric version, with a
manifest of each record's SHA-256 that is checked before every use) and reused.

A run directory is locked (``.lock``, non-blocking) while a run writes into it: a second run into
the same directory stops with an error instead of mixing its results in. The traceback of an
exception raised inside a model is written to ``errors/<time>-<task>-ep<i>-<method>.txt`` in the
run directory (the error message and the ``error`` event of ``events.jsonl`` point at it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import storage
from .aggregate import (
    NO_MEMORY_REFERENCE,
    PERFECT_REFERENCE,
    AggregationConfig,
    items_frame,
    records_frame,
    summarize_group,
)
from .errors import MemorybenchError
from .results import (
    RUN_JSON,
    SUMMARY,
    RunDir,
    RunExistsError,
    append_event,
    atomic_write_json,
    check_same_run,
    load_run_json,
    new_run_meta,
    task_protocols,
)
from .spec import TaskSpec
from .taskfile import spec_from_dict

#: bump when the scoring pipeline changes what a number means (part of run identity). 2: recall
#: (identification of memory items), gaps counted from what the model observed, PSNR from the
#: mean MSE, masked SSIM/LPIPS on composites, generator v2 masks.
METRICS_VERSION = 2


class AdapterError(MemorybenchError):
    """A model raised an exception or produced an invalid output.

    For an exception, ``traceback_text`` is its formatted traceback and ``traceback_path`` the file
    of the run directory it was written to (None before the run directory exists)."""

    exit_code = 3
    traceback_text: str | None = None
    traceback_path: Path | None = None


class RunLockedError(MemorybenchError):
    """Another process is writing into the run directory."""


class ReferenceCacheWarning(UserWarning):
    """A cached reference record was missing, altered or made on other data, and is recomputed."""


#: the lock file of a run directory (held while a run writes into it)
RUN_LOCK = ".lock"
#: where the tracebacks of a model's exceptions go, in the run directory
ERRORS_DIR = "errors"


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
    from .metric_registry import all_metrics
    from .recall import RECALL_DEFINITION

    return {
        "version": METRICS_VERSION,
        **scorer.definitions(),
        "recall": RECALL_DEFINITION,
        "registry": {n: m.to_dict() for n, m in all_metrics().items()},
        "predictions": "quantised to uint8 as round(255 * x) before scoring",
        "scored_frames": "the predicted frames: context_frames .. frames-1",
        "memory_gap": "per protocol: rollout counts from the last context frame that showed the content, "
        "teacher-forced from the true history (memorybench.episode)",
    }


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
        raise AdapterError(
            f"{where(0, 0)}: predict() returned shape {tuple(pred.shape)}, expected {shape} "
            "[batch, frames, 3, height, width]"
        )
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
        raise AdapterError(
            f"{where(b, n)}: predict() returned values in [{float(lo[b, n]):.4g}, {float(hi[b, n]):.4g}], "
            "outside [0, 1]"
        )


@contextlib.contextmanager
def _calling(model_name: str, method: str, where: str, run_dir: Path | None = None, label: str = ""):
    """Turn an exception raised by the model into an ``AdapterError`` naming where it happened;
    its full traceback goes to ``run_dir/errors/<time>-<label>-<method>.txt`` (when given)."""
    try:
        yield
    except MemorybenchError:
        raise
    except Exception as e:  # noqa: BLE001 - any adapter failure becomes one clear error
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        path = _write_traceback(run_dir, label, method, where, text) if run_dir is not None else None
        hint = f" (full traceback in {path}; `--debug` prints it)" if path else " (`--debug` prints the traceback)"
        err = AdapterError(f"{where}: {method}() raised {type(e).__name__}: {e}{hint}")
        err.traceback_text, err.traceback_path = text, path
        raise err from e


def _write_traceback(run_dir: Path, label: str, method: str, where: str, text: str) -> Path | None:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in label)
    d = Path(run_dir) / ERRORS_DIR
    path = d / f"{stamp}-{safe}-{method}.txt"
    k = 1
    while path.exists():
        k += 1
        path = d / f"{stamp}-{safe}-{method}-{k}.txt"
    try:
        d.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{where}: exception raised in {method}()\n\n{text}", encoding="utf-8")
    except OSError:  # a full or read-only disk must not hide the model's error
        return None
    return path


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
    """A task of ``run.json``: its spec and the data of the episodes evaluated. ``dataset_sha256``
    is the SHA-256 over the selected episodes' SHA-256s (the whole dataset's hash when every
    episode is selected); ``episodes_sha256`` lists them, in the order of ``episodes_selected``."""
    return {
        "key": spec.key,
        "spec": spec.to_dict(),
        "spec_hash": spec.hash(),
        "dataset_sha256": store.selection_hash(selected),
        "dataset_path": str(store.path),
        "episodes_total": spec.episodes,
        "episodes_selected": selected,
        "episodes_sha256": [store.episode_sha256(i) for i in selected],
        "split": "eval",
        "seed": spec.seed,
    }


def prepare_episodes(spec: TaskSpec, episodes: Sequence[int], workers: int = 1, show_progress: bool = True):
    """The verified store of ``spec`` holding ``episodes``: only what is missing is generated,
    with a progress bar (``show_progress``)."""
    bar, job = None, None

    def started(n: int) -> None:
        nonlocal bar, job
        if show_progress:
            from .console import progress_bar

            bar = progress_bar()
            bar.start()
            job = bar.add_task(f"generating {spec.key}", total=n)

    try:
        return storage.prepare(
            spec,
            workers=workers,
            episodes=episodes,
            on_generate=started,
            on_episode=lambda: bar.advance(job) if bar is not None else None,
        ).store
    finally:
        if bar is not None:
            bar.stop()


@contextlib.contextmanager
def lock_run_dir(path: Path):
    """Hold ``path/.lock`` (non-blocking) while a run writes into ``path``; a second process gets a
    ``RunLockedError`` naming the holder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MemorybenchError(f"--out {path} is a file, not a directory")
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    note = (
        f"memorybench run, host {socket.gethostname()}, pid {os.getpid()}, since "
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
    )
    lock = storage.FileLock(path / RUN_LOCK, blocking=False, note=note)
    try:
        lock.__enter__()
    except storage.LockedError as e:
        raise RunLockedError(
            f"{path} is being written by another memorybench run ({e.holder or 'unknown process'}); "
            "wait for it to finish, or choose another --out"
        ) from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)
        if created and _is_empty_dir(path):  # a run refused before it wrote anything leaves nothing
            shutil.rmtree(path, ignore_errors=True)


def _is_empty_dir(path: Path) -> bool:
    return not any(p.name != RUN_LOCK for p in path.iterdir())


def evaluate(req: RunRequest, progress=None) -> Path:
    """Evaluate one model; returns the run directory (with ``summary.json`` when complete)."""
    with contextlib.ExitStack() as stack:
        return _evaluate(req, progress, stack)


def _evaluate(req: RunRequest, progress, stack: contextlib.ExitStack) -> Path:

    from .metrics import FrameScorer
    from .models import load_model

    device = resolve_device(req.device)
    if req.batch_size < 1:
        raise MemorybenchError(f"--batch-size must be >= 1, got {req.batch_size}")
    model = load_model(req.model, req.model_args)
    if device.split(":")[0] not in model.devices:
        raise MemorybenchError(
            f"model '{model.name}' does not run on {device} (it supports {', '.join(model.devices)})"
        )
    with _calling(model.name, "to", f"model '{model.name}'"):
        model.to(device)
    batch_size = min(req.batch_size, model.max_batch_size or req.batch_size)
    # never score a model on episodes its card says it was trained on, nor on a training split
    from .splits import check_evaluation_data, check_model_training

    trained_on = check_model_training(model, req.tasks)
    run = RunDir(Path(req.out))
    stack.enter_context(lock_run_dir(run.path))

    # datasets and the episodes each task contributes; a task is evaluated under the requested
    # protocols it supports (e.g. pose-based tasks offer rollout only), and each skipped
    # combination is recorded
    plan, skipped = [], []
    for spec in req.tasks:
        protocols = [p for p in req.protocols if p in spec.protocols]
        skipped += [f"{spec.key}/{p}" for p in req.protocols if p not in spec.protocols]
        if not protocols:
            continue
        check_evaluation_data(spec)
        selected = select_episodes(spec, req.limit, req.shard)
        store = prepare_episodes(spec, selected, workers=req.workers, show_progress=req.progress)
        check_evaluation_data(spec, store)
        plan.append((spec, store, selected, protocols))
    if not plan:
        raise MemorybenchError(
            f"no task supports the protocol(s) {', '.join(req.protocols)}: "
            + "; ".join(f"{s.key} offers {', '.join(s.protocols)}" for s in req.tasks)
        )
    if skipped:
        from .console import err_console

        err_console.print(f"[yellow]not evaluated (protocol not offered by the task):[/] {', '.join(skipped)}")

    scorer = FrameScorer(device=device)  # loads (or fetches) the LPIPS weights before any work starts
    meta = new_run_meta(
        model_desc={**model.describe(), "trained_on": trained_on},
        tasks=[{**_task_entry(s, st, sel), "protocols": ps} for s, st, sel, ps in plan],
        protocols=list(req.protocols),
        metrics=metrics_meta(scorer),
        aggregation=req.aggregation.to_dict(),
        run={
            "device": device,
            "batch_size": batch_size,
            "save_predictions": req.save_predictions,
            "limit": req.limit,
            "shard": list(req.shard) if req.shard else None,
            "context_chunk": req.context_chunk,
        },
        command=req.command,
        device=device,
    )
    if (run.path / RUN_JSON).exists():
        existing = load_run_json(run.path)
        if not req.resume:
            state = "finished" if (run.path / SUMMARY).exists() else "unfinished"
            raise RunExistsError(
                f"{run.path} already holds a {state} run of '{existing['model']['name']}'; "
                "use --resume to continue it, or choose another --out (results are never overwritten)"
            )
        check_same_run(existing, meta, run.path)
        append_event(run.path, "resume", device=device, batch_size=batch_size)
    else:
        if run.path.exists() and not _is_empty_dir(run.path):
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
    try:
        for spec, store, protocol, episodes in todo:
            t0 = time.perf_counter()
            tm = {"model_seconds": 0.0, "score_seconds": 0.0, "episodes": len(episodes)}
            for k in range(0, len(episodes), batch_size):
                t1, before = time.perf_counter(), dict(tm)
                batch = [store[i] for i in episodes[k : k + batch_size]]
                if bar is not None:
                    bar.update(
                        job,
                        description=f"{model.name} · {spec.key} · {protocol} · episodes "
                        f"{k + 1}-{k + len(batch)} of {len(episodes)}",
                    )
                _evaluate_batch(
                    model,
                    spec,
                    protocol,
                    batch,
                    device,
                    scorer,
                    run,
                    req,
                    tm,
                    lambda n: bar.advance(job, n) if bar is not None else None,
                )
                # one event per finished batch: summary.json's timings are their sums, over every
                # session of a resumed run (an interrupted session keeps its finished batches)
                append_event(
                    run.path,
                    "batch_done",
                    group=f"{spec.key}/{protocol}",
                    episodes=[ep.index for ep in batch],
                    model_seconds=tm["model_seconds"] - before["model_seconds"],
                    score_seconds=tm["score_seconds"] - before["score_seconds"],
                    wall_seconds=time.perf_counter() - t1,
                )
            tm["wall_seconds"] = time.perf_counter() - t0
            append_event(run.path, "group_done", group=f"{spec.key}/{protocol}", **tm)
    except BaseException as e:
        tb = getattr(e, "traceback_path", None)
        append_event(
            run.path,
            "error",
            error=f"{type(e).__name__}: {e}",
            traceback=str(Path(tb).relative_to(run.path)) if tb else None,
        )
        raise
    finally:
        if bar is not None and progress is None:
            bar.stop()
    # a shard's summary is partial; the retention index is computed once, on the merged run
    summary = summarize_run(run.path, retention=req.retention and req.shard is None, device=device, progress=progress)
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


def predict_episodes(
    model,
    spec: TaskSpec,
    protocol: str,
    batch,
    device: str,
    context_chunk: int = 128,
    advance: Callable[[int], None] | None = None,
    run_dir: Path | None = None,
) -> np.ndarray:
    """Run the protocol on a batch of episodes; the predicted frames, uint8 ``[B, T - C, H, W, 3]``.

    ``reset -> (bind) -> observe(context, in chunks) -> [predict(a_t) -> check -> observe(prediction
    or truth)]``; every output is checked (``check_prediction``) and quantised as ``round(255 x)``.
    A model's exception becomes an ``AdapterError``, its traceback saved under ``run_dir/errors``.
    """
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

    label = f"{spec.key}-{protocol}-ep{ids[0]}"

    def calling(method: str, t: int):
        return _calling(name, method, where_t(t), run_dir, label)

    preds = np.empty((B, T - C, H, W, 3), dtype=np.uint8)
    with torch.inference_mode():
        with calling("reset", 0):
            model.reset(spec, B)
        if model.privileged:
            with calling("bind", 0):
                model.bind(batch)
        for s in range(0, C, context_chunk):
            e = min(C, s + context_chunk)
            with calling("observe", s):
                model.observe(_to_tensor(frames_u8[:, s:e], device), actions[:, s:e])
        for t in range(C, T):
            a = actions[:, t : t + 1]
            with calling("predict", t):
                pred = model.predict(a)
            check_prediction(pred, (B, 1, 3, H, W), lambda b, n, t=t: where(b, t - C + n))
            preds[:, t - C] = (
                pred[:, 0].mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            )
            seen = pred if protocol == "rollout" else _to_tensor(frames_u8[:, t : t + 1], device)
            with calling("observe", t):
                model.observe(seen, a)
            if advance is not None:
                advance(B)
    return preds


def _evaluate_batch(
    model, spec: TaskSpec, protocol: str, batch, device: str, scorer, run: RunDir, req: RunRequest, tm: dict, advance
) -> None:
    C = spec.context_frames
    t0 = time.perf_counter()
    preds = predict_episodes(model, spec, protocol, batch, device, req.context_chunk, advance, run.path)
    tm["model_seconds"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    for b, ep in enumerate(batch):
        rows, items = score_episode(scorer, ep, preds[b], C, device, spec, protocol)
        if req.save_predictions:  # before the records: a record file marks the episode as done
            run.write_predictions(spec.key, protocol, ep.index, preds[b], C)
        run.write_episode_items(spec.key, protocol, ep.index, items)
        run.write_episode_records(spec.key, protocol, ep.index, rows)
    tm["score_seconds"] += time.perf_counter() - t0


def score_episode(
    scorer, ep, pred_u8: np.ndarray, start: int, device: str, spec: TaskSpec | None = None, protocol: str = "rollout"
) -> tuple[list[dict], list[dict]]:
    """Per-frame records and per-item records (``memorybench.recall``) of one episode's predictions
    ``pred_u8`` [N, H, W, 3] for frames ``start..``; gaps are those of ``protocol``."""
    import torch

    from .generators import get_generator
    from .recall import score_items

    n = pred_u8.shape[0]
    target = _to_tensor(ep.frames[None, start : start + n], device)[0]
    pred = _to_tensor(pred_u8[None], device)[0]
    mem = torch.from_numpy(np.array(ep.memory_mask[start : start + n])).to(device)
    nov = torch.from_numpy(np.array(ep.novel_mask[start : start + n])).to(device)
    values = scorer.score(pred, target, mem, nov)
    cols = {k: v.tolist() if hasattr(v, "tolist") else list(v) for k, v in values.items()}
    gaps = ep.gaps(protocol)
    rows = []
    for i in range(n):
        t = start + i
        row = {"episode": ep.index, "frame": t, "step": i, "memory_gap": int(gaps[t])}
        row.update({k: cols[k][i] for k in cols})
        rows.append(row)
    items = []
    if spec is not None and ep.items is not None:
        items = score_items(get_generator(spec.family)(spec), ep, pred_u8, start, protocol)
    return rows, items


# -----------------------------------------------------------------------------------------
# summaries and references


REFERENCE_MANIFEST = "reference.json"
#: layout of the reference cache (part of its directory name)
REFERENCE_FORMAT = 2


def reference_dir(model: str, spec: TaskSpec, protocol: str) -> Path:
    return (
        storage.cache_root()
        / "references"
        / (f"{model}-{spec.name}-{spec.tier}-{spec.hash()[:12]}-{protocol}-m{METRICS_VERSION}-r{REFERENCE_FORMAT}")
    )


def reference_records(
    model: str,
    spec: TaskSpec,
    protocol: str,
    device: str = "cpu",
    progress=None,
    episodes: Sequence[int] | None = None,
    episodes_sha256: dict[int, str] | None = None,
):
    """Per-frame records of a calibration reference on ``episodes`` of ``spec`` (default: all), cached.

    The cache (``reference_dir``) holds one record file per episode and ``reference.json``: the
    reference model's identity hash, the task's spec hash, the protocol and metric version, and
    for each episode the SHA-256 of the episode it was computed on and of its record file. Every
    record is checked against it before use; one that is missing, altered or computed on other
    data is recomputed (``ReferenceCacheWarning``), never used. Only the episodes asked for are
    evaluated. ``episodes_sha256``: the episodes the caller's run was evaluated on (by index); an
    episode of this machine's dataset that differs from it is an error (the index would compare
    the model and the references on different data).
    """
    from .aggregate import records_frame
    from .models import load_model

    wanted = sorted(set(range(spec.episodes) if episodes is None else (int(i) for i in episodes)))
    out = reference_dir(model, spec, protocol)
    run = RunDir(out)
    with storage.FileLock(out.with_name(out.name + ".lock")):
        ref_model = load_model(model)
        key = {
            "format": REFERENCE_FORMAT,
            "model": model,
            "identity_hash": ref_model.identity_hash(),
            "task": spec.key,
            "spec_hash": spec.hash(),
            "protocol": protocol,
            "metrics_version": METRICS_VERSION,
        }
        man = _read_reference_manifest(out)
        if man is None or any(man.get(k) != v for k, v in key.items()):
            if out.exists():
                differs = "no manifest" if man is None else ", ".join(k for k, v in key.items() if man.get(k) != v)
                warnings.warn(
                    f"reference cache {out} does not describe this reference ({differs}); recomputing it",
                    ReferenceCacheWarning,
                    stacklevel=2,
                )
                import shutil

                shutil.rmtree(out, ignore_errors=True)
            man = {**key, "episodes": {}}
        rows: dict[int, list[dict]] = {}
        problems = []
        for i in wanted:
            entry = man["episodes"].get(str(i))
            path = run.record_path(spec.key, protocol, i)
            if entry is None:
                continue  # not computed yet
            if episodes_sha256 and episodes_sha256.get(i) not in (None, entry["episode_sha256"]):
                problems.append(f"episode {i}: computed on other data")
                continue
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                problems.append(f"episode {i}: record file missing")
                continue
            if _sha256_bytes(data) != entry["record_sha256"]:
                problems.append(f"episode {i}: record file altered")
                continue
            rows[i] = [json.loads(line) for line in data.decode("utf-8").splitlines()]
        if problems:
            warnings.warn(
                f"reference cache {out}: {'; '.join(problems[:5])}{' ...' if len(problems) > 5 else ''}; recomputing",
                ReferenceCacheWarning,
                stacklevel=2,
            )
        missing = [i for i in wanted if i not in rows]
        if missing:
            rows.update(
                _compute_references(ref_model, spec, protocol, missing, device, run, man, progress, episodes_sha256)
            )
    return records_frame({"task": spec.key, "protocol": protocol, **r} for i in wanted for r in rows[i])


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _read_reference_manifest(out: Path) -> dict | None:
    try:
        man = json.loads((out / REFERENCE_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return man if isinstance(man, dict) and isinstance(man.get("episodes"), dict) else None


def _compute_references(
    model,
    spec: TaskSpec,
    protocol: str,
    episodes: list[int],
    device: str,
    run: RunDir,
    man: dict,
    progress,
    episodes_sha256: dict[int, str] | None,
) -> dict[int, list[dict]]:
    """Evaluate reference ``model`` on ``episodes`` into the cache ``run``; the manifest is
    rewritten after every batch, so an interrupted computation keeps what it finished."""
    from .metrics import FrameScorer

    store = prepare_episodes(spec, episodes, show_progress=progress is None)
    for i in episodes:
        mine = (episodes_sha256 or {}).get(i)
        if mine is not None and mine != store.episode_sha256(i):
            raise MemorybenchError(
                f"episode {i} of {spec.key} in this machine's dataset ({store.path}) differs from the one the run was "
                "evaluated on: the retention index needs the references on the same data; summarize the run where it "
                "was made, or use --no-retention"
            )
    scorer = FrameScorer(device=device)
    with _calling(model.name, "to", f"model '{model.name}'"):
        model.to(device)
    req = RunRequest(
        model=model.name,
        tasks=[spec],
        out=run.path,
        protocols=(protocol,),
        device=device,
        retention=False,
        progress=False,
    )
    bs = min(req.batch_size, model.max_batch_size or req.batch_size)
    own_bar = progress is None
    bar = progress
    if own_bar:
        from .console import progress_bar

        bar = progress_bar()
        bar.start()
    job = bar.add_task(f"reference {model.name} · {spec.key} · {protocol}", total=len(episodes) * spec.predict_frames)
    run.path.mkdir(parents=True, exist_ok=True)
    out: dict[int, list[dict]] = {}
    tm = {"model_seconds": 0.0, "score_seconds": 0.0}
    try:
        for k in range(0, len(episodes), bs):
            batch = [store[i] for i in episodes[k : k + bs]]
            _evaluate_batch(model, spec, protocol, batch, device, scorer, run, req, tm, lambda n: bar.advance(job, n))
            for ep in batch:
                data = run.record_path(spec.key, protocol, ep.index).read_bytes()
                man["episodes"][str(ep.index)] = {
                    "episode_sha256": store.episode_sha256(ep.index),
                    "record_sha256": _sha256_bytes(data),
                }
                out[ep.index] = [json.loads(line) for line in data.decode("utf-8").splitlines()]
            atomic_write_json(run.path / REFERENCE_MANIFEST, man)
    finally:
        if own_bar:
            bar.stop()
    return out


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
    run_dir: str | Path, retention: bool = True, device: str = "cpu", timings: dict | None = None, progress=None
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


def default_out_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def run_dir_name(model: str) -> str:
    """The run directory name of a model given as a registry name, a plugin name or a
    ``module:Class`` path: its declared ``name`` (``models.model_name``), file-system safe, so
    that every route to one model gives one directory name."""
    from .models import model_name

    return "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name(model))


def run_dir_names(models: Sequence[str]) -> list[str]:
    """``run_dir_name`` of each model; two models that would share a directory are an error."""
    names = [run_dir_name(m) for m in models]
    seen: dict[str, str] = {}
    for m, n in zip(models, names):
        if n in seen and seen[n] != m:
            raise MemorybenchError(
                f"models '{seen[n]}' and '{m}' both call themselves '{n}': they would share one run "
                "directory; give one of them another `name`"
            )
        seen[n] = m
    return names


def main_command() -> list[str]:
    return list(sys.argv)


def rescore(
    pred_run: str | Path, out: str | Path, device: str = "cpu", retention: bool = True, progress: bool = True
) -> Path:
    """Score the predictions saved by a ``--save-predictions`` run again, without the model.

    The new run directory copies the original's ``run.json`` (same model identity, tasks and
    episodes) with the current metric definitions and ``rescored_from``; every episode that has
    saved predictions gets fresh records.
    """
    from .metrics import FrameScorer

    src = RunDir(Path(pred_run))
    meta = load_run_json(src.path)
    if not meta["run"].get("save_predictions"):
        raise MemorybenchError(f"{src.path} was not run with --save-predictions: there is nothing to re-score")
    dst = RunDir(Path(out))
    if dst.path.exists() and dst.path.is_dir() and not _is_empty_dir(dst.path):
        raise RunExistsError(f"{dst.path} exists and is not empty; choose another --out")
    device = resolve_device(device)
    scorer = FrameScorer(device=device)
    new = dict(meta)
    new.update(
        {
            "metrics": metrics_meta(scorer),
            "rescored_from": str(src.path.resolve()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    new["run"] = {**meta["run"], "save_predictions": False}
    with lock_run_dir(dst.path):
        return _rescore_into(src, dst, meta, new, scorer, device, retention, progress)


def _rescore_into(
    src: RunDir, dst: RunDir, meta: dict, new: dict, scorer, device: str, retention: bool, progress: bool
) -> Path:
    import torch

    atomic_write_json(dst.path / RUN_JSON, new)
    append_event(dst.path, "start", rescored_from=str(src.path))
    work = []
    for t in meta["tasks"]:
        spec = spec_from_dict(t["spec"], source=f"{src.path}/{RUN_JSON}")
        store = prepare_episodes(spec, t["episodes_selected"], show_progress=progress)
        same = store.selection_hash(t["episodes_selected"]) == t["dataset_sha256"]
        if not same and "episodes_sha256" not in t:  # run.json of an earlier version: the whole dataset's hash
            store = prepare_episodes(spec, range(spec.episodes), show_progress=progress)
            same = store.dataset_hash == t["dataset_sha256"]
        if not same:
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
                rows, items = score_episode(scorer, store[i], frames, start, device, spec, p)
                dst.write_episode_items(spec.key, p, i, items)
                dst.write_episode_records(spec.key, p, i, rows)
                if bar is not None:
                    bar.advance(job)
    finally:
        if bar is not None:
            bar.stop()
    summarize_run(dst.path, retention=retention, device=device)
    append_event(dst.path, "finish")
    return dst.path
