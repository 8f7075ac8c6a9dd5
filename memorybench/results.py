"""Run directories: self-describing, append-only, atomically written evaluation results.

One run directory holds one model evaluated on some tasks under some protocols::

    RUN_DIR/
      run.json                  what was run: model identity (name, args, checkpoint sha256),
                                tasks (spec, spec hash, dataset hash), protocols, metric
                                definitions, seeds, environment (versions, git commit, device).
                                Written once, never modified.
      events.jsonl              append-only log: start / resume / task finished / error / finish.
      records/<task>@<tier>/<protocol>/ep-000012.jsonl
                                one file per finished episode: one JSON line per predicted frame
                                (episode, frame, memory_gap, pixel counts, every metric).
                                Written to a temporary name and renamed: a file is either whole
                                or absent, never half-written.
      items/<task>@<tier>/<protocol>/ep-000012.jsonl
                                the episode's memory items (memorybench.recall): one JSON line
                                per item (frame, gap, hit, chance, premature, score); written
                                just before the episode's records, atomically.
      predictions/<task>@<tier>/<protocol>/ep-000012.npz
                                (--save-predictions) the generated frames, uint8 [N, H, W, 3].
      summary.json              aggregates with confidence intervals, completeness, timings.
                                (Re)written atomically at the end of each (resumed) run.

``--resume`` continues an interrupted run: finished episodes are kept, the others are evaluated;
it refuses a run directory whose model identity, task hashes, protocols or metric definitions
differ from the request, so two models can never share results.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from ._io import atomic_write_bytes, atomic_write_json  # noqa: F401 - re-exported: results are written with them
from .errors import DataError, MemorybenchError

RUN_FORMAT = "memorybench-run/1"
RUN_JSON, EVENTS, SUMMARY = "run.json", "events.jsonl", "summary.json"


class RunExistsError(MemorybenchError):
    """The output directory already holds a run that the request would overwrite."""


class DifferentRunError(MemorybenchError):
    """``--resume`` or ``merge`` was asked to combine results that are not the same run (a run
    directory or shard holds another model, other episodes, tasks or metric definitions). Not to
    be confused with ``leaderboard.IncomparableRunsError``: runs that cannot share a table column."""


#: the former name of ``DifferentRunError``
IncompatibleRunError = DifferentRunError


# ------------------------------------------------------------------------------------------
# events


def append_event(run_dir: Path, event: str, **fields) -> None:
    """Append one line to events.jsonl (a single write of one line, then fsync)."""
    line = (
        json.dumps(
            {
                "event": event,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                **fields,
            }
        )
        + "\n"
    )
    with open(run_dir / EVENTS, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_events(run_dir: Path) -> list[dict]:
    """Events in order; a last line cut short by a killed process is ignored."""
    path = Path(run_dir) / EVENTS
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


# ------------------------------------------------------------------------------------------
# provenance


def git_info(package_dir: str | Path | None = None) -> dict:
    """Where the memorybench that ran came from: its version, and the commit and dirtiness of the
    git checkout **of memorybench itself** when it runs from one (``source: "checkout"``).

    An installed memorybench (a wheel in ``site-packages``) reports ``source: "installed"`` and no
    commit, even when a virtual environment sits inside some other git repository (the user's):
    a checkout counts only if the git work tree's top level is the directory that holds the
    package and a ``pyproject.toml`` naming memorybench. ``package_dir``: the ``memorybench``
    package directory (default: this one).
    """
    pkg = Path(package_dir) if package_dir is not None else Path(__file__).resolve().parent
    root = pkg.resolve().parent
    out = {"version": __version__, "source": "installed", "commit": None, "dirty": None}
    if not _is_memorybench_source(root):
        return out
    try:
        top = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        if not top or Path(top).resolve() != root:
            return out
        commit = (
            subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
        dirty = (
            bool(
                subprocess.run(
                    ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout.strip()
            )
            if commit
            else None
        )
    except (OSError, subprocess.SubprocessError):
        return out
    return {**out, "source": "checkout", "commit": commit, "dirty": dirty}


def _is_memorybench_source(root: Path) -> bool:
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return False
    import re

    return re.search(r'(?m)^name\s*=\s*"memorybench"\s*$', text) is not None


def environment(device: str) -> dict:
    """Versions of everything that can change a number, and the hardware it ran on."""
    from importlib.metadata import PackageNotFoundError, version

    libs = {}
    for name in ("torch", "torchvision", "torchmetrics", "lpips", "scikit-image", "numpy", "datasets", "pandas"):
        try:
            libs[name] = version(name)
        except PackageNotFoundError:
            libs[name] = None
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "libraries": libs,
        "device": device,
    }
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        env["cuda_available"] = torch.cuda.is_available()
        if device.startswith("cuda") and torch.cuda.is_available():
            env["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
            env["cuda_version"] = torch.version.cuda
    except ImportError:  # pragma: no cover
        pass
    return env


# ------------------------------------------------------------------------------------------
# the run directory


def group_dir(task_key: str, protocol: str) -> str:
    return f"{task_key}/{protocol}"


@dataclass
class RunDir:
    path: Path

    @property
    def meta(self) -> dict:
        return load_run_json(self.path)

    def records_dir(self, task_key: str, protocol: str) -> Path:
        return self.path / "records" / group_dir(task_key, protocol)

    def predictions_dir(self, task_key: str, protocol: str) -> Path:
        return self.path / "predictions" / group_dir(task_key, protocol)

    def record_path(self, task_key: str, protocol: str, episode: int) -> Path:
        return self.records_dir(task_key, protocol) / f"ep-{episode:06d}.jsonl"

    def done_episodes(self, task_key: str, protocol: str) -> set[int]:
        d = self.records_dir(task_key, protocol)
        if not d.is_dir():
            return set()
        return {int(p.stem[3:]) for p in d.glob("ep-*.jsonl")}

    def write_episode_records(self, task_key: str, protocol: str, episode: int, rows: list[dict]) -> None:
        body = "".join(json.dumps(r, allow_nan=True) + "\n" for r in rows)
        atomic_write_bytes(self.record_path(task_key, protocol, episode), body.encode())

    def items_path(self, task_key: str, protocol: str, episode: int) -> Path:
        return self.path / "items" / group_dir(task_key, protocol) / f"ep-{episode:06d}.jsonl"

    def write_episode_items(self, task_key: str, protocol: str, episode: int, rows: list[dict]) -> None:
        body = "".join(json.dumps(r, allow_nan=True) + "\n" for r in rows)
        atomic_write_bytes(self.items_path(task_key, protocol, episode), body.encode())

    def iter_items(self, task_key: str, protocol: str) -> Iterator[dict]:
        """The per-item records of the finished episodes (those with a records file) of a group."""
        for episode in sorted(self.done_episodes(task_key, protocol)):
            f = self.items_path(task_key, protocol, episode)
            if not f.exists():
                continue
            for i, line in enumerate(f.read_text(encoding="utf-8").splitlines()):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{f}:{i + 1}: corrupt item record ({e})") from None

    def write_predictions(
        self, task_key: str, protocol: str, episode: int, frames_u8: np.ndarray, start_frame: int
    ) -> None:
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, frames=frames_u8, episode=np.int64(episode), start_frame=np.int64(start_frame))
        atomic_write_bytes(self.predictions_dir(task_key, protocol) / f"ep-{episode:06d}.npz", buf.getvalue())

    def read_predictions(self, task_key: str, protocol: str, episode: int) -> tuple[np.ndarray, int]:
        path = self.predictions_dir(task_key, protocol) / f"ep-{episode:06d}.npz"
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["frames"], int(z["start_frame"])
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"{path}: cannot read saved predictions: {e}") from None

    def iter_records(self, task_key: str | None = None, protocol: str | None = None) -> Iterator[dict]:
        """Every per-frame record (optionally of one task/protocol), with task and protocol added."""
        root = self.path / "records"
        if not root.is_dir():
            return
        for tdir in sorted(root.iterdir()):
            if task_key is not None and tdir.name != task_key:
                continue
            for pdir in sorted(tdir.iterdir()):
                if protocol is not None and pdir.name != protocol:
                    continue
                for f in sorted(pdir.glob("ep-*.jsonl")):
                    for i, line in enumerate(f.read_text(encoding="utf-8").splitlines()):
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise DataError(f"{f}:{i + 1}: corrupt record ({e})") from None
                        yield {"task": tdir.name, "protocol": pdir.name, **row}


def task_protocols(task: dict, meta: dict) -> list[str]:
    """The protocols a run evaluated a task under (those of the run the task supports)."""
    return task.get("protocols", meta["protocols"])


def load_run_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        meta = json.loads((path / RUN_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} is not a memorybench run directory (no {RUN_JSON})") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path / RUN_JSON} is unreadable: {e}") from None
    if meta.get("format") != RUN_FORMAT:
        raise DataError(f"{path / RUN_JSON}: unknown format {meta.get('format')!r} (expected {RUN_FORMAT})")
    return meta


def load_summary(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads((path / SUMMARY).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} has no {SUMMARY}: the run never finished a pass (resume it with --resume)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path / SUMMARY} is unreadable: {e}") from None


def comparable_keys(meta: dict) -> dict:
    """The parts of run.json that must be equal for two runs to hold the same experiment."""
    return {
        "model": meta["model"]["identity_hash"],
        "tasks": {
            t["key"]: [t["spec_hash"], t["dataset_sha256"], t.get("episodes_selected"), task_protocols(t, meta)]
            for t in meta["tasks"]
        },
        "protocols": meta["protocols"],
        "metrics_version": meta["metrics"].get("version"),
        "shard": meta["run"].get("shard"),
    }


def check_same_run(existing: dict, requested: dict, where: Path) -> None:
    """Raise ``DifferentRunError`` saying, in words, every difference between the run on disk
    and the one requested (model and weights, episodes, task specs and data, protocols, metric
    version, shard)."""
    from .comparability import metrics_difference, model_differences, task_differences

    a, b = comparable_keys(existing), comparable_keys(requested)
    if a == b:
        return
    names = ("on disk", "requested")
    diffs = []
    if a["model"] != b["model"]:
        diffs += [f"model: {d}" for d in model_differences(existing["model"], requested["model"], names)] or [
            f"model identity {a['model'][:12]} on disk, {b['model'][:12]} requested"
        ]
    ta, tb = {t["key"]: t for t in existing["tasks"]}, {t["key"]: t for t in requested["tasks"]}
    for key in sorted(set(ta) | set(tb)):
        if key not in tb:
            diffs.append(f"task {key} is on disk but not requested")
        elif key not in ta:
            diffs.append(f"task {key} is requested but not on disk")
        elif a["tasks"][key] != b["tasks"][key]:
            diffs += task_differences(
                ta[key], tb[key], names, (task_protocols(ta[key], existing), task_protocols(tb[key], requested))
            )
    if a["protocols"] != b["protocols"]:
        diffs.append(f"protocols {', '.join(a['protocols'])} on disk, {', '.join(b['protocols'])} requested")
    if a["metrics_version"] != b["metrics_version"]:
        diffs.append(metrics_difference(existing, requested, names))
    if a["shard"] != b["shard"]:
        diffs.append(f"shard {a['shard']} on disk, {b['shard']} requested")
    if not diffs:  # pragma: no cover - every key of comparable_keys is described above
        diffs = [f"{k}: on disk {a[k]!r}, requested {b[k]!r}" for k in a if a[k] != b[k]]
    raise DifferentRunError(
        f"{where} holds a different run; refusing to mix results (resume continues the same "
        "run only; start another with a new --out):\n  " + "\n  ".join(diffs)
    )


def expand_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories named directly, or found one or two levels below a directory of runs.

    Two levels read the default layout of ``memorybench run``, ``runs/<date-time>/<model>``. A
    directory holding both runs and directories of runs is ambiguous and refused.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / RUN_JSON).exists():
            out.append(p)
        elif p.is_dir():
            subdirs = sorted(d for d in p.iterdir() if d.is_dir())
            level1 = [d for d in subdirs if (d / RUN_JSON).exists()]
            level2 = [
                e
                for d in subdirs
                if d not in level1
                for e in sorted(d.iterdir())
                if e.is_dir() and (e / RUN_JSON).exists()
            ]
            if level1 and level2:
                groups = sorted({e.parent.name for e in level2})
                raise DataError(
                    f"{p} holds both run directories ({', '.join(d.name for d in level1[:3])}"
                    f"{', ...' if len(level1) > 3 else ''}) and directories of runs "
                    f"({', '.join(g + '/' for g in groups[:3])}{', ...' if len(groups) > 3 else ''}); "
                    "name the ones you mean, e.g. " + " ".join(str(x) for x in (level1[0], level2[0].parent))
                )
            found = level1 or level2
            if not found:
                raise DataError(f"{p} holds no run directories (no {RUN_JSON} in it, or one or two levels below it)")
            out += found
        else:
            raise DataError(f"{p} does not exist")
    return out


def new_run_meta(
    *,
    model_desc: dict,
    tasks: list[dict],
    protocols: list[str],
    metrics: dict,
    aggregation: dict,
    run: dict,
    command: list[str] | None,
    device: str,
) -> dict:
    return {
        "format": RUN_FORMAT,
        "memorybench_version": __version__,
        "git": git_info(),
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": model_desc,
        "tasks": tasks,
        "protocols": protocols,
        "metrics": metrics,
        "aggregation": aggregation,
        "run": run,
        "environment": environment(device),
    }
