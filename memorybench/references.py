"""The calibration references of the retention index, evaluated once per task and cached.

The retention index places a model between ``copy-last`` (no memory) and ``perfect-memory`` on
the same episodes; their per-frame records are computed here with the runner's own evaluation
(``memorybench.runner``) into ``$MEMORYBENCH_CACHE/references/``, checked by SHA-256 on every use.
This is the only evaluation a summary can start (``summarize_run(retention=True)``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from . import storage
from ._io import atomic_write_json
from .errors import MemorybenchError
from .results import RunDir
from .runner import METRICS_VERSION, RunRequest, _calling, _evaluate_batch, _Session, prepare_episodes
from .spec import TaskSpec


class ReferenceCacheWarning(UserWarning):
    """A cached reference record was missing, altered or made on other data, and is recomputed."""


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
    progress: Any = None,
    episodes: Sequence[int] | None = None,
    episodes_sha256: dict[int, str] | None = None,
) -> pd.DataFrame:
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
        man = _manifest(out, key)
        rows, problems = _cached_rows(run, man, spec.key, protocol, wanted, episodes_sha256)
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


def _manifest(out: Path, key: dict) -> dict:
    """The cache's manifest when it describes the reference ``key``; else the cache is emptied
    (with a ``ReferenceCacheWarning``) and a new manifest started."""
    man = _read_reference_manifest(out)
    if man is not None and all(man.get(k) == v for k, v in key.items()):
        return man
    if out.exists():
        differs = "no manifest" if man is None else ", ".join(k for k, v in key.items() if man.get(k) != v)
        warnings.warn(
            f"reference cache {out} does not describe this reference ({differs}); recomputing it",
            ReferenceCacheWarning,
            stacklevel=3,
        )
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    return {**key, "episodes": {}}


def _cached_rows(
    run: RunDir, man: dict, task: str, protocol: str, wanted: list[int], episodes_sha256: dict[int, str] | None
) -> tuple[dict[int, list[dict]], list[str]]:
    """The records of ``wanted`` episodes the cache holds intact, and what is wrong with the others
    (not yet computed is not a problem)."""
    rows: dict[int, list[dict]] = {}
    problems = []
    for i in wanted:
        entry = man["episodes"].get(str(i))
        if entry is None:
            continue  # not computed yet
        if episodes_sha256 and episodes_sha256.get(i) not in (None, entry["episode_sha256"]):
            problems.append(f"episode {i}: computed on other data")
            continue
        try:
            data = run.record_path(task, protocol, i).read_bytes()
        except FileNotFoundError:
            problems.append(f"episode {i}: record file missing")
            continue
        if _sha256_bytes(data) != entry["record_sha256"]:
            problems.append(f"episode {i}: record file altered")
            continue
        rows[i] = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    return rows, problems


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _read_reference_manifest(out: Path) -> dict | None:
    try:
        man = json.loads((out / REFERENCE_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return man if isinstance(man, dict) and isinstance(man.get("episodes"), dict) else None


def _progress_bar():
    from .console import progress_bar

    bar = progress_bar()
    bar.start()
    return bar


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
    ses = _Session(req, model, device, bs, scorer, run)
    own_bar = progress is None
    bar = _progress_bar() if own_bar else progress
    job = bar.add_task(f"reference {model.name} · {spec.key} · {protocol}", total=len(episodes) * spec.predict_frames)
    run.path.mkdir(parents=True, exist_ok=True)
    out: dict[int, list[dict]] = {}
    tm = {"model_seconds": 0.0, "score_seconds": 0.0}
    try:
        for k in range(0, len(episodes), bs):
            batch = [store[i] for i in episodes[k : k + bs]]
            _evaluate_batch(ses, spec, protocol, batch, tm, lambda n: bar.advance(job, n))
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
