"""The task registry: every task YAML file memorybench can see, by name and tier.

Where task files come from, in order:

1. the built-in ``tasks/`` directory (the repository's, or the copy a wheel carries);
2. directories in ``$MEMORYBENCH_TASKS_DIR`` (``os.pathsep``-separated) and ``--tasks-dir``;
3. packages that declare an entry point in the group ``memorybench.tasks`` whose value is a
   directory path, or a callable returning one (or a list of them).

A name defined twice is an error naming both files. Selectors used on the command line:
``smoke`` / ``standard`` (every task at that tier), ``NAME`` (the task at the default tier), and
``NAME@TIER``, comma-separated.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import MemorybenchError, TaskSpecError, UnknownNameError
from .generators import get_generator
from .spec import SUITE_TIERS, TaskSpec
from .taskfile import load_task_file

ENTRY_POINT_GROUP = "memorybench.tasks"


def builtin_tasks_dir() -> Path:
    here = Path(__file__).resolve().parent
    packaged = here / "_data" / "tasks"
    return packaged if packaged.is_dir() else here.parent / "tasks"


def _entry_point_dirs() -> list[Path]:
    from importlib.metadata import entry_points

    dirs = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        obj = obj() if callable(obj) else obj
        dirs += [Path(p) for p in (obj if isinstance(obj, (list, tuple)) else [obj])]
    return dirs


@dataclass(frozen=True)
class TaskEntry:
    name: str
    path: Path
    tiers: dict[str, TaskSpec]


class TaskRegistry:
    """All visible tasks. Cheap to build: it parses the YAML files, it generates nothing."""

    def __init__(self, extra_dirs: Iterable[str | Path] = (), builtin: bool = True, entry_points: bool = True):
        dirs: list[Path] = [builtin_tasks_dir()] if builtin else []
        env = os.environ.get("MEMORYBENCH_TASKS_DIR")
        if env:
            dirs += [Path(p) for p in env.split(os.pathsep) if p]
        dirs += [Path(d) for d in extra_dirs]
        if entry_points:
            dirs += _entry_point_dirs()
        self.dirs = dirs
        self._entries: dict[str, TaskEntry] = {}
        for d in dirs:
            if not d.is_dir():
                raise MemorybenchError(
                    f"task directory {d} "
                    + (
                        "is a file: give the directory that holds the task YAML files"
                        if d.exists()
                        else "does not exist"
                    )
                )
            for path in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
                self.add_file(path)

    def add_file(self, path: str | Path) -> TaskEntry:
        path = Path(path)
        tiers = load_task_file(path)
        name = next(iter(tiers.values())).name
        if name in self._entries and self._entries[name].path.resolve() != path.resolve():
            raise TaskSpecError(str(path), "name", f"task '{name}' is already defined in {self._entries[name].path}")
        entry = TaskEntry(name, path, tiers)
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> TaskEntry:
        if name not in self._entries:
            raise UnknownNameError("task", name, self.names())
        return self._entries[name]

    def get(self, name: str, tier: str = "standard") -> TaskSpec:
        entry = self.entry(name)
        if tier not in entry.tiers:
            import difflib

            close = difflib.get_close_matches(tier, list(entry.tiers), n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise MemorybenchError(f"task '{name}' has no tier '{tier}'.{hint} It has: {', '.join(entry.tiers)}")
        return entry.tiers[tier]

    def all_specs(self) -> list[TaskSpec]:
        return [spec for name in self.names() for spec in self._entries[name].tiers.values()]

    def select(self, selector: str, default_tier: str = "standard", skipped: list | None = None) -> list[TaskSpec]:
        """Specs for a command-line selector (see the module docstring), without duplicates.

        A whole tier (``smoke``, ``standard``) leaves out tasks whose generator cannot run here
        (an optional extra is missing); each is appended to ``skipped`` as ``(task key, reason)``.
        Naming such a task explicitly selects it (and generating it then explains what to install).
        """
        out: list[TaskSpec] = []
        for part in [p.strip() for p in selector.split(",") if p.strip()]:
            if part in SUITE_TIERS and part not in self._entries:
                found = [e.tiers[part] for n, e in sorted(self._entries.items()) if part in e.tiers]
                if not found:
                    raise MemorybenchError(f"no task has a '{part}' tier")
                for spec in found:
                    reason = get_generator(spec.family).unavailable_reason()
                    if reason is None:
                        out.append(spec)
                    elif skipped is not None:
                        skipped.append((spec.key, reason))
            elif "@" in part:
                name, tier = part.split("@", 1)
                out.append(self.get(name, tier))
            elif part not in self._entries:  # a typo of a task or of a tier name
                tiers = sorted({t for e in self._entries.values() for t in e.tiers})
                raise UnknownNameError("task or tier", part, self.names() + tiers)
            else:
                out.append(self.get(part, default_tier))
        if not out:
            raise MemorybenchError(f"the task selector '{selector}' selects nothing")
        seen, unique = set(), []
        for s in out:
            if s.key not in seen:
                seen.add(s.key)
                unique.append(s)
        return unique


@lru_cache(maxsize=8)
def default_registry(extra_dirs: tuple[str, ...] = ()) -> TaskRegistry:
    return TaskRegistry(extra_dirs)


def get_task(name: str, tier: str = "standard") -> TaskSpec:
    """Shortcut: a built-in (or plugin) task spec."""
    return default_registry().get(name, tier)


def statistics(spec: TaskSpec, episodes: Iterable) -> dict:
    """Memory statistics of a task's episodes (over the frames the model must predict).

    ``gap_histogram[i]`` counts predicted frames with at least ``MIN_MEMORY_PIXELS`` memory-only
    pixels whose ``memory_gap`` falls in ``[gap_bins[i], gap_bins[i+1])``.
    """
    import numpy as np

    from .episode import MIN_MEMORY_PIXELS

    C = spec.context_frames
    bins = np.array(spec.gap_bins)
    hist = np.zeros(len(bins) - 1, dtype=np.int64)
    n_eps = n_pred = n_mem_frames = 0
    mem_px = nov_px = mem_px_all = nov_px_all = px_pred = px_all = 0
    for ep in episodes:
        n_eps += 1
        pm, pn = ep.memory_mask[C:], ep.novel_mask[C:]
        counts = pm.reshape(len(pm), -1).sum(1)
        is_mem = counts >= MIN_MEMORY_PIXELS
        gaps = ep.memory_gap[C:][is_mem]
        hist += np.histogram(gaps, bins=bins)[0]
        n_pred += len(pm)
        n_mem_frames += int(is_mem.sum())
        mem_px += int(pm.sum())
        nov_px += int(pn.sum())
        px_pred += pm.size
        mem_px_all += int(ep.memory_mask.sum())
        nov_px_all += int(ep.novel_mask.sum())
        px_all += ep.memory_mask.size
    return {
        "episodes": n_eps,
        "frames_per_episode": spec.frames,
        "context_frames": C,
        "predict_frames": spec.predict_frames,
        "predicted_frames_total": n_pred,
        "predicted_frames_with_memory": n_mem_frames,
        "memory_pixel_fraction_predicted": mem_px / max(px_pred, 1),
        "novel_pixel_fraction_predicted": nov_px / max(px_pred, 1),
        "memory_pixel_fraction_all": mem_px_all / max(px_all, 1),
        "novel_pixel_fraction_all": nov_px_all / max(px_all, 1),
        "gap_bins": list(spec.gap_bins),
        "gap_histogram": hist.tolist(),
    }
