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
import os
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import storage
from .aggregate import (
    AggregationConfig,
)
from .errors import MemorybenchError
from .generators import get_generator
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
from .summarize import summarize_run
from .taskfile import spec_from_dict

if TYPE_CHECKING:
    from rich.progress import Progress

    from .adapter import WorldModel
    from .episode import Episode
    from .metrics import FrameScorer

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


def metrics_meta(scorer: FrameScorer) -> dict:
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


def check_prediction(pred: object, shape: tuple, where: Callable[[int, int], str]) -> None:
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


def prepare_episodes(
    spec: TaskSpec, episodes: Sequence[int], workers: int = 1, show_progress: bool = True
) -> storage.EpisodeStore:
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
def lock_run_dir(path: Path) -> Iterator[None]:
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


def evaluate(req: RunRequest, progress: Progress | None = None) -> Path:
    """Evaluate one model; returns the run directory (with ``summary.json`` when complete)."""
    with contextlib.ExitStack() as stack:
        return _evaluate(req, progress, stack)


@dataclass
class _Session:
    """What every batch of one evaluation shares: the request, the model on its device, the
    batch size it accepts, the frame scorer and the run directory written into."""

    req: RunRequest
    model: WorldModel
    device: str
    batch_size: int
    scorer: object
    run: RunDir


@dataclass
class _TaskPlan:
    """One task of a run: its dataset, the episodes selected and the protocols evaluated."""

    spec: TaskSpec
    store: storage.EpisodeStore
    selected: list[int]
    protocols: list[str]


def _evaluate(req: RunRequest, progress, stack: contextlib.ExitStack) -> Path:
    """Plan, open the run directory (new, or resumed when it is the same run), evaluate every
    (task, protocol) group's unfinished episodes, summarise."""
    from .metrics import FrameScorer
    from .splits import check_model_training

    device = resolve_device(req.device)
    if req.batch_size < 1:
        raise MemorybenchError(f"--batch-size must be >= 1, got {req.batch_size}")
    model, batch_size = _load_model(req, device)
    # never score a model on episodes its card says it was trained on, nor on a training split
    trained_on = check_model_training(model, req.tasks)
    run = RunDir(Path(req.out))
    stack.enter_context(lock_run_dir(run.path))
    plan = plan_tasks(req)
    scorer = FrameScorer(device=device)  # loads (or fetches) the LPIPS weights before any work starts
    ses = _Session(req, model, device, batch_size, scorer, run)
    _open_run(ses, _run_meta(ses, plan, trained_on))
    todo = [
        (t.spec, t.store, p, [i for i in t.selected if i not in run.done_episodes(t.spec.key, p)])
        for t in plan
        for p in t.protocols
    ]
    bar, job = _progress(req, progress, sum(len(eps) * spec.predict_frames for spec, _, _, eps in todo), model.name)
    try:
        for spec, store, protocol, episodes in todo:
            _evaluate_group(ses, spec, store, protocol, episodes, bar, job)
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


def _load_model(req: RunRequest, device: str) -> tuple[WorldModel, int]:
    """The model, built and moved to ``device``, and the batch size it accepts."""
    from .models import load_model

    model = load_model(req.model, req.model_args)
    if device.split(":")[0] not in model.devices:
        raise MemorybenchError(
            f"model '{model.name}' does not run on {device} (it supports {', '.join(model.devices)})"
        )
    with _calling(model.name, "to", f"model '{model.name}'"):
        model.to(device)
    return model, min(req.batch_size, model.max_batch_size or req.batch_size)


def plan_tasks(req: RunRequest) -> list[_TaskPlan]:
    """The datasets and episodes each task contributes (generated or checked now). A task is
    evaluated under the requested protocols it supports (e.g. pose-based tasks offer rollout
    only); each skipped combination is said, and a request no task supports is an error."""
    from .splits import check_evaluation_data

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
        plan.append(_TaskPlan(spec, store, selected, protocols))
    if not plan:
        raise MemorybenchError(
            f"no task supports the protocol(s) {', '.join(req.protocols)}: "
            + "; ".join(f"{s.key} offers {', '.join(s.protocols)}" for s in req.tasks)
        )
    if skipped:
        from .console import err_console

        err_console.print(f"[yellow]not evaluated (protocol not offered by the task):[/] {', '.join(skipped)}")
    return plan


def _run_meta(ses: _Session, plan: list[_TaskPlan], trained_on) -> dict:
    """``run.json``: what is evaluated, how, by what (``memorybench.results.new_run_meta``)."""
    req = ses.req
    return new_run_meta(
        model_desc={**ses.model.describe(), "trained_on": trained_on},
        tasks=[{**_task_entry(t.spec, t.store, t.selected), "protocols": t.protocols} for t in plan],
        protocols=list(req.protocols),
        metrics=metrics_meta(ses.scorer),
        aggregation=req.aggregation.to_dict(),
        run={
            "device": ses.device,
            "batch_size": ses.batch_size,
            "save_predictions": req.save_predictions,
            "limit": req.limit,
            "shard": list(req.shard) if req.shard else None,
            "context_chunk": req.context_chunk,
        },
        command=req.command,
        device=ses.device,
    )


