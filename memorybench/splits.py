"""Splits of a task: the evaluation episodes and a training split disjoint from them by construction.

Definitions:

* the **eval** split of a task (at a tier) is what ``memorybench run`` scores: the spec as its
  task file defines it, episodes ``0 .. spec.episodes - 1`` of seed ``spec.seed``;
* the **train** split is the same task with the *training seed* ``spec.seed + TRAIN_SEED_OFFSET``
  and any number of episodes ``0 .. N - 1``. A generator draws episode ``i`` from
  ``numpy.random.default_rng([seed, i])`` (``memorybench.generators.base``), so a train episode
  and an eval episode come from different seed sequences: they never coincide (a test checks the
  frames of thousands of indices). Episode ``i`` of the train split depends only on
  ``(task, tier, i)``, whatever the number of processes that make it.

A training split's spec differs from the evaluation spec in ``seed`` and ``episodes`` only, so its
hash (and its cache directory) differs too. Every dataset written from a split says so in its
manifest (``split``, ``seed``, ``episode_range``; ``storage.write``), and ``export_npz`` writes the
same facts next to its ``.npz`` files.

Guards (used by the runner, ``memorybench.runner.evaluate``):

* ``check_evaluation_data(spec, store)`` refuses a dataset whose manifest says ``split: train``, and
  a ``recorded`` task whose source directory holds a manifest that says ``split: train``;
* ``model_training_data(model)`` reads what a model's card (``card.json`` next to its checkpoint)
  says it was trained on, and ``check_model_training`` refuses a model whose card names a training
  seed equal to the seed of an evaluated task (or a split other than ``train``).

The ``recorded`` family has no seed (its episodes are files), so it has no train split: train on
your own training files instead.

This module does not import torch (the command line uses it); the PyTorch datasets are in
``memorybench.data``.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .adapter import WorldModel
    from .storage import EpisodeStore
from pathlib import Path

import numpy as np

from . import __version__
from .episode import Episode
from .errors import DataError, MemorybenchError
from .generators import get_generator
from .spec import TaskSpec

#: added to a task's evaluation seed to get its training seed
TRAIN_SEED_OFFSET = 1_000_003
SPLITS = ("eval", "train")
FORMATS = ("hf", "npz")
MANIFEST = "manifest.json"
NPZ_FORMAT = "memorybench-npz/1"
#: pose columns written as Memory Maze's ``agent_pos`` / ``agent_dir``
MAZE_POSE_FIELDS = ("x", "y", "dir_x", "dir_y")


class TrainingDataError(MemorybenchError):
    """Training data where evaluation data is expected (or the reverse), or a split that cannot exist."""


def _unseeded(spec: TaskSpec) -> bool:
    return spec.family == "recorded"


def split_spec(spec: TaskSpec, split: str = "train", episodes: int | None = None) -> TaskSpec:
    """The spec whose episodes make ``split`` of the task ``spec`` (an evaluation spec).

    ``eval``: ``spec`` itself (``episodes`` must be None or the tier's count). ``train``: the task
    with its training seed and ``episodes`` episodes (default: the tier's count).
    """
    if split not in SPLITS:
        raise TrainingDataError(f"unknown split {split!r} (one of: {', '.join(SPLITS)})")
    if episodes is not None and (isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1):
        raise TrainingDataError(f"the number of episodes must be an integer >= 1, got {episodes!r}")
    if split == "eval":
        if episodes is not None and episodes != spec.episodes:
            raise TrainingDataError(
                f"the evaluation split of {spec.key} has exactly {spec.episodes} episodes (its "
                f"tier's); a number of episodes applies to the train split only"
            )
        return spec
    if _unseeded(spec):
        raise TrainingDataError(
            f"{spec.key} is a recorded task: its episodes are the files in {spec.params.path} and it has no seed, "
            "so it has no training split; write a recorded task over your own training files instead"
        )
    return dataclasses.replace(
        spec, seed=spec.seed + TRAIN_SEED_OFFSET, episodes=spec.episodes if episodes is None else episodes
    )


def training_spec(spec: TaskSpec, episodes: int | None = None) -> TaskSpec:
    """The spec whose episodes a model trains on: the task with its training seed."""
    return split_spec(spec, "train", episodes)


def split_record(spec: TaskSpec, split: str, start: int = 0, stop: int | None = None) -> dict:
    """What a file says about the split it holds: ``split``, ``seed``, ``episode_range`` [start, stop)."""
    rec = {"split": split, "seed": spec.seed, "episode_range": [start, spec.episodes if stop is None else stop]}
    if split == "train":
        rec["seed_offset"] = TRAIN_SEED_OFFSET
    return rec


def train_dir(spec: TaskSpec, root: str | Path | None = None) -> Path:
    """The default directory of a train split (``spec`` is the split's spec): under the cache."""
    from .storage import cache_root

    root = Path(root) if root is not None else cache_root() / "train"
    return root / f"{spec.name}-{spec.tier}-train-{spec.hash()[:12]}"


# ---------------------------------------------------------------------------------------------
# .npz export (the Memory Maze offline layout)


def npz_arrays(ep: Episode, spec: TaskSpec) -> dict[str, np.ndarray]:
    """The arrays of one episode's ``.npz`` file.

    ``image`` uint8 [T, H, W, 3]; ``action``: one-hot uint8 [T, n] for a one-component action space
    (as Memory Maze writes it), else int64 [T, A]; poses: ``agent_pos`` [T, 2] and ``agent_dir``
    [T, 2] for maze-like poses (x, y, dir_x, dir_y), else ``poses`` float32 [T, P] and
    ``pose_names``; and ``memory_mask``, ``novel_mask`` bool [T, H, W], ``memory_gap`` int32 [T],
    ``episode`` (its index) and ``info`` (JSON text), so that a file is self-sufficient.
    """
    nvec = spec.action_space.nvec
    if len(nvec) == 1:
        action = np.zeros((ep.num_frames, nvec[0]), np.uint8)
        action[np.arange(ep.num_frames), ep.actions[:, 0]] = 1
    else:
        action = np.ascontiguousarray(ep.actions, dtype=np.int64)
    out = {"image": ep.frames, "action": action}
    if tuple(spec.pose_fields) == MAZE_POSE_FIELDS:
        out["agent_pos"], out["agent_dir"] = ep.poses[:, :2], ep.poses[:, 2:]
    else:
        out["poses"] = ep.poses
        out["pose_names"] = np.array(spec.pose_fields, dtype=str)
    out.update(
        {
            "memory_mask": ep.memory_mask,
            "novel_mask": ep.novel_mask,
            "memory_gap": ep.memory_gap,
            "episode": np.int64(ep.index),
            "info": np.array(ep.info_json()),
        }
    )
    return out


def npz_name(index: int, episodes: int) -> str:
    """``ep-000042.npz``: zero-padded so that sorted names are in index order (how ``recorded`` reads them)."""
    return f"ep-{index:0{max(6, len(str(episodes - 1)))}d}.npz"


def _export_one(spec: TaskSpec, index: int, directory: str) -> tuple[int, str]:
    ep = get_generator(spec.family)(spec).generate(index)
    ep.check(spec.frames, spec.resolution, spec.action_space.dims, len(spec.pose_fields))
    np.savez_compressed(Path(directory) / npz_name(index, spec.episodes), **npz_arrays(ep, spec))
    return index, ep.sha256()


def export_npz(
    spec: TaskSpec,
    out: str | Path,
    split: str,
    workers: int = 1,
    force: bool = False,
    on_episode: Callable[[], None] | None = None,
) -> Path:
    """Write every episode of ``spec`` (a split's spec, see ``split_spec``) as one ``.npz`` file into ``out``.

    The directory also gets ``manifest.json``: the split, seed and episode range, the spec, the
    array layout and each file's episode SHA-256 (``Episode.sha256``). It is written into a
    temporary sibling and renamed into place; an existing non-empty ``out`` is replaced only with
    ``force``.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise TrainingDataError(f"{out} exists and is not empty; choose another --out (or --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    hashes: dict[int, str] = {}
    t0 = time.time()
    try:
        if workers <= 1:
            for i in range(spec.episodes):
                hashes[i] = _export_one(spec, i, str(tmp))[1]
                if on_episode:
                    on_episode()
        else:
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                for i, h in pool.map(
                    _export_one, [spec] * spec.episodes, range(spec.episodes), [str(tmp)] * spec.episodes, chunksize=1
                ):
                    hashes[i] = h
                    if on_episode:
                        on_episode()
        one = len(spec.action_space.nvec) == 1
        manifest = {
            "format": NPZ_FORMAT,
            "memorybench_version": __version__,
            "task": spec.name,
            "tier": spec.tier,
            **split_record(spec, split),
            "spec_hash": spec.hash(),
            "generator": spec.family,
            "generator_version": spec.generator_version,
            "arrays": {
                "image": "uint8 [T, H, W, 3]",
                "action": (
                    f"uint8 one-hot [T, {spec.action_space.nvec[0]}]"
                    if one
                    else f"int64 [T, {spec.action_space.dims}], component i in 0..nvec[i]-1"
                ),
                **(
                    {"agent_pos": "float32 [T, 2] (x, y)", "agent_dir": "float32 [T, 2] unit vector"}
                    if tuple(spec.pose_fields) == MAZE_POSE_FIELDS
                    else {"poses": f"float32 [T, {len(spec.pose_fields)}]", "pose_names": "str [P]"}
                ),
                "memory_mask": "bool [T, H, W]",
                "novel_mask": "bool [T, H, W]",
                "memory_gap": "int32 [T]",
                "episode": "int64 (the episode index)",
                "info": "str (JSON)",
            },
            "action_space": spec.action_space.to_dict(),
            "pose_fields": list(spec.pose_fields),
            "episodes": [
                {"index": i, "file": npz_name(i, spec.episodes), "sha256": hashes[i]} for i in range(spec.episodes)
            ],
            "generation_seconds": round(time.time() - t0, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "spec": spec.to_dict(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        old = None
        if out.exists():
            old = out.with_name(out.name + f".old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------
# guards


def _manifest_split(directory: Path) -> tuple[Path, str | None]:
    path = directory / MANIFEST
    try:
        man = json.loads(path.read_text())
    except FileNotFoundError:
        return path, None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is unreadable: {e}") from None
    return path, man.get("split") if isinstance(man, dict) else None


def check_evaluation_data(spec: TaskSpec, store: EpisodeStore | None = None) -> None:
    """Raise ``TrainingDataError`` if the episodes of ``spec`` (or ``store``) are a training split.

    ``store`` is an ``EpisodeStore`` whose manifest is checked; a ``recorded`` task's source
    directory is checked for a ``manifest.json`` (an export of ``memorybench tasks generate``).
    """
    if store is not None and store.manifest.get("split", "eval") != "eval":
        raise TrainingDataError(
            f"{store.path / MANIFEST} says split '{store.manifest['split']}': it is training "
            f"data, not the evaluation episodes of {spec.key}; refusing to evaluate on it"
        )
    if _unseeded(spec) and getattr(spec.params, "path", ""):
        path, split = _manifest_split(Path(spec.params.path))
        if split not in (None, "eval"):
            raise TrainingDataError(
                f"{spec.key} reads {spec.params.path}, whose {path.name} says split '{split}': "
                "it is training data; refusing to evaluate on it (evaluate on an eval split)"
            )


def model_training_data(model: WorldModel) -> dict | None:
    """What a model's card says it was trained on, or None when it has no card.

    The card is ``card.json`` next to the model's checkpoint (``WorldModel.checkpoint_path()``),
    as ``memorybench train`` writes it: ``{"card": path, "split": ..., "seed_offset": ...,
    "tasks": [{"key", "training_seed", "episode_range"}]}`` (the fields the card has).
    """
    ckpt = model.checkpoint_path() if hasattr(model, "checkpoint_path") else None
    if ckpt is None:
        return None
    card_path = Path(ckpt).with_name("card.json")
    if not card_path.exists():
        return None
    try:
        card = json.loads(card_path.read_text())
        training = card.get("training") or {}
        tasks = training.get("tasks") or []
        out = {
            "card": str(card_path),
            "split": training.get("split", "train"),
            "seed_offset": training.get("seed_offset"),
            "tasks": [{k: t[k] for k in ("key", "training_seed", "episode_range") if k in t} for t in tasks],
        }
    except (OSError, json.JSONDecodeError, AttributeError, TypeError) as e:
        raise DataError(f"model card {card_path} is unreadable: {e}") from None
    return out


def check_model_training(model: WorldModel, specs: Sequence[TaskSpec]) -> dict | None:
    """``model_training_data(model)``, after refusing a model trained on evaluation data.

    Refused: a card whose split is not ``train``, or whose training seed equals the seed of an
    evaluated task (``recorded`` tasks have no seed and are not compared).
    """
    trained = model_training_data(model)
    if trained is None:
        return None
    name = getattr(model, "name", "") or type(model).__name__
    if trained["split"] != "train":
        raise TrainingDataError(
            f"model card {trained['card']} says '{name}' was trained on the '{trained['split']}' "
            "split; refusing to evaluate it (train on the train split: memorybench.data)"
        )
    evaluated = {s.seed: s for s in specs if not _unseeded(s)}
    for t in trained["tasks"]:
        spec = evaluated.get(t.get("training_seed"))
        if spec is not None:
            raise TrainingDataError(
                f"model card {trained['card']} says '{name}' was trained on {t.get('key')} with seed "
                f"{t['training_seed']}, the evaluation seed of {spec.key}: its scores would measure the evaluation "
                f"episodes it was trained on; refusing to evaluate it (train on the train split: seed + "
                f"{TRAIN_SEED_OFFSET})"
            )
    return trained