def _open_run(ses: _Session, meta: dict) -> None:
    """Start the run directory, or continue it with ``--resume`` when it holds the same run
    (``check_same_run``); results already written are never overwritten."""
    run, req = ses.run, ses.req
    if (run.path / RUN_JSON).exists():
        existing = load_run_json(run.path)
        if not req.resume:
            state = "finished" if (run.path / SUMMARY).exists() else "unfinished"
            raise RunExistsError(
                f"{run.path} already holds a {state} run of '{existing['model']['name']}'; "
                "use --resume to continue it, or choose another --out (results are never overwritten)"
            )
        check_same_run(existing, meta, run.path)
        append_event(run.path, "resume", device=ses.device, batch_size=ses.batch_size)
    else:
        if run.path.exists() and not _is_empty_dir(run.path):
            raise RunExistsError(f"{run.path} exists and is not empty; choose another --out")
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run.path / RUN_JSON, meta)
        append_event(run.path, "start", device=ses.device, batch_size=ses.batch_size)


def _evaluate_group(ses: _Session, spec: TaskSpec, store, protocol: str, episodes: list[int], bar, job) -> None:
    """The unfinished ``episodes`` of one (task, protocol) group, a batch at a time; one event per
    finished batch (``summary.json``'s timings are their sums over every session of a resumed
    run: an interrupted session keeps its finished batches) and one for the group."""
    t0 = time.perf_counter()
    tm = {"model_seconds": 0.0, "score_seconds": 0.0, "episodes": len(episodes)}
    for k in range(0, len(episodes), ses.batch_size):
        t1, before = time.perf_counter(), dict(tm)
        batch = [store[i] for i in episodes[k : k + ses.batch_size]]
        if bar is not None:
            bar.update(
                job,
                description=f"{ses.model.name} · {spec.key} · {protocol} · episodes "
                f"{k + 1}-{k + len(batch)} of {len(episodes)}",
            )
        _evaluate_batch(ses, spec, protocol, batch, tm, lambda n: bar.advance(job, n) if bar is not None else None)
        append_event(
            ses.run.path,
            "batch_done",
            group=f"{spec.key}/{protocol}",
            episodes=[ep.index for ep in batch],
            model_seconds=tm["model_seconds"] - before["model_seconds"],
            score_seconds=tm["score_seconds"] - before["score_seconds"],
            wall_seconds=time.perf_counter() - t1,
        )
    tm["wall_seconds"] = time.perf_counter() - t0
    append_event(ses.run.path, "group_done", group=f"{spec.key}/{protocol}", **tm)


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
    model: WorldModel,
    spec: TaskSpec,
    protocol: str,
    batch: Sequence[Episode],
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
            preds[:, t - C] = _quantise(pred[:, 0])
            seen = pred if protocol == "rollout" else _to_tensor(frames_u8[:, t : t + 1], device)
            with calling("observe", t):
                model.observe(seen, a)
            if advance is not None:
                advance(B)
    return preds


def _quantise(frames) -> np.ndarray:
    """Float frames ``[B, 3, H, W]`` in [0, 1] -> uint8 ``[B, H, W, 3]`` (``round(255 x)``)."""
    import torch

    return frames.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _evaluate_batch(ses: _Session, spec: TaskSpec, protocol: str, batch, tm: dict, advance) -> None:
    """Predict and score one batch of episodes; their records written (``tm``: seconds added)."""
    C, run = spec.context_frames, ses.run
    t0 = time.perf_counter()
    preds = predict_episodes(ses.model, spec, protocol, batch, ses.device, ses.req.context_chunk, advance, run.path)
    tm["model_seconds"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    for b, ep in enumerate(batch):
        rows, items = score_episode(ses.scorer, ep, preds[b], C, ses.device, spec, protocol)
        if ses.req.save_predictions:  # before the records: a record file marks the episode as done
            run.write_predictions(spec.key, protocol, ep.index, preds[b], C)
        run.write_episode_items(spec.key, protocol, ep.index, items)
        run.write_episode_records(spec.key, protocol, ep.index, rows)
    tm["score_seconds"] += time.perf_counter() - t0


def score_episode(
    scorer: FrameScorer,
    ep: Episode,
    pred_u8: np.ndarray,
    start: int,
    device: str,
    spec: TaskSpec | None = None,
    protocol: str = "rollout",
) -> tuple[list[dict], list[dict]]:
    """Per-frame records and per-item records (``memorybench.recall``) of one episode's predictions
    ``pred_u8`` [N, H, W, 3] for frames ``start..``; gaps are those of ``protocol``."""
    import torch

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
